"""The fast path equals the event-driven path on one_shot, `data:` inputs and scale-in/out.

Trade for trade, bar for bar (equity bit-identical), node for node, and error for error; the
random artifacts are `test_fastpath.artifacts` variations with the feature added on top.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fastpath import _bars, _metrics_close, artifacts
from test_scale import scaled

from artifacts.graph import check
from artifacts.io import loads, to_data
from artifacts.schema import Artifact
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import BacktestResult, run_backtest
from strategy_kernel.fastpath import FastPathUnsupported, FastResult, fast_backtest

START = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000_000_000
MINUTE = 60_000_000_000


def _identical(
    art: Artifact,
    bars: pl.DataFrame,
    data_bars: dict[str, pl.DataFrame] | None = None,
    record: tuple[str, ...] = (),
) -> tuple[BacktestResult, FastResult]:
    """Both engines on the same input: same trades, positions, equity bits, metrics, nodes."""
    graph = check(art)
    ev = run_backtest(art, graph, bars, data_bars=data_bars, record_nodes=record)
    fp = fast_backtest(art, graph, bars, data_bars=data_bars, record_nodes=record)
    for k, (a, b) in enumerate(zip(ev.trades, fp.trades, strict=False)):
        assert a == b, f"trade {k} differs:\n event {a}\n fast  {b}"
    assert len(ev.trades) == len(fp.trades)
    assert np.array_equal(ev.position, fp.position)
    assert np.array_equal(ev.equity, fp.equity)
    assert ev.metrics == fp.metrics or _metrics_close(ev.metrics.as_dict(), fp.metrics.as_dict())
    for node in record:
        fast = np.asarray(fp.node_series[node], dtype=np.float64)
        assert np.array_equal(ev.node_series[node], fast, equal_nan=True), f"node {node} differs"
    return ev, fp


def _outcome(run: Callable[[], object]) -> tuple[str, str] | None:
    """(error type, message) of a run, or None when it ran."""
    try:
        run()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


# ============================================================================ one_shot


def _proposal(
    expires_bar: int, max_entries: int = 1, order: dict[str, Any] | None = None
) -> Artifact:
    """Enter at every chance (a time window that is always open), out after 2 bars."""
    return Artifact.model_validate(
        {
            "schema": "stratagem/v1",
            "name": "proposal",
            "version": 1,
            "instrument": {"venue": "sim", "symbol": "X/USD", "timeframe": "1h"},
            "nodes": {"any_time": {"kind": "time_window"}},
            "entry": {"when": "any_time", "side": "long", "order": order or {"type": "market"}},
            "exit": {"time_exit": "2 bars"},
            "risk": {"sizing": {"method": "pct_equity", "value": 10}},
            "one_shot": {
                "created_at": START,
                "expires_at": START + expires_bar * HOUR,
                "max_entries": max_entries,
            },
        }
    )


@pytest.mark.parametrize("max_entries", [1, 2, 5])
def test_max_entries_reached(max_entries: int) -> None:
    bars = generate_bars(seed=4, start_ns=START, n=80, timeframe="1h")
    ev, _ = _identical(_proposal(expires_bar=60, max_entries=max_entries), bars)
    assert len(ev.trades) == max_entries
    assert "one_shot.max_entries" in {r["rule"] for r in ev.refusals}


def test_expiry_exactly_on_a_bar_close() -> None:
    """Bar d decides at START + (d + 1) h: an expiry on that instant forbids bar d's entry,
    one nanosecond later allows it."""
    bars = generate_bars(seed=4, start_ns=START, n=40, timeframe="1h")
    _, free = _identical(_proposal(expires_bar=100, max_entries=100), bars)
    decided = [t.entry_bar - 1 for t in free.trades]  # market entries fill on the next bar
    assert len(decided) > 3
    for d in decided[1:3]:
        _, on = _identical(_proposal(expires_bar=d + 1, max_entries=100), bars)
        assert [t.entry_bar - 1 for t in on.trades] == [x for x in decided if x < d]
        later = to_data(_proposal(expires_bar=d + 1, max_entries=100))
        later["one_shot"]["expires_at"] += 1
        _, after = _identical(Artifact.model_validate(later), bars)
        assert [t.entry_bar - 1 for t in after.trades] == [x for x in decided if x <= d]


@pytest.mark.parametrize("offset", [-1, 1, 30 * MINUTE])
def test_expiry_between_bar_closes(offset: int) -> None:
    bars = generate_bars(seed=5, start_ns=START, n=40, timeframe="1h")
    base = to_data(_proposal(expires_bar=10, max_entries=100))
    base["one_shot"]["expires_at"] += offset
    _identical(Artifact.model_validate(base), bars)


@pytest.mark.parametrize("expires_bar", [2, 3, 4, 5, 6])
def test_working_entry_is_cancelled_at_expiry(expires_bar: int) -> None:
    """Seed 2: the limit decided on bar 0 fills in bar 4 unless the expiry cancels it first."""
    bars = generate_bars(seed=2, start_ns=START, n=30, timeframe="1h")
    art = _proposal(expires_bar, order={"type": "limit", "offset_ticks": -100})
    _, fp = _identical(art, bars)
    assert [t.entry_bar for t in fp.trades] == ([4] if expires_bar >= 5 else [])
    far = _proposal(expires_bar, order={"type": "limit", "offset_ticks": -1_000_000})
    assert not _identical(far, bars)[1].trades


def _entry_decisions(art: Artifact, bars: pl.DataFrame, out: Path) -> list[int]:
    """Decision times of every entry the event path sends (filled or not), from its log."""
    run_backtest(art, check(art), bars, out_dir=out)
    lines = (out / "strategy.log.jsonl").read_text().splitlines()
    return [int(json.loads(x)["ts_ns"]) for x in lines if '"action":"enter"' in x]


@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 900))
def test_random_one_shot_artifacts_match(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, Any],
    rsi_artifact: tuple[Artifact, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    plain = data.draw(artifacts(base))
    if data.draw(st.booleans()):  # a resting limit: often still working when the expiry comes
        resting = to_data(plain)
        offset = data.draw(st.integers(100, 30_000))
        resting["entry"]["order"] = {
            "type": "limit",
            "offset_ticks": -offset if resting["entry"]["side"] == "long" else offset,
        }
        plain = Artifact.model_validate(resting)
    bars = _bars(seed, n)
    sent = _entry_decisions(plain, bars, tmp_path_factory.mktemp("shot"))
    if sent and data.draw(st.integers(0, 3)) > 0:
        # a few bars after an entry was sent: the expiry meets it working (or just filled)
        expires = data.draw(st.sampled_from(sent)) + data.draw(st.integers(0, 4)) * HOUR
    else:
        expires = START + data.draw(st.integers(0, n + 2)) * HOUR
    expires += data.draw(st.sampled_from([0, 0, 1, -1, 30 * MINUTE]))
    shot = to_data(plain)
    shot["one_shot"] = {
        "created_at": START - data.draw(st.integers(1, 1000)) * HOUR,
        "expires_at": max(expires, START + 1),
        "max_entries": data.draw(st.integers(1, 6)),
    }
    _identical(Artifact.model_validate(shot), bars)


# ============================================================================ data inputs

DATA_YAML = """schema: stratagem/v1
name: btc-eth
version: 1
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
data:
  eth: {symbol: ETH/USDT, timeframe: 1h}
