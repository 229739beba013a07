"""Hugging Face models in and out: keyword inputs and ModelOutput traced without a wrapper, token-id
inputs from the CLI, and ``construct.to_hf``: a pruned model of the same class with an updated config
that ``from_pretrained`` loads, equal to the zeroed original.

Tiny configurations with random weights (LLaMA and Qwen2 with grouped-query attention, BERT, GPT-2).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from construct.torch_verify import randomize_

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """``randomize_`` for the weights a checkpoint holds: non-persistent buffers (rotary ``inv_freq``)
    are derived from the config on load, so they keep their derived values."""
    pristine = copy.deepcopy(model)
    randomize_(model)
    with torch.no_grad():
        for (_, m), (_, p) in zip(model.named_modules(), pristine.named_modules()):
            for b in getattr(m, "_non_persistent_buffers_set", ()):
                if getattr(m, b, None) is not None:
                    getattr(m, b).copy_(getattr(p, b))
    return model.eval()


class TokenModel(torch.nn.Module):
    """Token ids → embedding → MLP → logits: the smallest model that needs integer inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.emb(ids))))


def token_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TokenModel()


def _hf(name: str) -> torch.nn.Module:
    t = transformers
    common = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    if name == "bert":
        return t.BertModel(t.BertConfig(**common))
    if name == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                              use_cache=False))  # fmt: skip
    if name == "qwen2":
        return t.Qwen2Model(t.Qwen2Config(**common, num_key_value_heads=2, use_cache=False))
    if name == "qwen2_lm":  # a task head: the hidden stream is no graph output, so it can shrink
        return t.Qwen2ForCausalLM(t.Qwen2Config(**common, num_key_value_heads=2, use_cache=False))
    if name == "llama_lm":
        return t.LlamaForCausalLM(t.LlamaConfig(**common, num_key_value_heads=2, use_cache=False))
    return t.LlamaModel(t.LlamaConfig(**common, num_key_value_heads=2, use_cache=False))


def tiny_llama() -> torch.nn.Module:
    """A CLI factory: ``tests.test_hf_roundtrip:tiny_llama --input-shape 1,8:int64``."""
    torch.manual_seed(0)
    return _hf("llama")


_CACHE: dict[tuple, tuple] = {}


def _analyzed(name: str, attention: str = "heads") -> tuple:
    """(model, token ids, analysis), traced once per test session from keyword inputs. Whole heads by
    default: a config holds a head count, while its one ``head_dim`` also sets the rotary frequencies
    and the softmax scale, which head-dimension pruning keeps (``test_head_dims_are_refused_...``)."""
    if (name, attention) not in _CACHE:
        import graphcore
        from frontends.torch_frontend import load_torch

        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = randomized(_hf(name))
        ids = torch.randint(0, 100, (1, 8))
        graph = load_torch(model, {"input_ids": ids})
        _CACHE[name, attention] = (model, ids, graphcore.analyze(graph, attention=attention))
    return _CACHE[name, attention]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# -- tracing: keyword inputs, ModelOutput -------------------------------------------------------


def test_keyword_inputs_and_model_output_trace_without_a_wrapper():
    import graphcore
    from construct.torch_construct import to_torch
    from construct.torch_verify import zeroed_copy
    from frontends.torch_frontend import load_torch
    from graphcore.select import select_zigs

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = randomized(_hf("bert"))
    ids = torch.randint(0, 100, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.long)
    mask[0, 6:] = 0  # padding: the mask changes the output, so it must really be an input
    graph = load_torch(model, example_kwargs={"input_ids": ids, "attention_mask": mask})
    assert graph.meta["input_names"] == ["input_ids", "attention_mask"]
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask"]
    assert graph.meta["output_names"] == ["last_hidden_state", "pooler_output"]
    analysis = graphcore.analyze(graph)
    chosen = select_zigs(analysis, 0.5, criterion="random")
    zeroed = zeroed_copy(model, analysis, chosen)
    small = to_torch(zeroed, analysis, chosen)
    with torch.no_grad():
        out = small(input_ids=ids, attention_mask=mask)
        ref = zeroed(input_ids=ids, attention_mask=mask)
        unmasked = zeroed(input_ids=ids)
    assert type(out).__name__ == "BaseModelOutputWithPoolingAndCrossAttentions"
    assert _rel(out.last_hidden_state, ref.last_hidden_state) <= 1e-4
    # the mask matters by more than the 1e-4 the check above allows (2 masked tokens of 8 in a random
    # BERT move the output by ~1e-3, which a 1e-3 bound made flaky)
    assert _rel(unmasked.last_hidden_state, ref.last_hidden_state) > 2e-4
    assert _rel(model(input_ids=ids, attention_mask=mask).last_hidden_state, ref.last_hidden_state) > 1e-5


