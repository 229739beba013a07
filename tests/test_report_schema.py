"""The published JSON schema is the one the code produces."""

from pathlib import Path

from graphcore.report import schema_json


def test_published_schema_is_current():
    published = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
    assert published.read_text() == schema_json(), "run: python scripts/write_schema.py"


def test_written_reports_follow_the_umask(tmp_path):
    """A report written through a temporary file was left 0600 (mkstemp's mode): other users of a
    shared folder could not read it."""
    import os
    import stat

    from graphcore.report import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
