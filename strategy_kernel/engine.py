"""The strategy kernel: evaluates the artifact's DAG on each bar and turns decisions into commands.

It is transport-agnostic: `on_bar` and `on_event` return the commands to send; the caller moves
them in-process (backtest) or over ZeroMQ (live). It never sees a wall clock: every timestamp
comes from the bar or the event. Decisions are made on a bar's close and sent with the close
timestamp, so the order kernel can fill them on the next bar at the earliest (no look-ahead).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from artifacts.graph import SignalGraph
from artifacts.schema import Artifact, Condition
from indicators.nodes import BarValues, compare
from indicators.streaming import Stream, make_stream
from order_kernel import messages as m
from order_kernel.spec import OrderType, Side, TimeInForce
from strategy_kernel.errors import StrategyError
from strategy_kernel.log import StrategyLog
from strategy_kernel.risk import EntryPlan, RiskState, place_targets, plan_entry, sizing_warmup
from strategy_kernel.state import Phase, Trigger, next_phase
from strategy_kernel.volatility import periods_per_year, realized_vol

NS_PER_DAY = 86_400_000_000_000
# phases bound once for on_bar, which tests them on every bar (enum lookups are slow on 3.11)
_IDLE, _LOOKING, _ENTERED = Phase.IDLE, Phase.LOOKING, Phase.ENTERED
_MANAGING, _EXITED = Phase.MANAGING, Phase.EXITED


@dataclass
class Fill:
    ts_ns: int
    side: Side
    qty: int
    price: int
    fee: int
    role: str  # entry, sl, tp1.., exit, time


@dataclass
class Trade:
    """One round trip from flat to flat, in ticks/lots/notional units (converted at the edge)."""

    trade_id: str
    side: str
    entry_ts_ns: int
    entry_qty: int = 0
    entry_cost: int = 0  # sum qty*price of entry fills
    exit_ts_ns: int = 0
    exit_qty: int = 0
    exit_cost: int = 0
    fees: int = 0
    stop_price: int | None = None
    targets: list[int] = field(default_factory=list)
    risk_units: int = 0  # |entry - stop| * qty at plan time, notional units
    planned_qty: int = 0
    ref_price: int = 0  # entry reference (signal close + offset), ticks; stops/targets hang on it
    initial_stop: int = 0  # the stop at entry: R = |ref_price - initial_stop|
    best_close: int = 0  # best close since entry (trailing stops follow it)
    exit_reason: str = ""
    entry_bar: int = 0
    exit_bar: int = 0

    @property
    def pnl(self) -> int:
        gross = self.exit_cost - self.entry_cost
        return (gross if self.side == "long" else -gross) - self.fees


class ReparamError(StrategyError):
    """A hot-swap asks for a change that cannot be made in place."""


#: Consulted before an entry is sent (e.g. a shared-account `Portfolio`): 'rule: detail' refuses it.
EntryGate = Callable[["StrategyKernel", EntryPlan, int, int], str | None]


class StrategyKernel:
    """Runs one artifact for one session. `bar_index` counts bars seen (the strategy's clock)."""

    RESEND_BUFFER = 10_000  # commands kept for FIX-style resends

    def __init__(
        self,
        artifact: Artifact,
        graph: SignalGraph,
        *,
        session_id: str,
        timeframe_ns: int,
        log: StrategyLog | None = None,
        base_dir: Path | None = None,
    ) -> None:
        from strategy_kernel.dag import DagEvaluator

        self.artifact = artifact
        self.graph = graph
        self.session_id = session_id
        self.timeframe_ns = timeframe_ns
        self.log = log or StrategyLog(None)
        self.base_dir = base_dir
        self.dag = DagEvaluator(artifact, graph, base_dir)
        self.price_inc = artifact.instrument.price_increment
        self.size_inc = artifact.instrument.size_increment
        self.unit_value = float(self.price_inc * self.size_inc)
        self._price_inc_f = float(self.price_inc)  # _ticks runs on every bar: convert once
        self.atr = _atr_stream(artifact)
        # recent closes for vol_target sizing (empty otherwise: nothing to do per bar)
        self._vol_lookback = sizing_warmup(artifact)
        self._closes: deque[float] = deque(maxlen=self._vol_lookback + 1)
        # bars with an undefined value before the first decision: DAG and stop ATR run side by side
        self.warmup = max(
            graph.warmup, self.atr.warmup if self.atr is not None else 0, self._vol_lookback
        )
        self.phase = Phase.IDLE
        self.seq = 0
        self.bar_index = -1
        self.risk = RiskState(artifact.backtest.initial_equity, timeframe_ns)
        self.position = 0  # signed lots, from the kernel's PositionUpdate
        self.cost_basis = 0
        self.realized = 0
        self.fees_paid = 0
        self.funding_paid = 0
        self.last_close = 0
        self.entry_id: str | None = None
        self.entry_deadline_bar: int | None = None
        self.exit_sent = False
        self.trade: Trade | None = None
        self.trades: list[Trade] = []
        self.refusals: list[dict[str, object]] = []
        self._trade_counter = 0
        self._atr_value = math.nan
        self._sent: dict[int, m.Message] = {}
        self._last_bar: BarValues | None = None
        self._entry_ref = 0  # price of the working entry order (ticks)
        self._bracket_sent: tuple[int | None, tuple[int, ...]] = (None, ())
        self.warm_until_bar = 0  # after a hot-swap, entries wait for new nodes to warm up
        self._pending: list[m.Message] = []  # commands decided while handling an event
        self.entry_gate: EntryGate | None = None  # e.g. a shared-account Portfolio
        self.paused = False  # set by the service's pause control: no new exposure, exits managed
        # scale-in / scale-out bookkeeping (per trade)
        self._plan_legs: tuple[int, ...] = ()  # planned lots of each take-profit leg
        self._legs: list[int] = []  # lots still working per bracket take-profit leg
        self._legs_filled: list[int] = []
        self._sl_qty = 0  # lots the working stop is sized for
        self._first_fill = 0  # filled lots of the first entry: adds are sized on it
        self._adds: list[int] = []
        self._outs: list[bool] = []
        self._scale_id: str | None = None  # the working add/out order
        self.pending_add = 0  # lots of a working scale-in add (reserved exposure)
        self.entries_filled = 0  # trades opened (one_shot.max_entries counts them)
        self._scale_n = 0

    # ------------------------------------------------------------------ control (service runner)

    def command(self, build: Callable[[int], m.Message]) -> m.Message:
        """Send a command built around the next sequence number (kill switch, cancel-all...)."""
        return self._send(build(self._next_seq()))

    def cancel_entry(self, ts_ns: int, why: str) -> list[m.Message]:
        """Cancel the working entry order, if there is one (pause, one-shot expiry)."""
        if self.phase is not _ENTERED or not self.entry_id:
            return []
        self.log.append("decision", ts_ns, action="cancel_entry", why=why)
        return [self._cancel(ts_ns, self.entry_id)]

    def reset_drawdown_breaker(self, ts_ns: int, why: str) -> None:
        """Clear a tripped drawdown breaker (the service's resume): the peak restarts at equity now."""
        if not self.risk.drawdown_tripped:
            return
        self.risk.reset_drawdown()
        self._log_breaker(ts_ns, "reset", why)

    def _log_breaker(self, ts_ns: int, action: str, why: str) -> None:
        """One hash-chained record per trip or reset of the max_drawdown_pct breaker."""
        r = self.risk
        dd = (r.peak_equity - r.equity) / r.peak_equity * 100 if r.peak_equity else 0.0
        self.log.append(
            "breaker",
            ts_ns,
            action=action,
            rule="risk.max_drawdown_pct",
            limit_pct=self.artifact.risk.max_drawdown_pct,
            peak=r.peak_equity,
            equity=r.equity,
            drawdown_pct=dd,
            why=why,
        )

    def sent_commands(self, seqs: Iterable[int]) -> list[m.Message]:
        """Commands still in the resend buffer, in the order asked for."""
        return [self._sent[s] for s in seqs if s in self._sent]

    # ------------------------------------------------------------------ helpers

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _ticks(self, price: float) -> int:
        return round(price / self._price_inc_f)

    def equity(self) -> float:
        """Account equity in quote currency, marked at the last close."""
        unreal = self.position * self.last_close - self.cost_basis
        units = self.realized - self.fees_paid - self.funding_paid + unreal
        return self.artifact.backtest.initial_equity + units * self.unit_value

    def _cond(self, cond: str | Condition | None) -> bool:
        if cond is None:
            return False
        v = self.dag.values
        if isinstance(cond, str):
            return bool(v[cond])
        rhs = float(v[cond.value]) if isinstance(cond.value, str) else cond.value
        return compare(cond.op, float(v[cond.node]), rhs)

    def _transition(self, trigger: Trigger, ts_ns: int, why: str) -> None:
        new = next_phase(self.phase, trigger)
        self.log.append(
            "phase", ts_ns, old=self.phase.name, new=new.name, trigger=trigger.name, why=why
        )
        self.phase = new

    def _refuse(self, ts_ns: int, rule: str, detail: str) -> None:
        rec = {"bar": self.bar_index, "ts_ns": ts_ns, "rule": rule, "detail": detail}
        self.refusals.append(rec)
        self.log.append("refusal", ts_ns, rule=rule, detail=detail)

    def _send(self, cmd: m.Message) -> m.Message:
        self.log.append("command", cmd.ts_ns, msg=_builtins(cmd))
        self._sent[cmd.seq] = cmd
        if len(self._sent) > self.RESEND_BUFFER:
            del self._sent[next(iter(self._sent))]
        return cmd

    def _resend(self, req: m.ResendRequest) -> list[m.Message]:
        """FIX-style gap fill: resend what the kernel missed, flagged as possible duplicates."""
        end = req.end_seq or self.seq
        missing = [s for s in range(req.begin_seq, end + 1) if s not in self._sent]
        if missing:
            self._refuse(
                req.ts_ns, "session.resend", f"cannot resend seq {missing[0]}..: no longer buffered"
            )
        out: list[m.Message] = []
        for s in range(req.begin_seq, end + 1):
            if s in self._sent:
                cmd = msgspec.structs.replace(self._sent[s], possible_duplicate=True)
                self.log.append("resend", cmd.ts_ns, seq=s)
                out.append(cmd)
        return out

    # ------------------------------------------------------------------ inputs

    def on_bar(self, bar: BarValues) -> list[m.Message]:
        """A bar closed: update nodes, step the state machine, return commands (ts = bar close)."""
        self.bar_index += 1
        self._last_bar = bar
        bar_ts, o, h, l, c, v = bar  # noqa: E741  # one unpack instead of a field lookup per use
        ts = bar_ts + self.timeframe_ns  # decisions happen at the bar's close
        self.last_close = round(c / self._price_inc_f)  # _ticks(), inlined
        self.log.append_bar(bar_ts, o, h, l, c, v)
        changed = self.dag.on_bar(bar)
        if changed:
            values = self.dag.values
            self.log.append_nodes(ts, {n: values[n] for n in changed})
        if self.atr is not None:
            self._atr_value = self.atr.update(o, h, l, c, v)[0]
        if self._vol_lookback:
            self._closes.append(c)
        self.risk.on_bar(ts, self.equity())
        if self.risk.check_drawdown(self.artifact.risk.max_drawdown_pct):
            self._log_breaker(ts, "trip", "risk.max_drawdown_pct reached")
        out: list[m.Message] = []
        if self.phase is _EXITED:
            self._transition(Trigger.NEXT_BAR, ts, "bookkeeping done")
        if self.phase is _IDLE:
            if self.bar_index >= self.warmup:
                self._transition(Trigger.WARMED_UP, ts, f"{self.warmup} warm-up bars seen")
            else:
                return out
        entry = self.artifact.entry  # invalid_if is read only where it decides something
        if (
            self.phase is _LOOKING
            and self.bar_index >= self.warm_until_bar
            and self._cond(entry.when)
        ):
            if self._cond(entry.invalid_if):
                self._refuse(ts, "entry.invalid_if", "the setup is invalid: entry skipped")
            elif self.paused:
                self.log.append("decision", ts, action="skip_entry", why="paused by control")
            else:
                out.extend(self._enter(ts, bar))
        elif self.phase is _ENTERED and self.entry_id and self.risk.drawdown_tripped:
            self.log.append(
                "decision", ts, action="cancel_entry", why="risk.max_drawdown_pct breaker tripped"
            )
            out.append(self._cancel(ts, self.entry_id))
            self.entry_deadline_bar = None
        elif (
            self.phase is _ENTERED
            and self.entry_id
            and self.artifact.one_shot is not None
            and ts >= self.artifact.one_shot.expires_at
        ):
            self.log.append("decision", ts, action="cancel_entry", why="one_shot.expires_at")
            out.append(self._cancel(ts, self.entry_id))
            self.entry_deadline_bar = None
        elif self.phase is _ENTERED and self.entry_id and self._cond(entry.invalid_if):
            self.log.append("decision", ts, action="cancel_entry", why="entry.invalid_if is true")
            out.append(self._cancel(ts, self.entry_id))
            self.entry_deadline_bar = None
        elif self.phase is _ENTERED:
            if (
                self.entry_deadline_bar is not None
                and self.bar_index >= self.entry_deadline_bar
                and self.entry_id
            ):
                self.log.append("decision", ts, action="cancel_entry", why="entry timeout")
                out.append(self._cancel(ts, self.entry_id))
                self.entry_deadline_bar = None
        elif self.phase is _MANAGING and not self.exit_sent:
            out.extend(self._manage_stop(ts, bar))
            why = None
            if self._cond(self.artifact.exit.when):
                why = "exit"
            te = self.artifact.exit.time_exit
            held = self.bar_index - self.trade.entry_bar if self.trade is not None else 0
            if why is None and te is not None and held >= te.bars(self.timeframe_ns):
                why = "time"
            if why is not None:
                out.extend(self._exit(ts, why))
            elif self.artifact.entry.scale_in or self.artifact.exit.scale_out:
                out.extend(self._scale(ts, bar))
        return out

    def on_data(self, name: str, bar: BarValues | None, ts_ns: int) -> None:
        """A bar of data input `name` became visible at decision `ts_ns` (None: it is missing,
        its values are held); call before `on_bar` of the instrument bar it belongs to."""
        if bar is None:
            self.log.append("data_missing", ts_ns, input=name, rule="hold")
            return
        self.log.append(
            "data_bar",
            bar.ts_ns,
            input=name,
            o=bar.open,
            h=bar.high,
            l=bar.low,
            c=bar.close,
            v=bar.volume,
        )
        self.dag.on_aux(name, bar)

    def _cancel(self, ts: int, client_order_id: str) -> m.Message:
        return self._send(
            m.CancelOrder(
                session_id=self.session_id,
                seq=self._next_seq(),
                ts_ns=ts,
                client_order_id=client_order_id,
            )
        )

    def _manage_stop(self, ts: int, bar: BarValues) -> list[m.Message]:
        """Break-even and trailing: move the working stop in the trade's favour, never against it."""
        ex = self.artifact.exit
        t = self.trade
        if (ex.break_even is None and ex.trailing is None) or t is None or t.stop_price is None:
            return []
        if self.entry_id is not None:  # the bracket exists only once the entry is complete
            return []
        sign = 1 if t.side == "long" else -1
        close = self._ticks(bar.close)
        if t.best_close == 0 or sign * (close - t.best_close) > 0:
            t.best_close = close
        risk = abs(t.ref_price - t.initial_stop)
        gain = sign * (t.best_close - t.ref_price)
        candidates = []
        if ex.break_even is not None and risk and gain >= ex.break_even.after_r * risk:
            candidates.append(t.ref_price + sign * ex.break_even.offset_ticks)
        tr = ex.trailing
        if tr is not None and gain >= tr.activate_r * risk:
            if tr.atr_mult is not None:
                dist = (
                    round(tr.atr_mult * self._atr_value / float(self.price_inc))
                    if math.isfinite(self._atr_value)
                    else None
                )
            elif tr.pct is not None:
                dist = round(t.best_close * tr.pct / 100)
            else:
                dist = tr.ticks
            if dist:
                candidates.append(t.best_close - sign * dist)
        better = [c for c in candidates if sign * (c - t.stop_price) > 0 and sign * (close - c) > 0]
        if not better:
            return []
        new_stop = max(better) if sign > 0 else min(better)
        self.log.append("decision", ts, action="move_stop", old=t.stop_price, new=new_stop)
        return self._amend_exits(ts, new_stop, list(t.targets))

    def realized_vol(self) -> float:
        """Realised annualised volatility of the closes in the vol_target window (NaN if short)."""
        if not self._vol_lookback or len(self._closes) <= self._vol_lookback:
            return math.nan
        window = np.fromiter(self._closes, dtype=np.float64, count=len(self._closes))
        return float(realized_vol(window, periods_per_year(self.timeframe_ns)))

    def _plan(self, ts: int, ref: int) -> EntryPlan | str:
        """Size and place stop/targets around `ref` with the current artifact's rules."""
        a = self.artifact
        level = None
        if a.exit.stop_loss is not None and a.exit.stop_loss.level is not None:
            level = float(self.dag.values[a.exit.stop_loss.level])
        return plan_entry(
            artifact=a,
            side=a.entry.side,
            ref_ticks=ref,
            atr=self._atr_value,
            level=level,
            equity=self.equity(),
            risk=self.risk,
            ts_ns=ts,
            vol=self.realized_vol(),
        )

    def _entry_price(self, bar: BarValues) -> int:
        tmpl = self.artifact.entry.order
        close = self._ticks(bar.close)
        return close + tmpl.offset_ticks if tmpl.type != "market" else close

    def _enter(self, ts: int, bar: BarValues) -> list[m.Message]:
        a = self.artifact
        side = a.entry.side
        tmpl = a.entry.order
        shot = a.one_shot  # a trade proposal: an expiry and a number of entries
        if shot is not None and ts >= shot.expires_at:
            self._refuse(
                ts, "one_shot.expires_at", f"the one-shot expired at ts {shot.expires_at}: no entry"
            )
            return []
        if shot is not None and self.entries_filled >= shot.max_entries:
            self._refuse(
                ts,
                "one_shot.max_entries",
                f"{self.entries_filled} of {shot.max_entries} one-shot entries already taken",
            )
            return []
        ref = self._entry_price(bar)
        plan = self._plan(ts, ref)
        if isinstance(plan, str):
            rule, _, detail = plan.partition(": ")
            self._refuse(ts, rule, detail)
            return []
        if self.entry_gate is not None:
            gate = self.entry_gate(self, plan, ref, ts)
            if gate is not None:
                rule, _, detail = gate.partition(": ")
                self._refuse(ts, rule, detail)
                return []
        self._trade_counter += 1
        cid = f"{a.name}-{self._trade_counter}"
        order_type = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP}[
            tmpl.type
        ]
        bracket = None
        if plan.stop_ticks is not None or plan.targets:
            bracket = m.Bracket(
                stop_loss=plan.stop_ticks,
                take_profits=tuple(m.TakeProfitLeg(price=p, qty=q) for p, q in plan.targets),
            )
        cmd = m.SubmitOrder(
            session_id=self.session_id,
            seq=self._next_seq(),
            ts_ns=ts,
            client_order_id=cid,
            symbol=a.instrument.symbol,
            side=Side.BUY if side == "long" else Side.SELL,
            order_type=order_type,
            qty=plan.lots,
            price=ref if order_type == OrderType.LIMIT else None,
            trigger_price=ref if order_type == OrderType.STOP else None,
            tif=TimeInForce[tmpl.tif],
            expire_ts_ns=(ts + tmpl.timeout.bars(self.timeframe_ns) * self.timeframe_ns)
            if tmpl.tif == "GTD" and tmpl.timeout
            else None,
            bracket=bracket,
            tag="entry",
        )
        self.entry_id = cid
        self._entry_ref = ref
        self._plan_legs = tuple(q for _, q in plan.targets)
        self._scale_n = 0
        self._adds = [0] * len(a.entry.scale_in or ())
        self._outs = [False] * len(a.exit.scale_out or ())
        self._bracket_sent = (plan.stop_ticks, tuple(p for p, _ in plan.targets))
        self.entry_deadline_bar = (
            self.bar_index + tmpl.timeout.bars(self.timeframe_ns)
            if tmpl.timeout and tmpl.tif != "GTD"
            else None
        )
        self.trade = Trade(
            trade_id=cid,
            side=side,
            entry_ts_ns=0,
            stop_price=plan.stop_ticks,
            targets=[p for p, _ in plan.targets],
            risk_units=plan.risk_units,
            planned_qty=plan.lots,
            ref_price=ref,
            initial_stop=plan.stop_ticks or 0,
            entry_bar=self.bar_index,
        )
        sizing: dict[str, object] = {}
        if self._vol_lookback:  # vol_target: the volatility the size was derived from
            sizing["vol"] = self.realized_vol()
        self.log.append(
            "decision",
            ts,
            action="enter",
            side=side,
            lots=plan.lots,
            ref=ref,
            stop=plan.stop_ticks,
            targets=[list(t) for t in plan.targets],
            why="entry.when is true",
            **sizing,
        )
        self._transition(Trigger.ENTRY_SENT, ts, cid)
        return [self._send(cmd)]

    def reparameterize(self, artifact: Artifact, graph: SignalGraph, ts_ns: int) -> list[m.Message]:
        """Hot-swap to a new artifact version without tearing anything down.

        Unchanged nodes keep their state; working orders are amended in place (price, size,
        stop and targets), never cancelled and re-sent; the position is kept. New or changed
        nodes start cold, so entries wait until they are warm.
        """
        from strategy_kernel.dag import DagEvaluator, unchanged_nodes

        old = self.artifact
        if (
            artifact.instrument != old.instrument
            or artifact.entry.side != old.entry.side
            or artifact.data != old.data
        ):
            raise ReparamError(
                "a hot-swap keeps the instrument, the data inputs and the entry side; start a new "
                "run to change them"
            )
        carried = unchanged_nodes(old, artifact)
        snapshot = self.dag.snapshot()
        dag = DagEvaluator(artifact, graph, self.base_dir)
        dag.restore(snapshot, only=carried)
        cold = sorted(set(artifact.nodes) - carried)
        self.artifact, self.graph, self.dag = artifact, graph, dag
        old_atr = (
            old.exit.stop_loss.atr_period
            if old.exit.stop_loss and old.exit.stop_loss.atr_mult
            else None
        )
        sl = artifact.exit.stop_loss
        new_atr = sl.atr_period if sl and sl.atr_mult else None
        if new_atr != old_atr:
            self.atr = make_stream("ATR", {"period": new_atr}) if new_atr else None
            self._atr_value = math.nan
            cold.append("stop ATR")
        # scale rules of the new version apply to the open trade; added rules start unused
        n_in, n_out = len(artifact.entry.scale_in or ()), len(artifact.exit.scale_out or ())
        self._adds = (self._adds + [0] * n_in)[:n_in]
        self._outs = (self._outs + [False] * n_out)[:n_out]
        self._vol_lookback = sizing_warmup(artifact)
        self._closes = deque(self._closes, maxlen=self._vol_lookback + 1)
        if self._vol_lookback and len(self._closes) <= self._vol_lookback:
            cold.append("vol_target window")  # the old version kept fewer closes
        self.warmup = max(
            graph.warmup, self.atr.warmup if self.atr is not None else 0, self._vol_lookback
        )
        if cold:
            self.warm_until_bar = self.bar_index + 1 + self.warmup
        cmds: list[m.Message] = []
        tmpl = artifact.entry.order
        if (
            self.phase is Phase.ENTERED
            and self.entry_id
            and self._last_bar is not None
            and self.trade
        ):
            ref = self._entry_price(self._last_bar)
            plan = self._plan(ts_ns, ref)
            if isinstance(plan, EntryPlan):
                if plan.lots != self.trade.planned_qty or (
                    tmpl.type != "market" and ref != self._entry_ref
                ):
                    cmds.append(
                        self._amend(
                            ts_ns,
                            self.entry_id,
                            qty=plan.lots,
                            price=ref if tmpl.type == "limit" else None,
                            trigger_price=ref if tmpl.type == "stop" else None,
                        )
                    )
                    self._entry_ref = ref
                    self.trade.planned_qty = plan.lots
                self.trade.stop_price = plan.stop_ticks
                self.trade.targets = [p for p, _ in plan.targets]
            if tmpl.timeout is not None and tmpl.tif != "GTD":
                self.entry_deadline_bar = self.trade.entry_bar + tmpl.timeout.bars(
                    self.timeframe_ns
                )
        elif self.phase is Phase.MANAGING and self.trade is not None and self.trade.entry_qty:
            t = self.trade
            stop = t.stop_price
            if artifact.exit.stop_loss != old.exit.stop_loss:  # only a changed rule moves the stop
                plan = self._plan(ts_ns, t.ref_price)
                stop = plan.stop_ticks if isinstance(plan, EntryPlan) else stop
            targets = place_targets(artifact, t.side, t.ref_price, stop, t.entry_qty)
            if isinstance(targets, str):
                self._refuse(ts_ns, "reparam.take_profit", targets)
            else:
                cmds.extend(self._amend_exits(ts_ns, stop, [p for p, _ in targets]))
        self.log.append(
            "reparam",
            ts_ns,
            old_version=old.version,
            new_version=artifact.version,
            carried=sorted(carried),
            cold=cold,
            amended=[c.client_order_id for c in cmds if isinstance(c, m.AmendOrder)],
        )
        return cmds

    def _amend(self, ts_ns: int, client_order_id: str, **changes: int | None) -> m.Message:
        """Send an AmendOrder: the order keeps its identity (and its place at the venue)."""
        return self._send(
            m.AmendOrder(
                session_id=self.session_id,
                seq=self._next_seq(),
                ts_ns=ts_ns,
                client_order_id=client_order_id,
                **changes,  # type: ignore[arg-type]
            )
        )

    def _amend_exits(self, ts_ns: int, stop: int | None, targets: list[int]) -> list[m.Message]:
        """Move the bracket children the order kernel placed (`<id>.sl`, `<id>.tpN`) in place."""
        t = self.trade
        assert t is not None
        cmds: list[m.Message] = []
        if stop is not None and t.stop_price is not None and stop != t.stop_price:
            cmds.append(self._amend(ts_ns, f"{t.trade_id}.sl", trigger_price=stop))
            t.stop_price = stop
        for k, (new_px, old_px) in enumerate(zip(targets, list(t.targets), strict=False), 1):
            if new_px != old_px:
                cmds.append(self._amend(ts_ns, f"{t.trade_id}.tp{k}", price=new_px))
                t.targets[k - 1] = new_px
        if len(targets) != len(t.targets):
            self._refuse(
                ts_ns,
                "reparam.take_profit",
                "the number of take-profit legs changed; the working legs are kept",
            )
        return cmds

    def _exit(self, ts: int, why: str) -> list[m.Message]:
        assert self.trade is not None
        self.exit_sent = True
        qty = abs(self.position)
        self.log.append("decision", ts, action="exit", why=why, lots=qty)
        cmds: list[m.Message] = []
        if self.entry_id is not None and self.trade.entry_qty < self.trade.planned_qty:
            cmds.append(
                self._send(
                    m.CancelOrder(
                        session_id=self.session_id,
                        seq=self._next_seq(),
                        ts_ns=ts,
                        client_order_id=self.entry_id,
                    )
                )
            )
        if qty > 0:
            cmds.append(
                self._send(
                    m.SubmitOrder(
                        session_id=self.session_id,
                        seq=self._next_seq(),
                        ts_ns=ts,
                        client_order_id=f"{self.trade.trade_id}.{why}",
                        symbol=self.artifact.instrument.symbol,
                        side=Side.SELL if self.position > 0 else Side.BUY,
                        order_type=OrderType.MARKET,
                        qty=qty,
                        reduce_only=True,
                        tag=why,
                    )
                )
            )
        return cmds

    def on_event(self, ev: m.Message) -> list[m.Message]:
        """An event from the order kernel; returns follow-up commands (resends, moved exits)."""
        data = _builtins(ev)
        self.log.append("event", ev.ts_ns, msg=data)
        if isinstance(ev, m.ResendRequest):
            return self._resend(ev)
        if isinstance(ev, m.PositionUpdate):
            was_open = self.position != 0
            self.position, self.cost_basis = ev.qty, ev.cost_basis
            self.realized, self.fees_paid, self.funding_paid = (
                ev.realized_pnl,
                ev.fees_paid,
                ev.funding_paid,
            )
            if was_open and self.position == 0 and self.phase is Phase.MANAGING:
                self._close_trade(ev.ts_ns)
        elif isinstance(ev, m.OrderFilled):
            self._on_fill(ev, data)
        elif isinstance(ev, m.OrderCancelled | m.OrderExpired | m.OrderRejected | m.OrderDenied):
            cid = ev.client_order_id
            if cid == self.entry_id:
                self.entry_id = None
                self.entry_deadline_bar = None
                if self.trade is not None and self.trade.entry_qty:
                    self._bracket_placed(self.trade)  # a part-filled entry places its bracket
                if self.phase is Phase.ENTERED:
                    self.trade = None
                    self._transition(Trigger.ENTRY_ENDED, ev.ts_ns, f"{type(ev).__name__}")
            elif cid == self._scale_id:
                self._scale_id = None
                self.pending_add = 0
                t = self.trade
                if t is not None and t.stop_price is not None and self.position:
                    # an add that did not fill: the stop goes back to the open position
                    self._pending.extend(self._resize_exits(ev.ts_ns, 0, abs(self.position)))
            if isinstance(ev, m.OrderDenied | m.OrderRejected):
                self._refuse(ev.ts_ns, f"order_kernel.{ev.reason.name}", ev.detail)
        out, self._pending = self._pending, []
        return out

    def _on_fill(self, ev: m.OrderFilled, data: dict[str, object]) -> None:
        self.dag.on_fill(data)
        t = self.trade
        if t is None:
            self._refuse(
                ev.ts_ns, "unexpected_fill", f"fill for {ev.client_order_id} with no open trade"
            )
            return
        t.fees += ev.fee
        if ev.client_order_id == self.entry_id:
            if t.entry_qty == 0:
                t.entry_ts_ns = ev.ts_ns
                t.entry_bar = self.bar_index + 1  # the fill happens inside the next bar
                self.entries_filled += 1
            t.entry_qty += ev.qty
            t.entry_cost += ev.qty * ev.price
            if not ev.partial:
                self.entry_id = None
                self.entry_deadline_bar = None
                self._bracket_placed(t)
                sent_stop, sent_targets = self._bracket_sent
                if (t.stop_price, tuple(t.targets)) != (sent_stop, sent_targets):
                    # the plan changed (hot-swap) after the bracket was sent: move the children
                    planned = (t.stop_price, list(t.targets))
                    t.stop_price, t.targets = sent_stop, list(sent_targets)
                    self._pending.extend(self._amend_exits(ev.ts_ns, planned[0], planned[1]))
            self._transition(Trigger.ENTRY_FILLED, ev.ts_ns, ev.client_order_id)
        elif ev.client_order_id.startswith(f"{t.trade_id}.add"):
            open_before = t.entry_qty - t.exit_qty
            t.entry_qty += ev.qty
            t.entry_cost += ev.qty * ev.price
            self.pending_add = max(self.pending_add - ev.qty, 0)
            if not ev.partial:
                self._scale_id = None
                self.pending_add = 0
            self._pending.extend(self._resize_exits(ev.ts_ns, open_before, open_before + ev.qty))
        else:
            open_before = t.entry_qty - t.exit_qty
            t.exit_ts_ns = ev.ts_ns
            t.exit_bar = self.bar_index + 1
            t.exit_qty += ev.qty
            t.exit_cost += ev.qty * ev.price
            role = ev.client_order_id.rsplit(".", 1)[-1] if "." in ev.client_order_id else "exit"
            if role not in t.exit_reason.split("+"):
                t.exit_reason = f"{t.exit_reason}+{role}" if t.exit_reason else role
            if self._legs and role.startswith("tp") and role[2:].isdigit():
                k = int(role[2:]) - 1
                if k < len(self._legs):
                    self._legs[k] -= ev.qty
                    self._legs_filled[k] += ev.qty
                left = open_before - ev.qty
                if left > 0 and (self.artifact.entry.scale_in or self.artifact.exit.scale_out):
                    # with scaling the stop always equals the position (without it, as before,
                    # the kernel's reduce-only clamp trims the stop instead)
                    self._pending.extend(self._resize_exits(ev.ts_ns, 0, left))
            elif role == "sl":
                self._sl_qty -= ev.qty
            if ev.client_order_id.startswith(f"{t.trade_id}.out"):
                if not ev.partial:
                    self._scale_id = None
                left = open_before - ev.qty
                if left > 0:
                    self._pending.extend(self._resize_exits(ev.ts_ns, open_before, left))

    def _close_trade(self, ts_ns: int) -> None:
        t = self.trade
        assert t is not None
        self.trades.append(t)
        self.risk.on_trade_closed(ts_ns, t.pnl * self.unit_value, self.artifact.risk.cooldown_bars)
        self.log.append(
            "trade",
            ts_ns,
            trade_id=t.trade_id,
            side=t.side,
            pnl_units=t.pnl,
            reason=t.exit_reason,
            entry_qty=t.entry_qty,
            exit_qty=t.exit_qty,
        )
        self.trade = None
        self.exit_sent = False
        self.entry_id = None
        self._scale_id = None
        self.pending_add = 0
        self._legs = []
        self._transition(Trigger.FLAT, ts_ns, "position is flat")

    # ------------------------------------------------------------------ scale-in / scale-out

    def _bracket_placed(self, t: Trade) -> None:
        """Mirror the order kernel's bracket children: stop for the fill, legs cut to it."""
        self._first_fill = t.entry_qty
        self._sl_qty = t.entry_qty if t.stop_price is not None else 0
        left = t.entry_qty
        self._legs = []
        for q in self._plan_legs:
            q = min(q, left)
            if q <= 0:
                break
            left -= q
            self._legs.append(q)
        self._legs_filled = [0] * len(self._legs)

    def _resize_exits(self, ts_ns: int, before: int, after: int) -> list[m.Message]:
        """After the position changed from `before` to `after` lots, amend the stop to cover
        `after` and each working take-profit leg to keep its share (a leg cut to 0 is cancelled)."""
        t = self.trade
        if t is None:
            return []
        cmds: list[m.Message] = []
        if t.stop_price is not None and after > 0 and after != self._sl_qty:
            self.log.append("decision", ts_ns, action="resize_stop", old=self._sl_qty, new=after)
            cmds.append(self._amend(ts_ns, f"{t.trade_id}.sl", qty=after))
            self._sl_qty = after
        if before > 0:
            for k, q in enumerate(self._legs):
                if q <= 0:
                    continue
                new = q * after // before
                if new == q:
                    continue
                cid = f"{t.trade_id}.tp{k + 1}"
                self.log.append(
                    "decision", ts_ns, action="resize_target", leg=k + 1, old=q, new=new
                )
                if new > 0:
                    cmds.append(self._amend(ts_ns, cid, qty=self._legs_filled[k] + new))
                else:
                    cmds.append(self._cancel(ts_ns, cid))
                self._legs[k] = new
        return cmds

    def _scale(self, ts: int, bar: BarValues) -> list[m.Message]:
        """Scale-out rules first (each once per trade), then scale-in rules (max_adds each)."""
        t = self.trade
        if (
            t is None
            or self.entry_id is not None
            or self._scale_id is not None
            or not self.position
        ):
            return []
        a = self.artifact
        held = abs(self.position)
        sign = 1 if t.side == "long" else -1
        for k, out in enumerate(a.exit.scale_out or ()):
            if k >= len(self._outs) or self._outs[k] or not self._cond(out.when):
                continue
            self._outs[k] = True
            lots = math.floor(held * out.size_pct / 100)
            if lots <= 0:
                self._refuse(
                    ts,
                    f"exit.scale_out[{k}]",
                    f"{out.size_pct:g}% of {held} lots rounds to zero lots; nothing closed",
                )
                continue
            return self._scale_order(ts, "out", lots, -sign, k)
        for k, rule in enumerate(a.entry.scale_in or ()):
            if k >= len(self._adds) or self._adds[k] >= rule.max_adds or not self._cond(rule.when):
                continue
            if self.paused:
                self.log.append("decision", ts, action="skip_add", why="paused by control", rule=k)
                continue
            if self.risk.drawdown_tripped:
                self._refuse(
                    ts,
                    "risk.max_drawdown_pct",
                    f"entry.scale_in[{k}]: the drawdown breaker tripped; no new risk",
                )
                continue
            self._adds[k] += 1
            lots = math.floor(self._first_fill * rule.size_pct / 100)
            close = self._ticks(bar.close)
            lot = float(self.size_inc)
            cap = math.floor(
                self.equity()
                * a.risk.max_position_pct
                / 100
                / (close * float(self.price_inc))
                / lot
                + 1e-9
            )
            if held + lots > cap:
                lots = cap - held
            if lots <= 0:
                self._refuse(
                    ts,
                    "risk.max_position_pct" if cap <= held else f"entry.scale_in[{k}]",
                    f"add {self._adds[k]} of rule {k}: no room for more lots "
                    f"(holding {held}, cap {cap} at {a.risk.max_position_pct}% of equity)",
                )
                continue
            if self.entry_gate is not None:
                gate = self.entry_gate(self, EntryPlan(lots, t.stop_price, (), 0), close, ts)
                if gate is not None:
                    rule_name, _, detail = gate.partition(": ")
                    self._refuse(ts, rule_name, detail)
                    continue
            cmds = self._scale_order(ts, "add", lots, sign, k)
            if t.stop_price is not None:  # cover the add before it can fill (reduce-only clamps)
                cmds.extend(self._resize_exits(ts, 0, held + lots))
            return cmds
        return []

    def _scale_order(self, ts: int, kind: str, lots: int, sign: int, rule: int) -> list[m.Message]:
        t = self.trade
        assert t is not None
        self._scale_n += 1
        cid = f"{t.trade_id}.{kind}{self._scale_n}"
        field = "entry.scale_in" if kind == "add" else "exit.scale_out"
        self.log.append(
            "decision", ts, action=f"scale_{kind}", lots=lots, why=f"{field}[{rule}].when is true"
        )
        self._scale_id = cid
        self.pending_add = lots if kind == "add" else 0
        return [
            self._send(
                m.SubmitOrder(
                    session_id=self.session_id,
                    seq=self._next_seq(),
                    ts_ns=ts,
                    client_order_id=cid,
                    symbol=self.artifact.instrument.symbol,
                    side=Side.BUY if sign > 0 else Side.SELL,
                    order_type=OrderType.MARKET,
                    qty=lots,
                    reduce_only=kind == "out",
                    tag=kind,
                )
            )
        ]


def _atr_period(artifact: Artifact) -> int | None:
    """ATR period the exits need (ATR stop or ATR trailing), or None."""
    ex = artifact.exit
    if (ex.stop_loss and ex.stop_loss.atr_mult) or (ex.trailing and ex.trailing.atr_mult):
        return ex.stop_loss.atr_period if ex.stop_loss else 14
    return None


def _atr_stream(artifact: Artifact) -> Stream | None:
    period = _atr_period(artifact)
    return make_stream("ATR", {"period": period}) if period else None


def _builtins(msg: m.Message) -> dict[str, object]:
    out = msgspec.to_builtins(msg)
    assert isinstance(out, dict)
    return out
