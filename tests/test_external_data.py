"""Models past 2 GB, on small models forced through the same path (``--external-threshold``,
``--external-data``): the output's weights go to a data file of ours beside it, nothing is written
anywhere else or through a link, the input's files stay byte-identical, an interrupted write leaves
nothing, and the bounded verification can still fail."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.llama_shaped import LlamaShape, build_llama
from zigraph.cli import main

# no rotary: one input (token ids), as the checks below feed it
TINY = LlamaShape(layers=1, hidden=32, inter=64, heads=4, vocab=50)


def _build(path: Path) -> Path:
    return build_llama(path, TINY, data="random", rotary=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("in") / "tiny.onnx")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _locations(path: Path) -> set[str]:
    m = onnx.load(str(path), load_external_data=False)
    return {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}


def _logits(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids})[0]


def _prune(model: Path, out: Path, *extra: str) -> int:
    return main(["prune", str(model), "--sparsity", "0.5", "-o", str(out), "-q", *extra])


def test_output_data_beside_the_output_and_valid(tiny, tmp_path):
    before = {p.name: _digest(p) for p in tiny.parent.iterdir()}
    out = tmp_path / "out" / "small.onnx"
    report = tmp_path / "r.json"
    assert _prune(tiny, out, "--external-threshold", "1000", "--report", str(report)) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx", "small.onnx.data"]
    assert _locations(out) == {"small.onnx.data"}  # our name, never the input's
    onnx.checker.check_model(str(out))  # by path: the checker reads the data file too
    ids = np.array([[1, 7, 3]], np.int64)
    assert _logits(out, ids).shape == (1, 3, TINY.vocab)
    ver = json.loads(report.read_text())["result"]["verification"]
    assert ver["passed"] and ver["method"].startswith("one model at a time") and ver["peak_memory_mb"] > 0
    assert {p.name: _digest(p) for p in tiny.parent.iterdir()} == before  # the input is untouched


def test_small_models_stay_in_one_file_unless_asked(tiny, tmp_path):
    assert _prune(tiny, tmp_path / "a.onnx") == 0
    assert not (tmp_path / "a.onnx.data").exists() and _locations(tmp_path / "a.onnx") == set()
    assert _prune(tiny, tmp_path / "b.onnx", "--external-data", "--no-verify") == 0
    assert _locations(tmp_path / "b.onnx") == {"b.onnx.data"}
    ids = np.array([[4, 2]], np.int64)
    np.testing.assert_array_equal(_logits(tmp_path / "a.onnx", ids), _logits(tmp_path / "b.onnx", ids))


def test_symlinked_output_folder_is_resolved(tiny, tmp_path):
    """The user's symlinked folder is where the files go, side by side in its real folder."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert _prune(tiny, tmp_path / "link" / "s.onnx", "--external-data", "--no-verify") == 0
    assert sorted(p.name for p in real.iterdir()) == ["s.onnx", "s.onnx.data"]
    onnx.checker.check_model(str(real / "s.onnx"))


@pytest.mark.parametrize("which", ["model", "data"])
def test_symlinked_output_file_is_refused(tiny, tmp_path, capsys, which):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    out = tmp_path / "s.onnx"
    (out if which == "model" else tmp_path / "s.onnx.data").symlink_to(victim)
    assert _prune(tiny, out, "--external-data", "--no-verify") == 2
    assert "symbolic link; refused" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zigraph")]


