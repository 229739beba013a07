"""The CLI on torch models given as package.module:factory."""

import json

from zigraph.cli import main


def test_prune_a_torch_factory_names_torch_parameters(tmp_path, capsys):
    rep = tmp_path / "r.json"
    argv = ["prune", "tests.factories:small_cnn", "--input-shape", "1,3,8,8", "--sparsity", "0.5",
            "-o", str(tmp_path / "s.onnx"), "--report", str(rep)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(rep.read_text())
    assert report["result"]["verification"]["passed"]
    names = {r["param"] for r in report["removed"]}
    assert names & {"conv1.weight", "conv2.weight", "fc.weight", "bn1.weight"}


def test_analyze_a_torch_factory(capsys):
    assert main(["analyze", "tests.factories:small_cnn", "--input-shape", "1,3,8,8"]) == 0
    assert "conv1.weight" in capsys.readouterr().out


def test_bad_factories_exit_2_with_one_line(capsys):
    for argv in (
        ["analyze", "tests.factories:nope", "--input-shape", "1,3,8,8"],
        ["analyze", "tests.factories:not_a_module", "--input-shape", "1,3,8,8"],
        ["analyze", "no_such_pkg.mod:f", "--input-shape", "1,3,8,8"],
        ["analyze", "tests.factories:small_cnn"],
        ["analyze", "tests.factories:small_cnn", "--input-shape", "1,5,8,8"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zigraph: error:"), (argv, err)
