"""The fast path equals the event-driven path: node by node, trade by trade, bar by bar."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import SignalGraph, check
from artifacts.io import to_data
from artifacts.schema import NODE_KINDS, Artifact
from feeds.synthetic import generate_bars
from indicators.nodes import BarValues
from strategy_kernel.backtest import run_backtest
from strategy_kernel.dag import DagEvaluator
from strategy_kernel.errors import BacktestError
from strategy_kernel.fastpath import FastPathUnsupported, bracket_same_bar, fast_backtest
from strategy_kernel.fastpath_dag import evaluate

START = 1_704_067_200_000_000_000  # 2024-01-01 (a Monday) 00:00 UTC
HOUR = 3_600_000_000_000


def _bars(seed: int, n: int, timeframe: str = "1h", start: int = START) -> pl.DataFrame:
    return generate_bars(seed=seed, start_ns=start, n=n, timeframe=timeframe)


def _event_values(
    art: Artifact, graph: SignalGraph, bars: pl.DataFrame
) -> dict[str, list[float | bool]]:
    """The event-driven DAG's value of every node after each bar."""
    dag = DagEvaluator(art, graph)
    out: dict[str, list[float | bool]] = {k: [] for k in graph.order}
    for row in bars.iter_rows():
        dag.on_bar(BarValues(*row[:6]))
        for k in graph.order:
            out[k].append(dag.values[k])
    return out


def _same_series(fast: np.ndarray[Any, Any], slow: list[float | bool]) -> bool:
    if fast.dtype == np.bool_:
        return [bool(x) for x in fast] == [bool(x) for x in slow]
    a = np.asarray(slow, dtype=np.float64)
    return bool(np.array_equal(fast, a, equal_nan=True))


