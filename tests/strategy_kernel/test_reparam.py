"""Re-parameterisation: a new artifact version takes effect without tearing down orders or state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from artifacts.graph import SignalGraph, check
from artifacts.schema import Artifact
from order_kernel.log import read as read_order_log
from strategy_kernel.backtest import run_backtest
from strategy_kernel.engine import ReparamError
from strategy_kernel.sweep import apply_params


def _records(path: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in map(json.loads, path.read_bytes().splitlines()) if r["kind"] == kind]


def test_swap_while_managing_amends_exits_and_keeps_everything(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    art, graph = rsi_artifact
    bars = sample_bars.head(3000)
    base = run_backtest(art, graph, bars)
    trade = next(
        t
        for t in base.trades
        if t.exit_bar - t.entry_bar >= 4 and "tp" not in t.exit_reason.split("+")[0][:2]
    )
    k = trade.entry_bar + 1  # the position is open and its bracket is working
    v2 = apply_params(art, {"exit.take_profit.1.r": 4.0, "version": art.version + 1})
    run_backtest(art, graph, bars, out_dir=tmp_path, swaps=[(k, v2)])
    log = tmp_path / "strategy.log.jsonl"
    [rep] = _records(log, "reparam")
    assert rep["cold"] == [] and rep["carried"] == sorted(art.nodes)
    assert rep["amended"] == [f"{trade.trade_id}.tp2"]
    swap_ts = rep["ts_ns"]
    cmds = [r["msg"] for r in _records(log, "command") if r["ts_ns"] == swap_ts]
    assert [c["type"] for c in cmds if c["type"] != "SubmitOrder"] == [
        "AmendOrder"
    ]  # nothing cancelled
    events = {
        type(e.message).__name__
        for e in read_order_log(tmp_path / "orders.log")
        if e.message is not None and e.message.ts_ns == swap_ts
    }
    assert "AmendAccepted" in events and "OrderCancelled" not in events
    # the trades before the swap are untouched
    before = [t for t in base.trades if t.exit_bar <= k]
    swapped = run_backtest(art, graph, bars, swaps=[(k, v2)])
    assert [(t.entry_ts_ns, t.exit_ts_ns, t.pnl) for t in swapped.trades[: len(before)]] == [
        (t.entry_ts_ns, t.exit_ts_ns, t.pnl) for t in before
    ]


def test_changed_node_starts_cold_unchanged_nodes_carry_state(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    art, graph = sma_artifact
    bars = sample_bars.head(600)
    v2 = apply_params(art, {"nodes.slow.params.period": 60, "version": 2})
    k = 300
    swapped = run_backtest(art, graph, bars, swaps=[(k, v2)], record_nodes=("fast", "slow"))
    plain = run_backtest(art, graph, bars, record_nodes=("fast", "slow"))
    # `fast` is unchanged: its values continue exactly as in the uninterrupted run
    np.testing.assert_array_equal(swapped.node_series["fast"], plain.node_series["fast"])
    np.testing.assert_array_equal(
        swapped.node_series["slow"][: k + 1], plain.node_series["slow"][: k + 1]
    )
    # `slow` restarted cold at the swap: undefined for its new warm-up, then SMA(60)
    after = swapped.node_series["slow"][k + 1 :]
    assert np.isnan(after[:59]).all() and not np.isnan(after[59])
    closes = bars["close"].to_numpy()[k + 1 : k + 61]
    assert after[59] == pytest.approx(closes.mean(), rel=1e-12)


def test_swap_cannot_change_the_instrument(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    art, graph = sma_artifact
    v2 = apply_params(art, {"instrument.symbol": "ETH/USDT"})
    with pytest.raises(ReparamError, match="instrument"):
        run_backtest(art, graph, sample_bars.head(200), swaps=[(100, v2)])
    assert check(v2)
