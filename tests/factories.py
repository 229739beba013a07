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