def _node_artifact(draw: st.DrawFn, closes: np.ndarray[Any, Any]) -> Artifact:
    """An artifact with one node of every vectorised kind, parameters drawn."""
    lo, hi = float(np.min(closes)), float(np.max(closes))
    mid = float(np.median(closes))

    def price() -> float:
        return round(lo + (hi - lo) * draw(st.floats(0.05, 0.95)), 2)

    ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    modes = st.sampled_from(["touch", "above", "below", "break_up", "break_down", "retest"])
    p = draw(st.integers(2, 30))
    z_lo = price()
    nodes: dict[str, Any] = {
        "fast": {"kind": "indicator", "fn": "SMA", "inputs": ["close"], "params": {"period": p}},
        "rsi": {
            "kind": "indicator",
            "fn": "RSI",
            "inputs": ["close"],
            "params": {"period": draw(st.integers(2, 20))},
        },
        "atr": {
            "kind": "indicator",
            "fn": "ATR",
            "inputs": ["high", "low", "close"],
            "params": {"period": draw(st.integers(2, 20))},
        },
        "ema_rsi": {
            "kind": "indicator",
            "fn": "EMA",
            "inputs": ["rsi"],
            "params": {"period": draw(st.integers(2, 10))},
        },
        "th_const": {"kind": "threshold", "input": "rsi", "op": draw(ops), "value": 50},
        "th_node": {"kind": "threshold", "input": "close", "op": draw(ops), "value": "fast"},
        "x_node": {
            "kind": "cross",
            "a": "close",
            "b": "fast",
            "direction": draw(st.sampled_from(["above", "below"])),
        },
        "x_const": {
            "kind": "cross",
            "a": "rsi",
            "b": draw(st.integers(20, 80)),
            "direction": draw(st.sampled_from(["above", "below"])),
        },
        "both": {"kind": "all", "inputs": ["th_const", "th_node"]},
        "either": {"kind": "any", "inputs": ["x_node", "x_const"]},
        "neg": {"kind": "not", "input": "x_node"},
        "neg2": {"kind": "not", "input": "both"},
        "up": {"kind": "rising", "input": "rsi", "bars": draw(st.integers(1, 4))},
        "down": {"kind": "falling", "input": "close", "bars": draw(st.integers(1, 4))},
        "back": {"kind": "lookback", "input": "rsi", "bars": draw(st.integers(1, 5))},
        "lvl": {
            "kind": "drawing_level",
            "price": price(),
            "tolerance_bps": draw(st.floats(0, 200)),
            "mode": draw(modes),
        },
        "zone": {
            "kind": "zone",
            "low": z_lo,
            "high": round(z_lo * (1 + draw(st.floats(0.001, 0.05))), 2),
            "mode": draw(modes),
        },
        "fib": {
            "kind": "fib_level",
            "swing_low": round(lo, 2),
            "swing_high": round(hi, 2),
            "ratio": draw(st.sampled_from([0.236, 0.382, 0.5, 0.618])),
            "mode": draw(modes),
        },
        "line": {
            "kind": "trend_line",
            "p1": {"time": START + draw(st.integers(-50, 100)) * HOUR, "price": round(mid, 2)},
            "p2": {
                "time": START + draw(st.integers(150, 400)) * HOUR,
                "price": price(),
            },
            "tolerance_bps": draw(st.floats(0, 100)),
            "mode": draw(modes),
            "extend": draw(st.sampled_from(["right", "both", "none"])),
        },
        "session": {
            "kind": "time_window",
            "hours": draw(st.sampled_from(["08:00-16:00", "22:00-03:30", "00:00-24:00"])),
            "weekdays": draw(
                st.lists(
                    st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                    min_size=1,
                    max_size=7,
                    unique=True,
                )
            ),
            "tz": draw(st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"])),
        },
        "h4": {
            "kind": "resample",
            "input": "close",
            "timeframe": draw(st.sampled_from(["2h", "4h", "1d"])),
            "agg": draw(st.sampled_from(["last", "first", "max", "min", "sum", "mean"])),
        },
        "h4_sma": {"kind": "indicator", "fn": "SMA", "inputs": ["h4"], "params": {"period": 3}},
        "h4_x": {"kind": "cross", "a": "h4_sma", "b": "h4", "direction": "above"},
        "h4_up": {"kind": "rising", "input": "h4_sma", "bars": 1},
        "conv_f": {
            "kind": "conviction",
            "input": "rsi",
            "lo": 30.0,
            "hi": 70.0,
            "scale": draw(st.sampled_from(["signed", "one_to_ten"])),
        },
        "conv_b": {"kind": "conviction", "when": "x_node", "value": draw(st.floats(-1, 1))},
        "conf_w": {
            "kind": "confluence",
            "inputs": ["conv_f", "conv_b"],
            "method": "weighted_sum",
            "weights": [draw(st.floats(0.1, 2)), draw(st.floats(-2, 2))],
        },
        "conf_k": {
            "kind": "confluence",
            "inputs": ["conv_f", "conv_b"],
            "method": "k_of_n",
            "k": draw(st.integers(1, 2)),
            "threshold": draw(st.floats(-1, 1)),
        },
        "conf_v": {
            "kind": "confluence",
            "inputs": ["conv_f", "conv_b"],
            "method": "veto",
            "vetoes": ["neg"],
        },
        "vol_reg": {
            "kind": "regime",
            "method": "volatility",
            "lookback": draw(st.integers(2, 20)),
            "window": draw(st.integers(2, 60)),
            "low_pct": draw(st.floats(0, 49)),
            "high_pct": draw(st.floats(51, 100)),
        },
        "trend_reg": {
            "kind": "regime",
            "method": "trend",
            "input": draw(st.sampled_from(["close", "fast"])),
            "lookback": draw(st.integers(2, 30)),
            "threshold": draw(st.floats(0.01, 1)),
        },
        "h4_reg": {"kind": "regime", "method": "trend", "input": "h4", "lookback": 3},
    }
    data = {
        "schema": "stratagem/v1",
        "name": "nodes",
        "version": 1,
        "instrument": {"venue": "sim", "symbol": "BTC/USDT", "timeframe": "1h"},
        "nodes": nodes,
        "entry": {"when": "both", "side": "long"},
    }
    return Artifact.model_validate(data)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 10_000), n=st.integers(120, 300))
def test_every_node_kind_equals_the_event_driven_dag(
    data: st.DataObject, seed: int, n: int
) -> None:
    bars = _bars(seed, n)
    art = _node_artifact(data.draw, bars["close"].to_numpy())  # type: ignore[arg-type]
    graph = check(art)
    assert set(NODE_KINDS) - {n.kind for n in art.nodes.values()} == {"python", "sentiment"}
    fast = evaluate(art, graph, bars)
    slow = _event_values(art, graph, bars)
    for nid in graph.order:
        assert _same_series(fast[nid], slow[nid]), f"node {nid} ({art.nodes[nid].kind}) differs"


