"""The market-data contract: schemas, instruments, envelopes and timeframes."""

from __future__ import annotations

import msgspec
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.errors import FeedError, InstrumentError, UnknownTimeframeError
from feeds.schema import (
    BAR_COLUMNS,
    BAR_SCHEMA,
    BOOK_DELTA_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    QUOTE_SCHEMA,
    TIMEFRAMES,
    TRADE_SCHEMA,
    Instrument,
    UnstructuredItem,
    empty_frame,
    timeframe_to_ns,
)

ALL_SCHEMAS = [
    BAR_SCHEMA,
    TRADE_SCHEMA,
    QUOTE_SCHEMA,
    BOOK_DELTA_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
]


def test_bar_schema_is_exactly_the_canonical_columns() -> None:
    assert list(BAR_SCHEMA.items()) == [
        ("ts_ns", pl.Int64()),
        ("open", pl.Float64()),
        ("high", pl.Float64()),
        ("low", pl.Float64()),
        ("close", pl.Float64()),
        ("volume", pl.Float64()),
    ]
    assert BAR_COLUMNS == ("ts_ns", "open", "high", "low", "close", "volume")


@pytest.mark.parametrize("schema", ALL_SCHEMAS)
def test_every_schema_starts_with_int64_ts_ns_and_is_read_only(
    schema: dict[str, pl.DataType],
) -> None:
    assert next(iter(schema.items())) == ("ts_ns", pl.Int64())
    with pytest.raises(TypeError):
        schema["extra"] = pl.Int64()
    frame = empty_frame(schema)
    assert frame.height == 0
    assert dict(frame.schema) == dict(schema)


@pytest.mark.parametrize(
    ("tf", "ns"),
    [
        ("1s", 10**9),
        ("1m", 60 * 10**9),
        ("5m", 300 * 10**9),
        ("15m", 900 * 10**9),
        ("1h", 3600 * 10**9),
        ("4h", 4 * 3600 * 10**9),
        ("1d", 86400 * 10**9),
        ("1w", 7 * 86400 * 10**9),
    ],
)
def test_timeframe_to_ns_known(tf: str, ns: int) -> None:
    assert timeframe_to_ns(tf) == ns


@pytest.mark.parametrize("tf", TIMEFRAMES)
def test_listed_timeframes_all_parse(tf: str) -> None:
    assert timeframe_to_ns(tf) > 0


@pytest.mark.parametrize(
    ("tf", "fragment"),
    [
        ("1M", "months"),
        ("1H", "'1h'"),
        ("0m", "positive integer"),
        ("m", "positive integer"),
        ("01m", "positive integer"),
        ("1y", "positive integer"),
        ("", "positive integer"),
        (" 1m", "positive integer"),
    ],
)
def test_timeframe_to_ns_unknown_is_a_clear_error(tf: str, fragment: str) -> None:
    with pytest.raises(UnknownTimeframeError) as info:
        timeframe_to_ns(tf)
    assert repr(tf) in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FeedError)


@given(st.integers(1, 10_000), st.sampled_from("smhdw"))
def test_timeframe_is_linear_in_its_count(n: int, unit: str) -> None:
    assert timeframe_to_ns(f"{n}{unit}") == n * timeframe_to_ns(f"1{unit}")


def _instrument(**over: str) -> Instrument:
    fields = {
        "venue": "binance",
        "symbol": "BTC/USDT",
        "kind": "perp",
        "price_increment": "0.1",
        "size_increment": "0.001",
        "base_currency": "BTC",
        "quote_currency": "USDT",
    } | over
    return Instrument(**fields)  # type: ignore[arg-type]


def test_instrument_round_trips_and_keeps_exact_increments() -> None:
    inst = _instrument()
    data = msgspec.json.encode(inst)
    assert msgspec.json.decode(data, type=Instrument) == inst
    assert str(inst.price_increment_decimal) == "0.1"
    assert str(inst.size_increment_decimal) == "0.001"


@pytest.mark.parametrize("bad", ["0", "-0.1", "abc", "NaN", "Infinity", ""])
def test_instrument_rejects_bad_increments(bad: str) -> None:
    with pytest.raises(InstrumentError, match="price_increment"):
        _instrument(price_increment=bad)
    raw = msgspec.json.encode(msgspec.structs.asdict(_instrument()) | {"size_increment": bad})
    with pytest.raises(msgspec.ValidationError, match="size_increment"):
        msgspec.json.decode(raw, type=Instrument)


def test_instrument_rejects_unknown_kind_and_fields() -> None:
    good = msgspec.structs.asdict(_instrument())
    with pytest.raises(msgspec.ValidationError, match="kind"):
        msgspec.json.decode(msgspec.json.encode(good | {"kind": "option"}), type=Instrument)
    with pytest.raises(msgspec.ValidationError, match="tick"):
        msgspec.json.decode(msgspec.json.encode(good | {"tick": 1}), type=Instrument)


def test_unstructured_item_round_trip_and_defaults() -> None:
    item = UnstructuredItem(
        source="rss:example",
        ts_ns=1_704_067_200_000_000_000,
        text="BTC breaks out",
        url="https://example.invalid/a",
        symbols=("BTC/USDT",),
        metadata={"author": "x", "score": 3},
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(item), type=UnstructuredItem) == item
    bare = UnstructuredItem(source="s", ts_ns=0, text="t")
    assert bare.url is None and bare.symbols == () and bare.metadata == {}
    with pytest.raises(msgspec.ValidationError, match="ts_ns"):
        msgspec.json.decode(b'{"source":"s","ts_ns":"x","text":"t"}', type=UnstructuredItem)
