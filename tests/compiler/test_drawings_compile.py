"""Offline drawings -> artifact: valid artifacts, direction sanity, warnings surfaced, determinism."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import check
from artifacts.io import content_hash, dumps, loads
from artifacts.schema import TrendLineNode
from compiler.drawings_compile import compile_drawings, compile_layout
from compiler.errors import DrawingCompileError, DrawingError
from compiler.tradingview import read_layout
from strategy_kernel.backtest import run_backtest
from tests.compiler._helpers import DRAWINGS


def _pos(
    tool: str, entry: float, stop: float, target: float, t1: int | None = None
) -> dict[str, Any]:
    pts = [{"time_t": 1_717_200_000, "price": entry}]
    if t1 is not None:
        pts.append({"time_t": t1, "price": entry})
    return {
        "type": tool,
        "id": "p",
        "state": {"stopPrice": stop, "targetPrice": target},
        "points": pts,
    }


def test_long_position_layout_compiles_to_a_checked_artifact(bars: pl.DataFrame) -> None:
    r = compile_layout(read_layout(DRAWINGS / "long-position-layout.json"), "BTC/USDT", "1h")
    a = r.artifact
    check(a)
    assert a.entry.side == "long" and a.entry.when == "entry_4"
    assert a.exit.stop_loss is not None and a.exit.stop_loss.pct == pytest.approx(
        1500 / 52000 * 100
    )
    assert a.exit.take_profit[0].r == pytest.approx(2.0)
    assert a.exit.time_exit is not None and a.exit.time_exit.count == 72
    kinds = {k: n.kind for k, n in a.nodes.items()}
    assert kinds == {
        "level_0": "drawing_level",
        "zone_1": "zone",
        "fib_2_0": "fib_level",
        "fib_2_0_382": "fib_level",
        "fib_2_0_618": "fib_level",  # the hidden 0.5 level is not there
        "fib_2_1": "fib_level",
        "trend_3": "trend_line",
        "entry_4": "drawing_level",
    }
    trend = a.nodes["trend_3"]
    assert isinstance(trend, TrendLineNode) and trend.extend == "right"
    assert (trend.p1.price, trend.p2.price) == (40000.0, 46000.0)
    assert [w for w in r.warnings if "LineToolCallout" in w] == r.warnings
    assert a.provenance.notes is not None and "LineToolCallout" in a.provenance.notes
    assert r.node_drawings["zone_1"].endswith("sources[3]")
    # the YAML round-trips and the backtest runs
    assert content_hash(loads(dumps(a))) == content_hash(a)
    assert run_backtest(a, check(a), bars).metrics.trades >= 0


def test_short_and_levels_examples(bars: pl.DataFrame) -> None:
    short = compile_layout(
        read_layout(DRAWINGS / "short-position-saved.json"), "BTC/USDT", "1h"
    ).artifact
    assert short.entry.side == "short"
    lo, hi = short.nodes["channel_2_lo"], short.nodes["channel_2_hi"]
    assert isinstance(lo, TrendLineNode) and isinstance(hi, TrendLineNode)
    assert (lo.mode, hi.mode) == ("above", "below")
    assert hi.p1.price - lo.p1.price == pytest.approx(3000.0)
    levels = compile_drawings(
        read_layout(DRAWINGS / "levels-only.json"), "BTC/USDT", "1h", side="long"
    )
    assert levels.entry.when == "entry_any" and levels.exit.stop_loss is not None
    ray = levels.nodes["level_1"]  # a horizontal ray: a flat line from its anchor on
    assert isinstance(ray, TrendLineNode) and ray.p1.price == ray.p2.price == 55000.0
    assert ray.p1.ts_ns() == 1_719_792_000 * 10**9 and ray.extend == "right"
    assert run_backtest(levels, check(levels), bars).metrics.trades > 0


@pytest.mark.parametrize(
    ("tool", "flags", "extend"),
    [
        ("LineToolTrendLine", {}, "right"),
        ("LineToolTrendLine", {"extendRight": False, "extendLeft": False}, "none"),
        ("LineToolTrendLine", {"extendLeft": True}, "both"),
        ("LineToolRay", {"extendRight": False}, "right"),
        ("LineToolExtended", {}, "both"),
    ],
)
def test_trend_line_extension(tool: str, flags: dict[str, bool], extend: str) -> None:
    src = {
        "type": tool,
        "state": flags,
        "points": [{"time_t": 200, "price": 2.0}, {"time_t": 100, "price": 1.0}],
    }
    a = compile_drawings([src], "BTC/USDT", "1h", side="long")
    line = a.nodes["trend_0"]
    assert isinstance(line, TrendLineNode) and line.extend == extend
    assert line.p1.price == 1.0  # points are put in time order


def test_degenerate_drawings_are_errors() -> None:
    vertical = {
        "type": "LineToolTrendLine",
        "points": [{"time_t": 5, "price": 1.0}, {"time_t": 5, "price": 2.0}],
    }
    with pytest.raises(DrawingCompileError, match=r"\$\[0\].*vertical"):
        compile_drawings([vertical], "BTC/USDT", "1h", side="long")
    flat = {
        "type": "LineToolRectangle",
        "points": [{"time_t": 5, "price": 1.0}, {"time_t": 6, "price": 1.0}],
    }
    with pytest.raises(DrawingCompileError, match="no height"):
        compile_drawings([flat], "BTC/USDT", "1h", side="long")
    timeless = {"type": "LineToolTrendLine", "points": [{"price": 1.0}, {"price": 2.0}]}
    with pytest.raises(DrawingCompileError, match="needs times"):
        compile_drawings([timeless], "BTC/USDT", "1h", side="long")


def test_deterministic_output() -> None:
    text = (DRAWINGS / "long-position-layout.json").read_text()
    a = compile_drawings(text, "BTC/USDT", "1h")
    b = compile_drawings(text, "BTC/USDT", "1h")
    assert dumps(a) == dumps(b)


@pytest.mark.parametrize(
    ("src", "words"),
    [
        (_pos("LineToolRiskRewardLong", 100, 110, 120), "stop < entry < target"),
        (_pos("LineToolRiskRewardShort", 100, 90, 80), "target < entry < stop"),
    ],
)
def test_direction_sanity(src: dict[str, Any], words: str) -> None:
    with pytest.raises(DrawingCompileError, match=words) as err:
        compile_drawings([src], "BTC/USDT", "1h", source="x.json")
    assert "$[0]" in str(err.value)


def test_side_conflict_and_missing_side_and_empty() -> None:
    with pytest.raises(DrawingCompileError, match="side 'short' was asked"):
        compile_drawings(
            [_pos("LineToolRiskRewardLong", 100, 90, 120)], "BTC/USDT", "1h", side="short"
        )
    hline = {"type": "LineToolHorzLine", "points": [{"time_t": 1, "price": 100.0}]}
    with pytest.raises(DrawingCompileError, match="pass side"):
        compile_drawings([hline], "BTC/USDT", "1h")
    with pytest.raises(DrawingCompileError, match=r"nothing to compile.*LineToolNote"):
        compile_drawings([{"type": "LineToolNote", "points": []}], "BTC/USDT", "1h", side="long")
    with pytest.raises(DrawingCompileError, match="timeframe"):
        compile_drawings([hline], "BTC/USDT", "1M", side="long")
    with pytest.raises(DrawingError):
        compile_drawings("[{]", "BTC/USDT", "1h")


def test_latest_position_wins_and_others_are_reported() -> None:
    early = _pos("LineToolRiskRewardLong", 100, 90, 120)
    late = _pos("LineToolRiskRewardShort", 100, 110, 80)
    late["points"][0]["time_t"] += 3600
    r = compile_layout([early, late], "BTC/USDT", "1h")
    assert r.artifact.entry.side == "short"
    assert any("$[0]" in w and "ignored" in w for w in r.warnings)


def test_position_horizon_becomes_time_exit_in_bars() -> None:
    src = _pos("LineToolRiskRewardLong", 100, 90, 120, t1=1_717_200_000 + 4 * 3600 + 1)
    a = compile_drawings([src], "ETH/USDT", "1h")
    assert a.exit.time_exit is not None and a.exit.time_exit.count == 5
    assert a.name == "tv-eth-usdt-1h"


_price = st.floats(0.5, 1e6) | st.integers(-5, 5) | st.just("1e3")
_point = st.fixed_dictionaries(
    {"time_t": st.integers(0, 2_000_000_000) | st.none(), "price": _price}
)
_state = st.fixed_dictionaries(
    {},
    optional={
        "stopLevel": st.integers(-10, 10**6),
        "profitLevel": st.integers(-10, 10**6),
        "extendLeft": st.booleans(),
        "level1": st.fixed_dictionaries({"coeff": st.floats(-3, 6), "visible": st.booleans()}),
    },
)
_drawing = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "LineToolHorzLine",
                "LineToolHorzRay",
                "LineToolTrendLine",
                "LineToolRectangle",
                "LineToolParallelChannel",
                "LineToolFibRetracement",
                "LineToolRiskRewardLong",
                "LineToolRiskRewardShort",
                "LineToolBrush",
            ]
        ),
        "state": _state,
        "points": st.lists(_point, max_size=4),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_drawing, max_size=5), st.sampled_from([None, "long", "short"]))
def test_fuzzed_layouts_compile_or_fail_cleanly(sources: list[dict[str, Any]], side: Any) -> None:
    """Bad input never crashes: a checked artifact, or a DrawingError/DrawingCompileError."""
    try:
        a = compile_drawings(sources, "BTC/USDT", "1h", side=side)
    except (DrawingError, DrawingCompileError) as exc:
        assert str(exc)
        return
    check(a)
