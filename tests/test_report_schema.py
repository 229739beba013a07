"""The published JSON schema is the one the code produces."""

from pathlib import Path

from graphcore.report import schema_json


def test_published_schema_is_current():
    published = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
    assert published.read_text() == schema_json(), "run: python scripts/write_schema.py"