def test_fx_path_binds_keywords_and_names_nested_outputs():
    from frontends.torch_frontend import load_torch

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

        def forward(self, x, scale=None, y=None):
            h = torch.relu(self.a(x))
            return {"out": self.b(h), "extra": (h, y * 2)}

    g = load_torch(M(), (torch.randn(2, 4),), example_kwargs={"y": torch.randn(2, 8)})
    assert g.meta["tracer"] == "symbolic_trace"
    assert g.meta["output_names"] == ["out", "extra.0", "extra.1"]


# -- CLI: token-id inputs for torch factories ---------------------------------------------------


def test_parse_input_spec():
    from frontends.input_spec import InputSpec, parse_input_spec

    assert parse_input_spec("1,3,8,8") == InputSpec((1, 3, 8, 8), "float32")
    assert parse_input_spec("1,8:int64") == InputSpec((1, 8), "int64")
    for bad in ("1,8:int8", "1,x", "1,0:int64", "", ":int64"):
        with pytest.raises(ValueError):
            parse_input_spec(bad)


def test_token_ids_are_drawn_below_the_embedding_size():
    from frontends.input_spec import InputSpec
    from frontends.torch_frontend import embedding_size, example_inputs_for
    from graphcore.errors import ModelLoadError

    model = token_model()
    assert embedding_size(model) == 50
    (ids,) = example_inputs_for(model, [InputSpec((4, 64), "int64")])
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < 50 and int(ids.max()) > 40
    assert embedding_size(_hf("llama")) == 100  # config.vocab_size first
    with pytest.raises(ModelLoadError, match="needs a bound"):
        example_inputs_for(torch.nn.Linear(3, 3), [InputSpec((1, 3), "int64")])


