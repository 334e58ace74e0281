"""Shared fixtures: the bundled bars (trimmed for speed), a stub OpenAI server, an LLM config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from compiler.llm import LLMClient, LLMConfig
from compiler.stub_server import StubOpenAI
from feeds.files import read_bars
from tests.compiler._helpers import DATA


@pytest.fixture(scope="session")
def all_bars() -> pl.DataFrame:
    return read_bars(DATA)


@pytest.fixture(scope="session")
def bars(all_bars: pl.DataFrame) -> pl.DataFrame:
    return all_bars.head(3000)


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    with StubOpenAI() as s:
        yield s


@pytest.fixture
def client(stub: StubOpenAI, tmp_path: Path) -> Iterator[LLMClient]:
    c = LLMClient(
        LLMConfig(
            base_url=stub.base_url,
            model="stub-model",
            timeout_s=2.0,
            max_retries=2,
            backoff_s=0.5,
            log_path=str(tmp_path / "calls.sqlite"),
        ),
        sleep=lambda s: None,
    )
    yield c
    c.close()
