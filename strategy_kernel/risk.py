"""Sizing and the strategy's own risk rules, applied before any order leaves the strategy kernel.

Every refusal names its rule (e.g. `risk.max_daily_loss_pct`) so the strategy log says exactly
why a signal did not trade. Account-level hard limits live in the order kernel's risk gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from artifacts.schema import Artifact

NS_PER_DAY = 86_400_000_000_000


@dataclass
class RiskState:
    """Running state the rules need: today's starting equity, the loss streak, cooldowns."""

    initial_equity: float
    timeframe_ns: int = 0
    day: int = -1
    day_start_equity: float = 0.0
    equity: float = 0.0
    consecutive_losses: int = 0
    paused_day: int = -1  # entries blocked for this UTC day (loss streak)
    cooldown_until_ns: int = 0
    closed_pnl: list[float] = field(default_factory=list)
    peak_equity: float = math.nan  # highest equity at any decision (and the start) of the run
    drawdown_tripped: bool = False  # the max_drawdown_pct breaker: no new risk until reset

    def __post_init__(self) -> None:
        if math.isnan(self.peak_equity):
            self.peak_equity = self.initial_equity

    def on_bar(self, ts_ns: int, equity: float) -> None:
        day = ts_ns // NS_PER_DAY
        if day != self.day:
            self.day = day
            self.day_start_equity = equity
        self.equity = equity
        if equity > self.peak_equity:
            self.peak_equity = equity

    def check_drawdown(self, max_drawdown_pct: float | None) -> bool:
        """Trip the breaker if equity has fallen `max_drawdown_pct` % below its peak.

        True only on the decision that trips it (the caller logs it once); the peak was
        already updated by `on_bar`, so the check sees this bar's equity and peak.
        """
        if max_drawdown_pct is None or self.drawdown_tripped:
            return False
        if self.equity <= self.peak_equity * (1 - max_drawdown_pct / 100):
            self.drawdown_tripped = True
            return True
        return False

    def reset_drawdown(self) -> None:
        """A human cleared the breaker: re-arm it with the current equity as the new peak."""
        self.drawdown_tripped = False
        self.peak_equity = self.equity

    def on_trade_closed(self, ts_ns: int, pnl: float, cooldown_bars: int = 0) -> None:
        self.closed_pnl.append(pnl)
        if pnl < 0:
            self.consecutive_losses += 1
            self.cooldown_until_ns = ts_ns + cooldown_bars * self.timeframe_ns
        else:
            self.consecutive_losses = 0


@dataclass(frozen=True)
class EntryPlan:
    lots: int
    stop_ticks: int | None
    targets: tuple[tuple[int, int], ...]  # (price ticks, lots)
    risk_units: int  # planned loss at the stop, notional units


def sizing_warmup(artifact: Artifact) -> int:
    """Bars of history the sizing needs before the first entry (vol_target: its lookback)."""
    sizing = artifact.risk.effective_sizing()
    return (sizing.lookback_bars or 0) if sizing.method == "vol_target" else 0


def check_gates(artifact: Artifact, risk: RiskState, ts_ns: int) -> str | None:
    """The first rule that blocks a new entry now, as 'rule: detail', or None."""
    r = artifact.risk
    if risk.drawdown_tripped:
        dd = (risk.peak_equity - risk.equity) / risk.peak_equity * 100 if risk.peak_equity else 0.0
        return (
            f"risk.max_drawdown_pct: the drawdown breaker tripped (now {dd:.2f}% below the peak "
            f"{risk.peak_equity:.2f}, limit {r.max_drawdown_pct}%); no new risk until a new run "
            "or a resume"
        )
    if r.max_daily_loss_pct is not None and risk.day_start_equity > 0:
        loss_pct = (risk.day_start_equity - risk.equity) / risk.day_start_equity * 100
        if loss_pct >= r.max_daily_loss_pct:
            return (
                f"risk.max_daily_loss_pct: down {loss_pct:.2f}% today (limit {r.max_daily_loss_pct}%); "
                "entries resume next UTC day"
            )
    if r.max_consecutive_losses is not None:
        day = ts_ns // NS_PER_DAY
        if risk.consecutive_losses >= r.max_consecutive_losses and risk.paused_day != day:
            risk.paused_day = day
            risk.consecutive_losses = 0
        if risk.paused_day == day:
            return f"risk.max_consecutive_losses: {r.max_consecutive_losses} losses in a row; paused until next UTC day"
    if ts_ns < risk.cooldown_until_ns:
        return f"risk.cooldown_bars: cooling down after a loss until ts {risk.cooldown_until_ns}"
    return None


