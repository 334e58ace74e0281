"""One-shot proposals -> one-shot artifacts, with direction checks."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from artifacts.graph import check
from artifacts.io import content_hash, dumps, loads
from compiler.proposals import ProposalError, horizon_ns, parse_proposal, proposal_to_artifact
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


T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
HOUR = 3_600 * 10**9


def test_proposal_becomes_a_checked_one_shot_artifact(bars: pl.DataFrame) -> None:
    a = proposal_to_artifact(parse_proposal(BASE), now_ns=T0)
    check(a)
    assert a.entry.when == "entry_ok" and a.entry.side == "long"
    assert [tp.r for tp in a.exit.take_profit] == [1.0, 2.0]
    assert a.exit.time_exit is not None and str(a.exit.time_exit) == "48h"
    assert a.risk.risk_per_trade_pct == 1.0
    assert a.one_shot is not None
    assert (a.one_shot.created_at, a.one_shot.expires_at, a.one_shot.max_entries) == (
        T0,
        T0 + 48 * HOUR,
        1,
    )
    assert "expires 2024-01-03T00:00:00Z" in a.description
    assert a.provenance.created == "2024-01-01T00:00:00Z" and a.provenance.base_url_class == "none"
    again = loads(dumps(a))  # the expiry survives YAML and is part of what the artifact does
    assert again.one_shot == a.one_shot and content_hash(again) == content_hash(a)
    run_backtest(a, check(a), bars)


@pytest.mark.parametrize(
    ("created", "horizon", "timeframe", "expires"),
    [
        ("2024-01-01T00:00:00Z", "48h", "1h", T0 + 48 * HOUR),
        ("2024-01-01T01:00:00+01:00", "90m", "1h", T0 + 90 * 60 * 10**9),
        (T0, "12 bars", "4h", T0 + 48 * HOUR),
        (T0, "2d", "1h", T0 + 48 * HOUR),
    ],
)
def test_expiry_is_creation_plus_horizon(
    created: int | str, horizon: str, timeframe: str, expires: int
) -> None:
    p = parse_proposal({**BASE, "created_at": created, "horizon": horizon, "timeframe": timeframe})
    a = proposal_to_artifact(p, now_ns=0)  # the proposal's own created_at wins over the clock
    assert a.one_shot is not None
    assert (a.one_shot.created_at, a.one_shot.expires_at) == (T0, expires)
    assert horizon_ns(horizon, timeframe) == expires - T0


def test_expiry_needs_a_creation_time() -> None:
    with pytest.raises(ProposalError, match="no created_at and no clock"):
        proposal_to_artifact(parse_proposal(BASE))
    with pytest.raises(ProposalError, match="no time zone"):
        proposal_to_artifact(parse_proposal({**BASE, "created_at": "2024-01-01T00:00:00"}))
    with pytest.raises(ProposalError, match="not ISO 8601"):
        proposal_to_artifact(parse_proposal({**BASE, "created_at": "yesterday"}))
    with pytest.raises(ProposalError, match="greater than or equal to 0"):
        proposal_to_artifact(parse_proposal({**BASE, "created_at": -5}))


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
