"""The `risk.max_drawdown_pct` circuit breaker: trips once, refuses new risk, exits still work.

Checked on hand-made bars (the trip bar, its record, the refusals, the stop exit, a working
entry cancelled after a hot-swap, a resume re-arming it), against an oracle computed from the
run's own equity series, and fast path == event path with the breaker on (random artifacts are
`test_fastpath.artifacts` variations with a breaker added).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_fastpath import _bars, _metrics_close, artifacts
from test_fastpath_features import scaled_artifacts

from artifacts.errors import ArtifactSchemaError
from artifacts.graph import SignalGraph, check
from artifacts.io import content_hash, from_data, load, to_data
from artifacts.schema import Artifact
from feeds.schema import BAR_SCHEMA
from strategy_kernel.backtest import BacktestResult, run_backtest
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.fastpath import fast_backtest
from strategy_kernel.log import StrategyLog

ROOT = Path(__file__).resolve().parents[2]
START = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000_000_000
RULE = "risk.max_drawdown_pct"


def _frame(rows: Sequence[tuple[float, float, float, float]]) -> pl.DataFrame:
    """Hourly bars from (open, high, low, close) rows."""
    return pl.DataFrame(
        {
            "ts_ns": [START + i * HOUR for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        },
        schema=dict(BAR_SCHEMA),
    )


def _always_long(**risk: Any) -> dict[str, Any]:
    """Enter long whenever flat (close > 0), 50 units, 10 % stop, no fees: equity is exact."""
    return {
        "schema": "stratagem/v1",
        "name": "dd-breaker",
        "version": 1,
        "instrument": {
            "venue": "sim",
            "symbol": "BTC/USDT",
            "timeframe": "1h",
            "kind": "spot",
            "price_increment": "0.01",
            "size_increment": "0.0001",
        },
        "nodes": {"up": {"kind": "threshold", "input": "close", "op": ">", "value": 0}},
        "entry": {"when": "up", "side": "long", "order": {"type": "market"}},
        "exit": {"stop_loss": {"pct": 10.0}},
        "risk": {"sizing": {"method": "fixed", "value": 50}, "max_position_pct": 100} | risk,
        "backtest": {"initial_equity": 10_000, "maker_fee_bps": 0, "taker_fee_bps": 0},
    }


def _run_logged(
    art: Artifact, bars: pl.DataFrame, **kw: Any
) -> tuple[BacktestResult, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as d:
        res = run_backtest(art, check(art), bars, out_dir=Path(d), **kw)
        lines = (Path(d) / "strategy.log.jsonl").read_text().splitlines()
    return res, [json.loads(x) for x in lines]


def _bar_of(ts_ns: int) -> int:
    """Index of the bar whose close (decision) is at `ts_ns`, for the hand-made hourly bars."""
    return (ts_ns - START) // HOUR - 1


# peak 10 100 at bar 1 (close 102); bar 4 closes at 97.5: 9 875 <= 10 100 * 0.98 = 9 898 -> trip
# (measured from the start equity 10 000 it would need 9 800: the peak is what counts); bar 6
# hits the 90.00 stop; bars 6.. are flat and every entry is refused.
TRIP_BARS = [
    (100, 100, 100, 100),
    (100, 102, 100, 102),
    (102, 102, 100, 100),
    (100, 100, 99, 99),
    (99, 99, 97.5, 97.5),
    (97.5, 98, 97, 97),
    (97, 97, 89, 91),
    (91, 92, 91, 92),
    (92, 93, 92, 93),
    (93, 94, 93, 94),
]


def test_breaker_trips_at_the_known_bar_and_refuses_later_entries() -> None:
    art = from_data(_always_long(max_drawdown_pct=2.0))
    bars = _frame(TRIP_BARS)
    res, log = _run_logged(art, bars)
    trips = [r for r in log if r["kind"] == "breaker"]
    assert len(trips) == 1  # logged once, however long it stays tripped
    rec = trips[0]
    assert rec["action"] == "trip" and rec["rule"] == RULE and rec["limit_pct"] == 2.0
    assert _bar_of(rec["ts_ns"]) == 4
    assert rec["peak"] == pytest.approx(10_100.0) and rec["equity"] == pytest.approx(9_875.0)
    assert rec["drawdown_pct"] == pytest.approx((10_100 - 9_875) / 10_100 * 100)
    # the open position is not flattened: it leaves by its stop at 90.00
    assert len(res.trades) == 1
    t = res.trades[0]
    assert t.exit_reason == "sl" and t.exit_cost == t.exit_qty * 9_000  # 90.00 in ticks
    assert res.equity[6] == pytest.approx(9_500.0)
    # flat from bar 6 on: every decision there tried to enter and was refused by the breaker
    refused = [r["bar"] for r in res.refusals if r["rule"] == RULE]
    assert refused == [6, 7, 8, 9]
    enters = [_bar_of(r["ts_ns"]) for r in log if r.get("action") == "enter"]
    assert enters == [0]
    assert (res.position[6:] == 0).all()
    # without the breaker the same bars enter again at bar 6
    off, off_log = _run_logged(from_data(_always_long()), bars)
    assert [_bar_of(r["ts_ns"]) for r in off_log if r.get("action") == "enter"] == [0, 6]
    assert not [r for r in off.refusals if r["rule"] == RULE]
    # and the fast path replays the same run
    fp = fast_backtest(art, check(art), bars)
    assert fp.trades == res.trades and np.array_equal(fp.equity, res.equity)


def test_breaker_cancels_a_working_entry_after_a_hot_swap() -> None:
    """A swap adds the breaker while a limit entry works and equity is already 5 % down."""
    data = _always_long()
    data["entry"]["order"] = {"type": "limit", "offset_ticks": -100, "tif": "GTC"}
    old = from_data(data)
    new = from_data(data | {"version": 2, "risk": data["risk"] | {"max_drawdown_pct": 3.0}})
    bars = _frame(
        [
            (100, 100, 100, 100),  # limit buy at 99.00
            (100, 100, 98, 98),  # filled at 99.00; stop 89.10
            (98, 98, 89, 89.5),  # stopped out (9 505); a new limit at 88.50 works; swap here
            (89.5, 90, 89, 89.5),  # decision: 9 505 <= 10 000 * 0.97 -> trip, entry cancelled
            (89.5, 89.5, 85, 86),  # would have filled the 88.50 limit
            (86, 87, 86, 87),
        ]
    )
    res, log = _run_logged(old, bars, swaps=[(2, new)])
    (trip,) = [r for r in log if r["kind"] == "breaker"]
    assert _bar_of(trip["ts_ns"]) == 3 and trip["equity"] == pytest.approx(9_505.0)
    cancels = [r for r in log if r.get("action") == "cancel_entry"]
    assert [(_bar_of(r["ts_ns"]), r["why"]) for r in cancels] == [
        (3, "risk.max_drawdown_pct breaker tripped")
    ]
    assert len(res.trades) == 1 and (res.position[3:] == 0).all()
    assert [r["bar"] for r in res.refusals if r["rule"] == RULE] == [4, 5]


def test_resume_re_arms_the_breaker_from_equity_now(tmp_path: Path) -> None:
    from stratagem.service.session import SessionLoop, apply_control

    art = from_data(_always_long(max_drawdown_pct=5.0))
    log = StrategyLog(tmp_path / "s.jsonl")
    sk = StrategyKernel(art, check(art), session_id="s", timeframe_ns=HOUR, log=log)
    ts = START + 3 * HOUR
    sk.risk.on_bar(ts, 10_000.0)
    sk.risk.on_bar(ts, 9_600.0)
    assert not sk.risk.check_drawdown(5.0) and not sk.risk.drawdown_tripped
    sk.risk.on_bar(ts, 9_500.0)
    assert sk.risk.check_drawdown(5.0) and sk.risk.drawdown_tripped
    assert not sk.risk.check_drawdown(5.0)  # trips once
    cmds, bypass = apply_control(
        sk, cast(SessionLoop, None), {"action": "resume", "ts_ns": ts}, tmp_path
    )
    assert cmds == [] and not bypass
    assert not sk.risk.drawdown_tripped and sk.risk.peak_equity == 9_500.0
    sk.risk.on_bar(ts, 9_100.0)  # 4.2 % below the new peak: still armed, not tripped
    assert not sk.risk.check_drawdown(5.0)
    apply_control(sk, cast(SessionLoop, None), {"action": "resume", "ts_ns": ts}, tmp_path)
    log.close()
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    resets = [r for r in recs if r["kind"] == "breaker"]
    assert len(resets) == 1  # a resume of an untripped breaker logs nothing
    assert resets[0]["action"] == "reset" and resets[0]["peak"] == 9_500.0


# ------------------------------------------------------------------ schema and hashes


@pytest.mark.parametrize("bad", [0, -1.0, 100.5, "lots"])
def test_bad_values_are_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ArtifactSchemaError, match="max_drawdown_pct"):
        from_data(_always_long(max_drawdown_pct=bad))


@pytest.mark.parametrize("name", ["rsi-reversion", "sma-cross", "sma-voltarget-scale"])
def test_unset_breaker_keeps_the_content_hash(name: str) -> None:
    path = ROOT / "examples" / f"{name}.yaml"
    art = load(path)
    assert art.risk.max_drawdown_pct is None
    assert "max_drawdown_pct" not in to_data(art)["risk"]
    before = content_hash(art)
    # unchanged by the new field, and equal to the hash the provenance of a fresh compile would
    # record for the same file (round trip through the canonical form)
    assert content_hash(from_data(to_data(art))) == before
    on = from_data(to_data(art) | {"risk": to_data(art)["risk"] | {"max_drawdown_pct": 10}})
    assert content_hash(on) != before


# ------------------------------------------------------------------ random artifacts


def _trip_bar(equity: np.ndarray[Any, Any], eq0: float, pct: float) -> int | None:
    """Oracle: the first decision where equity <= running peak (from the start) * (1 - pct/100)."""
    peak = np.maximum.accumulate(np.concatenate([[eq0], equity]))[1:]
    hit = np.flatnonzero(equity <= peak * (1 - pct / 100))
    return int(hit[0]) if hit.size else None


_PLAN_RULES = ("risk.", "exit.stop_loss", "direction_sanity")


@settings(max_examples=100, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 900))
def test_random_breaker_matches_oracle_and_fast_path(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    off_art = data.draw(artifacts(base))
    pct = data.draw(st.floats(0.05, 3.0))
    d = to_data(off_art)
    art = from_data(d | {"risk": d["risk"] | {"max_drawdown_pct": pct}})
    bars = _bars(seed, n)
    ev, log = _run_logged(art, bars)
    tf = HOUR
    t0 = int(bars["ts_ns"][0])

    def bar_of(ts_ns: int) -> int:
        return (ts_ns - t0) // tf - 1

    # fast path == event path, trade for trade and equity bit for bit
    fp = fast_backtest(art, check(art), bars)
    assert fp.trades == ev.trades
    assert np.array_equal(ev.position, fp.position)
    assert np.array_equal(ev.equity, fp.equity)
    assert ev.metrics == fp.metrics or _metrics_close(ev.metrics.as_dict(), fp.metrics.as_dict())

    # the oracle from the run's own equity series
    trip = _trip_bar(ev.equity, art.backtest.initial_equity, pct)
    trips = [r for r in log if r["kind"] == "breaker"]
    refused = [int(cast(int, r["bar"])) for r in ev.refusals if r["rule"] == RULE]
    off, off_log = _run_logged(off_art, bars)
    event("tripped" if trip is not None else "never tripped")
    if trip is None:
        assert trips == [] and refused == []
        assert off.trades == ev.trades and np.array_equal(off.equity, ev.equity)
        return
    assert len(trips) == 1 and bar_of(trips[0]["ts_ns"]) == trip
    assert trips[0]["equity"] == ev.equity[trip]
    # before the trip the breaker changed nothing
    assert np.array_equal(off.equity[: trip + 1], ev.equity[: trip + 1])
    # after it: every refusal of the rule is at or after it, no entry is decided any more
    assert all(b >= trip for b in refused)
    assert not [r for r in log if r.get("action") == "enter" and bar_of(r["ts_ns"]) >= trip]
    # the first refusal is the first decision from the trip on where the run without the breaker
    # tried to enter (the two runs are the same until then when no entry order was working)
    cancelled = any(r.get("action") == "cancel_entry" and bar_of(r["ts_ns"]) == trip for r in log)
    if not cancelled:
        attempts = [
            bar_of(r["ts_ns"])
            for r in off_log
            if bar_of(r["ts_ns"]) >= trip
            and (
                (r["kind"] == "decision" and r.get("action") == "enter")
                or (r["kind"] == "refusal" and str(r["rule"]).startswith(_PLAN_RULES))
            )
        ]
        assert (refused[0] if refused else None) == (attempts[0] if attempts else None)
        event("first refusal checked against the run without the breaker" if refused else "idle")


def _with_breaker(art: Artifact, pct: float) -> Artifact:
    d = to_data(art)
    return from_data(d | {"risk": d["risk"] | {"max_drawdown_pct": pct}})


def test_breaker_refuses_scale_in_adds_on_both_paths() -> None:
    """Adds of 0.5 units on every bar: three fill before the trip at bar 4, then they are refused."""
    data = _always_long(max_drawdown_pct=2.0)
    data["entry"]["scale_in"] = [{"when": "up", "size_pct": 1, "max_adds": 10}]
    art = from_data(data)
    bars = _frame(TRIP_BARS)
    ev, log = _run_logged(art, bars)
    (trip,) = [r for r in log if r["kind"] == "breaker"]
    assert _bar_of(trip["ts_ns"]) == 4
    refused = [(r["bar"], str(r["detail"])[:14]) for r in ev.refusals if r["rule"] == RULE]
    assert refused == [(4, "entry.scale_in"), (5, "entry.scale_in")] + [
        (b, "the drawdown b") for b in (6, 7, 8, 9)
    ]
    (t,) = ev.trades
    assert t.entry_qty == t.planned_qty + 3 * 5_000  # three adds of 0.5 units (lots of 0.0001)
    assert t.exit_reason == "sl"
    fp = fast_backtest(art, check(art), bars)
    assert fp.trades == ev.trades and np.array_equal(fp.equity, ev.equity)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), seed=st.integers(0, 100_000), n=st.integers(300, 900))
def test_random_scaled_breaker_fast_path_equals_event_path(
    data: st.DataObject,
    seed: int,
    n: int,
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
) -> None:
    base = data.draw(st.sampled_from([sma_artifact[0], rsi_artifact[0]]))
    art = _with_breaker(data.draw(scaled_artifacts(base)), data.draw(st.floats(0.05, 3.0)))
    bars = _bars(seed, n)
    ev = run_backtest(art, check(art), bars)
    fp = fast_backtest(art, check(art), bars)
    assert fp.trades == ev.trades
    assert np.array_equal(ev.position, fp.position)
    assert np.array_equal(ev.equity, fp.equity)
    event("tripped" if any(r["rule"] == RULE for r in ev.refusals) else "no refusal")