def test_cli_prunes_a_factory_with_integer_inputs(tmp_path, capsys):
    import json

    from zigraph.cli import main

    rep = tmp_path / "r.json"
    argv = ["prune", "tests.test_hf_roundtrip:token_model", "--input-shape", "2,6:int64", "--sparsity", "0.5",
            "-o", str(tmp_path / "s.onnx"), "--report", str(rep)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(rep.read_text())
    assert report["result"]["verification"]["passed"]
    assert {r["param"] for r in report["removed"]} & {"up.weight", "emb.weight"}


def test_cli_bad_input_specs_exit_2_with_one_line(capsys):
    from zigraph.cli import main

    for argv, why in (
        (["analyze", "tests.test_hf_roundtrip:token_model", "--input-shape", "2,6:int8"], "unknown dtype"),
        (["analyze", "tests.test_hf_roundtrip:token_model", "--input-shape", "2,x:int64"], "must look like"),
        (["analyze", "tests.factories:small_cnn", "--input-shape", "1,3,8,8:int64"], "needs a bound"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zigraph: error:") and why in err[0], (argv, err)


def test_cli_analyzes_a_hugging_face_factory_from_token_ids(capsys):
    from zigraph.cli import main

    warnings.simplefilter("ignore")
    assert main(["analyze", "tests.test_hf_roundtrip:tiny_llama", "--input-shape", "1,8:int64"]) == 0
    assert "mlp.gate_proj.weight" in capsys.readouterr().out


# -- uniform selection and the Hugging Face round trip -----------------------------------------


def test_uniform_selection_keeps_the_same_count_per_layer():
    from construct.to_hf import non_uniform
    from graphcore.select import select_zigs
    from graphcore.uniform import select_uniform, uniform_kinds

    _, _, analysis = _analyzed("llama")
    kinds = uniform_kinds(analysis)
    # hand-computed: per layer one MLP group (64 channels) and one key/value group (2 KV heads)
    assert sorted((k[0], len(gs)) for k, gs in kinds.items()) == [(2, 2), (64, 2)]
    chosen = select_uniform(analysis, 0.5, criterion="random", seed=1)
    taken = torch.bincount(torch.as_tensor(analysis.zig_group[chosen]), minlength=len(analysis.groups))
    for groups in kinds.values():
        assert len({int(taken[g.id]) for g in groups}) == 1
    assert int(taken.sum()) > 0 and non_uniform(analysis, chosen) == []
    ragged = select_zigs(analysis, 0.5, criterion="random", seed=3)
    assert non_uniform(analysis, ragged)  # the default rule is free per layer: the check can fail


@pytest.mark.parametrize(
    "name",
    [
        "llama",
        "bert",
        pytest.param("qwen2", marks=pytest.mark.slow),
        pytest.param("gpt2", marks=pytest.mark.slow),
    ],
)
def test_hf_round_trip_equals_the_zeroed_original(name, tmp_path):
    from construct.to_hf import hf_kinds, to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.uniform import select_uniform

    model, ids, analysis = _analyzed(name)
    kinds = hf_kinds(model, analysis)
    sizes = sorted(k[0] for k in kinds)
    # what a config can hold today: the MLP width everywhere, KV heads (with their query groups) under GQA;
    # BERT's and GPT-2's attention width is hidden_size, so their heads stay
    assert sizes == {"llama": [2, 64], "qwen2": [2, 64], "bert": [64], "gpt2": [128]}[name]
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=kinds)
    zeroed = zeroed_copy(model, analysis, chosen)
    hf = to_hf(zeroed, analysis, chosen)
    assert type(hf) is type(model)
    hf.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    cfg, old = loaded.config, model.config
    width = "n_inner" if name == "gpt2" else "intermediate_size"
    assert getattr(cfg, width) < (getattr(old, width) or 4 * old.n_embd)
    if name in ("llama", "qwen2"):
        kv = [g for g in analysis.prunable_groups if g.size == 2]
        gone = int(sum(analysis.zig_group[chosen] == kv[0].id))
        assert gone == 1  # one of the 2 KV heads per layer, with its 2 query heads
        assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 1, 8)
    with torch.no_grad():
        got = loaded(input_ids=ids)[0]
        assert _rel(got, zeroed(input_ids=ids)[0]) <= 1e-4
        assert _rel(got, model(input_ids=ids)[0]) > 1e-5  # the check can fail
    kept = sum(p.numel() for p in loaded.parameters()) / sum(p.numel() for p in model.parameters())
    assert kept < 0.9


def test_non_uniform_pruning_is_refused_naming_what_differs():
    from construct.to_hf import to_hf
    from construct.torch_construct import to_torch
    from construct.torch_verify import zeroed_copy
    from graphcore.errors import ZigraphError
    from graphcore.select import select_zigs

    model, ids, analysis = _analyzed("llama")
    chosen = select_zigs(analysis, 0.5, criterion="random", seed=3)
    zeroed = zeroed_copy(model, analysis, chosen)
    with pytest.raises(ZigraphError, match=r"layers\.\*\.mlp.*different counts per layer.*layers\.0\.mlp"):
        to_hf(zeroed, analysis, chosen)
    small = to_torch(zeroed, analysis, chosen)  # still a torch module
    with torch.no_grad():
        assert _rel(small(input_ids=ids)[0], zeroed(input_ids=ids)[0]) <= 1e-4


def test_bert_heads_cannot_be_a_config_and_say_so():
    from construct.to_hf import to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.errors import ZigraphError
    from graphcore.uniform import select_uniform, uniform_kinds

    model, _, analysis = _analyzed("bert")
    heads = [k for k in uniform_kinds(analysis) if k[0] == 4]
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=heads)
    assert chosen.size
    with pytest.raises(ZigraphError, match="no config expresses"):
        to_hf(zeroed_copy(model, analysis, chosen), analysis, chosen)