def test_python_node_is_refused_by_name(sma_artifact: tuple[Artifact, SignalGraph]) -> None:
    data = to_data(sma_artifact[0])
    data["nodes"]["custom"] = {
        "kind": "python",
        "path": "nodes/custom.py",
        "class_name": "Custom",
        "sha256": "0" * 64,
        "inputs": ["close"],
    }
    data["entry"]["when"] = {"node": "custom", "op": ">", "value": 0}
    art = Artifact.model_validate(data)
    graph = SignalGraph(
        graph=sma_artifact[1].graph,
        order=(*sma_artifact[1].order, "custom"),
        types={**sma_artifact[1].types, "custom": "float"},
        indicators=sma_artifact[1].indicators,
        warmup=sma_artifact[1].warmup,
    )
    with pytest.raises(FastPathUnsupported, match=r"custom \(kind python\)"):
        fast_backtest(art, graph, _bars(1, 200))


# ----------------------------------------------------------------------------- whole backtests


def _assert_identical(art: Artifact, bars: pl.DataFrame) -> int:
    graph = check(art)
    ev = run_backtest(art, graph, bars)
    fp = fast_backtest(art, graph, bars)
    for k, (a, b) in enumerate(zip(ev.trades, fp.trades, strict=False)):
        assert a == b, f"trade {k} differs:\n event {a}\n fast  {b}"
    assert len(ev.trades) == len(fp.trades)
    assert np.array_equal(ev.position, fp.position)
    # equity is the same float expression of the same integers in both paths: bit-identical
    assert np.array_equal(ev.equity, fp.equity)
    assert ev.metrics == fp.metrics or _metrics_close(ev.metrics.as_dict(), fp.metrics.as_dict())
    return len(ev.trades)


def _metrics_close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and math.isclose(x, y))
        for x, y in zip(a.values(), b.values(), strict=True)
    )


def test_examples_match_trade_for_trade(
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
) -> None:
    assert _assert_identical(sma_artifact[0], sample_bars) > 20
    assert _assert_identical(rsi_artifact[0], sample_bars) > 20


