"""Generated reference docs must match the code that generates them."""

from __future__ import annotations

from pathlib import Path

from artifacts.docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_artifact_schema_doc_is_up_to_date() -> None:
    checked_in = (ROOT / "docs" / "artifact-schema.md").read_text()
    assert checked_in == render(), (
        "docs/artifact-schema.md is stale: run `python -m artifacts.docs > docs/artifact-schema.md`"
    )