def test_user_guide_hf_block_runs(capsys):
    """The Hugging Face block of docs/user_guide.md, run on the tiny LLaMA."""
    import re

    text = (ROOT / "docs" / "user_guide.md").read_text(encoding="utf-8")
    at = text.index("tests/test_hf_roundtrip.py::test_user_guide_hf_block_runs")
    code = re.search(r"```python\n(.*?)```", text[at:], re.S)
    assert code
    model, ids, _ = _analyzed("llama")
    exec(compile(code.group(1), "user_guide.md", "exec"), {"model": model, "ids": ids})
    width, kv = capsys.readouterr().out.split()
    assert int(width) < 64 and int(kv) <= 2


def test_a_buffer_no_checkpoint_carries_is_named_when_the_round_trip_refuses():
    """``randomize_`` also draws the rotary ``inv_freq``, which save_pretrained does not store: the
    reloaded model would differ, so ``to_hf`` refuses and names the buffer (found by llmtrain)."""
    import graphcore
    from construct.to_hf import to_hf
    from construct.torch_verify import zeroed_copy
    from frontends.torch_frontend import load_torch
    from graphcore.errors import ZigraphError
    from graphcore.uniform import uniform_kinds

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = randomize_(_hf("llama")).eval()
    analysis = graphcore.analyze(load_torch(model, (torch.randint(0, 100, (1, 8)),)))
    ids = [int(g.zig_ids[0]) for k, gs in uniform_kinds(analysis).items() for g in gs if g.size == 64]
    with pytest.raises(ZigraphError, match=r"rotary_emb\.inv_freq"):
        to_hf(zeroed_copy(model, analysis, ids), analysis, ids)