nodes:
  fast: {kind: indicator, fn: SMA, inputs: [close], params: {period: 5}}
  slow: {kind: indicator, fn: SMA, inputs: [close], params: {period: 20}}
  golden: {kind: cross, a: fast, b: slow, direction: above}
  eth_sma: {kind: indicator, fn: SMA, inputs: [eth.close], params: {period: 10}}
  eth_up: {kind: threshold, input: eth.close, op: ">", value: eth_sma}
  go: {kind: all, inputs: [golden, eth_up]}
entry: {when: go, side: long}
exit: {stop_loss: {pct: 2.0}, when: {node: eth.close, op: "<", value: eth_sma}}
risk: {sizing: {method: pct_equity, value: 50}}
"""

# nodes of every clocked/pure kind fed by the other symbol's columns (recorded and compared)
DATA_NODES: dict[str, Any] = {
    "eth_rsi": {"kind": "indicator", "fn": "RSI", "inputs": ["eth.close"], "params": {"period": 7}},
    "eth_atr": {
        "kind": "indicator",
        "fn": "ATR",
        "inputs": ["eth.high", "eth.low", "eth.close"],
        "params": {"period": 5},
    },
    "eth_x": {"kind": "cross", "a": "eth.close", "b": "eth_sma", "direction": "above"},
    "eth_rise": {"kind": "rising", "input": "eth.close", "bars": 2},
    "eth_back": {"kind": "lookback", "input": "eth.close", "bars": 3},
    "eth_4h": {"kind": "resample", "input": "eth.close", "timeframe": "4h", "agg": "max"},
    "mixed": {"kind": "indicator", "fn": "EMA", "inputs": ["eth_rsi"], "params": {"period": 4}},
    "rel": {"kind": "threshold", "input": "close", "op": ">", "value": "eth_sma"},
    "eth_or": {"kind": "any", "inputs": ["eth_x", "eth_rise"]},
}
RECORD = (*DATA_NODES, "eth_sma", "eth_up", "eth.close", "eth.volume")


def _data_artifact(tf: str = "1h", on_missing: str = "hold", extra: bool = True) -> Artifact:
    a = loads(DATA_YAML, "btc-eth.yaml")
    data = to_data(a)
    data["data"]["eth"] = {"symbol": "ETH/USDT", "timeframe": tf, "on_missing": on_missing}
    if extra:
        data["nodes"].update(DATA_NODES)
    return Artifact.model_validate(data)


def _eth(
    seed: int, n: int, tf: str = "1h", start: int = START, drop: tuple[int, ...] = ()
) -> pl.DataFrame:
    frame = generate_bars(seed=seed, start_ns=start, n=n, timeframe=tf)
    if drop:
        frame = frame.filter(~pl.int_range(pl.len()).is_in(list(drop)))
    return frame


def test_same_data_same_trades_and_nodes() -> None:
    ev, _ = _identical(_data_artifact(), _bars(1, 1500), {"ETH/USDT": _eth(2, 1500)}, RECORD)
    assert len(ev.trades) > 5


@pytest.mark.parametrize("tf", ["2h", "4h", "1d"])
def test_coarser_input_seen_only_once_closed(tf: str) -> None:
    art = _data_artifact(tf, extra=False)
    btc = _bars(1, 1200)
    eth = _eth(2, 1200 // (4 if tf == "4h" else 2 if tf == "2h" else 24) + 5, tf)
    _, fp = _identical(art, btc, {"ETH/USDT": eth}, ("eth_sma", "eth.close", "eth_up"))
    # the eth bar opening at START closes at START + tf: seen from that decision on, not before
    tf_h = {"2h": 2, "4h": 4, "1d": 24}[tf]
    seen = np.asarray(fp.node_series["eth.close"])
    assert np.isnan(seen[: tf_h - 1]).all() and seen[tf_h - 1] == eth["close"][0]


def test_coarser_input_with_holes_off_grid_start() -> None:
    art = _data_artifact("4h")
    frames = {"ETH/USDT": _eth(7, 120, "4h", START - 8 * HOUR - 30 * MINUTE, (5, 6, 50))}
    _identical(art, _bars(3, 400), frames, RECORD)
    frames = {"ETH/USDT": _eth(7, 120, "4h", START - 8 * HOUR, (5, 6, 50))}
    _identical(art, _bars(3, 400), frames, RECORD)


def test_missing_bar_is_held() -> None:
    btc = _bars(1, 300)
    eth = _eth(2, 300, drop=(150, 151, 200))
    _, fp = _identical(_data_artifact(), btc, {"ETH/USDT": eth}, RECORD)
    held = np.asarray(fp.node_series["eth_sma"])
    assert held[150] == held[149] == held[151] and held[200] == held[199]
    assert fp.node_series["eth.close"][150] == eth["close"][149]


@pytest.mark.parametrize(
    ("drop", "head"),
    [((150,), 300), ((0, 40, 41), 300), ((), 200), ((299,), 300)],
)
def test_missing_bar_error_is_the_same_error(drop: tuple[int, ...], head: int) -> None:
    art = _data_artifact(on_missing="error")
    btc = _bars(1, 300)
    eth = _eth(2, 300, drop=drop).head(head - len(drop))
    d = {"ETH/USDT": eth}
    want = _outcome(lambda: run_backtest(art, check(art), btc, data_bars=d))
    got = _outcome(lambda: fast_backtest(art, check(art), btc, data_bars=d))
    assert want is not None and want[0] == "BacktestError"
    assert got == want


def test_input_starting_late_and_ending_early() -> None:
    btc = _bars(1, 600)
    eth = _eth(2, 300, start=START + 150 * HOUR)
    _, fp = _identical(_data_artifact(), btc, {"ETH/USDT": eth}, RECORD)
    assert np.isnan(np.asarray(fp.node_series["eth.close"])[:149]).all()
    strict = _data_artifact(on_missing="error")
    d = {"ETH/USDT": eth}
    want = _outcome(lambda: run_backtest(strict, check(strict), btc, data_bars=d))
    assert want is not None and "no ETH/USDT 1h bar closes at ts" in want[1]
    assert _outcome(lambda: fast_backtest(strict, check(strict), btc, data_bars=d)) == want


def test_bad_data_input_is_the_same_error() -> None:
    art = _data_artifact()
    btc = _bars(1, 200)
    eth = _eth(2, 200)
    cases: list[dict[str, pl.DataFrame]] = [
        {},
        {"ETH/USDT": _eth(2, 200, "15m")},
        {"ETH/USDT": pl.concat([eth.head(50), eth.head(50)])},
        {"ETH/USDT": eth.with_columns(high=pl.col("low") * 0.5)},
    ]
    for d in cases:
        want = _outcome(partial(run_backtest, art, check(art), btc, data_bars=d))
        assert want is not None and want[0] == "BacktestError"
        assert _outcome(partial(fast_backtest, art, check(art), btc, data_bars=d)) == want
    # too few bars: the data is checked first, then the warm-up, in both engines
    short = btc.head(5)
    want = _outcome(lambda: run_backtest(art, check(art), short, data_bars={"ETH/USDT": eth}))
    assert want is not None and "warm-up" in want[1]
    assert _outcome(lambda: fast_backtest(art, check(art), short, data_bars={"ETH/USDT": eth})) == (
        want
    )


def test_no_data_bars_at_all_is_refused() -> None:
    """Callers that do not pass data_bars (e.g. a sweep) get the fallback signal, not a crash."""
    art = _data_artifact()
    with pytest.raises(FastPathUnsupported, match=r"data inputs \(eth.*pass data_bars"):
        fast_backtest(art, check(art), _bars(1, 200))


@st.composite
def eth_frames(draw: st.DrawFn, n: int) -> tuple[str, pl.DataFrame]:
    """Another symbol's bars: timeframe, start (on or off the instrument grid), holes, length."""
    tf = draw(st.sampled_from(["1h", "1h", "2h", "4h"]))
    tf_h = {"1h": 1, "2h": 2, "4h": 4}[tf]
    m = n // tf_h + 10
    start = (
        START + draw(st.integers(-20, 60)) * HOUR + draw(st.sampled_from([0, 0, 0, 30 * MINUTE]))
    )
    holes = draw(st.lists(st.integers(0, m - 1), max_size=max(1, m // 20), unique=True))
    frame = _eth(draw(st.integers(0, 10_000)), m, tf, start, tuple(holes))
    if draw(st.booleans()):
        frame = frame.head(draw(st.integers(m // 2, m)))
    return tf, frame


@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 900))
def test_random_data_artifacts_match(data: st.DataObject, seed: int, n: int) -> None:
    tf, frame = data.draw(eth_frames(n))
    base = _data_artifact(tf)
    art = data.draw(artifacts(base))
    frames = {"ETH/USDT": frame}
    strict = to_data(art)
    strict["data"]["eth"]["on_missing"] = data.draw(st.sampled_from(["hold", "hold", "error"]))
    art = Artifact.model_validate(strict)
    graph = check(art)
    want = _outcome(lambda: run_backtest(art, graph, _bars(seed, n), data_bars=frames))
    if want is not None:  # `error` on a hole: the same error from both engines
        assert want[0] == "BacktestError"
        got = _outcome(lambda: fast_backtest(art, graph, _bars(seed, n), data_bars=frames))
        assert got == want
        return
    _identical(art, _bars(seed, n), frames, RECORD)


# ============================================================================ scale-in / out

COND = st.sampled_from(
    [
        {"node": "close", "op": ">", "value": "open"},
        {"node": "close", "op": "<", "value": "open"},
        {"node": "high", "op": ">", "value": "open"},
        {"node": "close", "op": ">", "value": "low"},
    ]
)


@st.composite
def scaled_artifacts(draw: st.DrawFn, base: Artifact) -> Artifact:
    """`artifacts` variations plus 0-2 scale-in and 0-2 scale-out rules (at least one)."""
    data = to_data(draw(artifacts(base)))
    ins = [
        {
            "when": draw(COND),
            "size_pct": draw(st.floats(1, 200)),
            "max_adds": draw(st.integers(1, 3)),
        }
        for _ in range(draw(st.sampled_from([0, 1, 1, 2])))
    ]
    outs = [
        {"when": draw(COND), "size_pct": draw(st.floats(1, 99))}
        for _ in range(draw(st.integers(0 if ins else 1, 2)))
    ]
    if ins:
        data["entry"]["scale_in"] = ins
    if outs:
        data["exit"]["scale_out"] = outs
    return Artifact.model_validate(data)


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("add", "out"), [(50, 40), (150, 5), (10, 90)])
def test_scaling_example_matches(
    side: str,
    add: float,
    out: float,
    sma_artifact: tuple[Artifact, Any],
    sample_bars: pl.DataFrame,
) -> None:
    _, fp = _identical(scaled(sma_artifact[0], side, add, out), sample_bars.head(2000))
    assert len(fp.trades) > 10
    assert any(t.entry_qty > t.planned_qty for t in fp.trades), "adds raise the filled qty"
    assert any("out" in t.exit_reason for t in fp.trades), "scale-outs close part"


def test_adds_capped_by_max_position(
    sma_artifact: tuple[Artifact, Any], sample_bars: pl.DataFrame
) -> None:
    """max_position_pct equal to the entry size: adds are refused or cut to the cap."""
    data = to_data(scaled(sma_artifact[0], add_pct=100))
    data["risk"] = {"sizing": {"method": "pct_equity", "value": 30}, "max_position_pct": 30}
    ev, fp = _identical(Artifact.model_validate(data), sample_bars.head(1500))
    assert "risk.max_position_pct" in {r["rule"] for r in ev.refusals}
    assert fp.trades


def test_scale_out_rounding_to_zero_lots(sma_artifact: tuple[Artifact, Any]) -> None:
    data = to_data(scaled(sma_artifact[0], out_pct=1))
    data["risk"] = {"sizing": {"method": "fixed", "value": 0.005}, "max_position_pct": 100}
    bars = _bars(11, 1500)
    ev, _ = _identical(Artifact.model_validate(data), bars)
    assert "exit.scale_out[0]" in {r["rule"] for r in ev.refusals}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 1_000))
def test_random_scaled_artifacts_match(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, Any],
    rsi_artifact: tuple[Artifact, Any],
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    _identical(data.draw(scaled_artifacts(base)), _bars(seed, n))