def test_output_named_like_the_inputs_data_is_refused(tmp_path, capsys):
    """Input model.onnx keeps its weights in 'out.onnx.data'; publishing out.onnx's data there would
    change the input model's weights."""
    model = _build(tmp_path / "model.onnx")
    data = tmp_path / "model.onnx.data"
    data.rename(tmp_path / "out.onnx.data")
    m = onnx.load(str(model), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "out.onnx.data"
    model.write_bytes(m.SerializeToString())
    before = _digest(tmp_path / "out.onnx.data")
    assert _prune(model, tmp_path / "out.onnx", "--external-data", "--no-verify") == 2
    assert "input's own external data" in capsys.readouterr().err
    assert _digest(tmp_path / "out.onnx.data") == before and not (tmp_path / "out.onnx").exists()
    # into another folder the same name is ours and harmless: the input's file is only read
    assert _prune(model, tmp_path / "o" / "out.onnx", "--external-data") == 0
    assert _digest(tmp_path / "out.onnx.data") == before


def _mlp_with_location(folder: Path, location: str) -> Path:
    """A two-layer MLP whose first weight claims its data lives at ``location``."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w1.ClearField("raw_data")
    w1.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(8 * 16 * 4))):
        e = w1.external_data.add()
        e.key, e.value = k, v
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w1, w2],
    )
    path = folder / "mlp.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("escape", ["../secret.bin", "ABSOLUTE"])
def test_input_location_that_escapes_is_refused(tmp_path, capsys, escape):
    inner = tmp_path / "model"
    inner.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(8 * 16, np.float32).tobytes())
    location = str(secret) if escape == "ABSOLUTE" else escape
    model = _mlp_with_location(inner, location)
    before = _digest(secret)
    assert _prune(model, tmp_path / "out" / "o.onnx", "--external-data") == 2
    assert "outside the model's folder" in capsys.readouterr().err
    assert _digest(secret) == before and not (tmp_path / "out" / "o.onnx").exists()


def test_reader_refuses_an_escaping_location_too(tmp_path):
    """``read_external`` checks on its own (a model handed in as a proto skips the loader's check)."""
    from construct.external_write import read_external
    from graphcore.errors import ZigraphError

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../x.bin"
    (tmp_path / "x.bin").write_bytes(b"\0" * 8)
    (tmp_path / "in").mkdir()
    with pytest.raises(ZigraphError, match="outside the model's folder"):
        read_external(t, tmp_path / "in")


def test_interrupted_write_leaves_nothing(tiny, tmp_path, monkeypatch, capsys):
    """A failure in the middle of streaming the weights: exit 3 naming the model and the stage, and no
    file at all in the output folder (no model, no data, no staging folder)."""
    from construct.external_write import DataWriter

    real_put = DataWriter.put
    calls = []

    def failing_put(self, t, arr):
        calls.append(t.name)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        real_put(self, t, arr)

    monkeypatch.setattr(DataWriter, "put", failing_put)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert _prune(tiny, out_dir / "s.onnx", "--external-data") == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "constructing the pruned model of" in err and str(tiny) in err
    assert "disk on fire" in err
    assert list(out_dir.iterdir()) == []


def test_internal_failure_while_verifying_is_exit_3(tiny, tmp_path, monkeypatch, capsys):
    verify = importlib.import_module("construct.verify_files")

    def broken(*args, **kwargs):
        raise ValueError("session exploded")

    monkeypatch.setattr(verify, "compare_files", broken)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert _prune(tiny, out_dir / "s.onnx", "--external-data") == 3
    err = capsys.readouterr().err
    assert "verifying the model written for" in err and str(tiny) in err and "session exploded" in err
    assert list(out_dir.iterdir()) == []


def test_cannot_verify_here_is_said_plainly(tiny, tmp_path, capsys):
    out = tmp_path / "s.onnx"
    report = tmp_path / "r.json"
    code = _prune(tiny, out, "--external-data", "--verify-memory", "0.000001", "--report", str(report))
    assert code == 4
    assert "NOT verified" in capsys.readouterr().err
    result = json.loads(report.read_text())["result"]
    assert "verification" not in result and "available here" in result["unverified"]
    assert result["output"] == str(out) and out.exists()


def test_streamed_verification_can_fail(tiny, tmp_path):
    """The bounded check compares real outputs: the unzeroed original differs from the small model, and
    a wrong removal list (nothing zeroed) fails verification."""
    import frontends
    from construct.verify_files import compare_files, verify_streamed
    from zigraph.pipeline import BigOptions, load_model, prune

    out = tmp_path / "s.onnx"
    report = prune(load_model(str(tiny)), 0.5, out, big=BigOptions(external=True))
    assert report.result is not None and report.result.verification is not None
    assert report.result.verification.passed
    rep = compare_files(tiny, out, samples=2)
    assert not rep.passed and rep.max_rel > 1e-3
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    g = frontends.load(str(tiny))
    rep = verify_streamed(g.meta["model"], g.meta["base_dir"], tiny, out, [], scratch, samples=2)
    assert not rep.passed


@pytest.mark.parametrize("how", ["overrides", "copy"])
def test_both_ways_of_running_the_zeroed_model_verify(tiny, tmp_path, monkeypatch, how):
    """The zeroed full model as the input file with zeroed initializers given to onnxruntime, or (a
    shared weight sliced per use) as a zeroed copy written beside the output: both pass on a correct
    pruning, and the copy is removed afterwards."""
    verify = importlib.import_module("construct.verify_files")
    from zigraph.pipeline import BigOptions, load_model, prune

    calls = []
    real = verify._zeroed_overrides

    def spy(*args):
        calls.append(1)
        return real(*args) if how == "overrides" else None

    monkeypatch.setattr(verify, "_zeroed_overrides", spy)
    out = tmp_path / "o" / "s.onnx"
    report = prune(load_model(str(tiny)), 0.5, out, big=BigOptions(external=True))
    assert calls and report.result is not None and report.result.verification is not None
    assert report.result.verification.passed
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.onnx", "s.onnx.data"]


def test_verify_dim_shortens_the_check(tiny, tmp_path, monkeypatch):
    """``--verify-dim`` is the size of the symbolic batch and sequence dims the check feeds."""
    verify = importlib.import_module("construct.verify_files")

    seen = []
    real = verify.random_inputs

    def spy(model, rng, dim_default=2):
        feeds = real(model, rng, dim_default)
        seen.append(feeds["input_ids"].shape)
        return feeds

    monkeypatch.setattr(verify, "random_inputs", spy)
    assert _prune(tiny, tmp_path / "s.onnx", "--external-data", "--verify-dim", "5", "--samples", "1") == 0
    assert seen == [(5, 5)]


def test_data_writer_never_opens_an_existing_file(tmp_path):
    from construct.external_write import DataWriter

    (tmp_path / "d.data").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        DataWriter(tmp_path / "d.data", "d.data")
    os.symlink(tmp_path / "elsewhere", tmp_path / "l.data")
    with pytest.raises(OSError):
        DataWriter(tmp_path / "l.data", "l.data")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_meta_device_llama_is_analysed_and_cut_without_weights():
    """A LLaMA layer of the 7B shape on the ``meta`` device: traced, analysed and cut by ``to_torch``
    with no weight in memory (the cut module is still on ``meta``, with the smaller shapes)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import resource

    import construct
    import frontends
    import graphcore
    from graphcore.select import select_zigs

    cfg = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
        num_hidden_layers=1, vocab_size=32000, use_cache=False,
    )  # fmt: skip
    with torch.device("meta"):
        llama = transformers.LlamaForCausalLM(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    model = Logits(llama)
    params = sum(p.numel() for p in model.parameters())
    assert params > 4e8
    analysis = graphcore.analyze(frontends.load(model, (torch.zeros(1, 8, dtype=torch.long, device="meta"),)))
    assert analysis.num_zigs > 10000
    chosen = select_zigs(analysis, 0.5, np.ones(analysis.num_zigs), criterion="random", seed=0)
    small = construct.to_torch(model, analysis, chosen)
    assert all(p.device.type == "meta" for p in small.parameters())
    assert sum(p.numel() for p in small.parameters()) < 0.8 * params
    # 0.47e9 float32 weights would be 1.9 GB: the process never held them
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1.8 * 1024**2


def test_verify_command_checks_big_files_one_session_at_a_time(tiny, tmp_path, monkeypatch, capsys):
    """``zigraph verify`` on files past the threshold runs the bounded check (and can still fail)."""
    import construct.external_write as ew

    out, report = tmp_path / "s.onnx", tmp_path / "r.json"
    assert _prune(tiny, out, "--external-data", "--no-verify", "--report", str(report)) == 0
    monkeypatch.setattr(ew, "DEFAULT_THRESHOLD", 0)
    assert main(["verify", str(tiny), str(out), "--zero", str(report), "--json", "-", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["method"].startswith("one model at a time")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"removed": []}))
    assert main(["verify", str(tiny), str(out), "--zero", str(empty), "-q"]) == 1  # unzeroed: differs
