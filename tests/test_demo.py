"""The README's main job runs end to end (a short schedule; the full one is `zigraph demo`)."""

import pytest

pytest.importorskip("sklearn")


def test_demo_trains_prunes_constructs_and_verifies(capsys):
    from zigraph.demo import run_demo

    assert run_demo(quick=True) == 0
    out = capsys.readouterr().out
    assert "DHSPG, constructed" in out and "PASSED" in out