def plan_entry(
    *,
    artifact: Artifact,
    side: str,
    ref_ticks: int,
    atr: float,
    level: float | None,
    equity: float,
    risk: RiskState,
    ts_ns: int,
    vol: float = math.nan,
) -> EntryPlan | str:
    """Size the entry and place its stop and targets, or return the refusal 'rule: detail'.

    `vol` is the instrument's realised annualised volatility (a fraction) for vol_target sizing.
    """
    gate = check_gates(artifact, risk, ts_ns)
    if gate is not None:
        return gate
    inst = artifact.instrument
    tick = float(inst.price_increment)
    lot = float(inst.size_increment)
    sign = 1 if side == "long" else -1
    sl = artifact.exit.stop_loss
    stop: int | None = None
    if sl is not None:
        if sl.atr_mult is not None:
            if not math.isfinite(atr):
                return "exit.stop_loss.atr_mult: ATR is not defined yet (warm-up)"
            dist = max(1, round(sl.atr_mult * atr / tick))
        elif sl.pct is not None:
            dist = max(1, round(ref_ticks * sl.pct / 100))
        elif sl.ticks is not None:
            dist = sl.ticks
        else:
            if level is None or not math.isfinite(level):
                return "exit.stop_loss.level: the level node has no value"
            dist = sign * (ref_ticks - round(level / tick))
        stop = ref_ticks - sign * dist
        if dist <= 0 or stop <= 0:
            return (
                f"direction_sanity: stop {stop * tick:g} is on the wrong side of entry {ref_ticks * tick:g} "
                f"for a {side} (stops go below entry for longs, above for shorts)"
            )
    sizing = artifact.risk.effective_sizing()
    price = ref_ticks * tick
    if sizing.method == "risk_pct":
        if stop is None:
            return "risk.sizing: risk_pct sizing needs exit.stop_loss; set one or use sizing method pct_equity"
        qty = equity * sizing.value / 100 / (abs(ref_ticks - stop) * tick)
    elif sizing.method == "pct_equity":
        qty = equity * sizing.value / 100 / price
    elif sizing.method == "vol_target":
        if not (math.isfinite(vol) and vol > 0):
            return (
                f"risk.sizing: vol_target needs a positive realised volatility over "
                f"{sizing.lookback_bars} bars, got {vol:g} (flat or non-positive closes)"
            )
        qty = equity * sizing.value / 100 / vol / price
    else:
        qty = sizing.value
    cap = equity * artifact.risk.max_position_pct / 100 / price
    qty = min(qty, cap)
    lots = math.floor(qty / lot + 1e-9)
    if lots <= 0:
        return (
            f"risk.sizing: size {qty:.8g} rounds to zero lots of {lot:g}; raise the risk or equity"
        )
    targets = place_targets(artifact, side, ref_ticks, stop, lots)
    if isinstance(targets, str):
        return targets
    risk_units = abs(ref_ticks - stop) * lots if stop is not None else 0
    return EntryPlan(lots=lots, stop_ticks=stop, targets=tuple(targets), risk_units=risk_units)


def place_targets(
    artifact: Artifact, side: str, ref_ticks: int, stop: int | None, lots: int
) -> tuple[tuple[int, int], ...] | str:
    """Take-profit ladder (price ticks, lots) around `ref_ticks`, or the direction-sanity refusal."""
    sign = 1 if side == "long" else -1
    tick = float(artifact.instrument.price_increment)
    targets: list[tuple[int, int]] = []
    left = lots
    tps = artifact.exit.take_profit
    for i, tp in enumerate(tps):
        if tp.r is not None:
            assert stop is not None
            px = ref_ticks + sign * round(tp.r * abs(ref_ticks - stop))
        else:
            assert tp.pct is not None
            px = ref_ticks + sign * round(ref_ticks * tp.pct / 100)
        last_full = i == len(tps) - 1 and abs(sum(t.size_pct for t in tps) - 100) < 1e-9
        q = left if last_full else min(left, int(lots * tp.size_pct / 100))
        if sign * (px - ref_ticks) <= 0:
            return (
                f"direction_sanity: take_profit[{i}] {px * tick:g} is not beyond entry "
                f"{ref_ticks * tick:g} for a {side}"
            )
        if q > 0:
            targets.append((px, q))
            left -= q
    return tuple(targets)
