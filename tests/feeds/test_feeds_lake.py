"""Parquet lake: per-year partitions, upsert semantics against a dict model, atomic writes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feeds.errors import LakeError, UnknownTimeframeError
from feeds.lake import CatalogEntry, Lake, symbol_key
from feeds.schema import BAR_SCHEMA
from feeds.synthetic import generate_bars

H = 3_600_000_000_000
Y2024 = 1_704_067_200_000_000_000
DEC31_2023_22H = Y2024 - 2 * H


def _bars(start_ns: int, n: int, seed: int = 0) -> pl.DataFrame:
    return generate_bars(seed=seed, start_ns=start_ns, n=n, timeframe="1h")


def test_symbol_keys() -> None:
    assert symbol_key("BTC/USDT") == "BTC-USDT"
    assert symbol_key("BTC/USDT:USDT") == "BTC-USDT_USDT"
    assert symbol_key("BTC-USDT") == "BTC-USDT"
    assert symbol_key("../etc") == "..-etc"  # a plain directory name, no traversal
    for bad in ["BTC USDT", "..", ".", "", "a\\b", "BTC\x00"]:
        with pytest.raises(LakeError, match="not path-safe"):
            symbol_key(bad)


def test_write_read_across_years_and_catalog(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    bars = _bars(DEC31_2023_22H, 5)
    result = lake.write("binance", "BTC/USDT", "1h", bars)
    assert (result.years, result.inserted, result.replaced) == ((2023, 2024), 5, 0)
    series = tmp_path / "binance" / "BTC-USDT" / "1h"
    assert sorted(p.name for p in series.iterdir()) == ["2023.parquet", "2024.parquet"]
    assert_frame_equal(lake.read("binance", "BTC/USDT", "1h"), bars)
    assert_frame_equal(lake.read("binance", "BTC-USDT", "1h", Y2024, Y2024 + 2 * H), bars[2:4])
    assert lake.read("binance", "BTC/USDT", "1h", end_ns=Y2024)["ts_ns"].to_list() == [
        DEC31_2023_22H,
        DEC31_2023_22H + H,
    ]
    assert lake.read("binance", "ETH/USDT", "1h").height == 0
    assert dict(lake.read("x", "y", "1h").schema) == dict(BAR_SCHEMA)
    lake.write("sim", "ETH/USDT", "1d", generate_bars(seed=1, start_ns=Y2024, n=3, timeframe="1d"))
    catalog = lake.catalog()
    assert [(e.venue, e.symbol, e.timeframe) for e in catalog] == [
        ("binance", "BTC-USDT", "1h"),
        ("sim", "ETH-USDT", "1d"),
    ]
    assert catalog[0] == CatalogEntry(
        venue="binance",
        symbol="BTC-USDT",
        timeframe="1h",
        first_ts_ns=DEC31_2023_22H,
        last_ts_ns=DEC31_2023_22H + 4 * H,
        n_bars=5,
        years=(2023, 2024),
        size_bytes=catalog[0].size_bytes,
    )
    assert catalog[0].size_bytes > 0


def test_upsert_touches_only_affected_years(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write("v", "S", "1h", _bars(DEC31_2023_22H, 5))
    old_2023 = lake.partition_path("v", "S", "1h", 2023)
    before = (old_2023.stat().st_ino, old_2023.stat().st_mtime_ns, old_2023.read_bytes())
    update = _bars(Y2024 + 2 * H, 3, seed=9)  # replaces the 02:00 bar, adds 03:00 and 04:00
    result = lake.write("v", "S", "1h", update)
    assert (result.years, result.inserted, result.replaced) == ((2024,), 2, 1)
    assert (old_2023.stat().st_ino, old_2023.stat().st_mtime_ns, old_2023.read_bytes()) == before
    stored = lake.read("v", "S", "1h")
    assert stored.height == 7
    assert_frame_equal(stored.tail(3), update)
    again = lake.write("v", "S", "1h", update)  # idempotent
    assert (again.inserted, again.replaced) == (0, 3)
    assert_frame_equal(lake.read("v", "S", "1h"), stored)


def test_append_refuses_overlap(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write("v", "S", "1h", _bars(Y2024, 3), mode="append")
    lake.write("v", "S", "1h", _bars(Y2024 + 3 * H, 2), mode="append")
    with pytest.raises(LakeError, match="append would overlap") as info:
        lake.write("v", "S", "1h", _bars(Y2024 + 4 * H, 2), mode="append")
    assert "upsert" in str(info.value)
    assert lake.read("v", "S", "1h").height == 5
    with pytest.raises(LakeError, match="write mode"):
        lake.write("v", "S", "1h", _bars(Y2024, 1), mode="merge")  # type: ignore[arg-type]


def test_bad_input_is_refused_and_nothing_written(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    bad = _bars(Y2024, 3).with_columns(pl.col("high") * 0.5)
    with pytest.raises(LakeError, match="refusing to store invalid bars") as info:
        lake.write("v", "S", "1h", bad)
    assert info.value.row == 0
    with pytest.raises(LakeError, match="not on the 1h grid"):
        lake.write("v", "S", "1h", _bars(Y2024 + 60, 3))
    with pytest.raises(UnknownTimeframeError):
        lake.write("v", "S", "1hour", _bars(Y2024, 3))
    with pytest.raises(LakeError, match="venue"):
        lake.write("../v", "S", "1h", _bars(Y2024, 3))
    assert not any(tmp_path.rglob("*.parquet"))
    assert lake.catalog() == []


def test_failed_write_leaves_old_partition_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path)
    lake.write("v", "S", "1h", _bars(Y2024, 3))
    path = lake.partition_path("v", "S", "1h", 2024)
    before = path.read_bytes()

    def crash(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write("v", "S", "1h", _bars(Y2024 + 3 * H, 3))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["2024.parquet"]


def test_corrupt_partition_is_reported(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write("v", "S", "1h", _bars(Y2024, 3))
    path = lake.partition_path("v", "S", "1h", 2024)
    path.write_bytes(path.read_bytes()[:-30])
    for action in (
        lambda: lake.read("v", "S", "1h"),
        lambda: lake.write("v", "S", "1h", _bars(Y2024, 1)),
        lake.catalog,
    ):
        with pytest.raises(LakeError, match="corrupt") as info:
            action()
        assert "2024.parquet" in str(info.value) and "delete" in str(info.value)
    path.unlink()
    pl.DataFrame({"ts_ns": [1]}).write_parquet(path)
    with pytest.raises(LakeError, match="not BAR_SCHEMA"):
        lake.read("v", "S", "1h")


@settings(max_examples=30)
@given(
    writes=st.lists(
        st.tuples(st.integers(-30, 30), st.integers(1, 40), st.integers(0, 5)),
        min_size=1,
        max_size=6,
    )
)
def test_upserts_match_a_dict_model(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, int, int]]
) -> None:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    model: dict[int, tuple[float, ...]] = {}
    for offset, n, seed in writes:
        chunk = _bars(Y2024 + offset * H, n, seed)
        result = lake.write("v", "S", "1h", chunk)
        new_keys = [t for t in chunk["ts_ns"].to_list() if t not in model]
        assert result.inserted == len(new_keys)
        assert result.replaced == n - len(new_keys)
        for row in chunk.iter_rows():
            model[row[0]] = row
    expected = pl.DataFrame(
        [model[t] for t in sorted(model)], schema=dict(BAR_SCHEMA), orient="row"
    )
    assert_frame_equal(lake.read("v", "S", "1h"), expected)
    (entry,) = lake.catalog()
    assert entry.n_bars == len(model)
