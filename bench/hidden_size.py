"""Parameters kept at 50% sparsity for tiny Hugging Face LM-head models, with hidden-size pruning.

For BERT (BertForMaskedLM), GPT-2 (GPT2LMHeadModel) and LLaMA (LlamaForCausalLM, tied head) built from
tiny configurations with random weights: load from torch, prune half of every prunable group (lowest
L2 norm), check the small module against the zeroed original in torch and, exported, in onnxruntime.
Run it on a checkout from before hidden-size pruning to get the "before" column of docs/hidden_size.md.

    python bench/hidden_size.py
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from torch import nn


def hf_lm(name: str) -> nn.Module:
    """Tiny LM-head models (a bare BertModel / GPT2Model / LlamaModel returns the hidden states, which a
    graph output pins); the LLaMA one ties its head to the embedding as GPT-2 and BERT do."""
    import transformers as t

    if name == "bert":
        cfg = t.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=32)  # fmt: skip
        return t.BertForMaskedLM(cfg)
    if name == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                              use_cache=False, bos_token_id=0, eos_token_id=0))  # fmt: skip
    cfg = t.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                        use_cache=False, tie_word_embeddings=True)  # fmt: skip
    return t.LlamaForCausalLM(cfg)


def main() -> None:
    from construct.torch_verify import randomize_
    from zigraph.prune_check import prune_check

    warnings.simplefilter("ignore")
    print("| model | params | kept at 50% | torch max rel | onnxruntime max rel | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("bert", "gpt2", "llama"):
        torch.manual_seed(0)
        model = randomize_(hf_lm(name)).eval()
        ids = torch.randint(0, 100, (1, 8))
        t0 = time.perf_counter()
        with TemporaryDirectory() as tmp:
            r = prune_check(model, (ids,), sparsity=0.5, criterion="l2", onnx_path=str(Path(tmp) / "s.onnx"))
        print(
            f"| {name} | {r.params_before} | {r.params_after} ({r.kept:.1%}) | {r.torch_rel:.1e} | "
            f"{r.ort_rel:.1e} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
