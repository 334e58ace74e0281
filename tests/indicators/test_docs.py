"""docs/indicators.md is generated from the registry and must be up to date."""

from __future__ import annotations

from pathlib import Path

from indicators.docs import _BENCH_MARKER, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "indicators.md"


def test_docs_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split(_BENCH_MARKER, 1)[1].strip() if _BENCH_MARKER in text else ""
    assert text == render(table), (
        "regenerate: python -m indicators.docs docs/indicators.md > /tmp/x && mv /tmp/x docs/indicators.md"
    )
