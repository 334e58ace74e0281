"""One-shot proposals -> one-shot artifacts, with direction checks."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from artifacts.graph import check
from compiler.proposals import ProposalError, parse_proposal, proposal_to_artifact
from strategy_kernel.backtest import run_backtest

BASE: dict[str, Any] = {
    "symbol": "BTC/USDT",
    "side": "long",
    "risk_pct": 1.0,
    "entry": 42000.0,
    "stop_loss": 41000.0,
    "take_profit": [{"price": 43000.0, "size_pct": 50}, {"price": 44000.0, "size_pct": 50}],
    "horizon": "48h",
    "confidence": 0.6,
    "invalid_if": [{"op": "<", "price": 40000.0}],
    "rationale": "range low retest",
}


def test_proposal_becomes_a_checked_one_shot_artifact(bars: pl.DataFrame) -> None:
    a = proposal_to_artifact(parse_proposal(BASE))
    check(a)
    assert a.entry.when == "entry_ok" and a.entry.side == "long"
    assert [tp.r for tp in a.exit.take_profit] == [1.0, 2.0]
    assert a.exit.time_exit is not None and str(a.exit.time_exit) == "48h"
    assert a.risk.risk_per_trade_pct == 1.0
    assert "expires after 48h" in a.description
    run_backtest(a, check(a), bars)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"stop_loss": 43000.0}, "stop_loss < entry"),
        ({"side": "short"}, "stop_loss > entry"),
        ({"take_profit": [{"price": 41500.0, "size_pct": 100}]}, "wrong side"),
        (
            {
                "take_profit": [
                    {"price": 43000.0, "size_pct": 70},
                    {"price": 44000.0, "size_pct": 70},
                ]
            },
            "> 100",
        ),
        ({"horizon": "soon"}, "invalid duration"),
        ({"confidence": 2}, "confidence"),
    ],
)
def test_bad_proposals_are_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ProposalError, match=words):
        parse_proposal({**BASE, **change})
