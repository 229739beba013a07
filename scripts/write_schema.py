"""Regenerate docs/report.schema.json from the pydantic report model."""

from pathlib import Path

from graphcore.report import schema_json

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
    out.write_text(schema_json())
    print(f"wrote {out}")
