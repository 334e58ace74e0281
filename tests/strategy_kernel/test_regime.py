"""Regime nodes: volatility / trend state codes, exact against numpy oracles, point-in-time,
the same in the event-driven DAG and the fast path, and usable as an entry gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactSchemaError
from artifacts.graph import check
from artifacts.io import content_hash, load, loads, to_data
from artifacts.schema import Artifact, RegimeNode
from feeds.files import parse_bars
from feeds.synthetic import generate_bars
from indicators.nodes import BarValues
from strategy_kernel.backtest import run_backtest
from strategy_kernel.dag import DagEvaluator
from strategy_kernel.fastpath import fast_backtest
from strategy_kernel.fastpath_dag import evaluate
from strategy_kernel.log import read

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sma-regime.yaml"
START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000
Floats = npt.NDArray[np.float64]


# ----------------------------------------------------------------------------- oracles


def vol_oracle(x: Floats, lookback: int, window: int, low: float, high: float) -> Floats:
    """The volatility state from its definition, with numpy (pairwise sums, its own std)."""
    n = len(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.full(n, np.nan)
        ratio[1:] = np.where((x[1:] > 0) & (x[:-1] > 0), x[1:] / x[:-1], np.nan)
        r = np.log(np.where(ratio > 0, ratio, np.nan))
    rv = np.full(n, np.nan)
    if n >= lookback:
        with np.errstate(invalid="ignore"):
            windows = np.lib.stride_tricks.sliding_window_view(r, lookback)
            rv[lookback - 1 :] = windows.std(axis=1, ddof=1)
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        win = rv[i - window + 1 : i + 1]
        if np.isnan(win).any():
            continue
        pr = 100.0 * int(np.sum(win[:-1] < win[-1])) / (window - 1)
        out[i] = 0.0 if pr <= low else 2.0 if pr >= high else 1.0
    return out


def trend_oracle(x: Floats, lookback: int, threshold: float) -> Floats:
    """The efficiency-ratio trend state from its definition, with numpy."""
    n = len(x)
    out = np.full(n, np.nan)
    if n <= lookback:
        return out
    change = x[lookback:] - x[:-lookback]
    steps = np.abs(np.diff(x))
    path = np.lib.stride_tricks.sliding_window_view(steps, lookback).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        er = np.where(path > 0, np.abs(change) / path, 0.0)
        state = np.where(er >= threshold, np.sign(change), 0.0)
    state[np.isnan(change) | np.isnan(path)] = np.nan
    out[lookback:] = state
    return out


# ----------------------------------------------------------------------------- helpers


def _artifact(node: dict[str, Any], extra: dict[str, Any] | None = None) -> Artifact:
    nodes = {"reg": node, **(extra or {})}
    nodes["gate"] = {"kind": "threshold", "input": "reg", "op": "==", "value": 1}
    return Artifact.model_validate(
        {
            "schema": "stratagem/v1",
            "name": "regime",
            "version": 1,
            "instrument": {"venue": "sim", "symbol": "BTC/USDT", "timeframe": "1h"},
            "nodes": nodes,
            "entry": {"when": "gate", "side": "long"},
        }
    )


def _frame(close: Floats) -> pl.DataFrame:
    n = len(close)
    return pl.DataFrame(
        {
            "ts_ns": START + HOUR * np.arange(n, dtype=np.int64),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(n),
        }
    )


def _event(art: Artifact, bars: pl.DataFrame, node: str = "reg") -> Floats:
    graph = check(art)
    dag = DagEvaluator(art, graph)
    out = []
    for row in bars.iter_rows():
        dag.on_bar(BarValues(*row[:6]))
        out.append(dag.values[node])
    return np.asarray(out, dtype=np.float64)


def _fast(art: Artifact, bars: pl.DataFrame, node: str = "reg") -> Floats:
    return np.asarray(evaluate(art, check(art), bars)[node], dtype=np.float64)


@st.composite
def prices(draw: st.DrawFn, min_size: int = 2, max_size: int = 160) -> Floats:
    """A positive random walk, sometimes with undefined (NaN) or non-positive bars in it."""
    n = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, draw(st.sampled_from([1e-4, 0.01, 0.05])), n)))
    for _ in range(draw(st.integers(0, 2))):
        x[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, 0.0, -1.0]))
    if draw(st.booleans()):  # flat stretches: ties in rv (0) and a zero path for the ratio
        i = draw(st.integers(0, n - 1))
        x[i : i + draw(st.integers(1, 30))] = x[i]
    return np.asarray(x, dtype=np.float64)


def _vol_node(data: st.DataObject) -> dict[str, Any]:
    draw = data.draw
    low = draw(st.floats(0, 60))
    return {
        "kind": "regime",
        "method": "volatility",
        "lookback": draw(st.integers(2, 15)),
        "window": draw(st.integers(2, 40)),
        "low_pct": low,
        "high_pct": draw(st.floats(low + 1, 100)),
    }


def _trend_node(data: st.DataObject) -> dict[str, Any]:
    draw = data.draw
    return {
        "kind": "regime",
        "method": "trend",
        "lookback": draw(st.integers(2, 30)),
        "threshold": draw(st.floats(0.01, 1)),
    }


# ----------------------------------------------------------------------------- oracles


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=prices())
def test_volatility_state_equals_its_definition(data: st.DataObject, x: Floats) -> None:
    node = _vol_node(data)
    art = _artifact(node)
    want = vol_oracle(x, node["lookback"], node["window"], node["low_pct"], node["high_pct"])
    got = _fast(art, _frame(x))
    assert np.array_equal(got, want, equal_nan=True), (got, want)
    if np.isfinite(x).all() and (x > 0).all():  # warm-up exactly as declared to the graph
        lead = int(np.argmax(~np.isnan(got))) if (~np.isnan(got)).any() else len(x)
        assert lead == min(check(art).warmup, len(x))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=prices())
def test_trend_state_equals_its_definition(data: st.DataObject, x: Floats) -> None:
    node = _trend_node(data)
    art = _artifact(node)
    want = trend_oracle(x, node["lookback"], node["threshold"])
    got = _fast(art, _frame(x))
    assert np.array_equal(got, want, equal_nan=True), (got, want)
    assert set(np.unique(got[~np.isnan(got)])) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize(
    ("node", "codes"),
    [
        ({"kind": "regime", "method": "volatility", "lookback": 24, "window": 240}, [0, 1, 2]),
        # a window of 2 ranks against one value: pr is 0 or 100, never normal
        ({"kind": "regime", "method": "volatility", "lookback": 2, "window": 2}, [0, 2]),
        ({"kind": "regime", "method": "trend", "lookback": 24}, [-1, 0, 1]),
        ({"kind": "regime", "method": "trend", "lookback": 2, "threshold": 1.0}, [-1, 0, 1]),
    ],
)
def test_long_series_match_the_oracle_in_both_paths(node: dict[str, Any], codes: list[int]) -> None:
    bars = generate_bars(seed=11, start_ns=START, n=2_000, timeframe="1h")
    art = _artifact(node)
    x = bars["close"].to_numpy()
    reg = art.nodes["reg"]
    assert isinstance(reg, RegimeNode)
    if reg.method == "volatility":
        assert reg.window is not None and reg.low_pct is not None and reg.high_pct is not None
        want = vol_oracle(x, reg.lookback, reg.window, reg.low_pct, reg.high_pct)
    else:
        assert reg.threshold is not None
        want = trend_oracle(x, reg.lookback, reg.threshold)
    fast = _fast(art, bars)
    assert np.array_equal(fast, want, equal_nan=True)
    assert np.array_equal(_event(art, bars), fast, equal_nan=True)
    # every state occurs: each branch of the classification is compared
    assert list(np.unique(fast[~np.isnan(fast)])) == codes
    assert int(np.isnan(fast).sum()) == check(art).warmup


def test_known_trend_and_volatility_states() -> None:
    """Hand-checked series: a steady rise is up, a fall down, a zig-zag range; a calm stretch
    after a wild one is low volatility, a wild one after a calm one high."""
    up = np.linspace(100.0, 110.0, 12)
    trend = _artifact({"kind": "regime", "method": "trend", "lookback": 5})
    assert list(_fast(trend, _frame(up))[5:]) == [1.0] * 7
    assert list(_fast(trend, _frame(up[::-1].copy()))[5:]) == [-1.0] * 7
    zigzag = np.array([100.0, 101.0] * 6)
    assert list(_fast(trend, _frame(zigzag))[5:]) == [0.0] * 7

    rng = np.random.default_rng(7)
    calm_then_wild = 100.0 * np.exp(
        np.cumsum(np.concatenate((rng.normal(0, 0.001, 60), rng.normal(0, 0.05, 60))))
    )
    vol = _artifact(
        {"kind": "regime", "method": "volatility", "lookback": 5, "window": 30},
    )
    states = _fast(vol, _frame(calm_then_wild))
    assert list(states[61:70]) == [2.0] * 9  # wild returns rank above the calm window
    wild_then_calm = calm_then_wild[::-1].copy()
    assert list(_fast(vol, _frame(wild_then_calm))[60:70]) == [0.0] * 10


# ----------------------------------------------------------------------------- point in time


@settings(max_examples=40, deadline=None)
@given(data=st.data(), x=prices(min_size=20), method=st.sampled_from(["volatility", "trend"]))
def test_future_bars_never_change_past_states(data: st.DataObject, x: Floats, method: str) -> None:
    node = _vol_node(data) if method == "volatility" else _trend_node(data)
    art = _artifact(node)
    cut = data.draw(st.integers(1, len(x) - 1))
    other = x.copy()
    other[cut:] = data.draw(st.floats(1.0, 1e6)) * np.exp(
        np.random.default_rng(cut).normal(0.0, 0.1, len(x) - cut)
    )
    a, b = _fast(art, _frame(x)), _fast(art, _frame(other))
    assert np.array_equal(a[:cut], b[:cut], equal_nan=True)
    assert np.array_equal(_event(art, _frame(other))[:cut], a[:cut], equal_nan=True)


# ----------------------------------------------------------------------------- two paths


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    x=prices(min_size=2, max_size=260),
    method=st.sampled_from(["volatility", "trend"]),
    feed=st.sampled_from(["close", "sma", "h4"]),
)
def test_event_driven_dag_equals_fast_path_bit_for_bit(
    data: st.DataObject, x: Floats, method: str, feed: str
) -> None:
    """Over a price column, an indicator (NaN warm-up) and a coarser clock (resample)."""
    node = _vol_node(data) if method == "volatility" else _trend_node(data)
    node["input"] = feed
    extra = {
        "sma": {"kind": "indicator", "fn": "SMA", "inputs": ["close"], "params": {"period": 3}},
        "h4": {"kind": "resample", "input": "close", "timeframe": "4h", "agg": "last"},
    }
    art = _artifact(node, extra)
    bars = _frame(x)
    fast, slow = _fast(art, bars), _event(art, bars)
    assert np.array_equal(fast, slow, equal_nan=True)
    gate_fast = np.asarray(evaluate(art, check(art), bars)["gate"])
    assert [bool(g) for g in gate_fast] == [bool(s == 1.0) for s in slow]


def test_snapshot_restore_continues_the_same_states() -> None:
    bars = generate_bars(seed=3, start_ns=START, n=300, timeframe="1h")
    for node in (
        {"kind": "regime", "method": "volatility", "lookback": 10, "window": 50},
        {"kind": "regime", "method": "trend", "lookback": 12},
    ):
        art = _artifact(node)
        graph = check(art)
        whole = _event(art, bars)
        first = DagEvaluator(art, graph)
        rows = list(bars.iter_rows())
        for row in rows[:150]:
            first.on_bar(BarValues(*row[:6]))
        second = DagEvaluator(art, graph)
        second.restore(first.snapshot())
        rest = []
        for row in rows[150:]:
            second.on_bar(BarValues(*row[:6]))
            rest.append(second.values["reg"])
        assert np.array_equal(np.asarray(rest, dtype=np.float64), whole[150:], equal_nan=True)


def test_warmup_is_the_longest_path() -> None:
    vol = {"kind": "regime", "method": "volatility", "input": "sma", "lookback": 10, "window": 40}
    sma = {"kind": "indicator", "fn": "SMA", "inputs": ["close"], "params": {"period": 5}}
    assert check(_artifact(vol, {"sma": sma})).warmup == 4 + 10 + 40 - 1
    trend = {"kind": "regime", "method": "trend", "lookback": 24}
    assert check(_artifact(trend)).warmup == 24


# ----------------------------------------------------------------------------- gating


def test_gated_example_never_enters_outside_its_regime(tmp_path: Path) -> None:
    art = load(EXAMPLE)
    bars = parse_bars(ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv")
    result = run_backtest(art, check(art), bars, out_dir=tmp_path)
    state: dict[str, Any] = {}
    entries = blocked = 0
    for rec in read(tmp_path / "strategy.log.jsonl"):
        if rec["kind"] == "nodes":
            state.update(rec["values"])
            in_regime = state.get("trend") == 1.0 and state.get("vol") in (0.0, 1.0)
            if rec["values"].get("golden") is True and not in_regime:
                blocked += 1
        elif rec["kind"] == "decision" and rec["action"] == "enter":
            entries += 1
            assert state["golden"] is True, rec
            assert state["trend"] == 1.0 and state["vol"] in (0.0, 1.0), (rec, state)
    assert entries == len(result.trades) > 0
    assert blocked > 0  # the gate did refuse crosses the plain SMA cross would have taken
    fast = fast_backtest(art, check(art), bars)
    assert fast.trades == result.trades  # the fast path trades the gated example identically
    assert np.array_equal(fast.position, result.position)
    assert np.array_equal(fast.equity, result.equity)


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("method: volatility", "method: vol", "nodes.vol.method", "'volatility' or 'trend'"),
        ("low_pct: 33", "low_pct: 70", "nodes.vol", "low_pct 70.0 must be below high_pct 67.0"),
        ("lookback: 24, window", "lookback: 1, window", "nodes.vol.lookback", "greater than"),
        ("lookback: 24, threshold: 0.3", "lookback: 1, threshold: 0.3", "nodes.trend.lookback", ""),
        ("high_pct: 67", "high_pct: 101", "nodes.vol.high_pct", "less than or equal to 100"),
        ("threshold: 0.3", "threshold: 0.3, window: 10", "nodes.trend", "window applies to"),
        ("window: 240,", "window: 240, threshold: 0.2,", "nodes.vol", "threshold applies to"),
    ],
)
def test_schema_errors_name_the_field(old: str, new: str, field: str, words: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    with pytest.raises(ArtifactSchemaError) as err:
        loads(text.replace(old, new), "sma-regime.yaml")
    assert f"{field}:" in str(err.value) and words in str(err.value)


def test_defaults_are_explicit_in_the_canonical_form() -> None:
    art = _artifact({"kind": "regime", "method": "volatility"})
    assert to_data(art)["nodes"]["reg"] == {
        "kind": "regime",
        "method": "volatility",
        "input": "close",
        "lookback": 20,
        "window": 100,
        "low_pct": 33.0,
        "high_pct": 67.0,
    }
    trend = to_data(_artifact({"kind": "regime", "method": "trend"}))["nodes"]["reg"]
    assert trend == {
        "kind": "regime",
        "method": "trend",
        "input": "close",
        "lookback": 20,
        "threshold": 0.3,
    }
    # spelling a default out does not change the hash
    spelled = _artifact({"kind": "regime", "method": "trend", "threshold": 0.3, "input": "close"})
    assert content_hash(spelled) == content_hash(_artifact({"kind": "regime", "method": "trend"}))


def test_existing_examples_keep_their_content_hash() -> None:
    """Adding the kind changes no other artifact's canonical form (hashes as before the kind)."""
    pinned = {
        "rsi-reversion.yaml": "980435b47479ed953e447166ad5c7cee0d1b4354dab157d78ec359b1ec7066d0",
        "sma-cross.yaml": "d35cfb73464d7940948f88425aee812a03304bc02a7629498b4b64bd7fdaa511",
        "sma-voltarget-scale.yaml": (
            "57129ed26e4c7254e6d0dc1ebd079e3173918687a40f51585fe725265c78af14"
        ),
    }
    for name, digest in pinned.items():
        assert content_hash(load(ROOT / "examples" / name)) == digest, name
