"""Break-even, trailing stops and invalid_if: stops only move in the trade's favour, by amend."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from artifacts.graph import SignalGraph, check
from artifacts.io import loads, to_data
from artifacts.schema import Artifact
from order_kernel.log import read as read_order_log
from strategy_kernel.backtest import run_backtest


def _variant(art: Artifact, **exit_fields: object) -> Artifact:
    data = to_data(art)
    data["exit"].update(exit_fields)
    return loads(yaml.safe_dump(data))


def _records(path: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in map(json.loads, path.read_bytes().splitlines()) if r["kind"] == kind]


def test_trailing_stop_moves_only_up_and_is_amended(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    art = _variant(sma_artifact[0], trailing={"pct": 1.5, "activate_r": 0.5})
    result = run_backtest(art, check(art), sample_bars.head(4000), out_dir=tmp_path)
    moves = [
        r
        for r in _records(tmp_path / "strategy.log.jsonl", "decision")
        if r["action"] == "move_stop"
    ]
    assert len(moves) > 10
    assert all(r["new"] > r["old"] for r in moves)  # type: ignore[operator]
    amended = {
        e.message.client_order_id
        for e in read_order_log(tmp_path / "orders.log")
        if type(e.message).__name__ == "AmendAccepted"
    }  # type: ignore[union-attr]
    assert amended and all(cid.endswith(".sl") for cid in amended)
    base = run_backtest(sma_artifact[0], sma_artifact[1], sample_bars.head(4000))
    assert [t.entry_ts_ns for t in result.trades][:3] == [t.entry_ts_ns for t in base.trades][:3]


def test_break_even_moves_stop_to_entry(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    art = _variant(sma_artifact[0], break_even={"after_r": 1.0, "offset_ticks": 0})
    result = run_backtest(art, check(art), sample_bars.head(4000), out_dir=tmp_path)
    moves = [
        r
        for r in _records(tmp_path / "strategy.log.jsonl", "decision")
        if r["action"] == "move_stop"
    ]
    refs = {t.ref_price for t in result.trades}
    assert moves and all(r["new"] in refs for r in moves)


def test_invalid_if_blocks_entries_with_a_logged_rule(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    data = to_data(sma_artifact[0])
    data["entry"]["invalid_if"] = {"node": "close", "op": ">", "value": 0}
    art = loads(yaml.safe_dump(data))
    result = run_backtest(art, check(art), sample_bars.head(2000))
    assert result.trades == []
    assert result.refusals and all(r["rule"] == "entry.invalid_if" for r in result.refusals)