@st.composite
def artifacts(draw: st.DrawFn, base: Artifact) -> Artifact:
    """Variations of an example: side, order type/offset/tif/timeout, stops, targets, exits, risk."""
    data = to_data(base)
    side = draw(st.sampled_from(["long", "short"]))
    otype = draw(st.sampled_from(["market", "limit", "stop"]))
    tif = draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK", "GTD"]))
    order: dict[str, Any] = {"type": otype, "tif": tif}
    if otype != "market":
        order["offset_ticks"] = draw(st.integers(-3000, 3000))
    if tif == "GTD" or draw(st.booleans()):
        order["timeout"] = f"{draw(st.integers(1, 6))} bars"
    data["entry"]["side"] = side
    data["entry"]["order"] = order
    if draw(st.booleans()):
        data["entry"]["invalid_if"] = (
            {"node": "close", "op": draw(st.sampled_from([">", "<"])), "value": "slow"}
            if "slow" in data["nodes"]
            else {"node": "rsi", "op": draw(st.sampled_from([">", "<"])), "value": 20}
        )
    stop = draw(
        st.sampled_from(
            [
                None,
                {"pct": draw(st.floats(0.3, 5.0))},
                {"atr_mult": draw(st.floats(0.5, 4.0)), "atr_period": draw(st.integers(3, 20))},
                {"ticks": draw(st.integers(50, 5000))},
            ]
        )
    )
    ex: dict[str, Any] = {"when": data["exit"].get("when")} if draw(st.booleans()) else {}
    if stop is not None:
        ex["stop_loss"] = stop
    legs = draw(st.integers(0, 3))
    tps = []
    left = 100.0
    for k in range(legs):
        size = (
            left
            if k == legs - 1 and draw(st.booleans())
            else draw(st.sampled_from([25.0, 33.0, 50.0]))
        )
        size = min(size, left)
        if size <= 0:
            break
        left -= size
        if stop is not None and draw(st.booleans()):
            tps.append({"r": draw(st.floats(0.3, 4.0)), "size_pct": size})
        else:
            tps.append({"pct": draw(st.floats(0.2, 6.0)), "size_pct": size})
    if tps:
        ex["take_profit"] = tps
    if draw(st.booleans()):
        ex["time_exit"] = f"{draw(st.integers(1, 40))} bars"
    if stop is not None and draw(st.booleans()):
        ex["break_even"] = {
            "after_r": draw(st.floats(0.2, 2.0)),
            "offset_ticks": draw(st.integers(0, 50)),
        }
    if stop is not None and draw(st.booleans()):
        ex["trailing"] = draw(  # type: ignore[operator]
            st.sampled_from(
                [
                    {"pct": draw(st.floats(0.3, 4.0))},
                    {"ticks": draw(st.integers(50, 3000))},
                    {"atr_mult": draw(st.floats(0.5, 3.0))},
                ]
            )
        ) | {"activate_r": draw(st.floats(0, 1.5))}
    if not ex.get("when") and not stop and not tps and not ex.get("time_exit"):
        ex["time_exit"] = "5 bars"
    data["exit"] = ex
    method = draw(
        st.sampled_from(
            ["risk_pct", "pct_equity", "fixed", "vol_target"]
            if stop
            else ["pct_equity", "fixed", "vol_target"]
        )
    )
    value = {
        "risk_pct": draw(st.floats(0.2, 3.0)),
        "pct_equity": draw(st.floats(5, 100)),
        "fixed": draw(st.sampled_from([0.01, 0.05, 0.1234])),
        "vol_target": draw(st.floats(5.0, 80.0)),
    }[method]
    sizing: dict[str, Any] = {"method": method, "value": value}
    if method == "vol_target":
        sizing["lookback_bars"] = draw(st.integers(2, 60))
    risk: dict[str, Any] = {
        "sizing": sizing,
        "max_position_pct": draw(st.sampled_from([20.0, 50.0, 100.0, 300.0])),
    }
    if draw(st.booleans()):
        risk["max_daily_loss_pct"] = draw(st.floats(0.2, 3.0))
    if draw(st.booleans()):
        risk["max_consecutive_losses"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        risk["cooldown_bars"] = draw(st.integers(1, 10))
    data["risk"] = risk
    data["backtest"] = {
        "initial_equity": draw(st.sampled_from([1_000.0, 10_000.0, 123_456.0])),
        "maker_fee_bps": draw(st.sampled_from([-1.0, 0.0, 2.0, 2.5])),
        "taker_fee_bps": draw(st.sampled_from([0.0, 5.0, 7.5])),
        "slippage_ticks": draw(st.integers(0, 20)),
        "seed": 0,
    }
    return Artifact.model_validate(data)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 1_200))
def test_random_artifacts_match_trade_for_trade(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    art = data.draw(artifacts(base))
    _assert_identical(art, _bars(seed, n))


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(data=st.data(), seed=st.integers(0, 1_000_000), n=st.integers(300, 4_000))
def test_random_artifacts_match_trade_for_trade_long(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    art = data.draw(artifacts(base))
    _assert_identical(art, _bars(seed, n))


def test_same_bar_bracket_probe_matches_the_kernel_docs() -> None:
    """The probe reads the kernel's behaviour; the loop is told which rule to follow."""
    from order_kernel.venues import sim

    documented = "15. **Bracket children in the parent's fill bar.**" in (sim.__doc__ or "")
    assert bracket_same_bar() is documented


def test_too_few_bars_is_the_same_error(sma_artifact: tuple[Artifact, SignalGraph]) -> None:
    with pytest.raises(BacktestError, match="warm-up"):
        fast_backtest(*sma_artifact, _bars(3, 20))


def test_bad_bar_is_refused(sma_artifact: tuple[Artifact, SignalGraph]) -> None:
    bars = _bars(3, 200)
    bars = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 77)
        .then(pl.col("low") * 2)
        .otherwise(pl.col("low"))
        .alias("low")
    )
    with pytest.raises(FastPathUnsupported, match="bar 77"):
        fast_backtest(*sma_artifact, bars)
