"""Volatility-target sizing: schema, the formula, refusals, logging and fast-path parity."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactSchemaError
from artifacts.graph import SignalGraph, check
from artifacts.io import loads, to_data
from artifacts.schema import Artifact
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.fastpath import fast_backtest
from strategy_kernel.metrics import NS_PER_YEAR
from strategy_kernel.risk import EntryPlan, RiskState, plan_entry
from strategy_kernel.volatility import periods_per_year, realized_vol, rolling_realized_vol

HOUR = 3_600_000_000_000
START = 1_704_067_200_000_000_000


def vol_artifact(
    base: Artifact, value: float = 20.0, lookback: int = 30, cap: float = 300.0
) -> Artifact:
    data = to_data(base)
    data["risk"] = {
        "sizing": {"method": "vol_target", "value": value, "lookback_bars": lookback},
        "max_position_pct": cap,
    }
    return Artifact.model_validate(data)


def _yaml(sizing: str) -> str:
    return (
        "schema: stratagem/v1\nname: v\nversion: 1\n"
        "instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}\n"
        "nodes:\n  up: {kind: rising, input: close}\n"
        "entry: {when: up, side: long}\n"
        f"risk:\n  sizing: {sizing}\n"
    )


def test_schema_needs_lookback_for_vol_target_only() -> None:
    with pytest.raises(ArtifactSchemaError) as e:
        loads(_yaml("{method: vol_target, value: 20}"), "a.yaml")
    msg = str(e.value)
    assert "a.yaml:9: risk.sizing:" in msg and "needs lookback_bars" in msg
    with pytest.raises(ArtifactSchemaError, match="only used by sizing method vol_target"):
        loads(_yaml("{method: pct_equity, value: 20, lookback_bars: 10}"))
    with pytest.raises(ArtifactSchemaError, match="lookback_bars"):
        loads(_yaml("{method: vol_target, value: 20, lookback_bars: 1}"))
    art = loads(_yaml("{method: vol_target, value: 20, lookback_bars: 10}"))
    assert art.risk.effective_sizing().lookback_bars == 10


@settings(max_examples=30, deadline=None)
@given(
    closes=st.lists(st.floats(1.0, 1e6), min_size=3, max_size=80),
    tf=st.sampled_from([60_000_000_000, HOUR, 24 * HOUR]),
)
def test_realized_vol_is_the_annualised_sample_stdev_of_log_returns(
    closes: list[float], tf: int
) -> None:
    arr = np.array(closes)
    want = float(np.std(np.diff(np.log(arr)), ddof=1) * math.sqrt(NS_PER_YEAR / tf))
    got = realized_vol(arr, periods_per_year(tf))
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


def test_realized_vol_undefined_cases() -> None:
    assert math.isnan(realized_vol(np.array([1.0, 2.0]), 8766.0))  # one return only
    assert math.isnan(realized_vol(np.array([1.0, 0.0, 2.0]), 8766.0))
    assert realized_vol(np.array([5.0, 5.0, 5.0]), 8766.0) == 0.0
    roll = rolling_realized_vol(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3, 1.0)
    assert np.isnan(roll[:3]).all()
    assert roll[3] == realized_vol(np.array([1.0, 2.0, 3.0, 4.0]), 1.0)


def _plan(a: Artifact, vol: float, equity: float = 10_000.0) -> EntryPlan | str:
    return plan_entry(
        artifact=a,
        side="long",
        ref_ticks=5_000_000,  # 50,000.00
        atr=math.nan,
        level=None,
        equity=equity,
        risk=RiskState(equity, HOUR),
        ts_ns=0,
        vol=vol,
    )


def test_size_is_target_over_realised_vol_times_equity(
    sma_artifact: tuple[Artifact, SignalGraph],
) -> None:
    a = vol_artifact(sma_artifact[0], value=20.0)
    plan = _plan(a, vol=0.5)  # notional = 10k * 0.20 / 0.50 = 4,000 -> 0.08 BTC = 800 lots
    assert isinstance(plan, EntryPlan) and plan.lots == 800
    calmer = _plan(a, vol=0.25)
    assert isinstance(calmer, EntryPlan) and calmer.lots == 1600  # half the vol, twice the size
    capped = _plan(vol_artifact(sma_artifact[0], value=20.0, cap=10.0), vol=0.1)
    assert isinstance(capped, EntryPlan) and capped.lots == 200  # 10 % of 10k at 50k


@pytest.mark.parametrize("vol", [math.nan, 0.0, -1.0])
def test_undefined_or_zero_vol_is_refused_with_its_rule(
    vol: float, sma_artifact: tuple[Artifact, SignalGraph]
) -> None:
    refusal = _plan(vol_artifact(sma_artifact[0]), vol=vol)
    assert isinstance(refusal, str) and refusal.startswith("risk.sizing: vol_target")


def test_backtest_logs_the_vol_and_sizes_by_it(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    a = vol_artifact(sma_artifact[0], value=15.0, lookback=24)
    res = run_backtest(a, check(a), sample_bars.head(3000), out_dir=tmp_path)
    assert len(res.trades) > 5
    closes = sample_bars["close"].to_numpy()
    ts = sample_bars["ts_ns"].to_numpy()
    index = {int(t) + HOUR: i for i, t in enumerate(ts)}  # decision ts = bar close
    enters = [
        r
        for r in map(json.loads, (tmp_path / "strategy.log.jsonl").read_text().splitlines())
        if r["kind"] == "decision" and r["action"] == "enter"
    ]
    assert len(enters) >= len(res.trades)
    equity_at = dict(zip(res.ts_ns.tolist(), res.equity.tolist(), strict=True))
    for r in enters:
        i = index[r["ts_ns"]]
        vol = realized_vol(closes[i - 24 : i + 1], periods_per_year(HOUR))
        assert r["vol"] == vol
        price = r["ref"] * 0.01
        qty = equity_at[int(ts[i])] * 15.0 / 100 / vol / price
        assert r["lots"] == min(
            math.floor(qty / 0.0001 + 1e-9),
            math.floor(3 * equity_at[int(ts[i])] / price / 0.0001 + 1e-9),
        )


def test_vol_target_warms_up_for_its_lookback(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    a = vol_artifact(sma_artifact[0], lookback=400)
    res = run_backtest(a, check(a), sample_bars.head(1500))
    assert all(t.entry_bar > 400 for t in res.trades)
    assert not [r for r in res.refusals if str(r["rule"]) == "risk.sizing"]


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    value=st.floats(3.0, 90.0),
    lookback=st.integers(2, 80),
    side=st.sampled_from(["long", "short"]),
)
def test_fast_path_sizes_vol_target_trade_for_trade(
    seed: int,
    value: float,
    lookback: int,
    side: str,
    sma_artifact: tuple[Artifact, SignalGraph],
) -> None:
    data: dict[str, Any] = to_data(vol_artifact(sma_artifact[0], value=value, lookback=lookback))
    data["entry"]["side"] = side
    a = Artifact.model_validate(data)
    bars = generate_bars(seed=seed, start_ns=START, n=900, timeframe="1h")
    ev = run_backtest(a, check(a), bars)
    fp = fast_backtest(a, check(a), bars)
    assert ev.trades == fp.trades
    assert np.array_equal(ev.equity, fp.equity)
    assert np.array_equal(ev.position, fp.position)


def test_fast_path_parity_on_sample_data_trades(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    a = vol_artifact(sma_artifact[0], value=25.0, lookback=48)
    ev = run_backtest(a, check(a), sample_bars)
    fp = fast_backtest(a, check(a), sample_bars)
    assert len(ev.trades) > 20
    assert ev.trades == fp.trades
    assert np.array_equal(ev.equity, fp.equity)