class Blocks(torch.nn.Module):
    """Token ids → embedding → two residual MLP blocks: two groups of one kind, one per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(40, 8)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(8, 24), torch.nn.ReLU(), torch.nn.Linear(24, 8))
            for _ in range(2)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for b in self.blocks:
            h = h + b(h)
        return h


def blocks() -> torch.nn.Module:
    torch.manual_seed(0)
    m = Blocks()
    with torch.no_grad():
        m.blocks[1][0].weight.mul_(5)  # layer 1 has larger norms: the default rule prunes layer 0 more
    return m


def test_cli_uniform_removes_the_same_count_per_layer(tmp_path, capsys):
    import json

    from zigraph.cli import main

    counts = {}
    for flag in ([], ["--uniform"]):
        rep = tmp_path / f"r{len(flag)}.json"
        argv = ["prune", "tests.test_hf_roundtrip:blocks", "--input-shape", "2,5:int64", "--sparsity", "0.5",
                "-o", str(tmp_path / f"s{len(flag)}.onnx"), "--report", str(rep), *flag]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads(rep.read_text())
        assert report["result"]["verification"]["passed"]
        removed = {r["param"]: len(r["indices"]) for r in report["removed"]}
        counts[bool(flag)] = (removed.get("blocks.0.0.weight", 0), removed.get("blocks.1.0.weight", 0))
    assert counts[False][0] != counts[False][1]  # the check can fail: the default rule is free per layer
    assert counts[True][0] == counts[True][1] > 0


# -- hidden size and attention granularity -------------------------------------------------------


@pytest.mark.parametrize("name", ["llama_lm", "qwen2_lm"])
def test_rmsnorm_hidden_size_round_trips_with_eps_and_weight_folded(name, tmp_path):
    """Hidden size and KV heads pruned together: config.hidden_size shrinks, rms_norm_eps becomes
    eps * D / d and every norm weight is multiplied by sqrt(D / d) (docs/hidden_size.md)."""
    from construct.to_hf import hf_kinds, to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.uniform import select_uniform

    model, ids, analysis = _analyzed(name)
    kinds = hf_kinds(model, analysis)
    # hand-computed: MLP 64 and 2 KV heads (step 1); hidden 32: LlamaConfig wants a multiple of the 4
    # heads (step 4), Qwen2Config takes any width once head_dim is pinned (step 1)
    step = {"llama_lm": 4, "qwen2_lm": 1}[name]
    assert sorted((k[0], s) for k, s in kinds.items()) == [(2, 1), (32, step), (64, 1)]
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=kinds)
    zeroed = zeroed_copy(model, analysis, chosen)
    hf = to_hf(zeroed, analysis, chosen)
    hf.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    cfg, old = loaded.config, model.config
    d = cfg.hidden_size
    assert d < 32 and d % step == 0 and cfg.head_dim == 8
    assert cfg.rms_norm_eps == pytest.approx(old.rms_norm_eps * 32 / d, rel=1e-12)
    assert cfg.num_key_value_heads == 1 and cfg.intermediate_size < 64
    with torch.no_grad():
        got = loaded(input_ids=ids)[0]
        assert _rel(got, zeroed(input_ids=ids)[0]) <= 1e-4
        assert _rel(got, model(input_ids=ids)[0]) > 1e-3  # the check can fail
    kept = sum(p.numel() for p in loaded.parameters()) / sum(p.numel() for p in model.parameters())
    assert kept < 0.6


def test_a_shrunk_rmsnorm_without_the_folding_is_wrong():
    """The folding is needed: the same pruned config with the original epsilon and unscaled weights
    computes something else, so the round-trip test above can fail."""
    from construct.to_hf import hf_kinds, norm_fix, to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.uniform import select_uniform

    model, ids, analysis = _analyzed("llama_lm")
    kinds = {k: s for k, s in hf_kinds(model, analysis).items() if k[0] == 32}
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=kinds)
    zeroed = zeroed_copy(model, analysis, chosen)
    hf = to_hf(zeroed, analysis, chosen)
    fields, scale = norm_fix(model, {k: tuple(v.shape) for k, v in hf.state_dict().items()})
    assert set(fields) == {"rms_norm_eps"} and len(scale) == 5
    naive = copy.deepcopy(hf)
    naive.config.rms_norm_eps = model.config.rms_norm_eps
    for m in naive.modules():
        if hasattr(m, "variance_epsilon"):
            m.variance_epsilon = model.config.rms_norm_eps
            with torch.no_grad():
                m.weight.div_(scale["model.norm.weight"])
    with torch.no_grad():
        assert _rel(naive(input_ids=ids)[0], zeroed(input_ids=ids)[0]) > 1e-3


def test_layernorm_hidden_size_is_refused_and_left_whole_for_a_round_trip():
    from construct.to_hf import hf_kinds, to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.errors import ZigraphError
    from graphcore.uniform import select_uniform, uniform_kinds

    model, _, analysis = _analyzed("gpt2")  # GPT2LMHeadModel: the tied hidden stream is prunable
    hidden = [k for k in uniform_kinds(analysis) if k[0] == 32]
    assert hidden and not set(hidden) & set(hf_kinds(model, analysis))
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=hidden)
    assert chosen.size
    with pytest.raises(ZigraphError, match=r"LayerNorm .*pruned hidden size.*WideLayerNorm"):
        to_hf(zeroed_copy(model, analysis, chosen), analysis, chosen)


def test_head_dims_are_refused_naming_why():
    from construct.to_hf import hf_kinds, to_hf
    from construct.torch_verify import zeroed_copy
    from graphcore.errors import ZigraphError
    from graphcore.uniform import select_uniform, uniform_kinds

    model, _, analysis = _analyzed("llama", attention="dims")
    assert analysis.attention == "dims"
    dims = [k for k in uniform_kinds(analysis) if k[0] in (4, 8)]  # q/k rotary pairs, v/o dims
    assert len(dims) == 2 and not set(dims) & set(hf_kinds(model, analysis))
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=dims)
    with pytest.raises(ZigraphError, match=r"rotary frequencies and the softmax scale.*attention='heads'"):
        to_hf(zeroed_copy(model, analysis, chosen), analysis, chosen)


def test_attention_granularity_is_an_option_and_recorded():
    import graphcore
    from frontends.torch_frontend import load_torch
    from graphcore.errors import AnalysisError
    from graphcore.ops.head_dims import head_dims_enabled

    model, ids, heads = _analyzed("llama", attention="heads")
    _, _, dims = _analyzed("llama", attention="dims")
    assert heads.attention == "heads" and dims.attention == "dims"
    assert heads.report().attention == "heads" and dims.report().attention == "dims"
    # hand-computed: whole heads give 2 KV heads per layer; dims give 4 rotary pairs (q/k) and 8 v/o dims
    assert sorted(g.size for g in heads.prunable_groups) == [2, 2, 64, 64]
    assert sorted(g.size for g in dims.prunable_groups) == [4, 8, 8, 64, 64]
    assert head_dims_enabled()  # the option does not leak
    erase = graphcore.analyze(load_torch(model, {"input_ids": ids}), mode="erase", attention="heads")
    assert erase.report().attention == "heads"
    with pytest.raises(AnalysisError, match="attention granularity 'rows'"):
        graphcore.analyze(heads.graph, attention="rows")


def test_cli_attention_flag(tmp_path, capsys):
    import json

    from zigraph.cli import main

    warnings.simplefilter("ignore")
    sizes = {}
    for att in ("heads", "dims"):
        out = tmp_path / f"{att}.json"
        args = ["analyze", "tests.test_hf_roundtrip:tiny_llama", "--input-shape", "1,8:int64"]
        assert main([*args, "--attention", att, "--json", str(out), "-q"]) == 0
        rep = json.loads(out.read_text())
        assert rep["attention"] == att
        sizes[att] = sorted(g["size"] for g in rep["groups"] if g["prunable"])
    assert sizes["heads"] != sizes["dims"]
    assert main(["prune", "x.onnx", "--attention", "rows"]) == 2
    assert "--attention" in capsys.readouterr().err


class _PadPool(torch.nn.Module):
    """Swin's window padding (``F.pad``) and pooler (``AdaptiveAvgPool1d``), behind shape-dependent
    control flow so only torch.export traces it: ``aten.pad`` and ``aten.adaptive_avg_pool1d`` were
    unknown ops there and pinned every channel they touched."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(6, 12)
        self.pool = torch.nn.AdaptiveAvgPool1d(1)
        self.down = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.up(x))  # (B, L, C)
        if y.shape[1] % 4:
            y = torch.nn.functional.pad(y, (0, 0, 0, 4 - y.shape[1] % 4))  # pads L, not C
        return self.down(self.pool(y.transpose(1, 2)).flatten(1))


