"""Fixtures for strategy-kernel tests: the bundled example artifacts and sample bars."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from artifacts.graph import SignalGraph, check
from artifacts.io import load
from artifacts.schema import Artifact
from feeds.files import read_bars

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"


@pytest.fixture(scope="session")
def sample_bars() -> pl.DataFrame:
    return read_bars(SAMPLE)


@pytest.fixture(scope="session")
def rsi_artifact() -> tuple[Artifact, SignalGraph]:
    a = load(ROOT / "examples" / "rsi-reversion.yaml")
    return a, check(a)


@pytest.fixture(scope="session")
def sma_artifact() -> tuple[Artifact, SignalGraph]:
    a = load(ROOT / "examples" / "sma-cross.yaml")
    return a, check(a)
