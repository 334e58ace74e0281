"""Sources: pull and push agree, the registry validates, replay paces against a clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feeds.errors import FeedFileError, SourceError, UnknownTimeframeError
from feeds.files import write_bars
from feeds.lake import Lake
from feeds.schema import BAR_SCHEMA, Bar
from feeds.sources import (
    MonotonicClock,
    ReplaySource,
    Source,
    SyntheticSource,
    VirtualClock,
    create_source,
    iter_bars,
    source_names,
)
from feeds.synthetic import generate_bars

T0 = 1_704_067_200_000_000_000
H = 3_600_000_000_000
BARS = generate_bars(seed=21, start_ns=T0, n=48, timeframe="1h")


async def _collect(stream: object) -> list[Bar]:
    return [bar async for bar in stream]  # type: ignore[attr-defined]


def _frame(bars: list[Bar]) -> pl.DataFrame:
    rows = [(b.ts_ns, b.open, b.high, b.low, b.close, b.volume) for b in bars]
    return pl.DataFrame(rows, schema=dict(BAR_SCHEMA), orient="row")


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Source]:
    write_bars(BARS, tmp_path / "b.csv")
    write_bars(BARS, tmp_path / "b.parquet")
    Lake(tmp_path / "lake").write("sim", "BTC/USDT", "1h", BARS)
    return {
        "csv": create_source("csv", path=tmp_path / "b.csv"),
        "parquet": create_source("parquet", path=str(tmp_path / "b.parquet")),
        "synthetic": create_source("synthetic", seed=21, start_ns=T0, n=48, timeframe="1h"),
        "lake": create_source(
            "lake", root=tmp_path / "lake", venue="sim", symbol="BTC/USDT", timeframe="1h"
        ),
        "replay": create_source("replay", path=tmp_path / "b.csv", timeframe="1h"),
    }


def test_registry_names() -> None:
    assert source_names() == ("ccxt", "csv", "lake", "parquet", "replay", "synthetic")


@pytest.mark.parametrize("name", ["csv", "parquet", "synthetic", "lake", "replay"])
def test_pull_and_push_agree_for_every_source(sources: dict[str, Source], name: str) -> None:
    source = sources[name]
    assert isinstance(source, Source)
    assert_frame_equal(source.fetch(), BARS)
    window = source.fetch(T0 + 5 * H, T0 + 9 * H)
    assert window["ts_ns"].to_list() == [T0 + i * H for i in range(5, 9)]
    assert_frame_equal(_frame(asyncio.run(_collect(source))), BARS)
    pushed = asyncio.run(_collect(source.stream(T0 + 5 * H, T0 + 9 * H)))
    assert_frame_equal(_frame(pushed), window)
    assert source.fetch(T0 + 100 * H).height == 0


def test_iter_bars_round_trip() -> None:
    assert_frame_equal(_frame(list(iter_bars(BARS))), BARS)


def test_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown source 'websocket'") as info:
        create_source("websocket")
    assert "ccxt, csv, lake, parquet, replay, synthetic" in str(info.value)
    with pytest.raises(SourceError, match="bad parameters for source 'synthetic'") as info:
        create_source("synthetic", seed=1)
    assert "timeframe" in str(info.value)
    with pytest.raises(SourceError, match="bad parameters"):
        create_source("csv", path="x.csv", colour="red")
    with pytest.raises(SourceError, match=r"needs a \.csv file"):
        create_source("csv", path="x.parquet")
    with pytest.raises(SourceError, match="exactly one"):
        create_source("replay", timeframe="1h")
    with pytest.raises(UnknownTimeframeError):
        create_source("synthetic", seed=1, start_ns=T0, n=3, timeframe="1hr")
    missing = create_source("csv", path=tmp_path / "missing.csv")
    with pytest.raises(FeedFileError, match="file not found"):
        missing.fetch()


def test_replay_paces_bars_at_their_close_times() -> None:
    clock = VirtualClock(start_ns=1_000)
    replay = ReplaySource(
        SyntheticSource(seed=1, start_ns=T0, n=6, timeframe="1h"),
        timeframe="1h",
        speed=3600.0,  # one hour of data per second of clock
        clock=clock,
    )
    seen: list[tuple[int, int]] = []

    async def run() -> None:
        async for bar in replay:
            seen.append((bar.ts_ns, clock.now_ns()))

    asyncio.run(run())
    assert seen == [(T0 + i * H, 1_000 + i * 1_000_000_000) for i in range(6)]


def test_replay_max_speed_never_touches_the_clock() -> None:
    clock = VirtualClock(start_ns=5)
    inner = SyntheticSource(seed=1, start_ns=T0, n=4, timeframe="1h")
    replay = ReplaySource(inner, timeframe="1h", clock=clock)
    bars = asyncio.run(_collect(replay))
    assert len(bars) == 4 and clock.now_ns() == 5


def test_replay_real_clock_lower_bound() -> None:
    replay = create_source(
        "replay",
        source=SyntheticSource(seed=1, start_ns=T0, n=3, timeframe="1h"),
        timeframe="1h",
        speed=3600.0 * 100,  # 10 ms per bar
        clock=MonotonicClock(),
    )
    clock = MonotonicClock()
    began = clock.now_ns()
    assert len(asyncio.run(_collect(replay))) == 3
    assert clock.now_ns() - began >= 20_000_000


def test_replay_argument_errors() -> None:
    inner = SyntheticSource(seed=1, start_ns=T0, n=3, timeframe="1h")
    with pytest.raises(SourceError, match="speed must be > 0"):
        ReplaySource(inner, timeframe="1h", speed=0.0, clock=VirtualClock())
    with pytest.raises(SourceError, match="needs a clock"):
        ReplaySource(inner, timeframe="1h", speed=2.0)
