"""Strategy state machine table, sizing and risk rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from artifacts.io import load
from artifacts.schema import Artifact
from strategy_kernel.risk import NS_PER_DAY, EntryPlan, RiskState, plan_entry
from strategy_kernel.state import PHASE_TABLE, Phase, PhaseError, Trigger, next_phase

ROOT = Path(__file__).resolve().parents[2]


def test_every_phase_is_reachable_and_loops_back_to_looking() -> None:
    reached = {Phase.IDLE}
    frontier = [Phase.IDLE]
    while frontier:
        p = frontier.pop()
        for (src, _), dst in PHASE_TABLE.items():
            if src is p and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(Phase)
    assert next_phase(Phase.EXITED, Trigger.NEXT_BAR) is Phase.LOOKING


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_unlisted_transitions_raise(phase: Phase, trigger: Trigger) -> None:
    if (phase, trigger) in PHASE_TABLE:
        assert next_phase(phase, trigger) is PHASE_TABLE[(phase, trigger)]
    else:
        with pytest.raises(PhaseError, match=phase.name):
            next_phase(phase, trigger)


@pytest.fixture
def rsi() -> Artifact:
    return load(ROOT / "examples" / "rsi-reversion.yaml")


def _plan(a: Artifact, **kw: object) -> EntryPlan | str:
    args: dict[str, object] = {
        "artifact": a,
        "side": "long",
        "ref_ticks": 5_000_000,
        "atr": 500.0,
        "level": None,
        "equity": 10_000.0,
        "risk": RiskState(10_000.0, 3_600_000_000_000),
        "ts_ns": 0,
    }
    args.update(kw)
    return plan_entry(**args)  # type: ignore[arg-type]


def test_risk_pct_sizing_stop_and_targets(rsi: Artifact) -> None:
    plan = _plan(rsi)
    assert isinstance(plan, EntryPlan)
    # stop 2 x ATR(500) = 1000.00 below 50,000.00; risk 0.5 % of 10k = 50 -> 0.05 BTC = 500 lots
    assert plan.stop_ticks == 5_000_000 - 100_000
    assert plan.lots == 500
    assert plan.targets == ((5_000_000 + 150_000, 250), (5_000_000 + 300_000, 250))
    assert plan.risk_units == 100_000 * 500


def test_short_mirrors_long(rsi: Artifact) -> None:
    plan = _plan(rsi, side="short")
    assert isinstance(plan, EntryPlan)
    assert plan.stop_ticks == 5_000_000 + 100_000
    assert all(p < 5_000_000 for p, _ in plan.targets)


def test_position_cap_limits_size(rsi: Artifact) -> None:
    capped = rsi.model_copy(update={"risk": rsi.risk.model_copy(update={"max_position_pct": 1.0})})
    plan = _plan(capped)
    assert isinstance(plan, EntryPlan)
    assert plan.lots == 20  # 1 % of 10k = 100 USDT at 50k = 0.002 BTC


def test_undefined_atr_and_zero_size_are_refused_with_rule(rsi: Artifact) -> None:
    assert str(_plan(rsi, atr=math.nan)).startswith("exit.stop_loss.atr_mult")
    assert str(_plan(rsi, equity=0.0001)).startswith("risk.sizing")


def test_stop_level_on_wrong_side_is_direction_sanity(rsi: Artifact) -> None:
    level_art = rsi.model_copy(
        update={
            "exit": rsi.exit.model_copy(
                update={
                    "stop_loss": rsi.exit.stop_loss.model_copy(
                        update={"atr_mult": None, "level": "trend"}
                    )
                }
            )
        }  # type: ignore[union-attr]
    )
    refusal = _plan(level_art, level=51_000.0)
    assert isinstance(refusal, str) and refusal.startswith("direction_sanity")
    ok = _plan(level_art, level=49_000.0)
    assert isinstance(ok, EntryPlan) and ok.stop_ticks == 4_900_000


def test_daily_loss_gate_blocks_until_next_day(rsi: Artifact) -> None:
    state = RiskState(10_000.0, 3_600_000_000_000)
    state.on_bar(NS_PER_DAY * 10, 10_000.0)
    state.on_bar(NS_PER_DAY * 10 + 1, 9_600.0)  # -4 % > 3 % limit
    refusal = _plan(rsi, risk=state, ts_ns=NS_PER_DAY * 10 + 1)
    assert isinstance(refusal, str) and refusal.startswith("risk.max_daily_loss_pct")
    state.on_bar(NS_PER_DAY * 11, 9_600.0)  # new UTC day: new baseline
    assert isinstance(_plan(rsi, risk=state, ts_ns=NS_PER_DAY * 11), EntryPlan)


def test_loss_streak_pauses_and_cooldown(rsi: Artifact) -> None:
    art = rsi.model_copy(
        update={
            "risk": rsi.risk.model_copy(update={"max_consecutive_losses": 2, "cooldown_bars": 3})
        }
    )
    state = RiskState(10_000.0, 10)
    state.on_bar(0, 10_000.0)
    state.on_trade_closed(0, -1.0, cooldown_bars=3)
    assert str(_plan(art, risk=state, ts_ns=5)).startswith("risk.cooldown_bars")
    state.on_trade_closed(0, -1.0, cooldown_bars=3)
    assert str(_plan(art, risk=state, ts_ns=100)).startswith("risk.max_consecutive_losses")
    assert isinstance(_plan(art, risk=state, ts_ns=NS_PER_DAY), EntryPlan)
