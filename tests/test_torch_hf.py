"""Hugging Face transformers: torch.fx cannot trace them, the torch.export fallback can.

Tiny random configurations (BERT, GPT-2, Llama with grouped-query attention) are loaded from torch,
pruned at 50% of their prunable ZIGs and checked against the zeroed original.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import graphcore
from construct.torch_verify import randomize_
from frontends.torch_frontend import load_torch
from graphcore.ops.head_dims import whole_heads
from zigraph.prune_check import prune_check

transformers = pytest.importorskip("transformers")


def _model(name: str) -> torch.nn.Module:
    t = transformers
    if name == "bert":
        cfg = t.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=32)  # fmt: skip
        return t.BertModel(cfg)
    if name == "gpt2":
        return t.GPT2Model(t.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                        use_cache=False, bos_token_id=0, eos_token_id=0))  # fmt: skip
    cfg = t.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                        use_cache=False)  # fmt: skip
    return t.LlamaModel(cfg)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_transformer_prunes_heads_and_mlp_exactly(name):
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = randomize_(_model(name)).eval()
    ids = torch.randint(0, 100, (1, 8))
    graph = load_torch(model, (ids,))
    assert graph.meta["tracer"] == "export"
    analysis = graphcore.analyze(graph)
    sizes = sorted({g.size for g in analysis.prunable_groups})
    assert 64 in sizes or 128 in sizes  # the MLP width
    assert 8 in sizes  # attention head dimensions (query/key, value/output; LLaMA's rotary pairs: 4)
    with whole_heads():
        sizes = sorted({g.size for g in graphcore.analyze(graph).prunable_groups})
    assert 2 in sizes or 4 in sizes  # whole heads (or GQA key/value groups)
    r = prune_check(model, (ids,), sparsity=0.5, criterion="random")
    assert r.torch_rel <= 1e-4 and r.kept <= 0.9, r
