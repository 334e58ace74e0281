"""One-shot artifacts (trade proposals): no entry from `expires_at` on, at most `max_entries`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from artifacts.graph import check
from artifacts.schema import Artifact
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.fastpath import fast_backtest

START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000


def shot(expires_bar: int, max_entries: int = 1, order: dict[str, Any] | None = None) -> Artifact:
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


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (path / "strategy.log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("max_entries", [1, 3])
def test_entries_stop_at_max_entries_and_expiry(max_entries: int, tmp_path: Path) -> None:
    bars = generate_bars(seed=4, start_ns=START, n=60, timeframe="1h")
    a = shot(expires_bar=40, max_entries=max_entries)
    res = run_backtest(a, check(a), bars, out_dir=tmp_path)
    assert len(res.trades) == max_entries
    rules = [str(r["rule"]) for r in res.refusals]
    assert "one_shot.max_entries" in rules and "one_shot.expires_at" in rules
    expired = [r for r in res.refusals if r["rule"] == "one_shot.expires_at"]
    assert all(int(str(r["ts_ns"])) >= a.one_shot.expires_at for r in expired)  # type: ignore[union-attr]
    enters = [r for r in _records(tmp_path) if r.get("action") == "enter"]
    assert all(r["ts_ns"] < a.one_shot.expires_at for r in enters)  # type: ignore[union-attr]


def test_working_entry_is_cancelled_at_expiry(tmp_path: Path) -> None:
    bars = generate_bars(seed=4, start_ns=START, n=30, timeframe="1h")
    # a limit far below the market never fills: it must be cancelled once the proposal expires
    a = shot(expires_bar=10, order={"type": "limit", "offset_ticks": -1_000_000})
    res = run_backtest(a, check(a), bars, out_dir=tmp_path)
    assert not res.trades
    recs = _records(tmp_path)
    cancels = [r for r in recs if r.get("action") == "cancel_entry"]
    assert len(cancels) == 1 and cancels[0]["why"] == "one_shot.expires_at"
    assert cancels[0]["ts_ns"] == START + 10 * HOUR  # the first decision at or after expires_at
    assert next(r for r in recs if r.get("action") == "enter")["ts_ns"] < START + 10 * HOUR


def test_fast_path_runs_one_shot_trade_for_trade() -> None:
    a = shot(expires_bar=10)
    bars = generate_bars(seed=4, start_ns=START, n=30, timeframe="1h")
    ev, fp = run_backtest(a, check(a), bars), fast_backtest(a, check(a), bars)
    assert fp.trades == ev.trades and np.array_equal(fp.equity, ev.equity)
    assert np.array_equal(fp.position, ev.position)
