"""Model factories for CLI tests (``tests.factories:small_cnn``)."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.conv2(y))
        return self.fc(y.flatten(1))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN()


def not_a_module() -> int:
    return 3


class ResidualStack(nn.Module):
    """A stem and four residual blocks ``relu(x + conv(relu(conv(x))))``: four erasable branches."""

    def __init__(self, blocks: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
            )
            for _ in range(blocks)
        )
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.fc(x.mean(dim=(2, 3)))


def residual_stack() -> nn.Module:
    torch.manual_seed(0)
    return ResidualStack()


class SharedResidual(nn.Module):
    """A residual branch that calls a convolution the trunk uses too: erasing the branch keeps it."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.shared = nn.Conv2d(width, width, 3, padding=1)
        self.own = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.shared(torch.relu(self.stem(x))))
        x = torch.relu(x + self.own(torch.relu(self.shared(x))))
        return self.fc(x.mean(dim=(2, 3)))


def shared_residual() -> nn.Module:
    torch.manual_seed(0)
    return SharedResidual()
