"""Bar files: strict reading rules, clear errors that name file/row/column, exact round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feeds.errors import (
    ColumnError,
    DuplicateTimestampError,
    EmptyDataError,
    FeedError,
    FeedFileError,
    NonMonotonicError,
    OhlcError,
    TimestampError,
)
from feeds.files import read_bars, write_bars
from feeds.schema import BAR_SCHEMA

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
H = 3_600_000_000_000
HEADER = "ts_ns,open,high,low,close,volume\n"


def _bars(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_ns": [T0 + i * H for i in range(n)],
            "open": [100.0 + i for i in range(n)],
            "high": [102.0 + i for i in range(n)],
            "low": [99.0 + i for i in range(n)],
            "close": [101.0 + i for i in range(n)],
            "volume": [10.0 * (i + 1) for i in range(n)],
        },
        schema=dict(BAR_SCHEMA),
    )


def _csv(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@st.composite
def bar_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 30))
    step = draw(st.sampled_from([1, 10**9, 60 * 10**9, H]))
    t0 = draw(st.integers(0, 2 * T0))
    price = st.floats(1e-6, 1e7, allow_nan=False, allow_infinity=False)
    rows = []
    for i in range(n):
        o, c = draw(price), draw(price)
        up = draw(st.floats(0, 1e3, allow_nan=False))
        down = draw(st.floats(0, 0.999, allow_nan=False))
        rows.append(
            (
                t0 + i * step,
                o,
                max(o, c) + up,
                min(o, c) * (1 - down),
                c,
                draw(st.floats(0, 1e9, allow_nan=False)),
            )
        )
    return pl.DataFrame(rows, schema=dict(BAR_SCHEMA), orient="row")


@settings(max_examples=40)
@given(bars=bar_frames(), suffix=st.sampled_from([".csv", ".parquet"]), iso=st.booleans())
def test_write_then_read_is_exact(
    tmp_path_factory: pytest.TempPathFactory, bars: pl.DataFrame, suffix: str, iso: bool
) -> None:
    path = tmp_path_factory.mktemp("rt") / f"bars{suffix}"
    write_bars(bars, path, timestamp_format="iso" if iso else "ts_ns")
    back = read_bars(path)
    assert_frame_equal(back, bars)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_iso_csv_is_readable_text(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    write_bars(_bars(2), path, timestamp_format="iso")
    assert path.read_text().splitlines() == [
        "timestamp,open,high,low,close,volume",
        "2024-01-01T00:00:00Z,100.0,102.0,99.0,101.0,10.0",
        "2024-01-01T01:00:00Z,101.0,103.0,100.0,102.0,20.0",
    ]


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"],
        ["2024-01-01T00:00:00+00:00", "2024-01-01T03:00:00+02:00"],
        ["2024-01-01 00:00:00", "2024-01-01 01:00:00"],
        ["2024-01-01T00:00:00.000Z", "2024-01-01T01:00:00.000Z"],
        ["1704067200", "1704070800"],
        ["1704067200000", "1704070800000"],
        ["1704067200000000", "1704070800000000"],
        ["1704067200000000000", "1704070800000000000"],
    ],
)
@pytest.mark.parametrize("column", ["timestamp", "Datetime", "date", " TIME "])
def test_time_column_formats(tmp_path: Path, stamps: list[str], column: str) -> None:
    text = f"{column},Open,High,Low,Close,Volume,Extra\n"
    text += "".join(f"{s},100,102,99,101,10,x\n" for s in stamps)
    bars = read_bars(_csv(tmp_path, text))
    assert bars["ts_ns"].to_list() == [T0, T0 + H]
    assert dict(bars.schema) == dict(BAR_SCHEMA)


def test_date_only_strings_are_midnight_utc(tmp_path: Path) -> None:
    text = "date,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,0\n2024-01-02,1,2,0.5,1.5,0\n"
    assert read_bars(_csv(tmp_path, text))["ts_ns"].to_list() == [T0, T0 + 24 * H]


def test_ts_unit_override_and_contradiction(tmp_path: Path) -> None:
    text = "timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,0\n"
    path = _csv(tmp_path, text)
    assert read_bars(path)["ts_ns"][0] == T0
    assert read_bars(path, ts_unit="us")["ts_ns"][0] == T0 // 1000
    ts_path = _csv(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,0\n", "ns.csv")
    with pytest.raises(TimestampError, match="contradicts"):
        read_bars(ts_path, ts_unit="ms")


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin"])
def test_parquet_datetime_columns(tmp_path: Path, tz: str | None) -> None:
    wall = [datetime(2024, 1, 1, h) for h in (0, 1)]  # noqa: DTZ001 - naive on purpose
    frame = (
        _bars(2)
        .drop("ts_ns")
        .with_columns(
            pl.Series("Timestamp", wall, dtype=pl.Datetime("us")).dt.replace_time_zone(tz)
        )
    )
    path = tmp_path / "b.parquet"
    frame.write_parquet(path)
    expected = [int(w.replace(tzinfo=UTC).timestamp()) * 10**9 for w in wall]
    if tz == "Europe/Berlin":  # wall clock interpreted in Berlin (UTC+1 in January)
        expected = [t - H for t in expected]
    assert read_bars(path)["ts_ns"].to_list() == expected


def test_parquet_date_and_integer_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    frame = _bars(2).drop("ts_ns")
    frame.with_columns(
        pl.Series("date", [datetime(2024, 1, 1).date(), datetime(2024, 1, 2).date()])  # noqa: DTZ001
    ).write_parquet(path)
    assert read_bars(path)["ts_ns"].to_list() == [T0, T0 + 24 * H]
    frame.with_columns(pl.Series("time", [1_704_067_200, 1_704_070_800])).write_parquet(path)
    assert read_bars(path)["ts_ns"].to_list() == [T0, T0 + H]
    frame.with_columns(pl.Series("time", [1.7e9, 1.8e9])).write_parquet(path)
    with pytest.raises(TimestampError, match="float epochs"):
        read_bars(path)


def test_start_end_are_half_open(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    write_bars(_bars(5), path)
    got = read_bars(path, start_ns=T0 + H, end_ns=T0 + 3 * H)
    assert got["ts_ns"].to_list() == [T0 + H, T0 + 2 * H]
    assert read_bars(path, start_ns=T0 + 4 * H)["ts_ns"].to_list() == [T0 + 4 * H]
    assert read_bars(path, end_ns=T0 + 1)["ts_ns"].to_list() == [T0]
    with pytest.raises(
        EmptyDataError, match=r"covers 2024-01-01T00:00:00Z \.\. 2024-01-01T04:00:00Z"
    ):
        read_bars(path, start_ns=T0 + 5 * H)
    with pytest.raises(FeedError, match="not before end"):
        read_bars(path, start_ns=T0, end_ns=T0)


def test_keep_last_policy_keeps_the_last_duplicate(tmp_path: Path) -> None:
    text = (
        HEADER
        + f"{T0},1,2,0.5,1.5,1\n{T0},1,2,0.5,1.5,2\n{T0},1,2,0.5,1.5,3\n{T0 + H},1,2,0.5,1.5,4\n"
    )
    bars = read_bars(_csv(tmp_path, text), on_duplicates="keep_last")
    assert bars["volume"].to_list() == [3.0, 4.0]
    with pytest.raises(DuplicateTimestampError) as info:
        read_bars(_csv(tmp_path, text))
    assert info.value.row == 1
    assert "line 3" in str(info.value) and "keep_last" in str(info.value)


ROW = "{t},100,102,99,101,10\n"


@pytest.mark.parametrize(
    ("body", "error", "row", "column", "fragment"),
    [
        (ROW.format(t=T0) + ROW.format(t=T0 - H), NonMonotonicError, 1, None, "backwards"),
        (ROW.format(t=T0) + "x,100,102,99,101,10\n", TimestampError, 1, "ts_ns", "'x'"),
        (ROW.format(t=T0) + f"{T0 + H},100,102,99,nan,10\n", OhlcError, 1, "close", "nan"),
        (ROW.format(t=T0) + f"{T0 + H},-1,102,99,101,10\n", OhlcError, 1, "open", "> 0"),
        (ROW.format(t=T0) + f"{T0 + H},100,102,99,101,-5\n", OhlcError, 1, "volume", ">= 0"),
        (ROW.format(t=T0) + f"{T0 + H},100,102,0,101,1\n", OhlcError, 1, "low", "> 0"),
        (ROW.format(t=T0) + f"{T0 + H},100,inf,99,101,1\n", OhlcError, 1, "high", "inf"),
        (ROW.format(t=T0) + f"{T0 + H},100,100.5,99,101,1\n", OhlcError, 1, None, "high >="),
        (ROW.format(t=T0) + f"{T0 + H},100,102,100.5,101,1\n", OhlcError, 1, None, "low <="),
        (ROW.format(t=T0) + f"{T0 + H},100,102,99,,1\n", OhlcError, 1, "close", "missing"),
        (ROW.format(t=T0) + ",100,102,99,101,1\n", TimestampError, 1, "ts_ns", "missing"),
        (ROW.format(t=T0) + f"{T0 + H},100,1 02,99,101,1\n", OhlcError, 1, "high", "not a number"),
    ],
)
def test_bad_rows_are_named(
    tmp_path: Path,
    body: str,
    error: type[FeedError],
    row: int,
    column: str | None,
    fragment: str,
) -> None:
    path = _csv(tmp_path, HEADER + body)
    with pytest.raises(error) as info:
        read_bars(path)
    assert info.value.row == row
    assert info.value.column == column
    message = str(info.value)
    assert str(path) in message and f"row {row} (line {row + 2})" in message
    assert fragment in message and "fix:" in message


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("ts,o,h,l,c\n1,2,3,4,5\n", ColumnError, "missing column 'open' (have: ts, o, h, l, c)"),
        ("x,open,high,low,close,volume\n1,2,3,1,2,1\n", ColumnError, "missing a time column"),
        ("date,time,open,high,low,close,volume\n", ColumnError, "ambiguous time columns"),
        ("ts_ns,open,OPEN,high,low,close,volume\n", ColumnError, "both mean 'open'"),
        ("ts_ns,open,high,low,close\n1,1,1,1,1\n", ColumnError, "missing column 'volume'"),
        ("ts_ns;open;high;low;close;volume\n1;1;2;0.5;1;1\n", ColumnError, "separated by ';'"),
        ("ts_ns,open,high,low,close,volume\n1,1,2,0.5,1,1,9\n", FeedFileError, "cannot read csv"),
        (HEADER, EmptyDataError, "no rows"),
        ("", EmptyDataError, "empty"),
        (
            "timestamp,open,high,low,close,volume\n1704067200,1,2,0.5,1,1\n1704067200001,1,2,0.5,1,1\n",
            TimestampError,
            "mix units",
        ),
        (
            "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1,1\n1704067200,1,2,0.5,1,1\n",
            TimestampError,
            "mix integer epochs",
        ),
        (
            "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1,1\n01/02/2024,1,2,0.5,1,1\n",
            TimestampError,
            "'01/02/2024'",
        ),
        (
            "timestamp,open,high,low,close,volume\n99999999999999999999,1,2,0.5,1,1\n",
            TimestampError,
            "64-bit",
        ),
        (
            "timestamp,open,high,low,close,volume\n9999999999,1,2,0.5,1,1\n",
            TimestampError,
            "int64 nanoseconds",
        ),
    ],
)
def test_bad_files_are_explained(
    tmp_path: Path, text: str, error: type[FeedError], fragment: str
) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(error) as info:
        read_bars(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedFileError, match="file not found"):
        read_bars(tmp_path / "nope.csv")
    with pytest.raises(FeedFileError, match="directory"):
        read_bars(tmp_path)
    with pytest.raises(FeedFileError, match=r"unsupported file type '\.txt'"):
        read_bars(_csv(tmp_path, HEADER, "b.txt"))
    corrupt = tmp_path / "c.parquet"
    write_bars(_bars(50), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:-20])
    with pytest.raises(FeedFileError, match="cannot read parquet"):
        read_bars(corrupt)


def test_write_bars_refuses_bad_bars_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    write_bars(_bars(3), path)
    before = path.read_bytes()
    bad = _bars(3).with_columns(pl.col("high") - 10)
    with pytest.raises(OhlcError):
        write_bars(bad, path)
    with pytest.raises(FeedFileError, match="unsupported"):
        write_bars(_bars(3), tmp_path / "b.json")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet"]
