"""Well-known architectures with random weights, exported to ONNX inside the test session.

Weights are re-drawn at random (including BatchNorm statistics) so that no two parameters are equal:
exporters deduplicate identical initializers, which would tie unrelated layers together, and
zero-initialised classifier heads would make every equivalence check vacuous.
"""

from __future__ import annotations

import os
from pathlib import Path

TORCHVISION = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet", "densenet121",
    "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5",
    "squeezenet1_0", "mnasnet0_5", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t",
]  # fmt: skip
HF = ["bert", "gpt2", "llama"]
CI_SUBSET = {"resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "bert", "gpt2", "llama"}


def randomize(module, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.2)
            )
        for name, b in module.named_buffers():
            if b.dtype.is_floating_point:
                if name.endswith("running_var"):
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)
                else:
                    b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module.eval()


def torchvision_model(name: str):
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return randomize(getattr(torchvision.models, name)(weights=None, **kwargs))


def hf_model(name: str):
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    cfg = {
        "bert": (BertModel, BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128, vocab_size=100, max_position_embeddings=64)),
        "gpt2": (GPT2Model, GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64)),
        "llama": (LlamaModel, LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                          max_position_embeddings=64)),
    }[name]  # fmt: skip
    cls, config = cfg
    config._attn_implementation = "eager"
    inner = randomize(cls(config))

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids).last_hidden_state

    return LastHidden(inner).eval()


def export(name: str, folder: Path, dynamo: bool = True) -> Path:
    """Export once per session folder; returns the .onnx path."""
    import torch

    path = folder / f"{name}.{'dyn' if dynamo else 'ts'}.onnx"
    if path.exists():
        return path
    if name in HF:
        model = hf_model(name)
        args = (torch.randint(0, 100, (1, 16)),)
        names, axes = ["ids"], {"ids": {0: "batch", 1: "seq"}}
    else:
        model = torchvision_model(name)
        size = 299 if name == "inception_v3" else 224
        args = (torch.randn(1, 3, size, size),)
        names, axes = ["x"], {"x": {0: "batch"}}
    if dynamo:
        torch.onnx.export(model, args, str(path), dynamo=True, opset_version=18, external_data=False)
    else:
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=names,
                          dynamic_axes=axes)  # fmt: skip
    return path


def zoo_selection(all_models: list[str]) -> list[str]:
    """CI runs a bounded subset; ZIGRAPH_ZOO=all runs every model."""
    if os.environ.get("ZIGRAPH_ZOO") == "all":
        return all_models
    return [m for m in all_models if m in CI_SUBSET]
