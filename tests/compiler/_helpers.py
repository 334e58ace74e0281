"""Paths and fixture loaders shared by the compiler tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"
DRAWINGS = ROOT / "examples" / "drawings"
FIXTURES = Path(__file__).parent / "fixtures"


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())
