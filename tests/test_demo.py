"""The README's main job runs end to end (a short schedule; the full one is `zigraph demo`)."""

import pytest

pytest.importorskip("sklearn")


def test_demo_trains_prunes_constructs_and_verifies(capsys):
    from zigraph.demo import run_demo

    assert run_demo(quick=True) == 0
    out = capsys.readouterr().out
    assert "DHSPG, constructed" in out and "PASSED" in out


def test_a_missing_verification_report_fails_the_demo(monkeypatch, capsys):
    # An export that was never compared proves nothing: the demo must say so and exit non-zero, not
    # print PASSED. Training and the latency runs are skipped here; only the verdict is under test.
    import construct
    from zigraph import demo

    monkeypatch.setattr(demo, "_train", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, "_onnx_stats", lambda *args, **kwargs: (0, 0.0))
    monkeypatch.setattr(construct, "to_onnx", lambda *args, **kwargs: None)
    assert demo.run_demo(quick=True) == 1
    out = capsys.readouterr().out
    assert "FAILED: no verification report" in out and "PASSED" not in out


@pytest.mark.slow
def test_erase_demo_trains_with_h2spg_erases_blocks_and_verifies(capsys):
    import re

    from zigraph.demo import run_demo

    assert run_demo(quick=True, mode="erase") == 0
    out = capsys.readouterr().out
    assert "H2SPG, constructed" in out and "PASSED" in out
    erased = re.search(r"H2SPG erased (\d+) of (\d+) erasable structures", out)
    assert erased and int(erased.group(1)) >= 1  # blocks are really gone, not just zeroed
    blocks = [int(line.split()[-2]) for line in out.splitlines() if line.startswith(("dense", "H2SPG, c"))]
    assert blocks[1] == blocks[0] - int(erased.group(1))


def test_the_erase_demo_fails_when_the_export_is_not_verified(monkeypatch, capsys):
    import construct
    from zigraph import demo

    monkeypatch.setattr(demo, "_train", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, "_onnx_stats", lambda *args, **kwargs: (0, 0.0))
    monkeypatch.setattr(construct, "to_onnx", lambda *args, **kwargs: None)
    assert demo.run_demo(quick=True, mode="erase") == 1
    out = capsys.readouterr().out
    assert "FAILED: no verification report" in out and "PASSED" not in out