def test_exported_pad_and_adaptive_pool_keep_channels_prunable():
    import graphcore
    from construct.torch_construct import to_torch
    from construct.torch_verify import verify_torch, zeroed_copy
    from frontends.torch_frontend import load_torch

    torch.manual_seed(0)
    m = _PadPool().eval()
    x = torch.randn(2, 7, 6)
    g = load_torch(m, x)
    assert g.meta["tracer"] == "export"
    assert not any(n.domain == "torch" for n in g.nodes)
    a = graphcore.analyze(g)
    grp = next(gr for gr in a.groups if ("up.weight", 0) in gr.params)
    assert grp.prunable and grp.size == 12
    z = zeroed_copy(m, a, grp.zig_ids[:5])
    small = to_torch(z, a)
    assert small.get_parameter("up.weight").shape[0] == 7
    assert verify_torch(z, small, x).max_rel <= 1e-4
    with torch.no_grad():
        assert _rel(small(x), m(x)) > 1e-4  # the check can fail


def test_t5_hidden_size_round_trips_through_its_tied_embedding_alias(tmp_path):
    """T5's state dict names the shared embedding twice (``shared`` and ``encoder.embed_tokens``):
    the pruned shape must follow both names, or no ``d_model`` builds the target and the hidden size
    (an RMSNorm stream: ``layer_norm_epsilon`` * D / d) is never a kind."""
    import graphcore
    from construct.to_hf import hf_kinds, to_hf
    from construct.torch_verify import zeroed_copy
    from frontends.torch_frontend import load_torch
    from graphcore.uniform import select_uniform

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    model = randomized(transformers.T5ForTokenClassification(cfg))
    ids = torch.randint(0, 100, (1, 8))
    analysis = graphcore.analyze(load_torch(model, {"input_ids": ids}))
    kinds = hf_kinds(model, analysis)
    assert 32 in {k[0] for k in kinds}
    chosen = select_uniform(analysis, 0.5, criterion="random", kinds=kinds)
    zeroed = zeroed_copy(model, analysis, chosen)
    to_hf(zeroed, analysis, chosen).save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config.d_model < 32
    with torch.no_grad():
        got = loaded(input_ids=ids)[0]
        assert _rel(got, zeroed(input_ids=ids)[0]) <= 1e-4
        assert _rel(got, model(input_ids=ids)[0]) > 1e-3
