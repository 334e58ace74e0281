"""OrderKernel: the in-process facade the strategy kernel and the backtest drive.

`handle(command) -> events` validates, sequences and risk-checks commands, drives the numba
machine (`machine.py`, which reads only `spec`'s tables), lets the SimVenue match working
orders on each `MarketBar`, and returns the resulting events in a deterministic order. Every
outbound event carries the session id, a per-session increasing seq and the input's ts_ns
(no wall clock). With an `OrderLog`, every inbound command and outbound event is logged, and
`OrderKernel.recover` rebuilds the same state by replaying the logged commands.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.errors import ConfigError, OrderKernelError, RecoveryError
from order_kernel.instruments import InstrumentSpec
from order_kernel.machine import (
    F_ACTIVE_FROM,
    F_FEES,
    F_FILL_COST,
    F_FILLED,
    F_FLAGS,
    F_ORDER_SEQ,
    F_PRICE,
    F_QTY,
    F_TRIGGER,
    FLAG_POST_ONLY,
    FLAG_REDUCE_ONLY,
    FLAG_RESTING,
    FLAG_TRIGGERED,
    P_COST,
    P_FEES,
    P_FUNDING,
    P_QTY,
    P_REALIZED,
    OrderMachine,
)
from order_kernel.risk import RiskGate, RiskLimits
from order_kernel.spec import (
    TERMINAL_STATES,
    Liquidity,
    OrderEvent,
    OrderState,
    OrderType,
    Reason,
    Side,
    TimeInForce,
)
from order_kernel.venues.sim import SimVenue

E = OrderEvent
S = OrderState
# Enum members bound once: on Python 3.11 `TimeInForce.GTD` is a descriptor lookup (~70 ns),
# and the per-bar matching path compares order types and TIFs for every open order.
_MARKET, _STOP, _STOP_LIMIT = OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT
_GTD, _IOC, _FOK = TimeInForce.GTD, TimeInForce.IOC, TimeInForce.FOK

#: Largest price (ticks) / quantity (lots) / notional the int64 kernel accepts.
MAX_TICKS: Final = 2**48
MAX_LOTS: Final = 2**48
MAX_NOTIONAL: Final = 2**60
MAX_TS: Final = 2**63 - 1
MAX_BAR_INTERVAL_NS: Final = 366 * 86_400 * 1_000_000_000
_NO_BAR: Final = -(2**62)
_NO_BAR_FILL: Final = -(2**62)
#: Events the kernel itself produces (answered at once, no venue round trip).
_KERNEL_EVENTS: Final = (m.OrderDenied, m.CommandDenied, m.TimerFired, m.Heartbeat, m.ResendRequest)
#: Most slices one TWAP schedule may have.
MAX_SLICES: Final = 10_000
#: Inbound log records starting with this prefix are venue reconciliations (`reconcile.py`),
#: replayed by `recover` so the state after a reconciliation is reproduced too.
RECON_RECORD_PREFIX: Final = b"\x00stratagem-recon\x00"
#: Inbound log records starting with this prefix are answers of a live venue (`live.py`): an
#: exchange's answers are inputs like commands, so `recover` replays them the same way.
LIVE_RECORD_PREFIX: Final = b"\x00stratagem-live\x00"


@dataclass(slots=True)
class _Order:
    """Python-side record of one order (the numbers live in the numba store)."""

    cmd: m.SubmitOrder
    slot: int
    order_seq: int
    venue_order_id: str
    arrival_ts: int = 0  # when the order reaches the venue (ts_ns + venue latency)
    response: list[m.Event] = field(default_factory=list)
    final_state: OrderState | None = None
    n_fills: int = 0
    fill_cost: int = 0
    filled: int = 0
    final_qty: int = 0
    final_price: int = 0
    final_trigger: int = 0
    final_fees: int = 0
    last_fill_ts: int = _NO_BAR_FILL  # bar ts of the latest fill (same-bar bracket rule)
    last_fill_at_open: bool = False  # was that fill at the bar's opening price?
    # --- TWAP / interval schedules (timers as plain data, never callbacks) ---
    parent: _Order | None = None  # set on a schedule's slice: its parent order
    slices: list[_Order] = field(default_factory=list)  # set on a schedule's parent
    sched_start: int = 0  # ts_ns of the parent's submission; slice j is due at start + j*interval
    sched_placed: int = 0  # slices placed so far (the next one is due at start + placed*interval)
    closing: bool = False  # the parent is being cancelled: its slices go first
    # --- iceberg (display_qty) and queue priority at the simulated venue ---
    priority: int = 0  # place in the venue queue: submission order, renewed by each refill
    clip_left: int = 0  # lots left of the displayed clip (iceberg only)
    # --- live mode: kernel-held (synthetic) stops and kernel-enforced deadlines ---
    held: bool = False  # a STOP/STOP_LIMIT kept in the kernel; its trigger sends `<id>.trig`
    bracket_parent: str | None = None  # set on a bracket child: its entry order's id
    expiring: bool = False  # the cancel in flight enforces a GTD deadline (ends EXPIRED)
    venue_gen: int = 0  # live: times the exchange replaced the order on an amend (`live.py`)


class VenueOrderIds(dict[str, str]):
    """`OrderKernel.venue_order_ids()`: client_order_id -> symbol of the orders that live at
    the venue, plus `held`: the live session's kernel-held stops (client_order_id ->
    (symbol, filled qty, fill cost, fees)). They have no exchange order; the session's
    snapshot reports them as the kernel holds them, so reconciliation sees them working."""

    held: dict[str, tuple[str, int, int, int]]
    #: orders the exchange replaced on an amend: client_order_id -> generation (`live.py`)
    amended: dict[str, int]

    def __init__(
        self,
        ids: Mapping[str, str],
        held: Mapping[str, tuple[str, int, int, int]],
        amended: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(ids)
        self.held = dict(held)
        self.amended = dict(amended or {})


@dataclass(slots=True)
class _Timer:
    timer_id: str
    fire_ts_ns: int
    reg: int
    client_order_id: str | None
    cancel_order_on_fire: bool


@dataclass(frozen=True, slots=True)
class OrderView:
    """A read-only snapshot of one order, for callers and tests."""

    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    state: OrderState
    qty: int
    filled_qty: int
    price: int | None
    trigger_price: int | None
    avg_px_num: int  # sum of qty*price of fills; avg_px = avg_px_num / filled_qty


@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    qty: int
    cost_basis: int
    realized_pnl: int
    fees_paid: int
    funding_paid: int
    unrealized_pnl: int  # at the last bar's close


class OrderKernel:
    """One session's order kernel (in-process). Not thread-safe: one caller drives it."""

    def __init__(
        self,
        session_id: str,
        instruments: Mapping[str, InstrumentSpec],
        venue: SimVenue,
        log: order_log.OrderLog | None = None,
        risk: RiskLimits | None = None,
        *,
        capacity: int = 4096,
        resend_buffer: int = 100_000,
        heartbeat_timeout_ns: int | None = None,
        live: bool = False,
    ) -> None:
        """`live`: orders go to a real exchange (`live.LiveRoute`): new orders, amends and
        cancels wait in `outbox` for the route, the venue's answers come back through
        `live.apply_report`, and bars match nothing here (the exchange matches). STOP / STOP_LIMIT (and trailing)
        orders are held here instead: bars trigger them by the SimVenue rules and a triggered
        one sends `<id>.trig` (MARKET, or LIMIT for a STOP_LIMIT) through the outbox; GTD
        deadlines are enforced by the session clock (resting orders by a routed cancel)."""
        if not session_id:
            raise ConfigError("OrderKernel(session_id=''): give the session a non-empty id")
        if not instruments:
            raise ConfigError("OrderKernel(instruments={}): configure at least one InstrumentSpec")
        for key, inst in instruments.items():
            if key != inst.symbol:
                raise ConfigError(
                    f"instruments[{key!r}].symbol is {inst.symbol!r}; keys must equal symbols"
                )
        if heartbeat_timeout_ns is not None and heartbeat_timeout_ns <= 0:
            raise ConfigError(f"heartbeat_timeout_ns={heartbeat_timeout_ns}: must be > 0 or None")
        self.session_id = session_id
        self.heartbeat_timeout_ns = heartbeat_timeout_ns
        self._last_heard: int | None = None  # ts_ns of the session's last processed command
        self._silence_handled = False
        self.instruments = dict(sorted(instruments.items()))
        self.venue = venue
        self.live = live
        #: live mode: (action, client_order_id) requests for the venue route, in order
        self.outbox: list[tuple[str, str]] = []
        self.log = log
        self.risk_limits = risk or RiskLimits()
        self._risk = RiskGate(self.risk_limits, self.instruments)
        self._daily_loss_on = self.risk_limits.max_daily_loss is not None
        self._sym_index = {s: i for i, s in enumerate(self.instruments)}
        # one extra position column: a sink for the fills mirrored onto TWAP parents (their
        # slices carry the real position), so the parent's lifecycle still runs through the table
        self._sink = len(self.instruments)
        self.machine = OrderMachine(capacity, len(self.instruments) + 1)
        self._orders: dict[str, _Order] = {}
        self._open: dict[str, _Order] = {}  # insertion (= submission) order
        self._sched_open: dict[str, _Order] = {}  # open TWAP parents, submission order
        self._by_slot: dict[int, _Order] = {}
        self._oco_ids: dict[str, int] = {}
        self._oco_done: set[str] = set()  # groups in which a member has filled: closed
        self._timers: dict[str, _Timer] = {}
        self._timer_reg = 0
        self._last_bar_ts: dict[str, int] = {}
        self._last_close: dict[str, int] = {}
        self._next_funding: dict[str, int] = {}
        self._kill = False
        self._out_seq = 0
        self._expected_in: int | None = None
        self._queued: dict[int, m.Command] = {}
        self._resend_upto = -1
        self._sent: deque[m.Event] = deque(maxlen=resend_buffer)
        self._now = 0
        # latency model (SimVenue ack/fill delays): venue reports wait here until the clock
        # reaches their ts_ns; one ordered channel, so nothing overtakes an earlier event
        self._delayed = venue.ack_latency_ns > 0 or venue.fill_latency_ns > 0
        self._held: deque[m.Event] = deque()
        self._last_visible = 0
        self._delivered_seq = 0
        self._in_bar = False
        self._queue_seq = 0  # venue queue positions (submissions and iceberg refills)
        #: With keep_encoded (the server), `last_encoded` holds the msgpack bytes of the events
        #: the last call returned, encoded once for both the log and the wire.
        self.keep_encoded = False
        self.last_encoded: list[bytes] = []
        self._out: list[m.Event] = []
        self._matching: m.MarketBar | None = None  # the bar being matched, if any
        self._same_bar: list[tuple[_Order, bool]] = []  # bracket children placed in it
        self._dispatch: dict[type[Any], Callable[[Any], None]] = {
            m.SubmitOrder: self._on_submit,
            m.AmendOrder: self._on_amend,
            m.CancelOrder: self._on_cancel,
            m.CancelAll: self._on_cancel_all,
            m.SetTimer: self._on_set_timer,
            m.KillSwitch: self._on_kill,
            m.Heartbeat: self._on_heartbeat,
            m.ResendRequest: self._on_resend,
        }

    # ================================================================ entry points

    def handle(self, cmd: m.Command) -> list[m.Event]:
        """Process one command and return the events it caused, in order."""
        return self._handle(cmd, m.encode(cmd) if self.log is not None else b"")

    def handle_raw(self, cmd: m.Command, raw: bytes) -> list[m.Event]:
        """Process a command already decoded from `raw` (the server's path: one decode; the
        raw bytes are what the log records)."""
        return self._handle(cmd, raw)

    def handle_bytes(self, data: bytes) -> list[m.Event]:
        """Decode msgpack bytes and process them; garbage gives CommandDenied(MALFORMED_MESSAGE)."""
        try:
            cmd = m.decode_command(data)
        except (msgspec.MsgspecError, ValueError) as exc:  # ValueError: bad UTF-8 in a key
            if self.log is not None:
                self.log.append_inbound(data, seq=-1)
            self._out = []
            self._emit(
                m.CommandDenied,
                ref_seq=-1,
                command="?",
                reason=Reason.MALFORMED_MESSAGE,
                detail=f"{exc}; send a msgpack-encoded order_kernel.messages command",
            )
            return self._finish()
        return self._handle(cmd, data)

    def _handle(self, cmd: m.Command, raw: bytes) -> list[m.Event]:
        if self.log is not None:
            self.log.append_inbound(raw, seq=cmd.seq)
        self._out = []
        if not 0 <= cmd.ts_ns <= MAX_TS:
            self._deny_cmd(cmd, Reason.MALFORMED_MESSAGE, f"ts_ns={cmd.ts_ns} outside 0..2**63-1")
            return self._finish()
        if isinstance(cmd, m.MarketBar):  # market data: not part of the session's sequence
            self._now = cmd.ts_ns
            if self._held:
                self._release()
            self._in_bar = True
            try:
                self._on_bar(cmd)
            finally:
                self._in_bar = False
            return self._finish()
        self._now = cmd.ts_ns
        if self._held:
            self._release()
        if cmd.session_id != self.session_id:
            self._deny_cmd(
                cmd, Reason.UNKNOWN_SESSION, f"this kernel serves session {self.session_id!r}"
            )
            return self._finish()
        self._sequence(cmd)
        return self._finish()

    def _release(self) -> None:
        """Deliver held venue reports whose (delayed) ts_ns the clock has reached, in order."""
        held = self._held
        while held and held[0].ts_ns <= self._now:
            ev = held.popleft()
            self._out.append(ev)
            self._sent.append(ev)
            self._delivered_seq = ev.seq

    def _finish(self) -> list[m.Event]:
        if self._held:
            self._release()
        out = self._out
        self._out = []
        if self.keep_encoded:
            raws = [m.encode(ev) for ev in out]
            self.last_encoded = raws
            if self.log is not None:
                for ev, raw in zip(out, raws, strict=True):
                    if not ev.possible_duplicate:
                        self.log.append_outbound(raw, seq=ev.seq)
        elif self.log is not None:
            for ev in out:
                if not ev.possible_duplicate:
                    self.log.append_outbound(m.encode(ev), seq=ev.seq)
        return out

    # ================================================================ sequencing

    def _sequence(self, cmd: m.Command) -> None:
        """FIX-style: in order -> process; gap -> queue + ResendRequest; low -> dup or deny."""
        seq = cmd.seq
        exp = self._expected_in
        if exp is None or seq == exp:
            self._process(cmd)
            self._expected_in = seq + 1
            while self._expected_in in self._queued:
                nxt = self._queued.pop(self._expected_in)
                self._now = nxt.ts_ns
                self._process(nxt)
                self._expected_in += 1
            return
        if seq > exp:
            if seq not in self._queued:
                self._queued[seq] = cmd
            if seq - 1 > self._resend_upto:
                begin = max(exp, self._resend_upto + 1)
                self._resend_upto = seq - 1
                self._emit(m.ResendRequest, begin_seq=begin, end_seq=seq - 1)
            return
        if cmd.possible_duplicate:
            return  # a resend of something already processed: ignored
        self._deny_cmd(
            cmd, Reason.SEQ_TOO_LOW, f"seq {seq} < expected {exp} and possible_duplicate is false"
        )

    def _process(self, cmd: m.Command) -> None:
        self._last_heard = cmd.ts_ns
        self._silence_handled = False
        if self.live and self._open:
            self._expire_live(cmd.ts_ns)
        self._dispatch[type(cmd)](cmd)

    # ================================================================ emit helpers

    def _emit(self, cls: type[Any], **fields: Any) -> Any:
        self._out_seq += 1
        ts = self._now
        if self._delayed:
            if cls not in _KERNEL_EVENTS:  # a venue report travels back to us
                v = self.venue
                ts += v.fill_latency_ns if self._in_bar else v.latency_ns + v.ack_latency_ns
            ts = max(ts, self._last_visible)  # one ordered channel: nothing overtakes
            self._last_visible = ts
        ev = cls(session_id=self.session_id, seq=self._out_seq, ts_ns=ts, **fields)
        if self._held or ts > self._now:
            self._held.append(ev)
            return ev
        self._out.append(ev)
        self._sent.append(ev)
        self._delivered_seq = ev.seq
        return ev

    def _deny_cmd(self, cmd: m.Command, reason: Reason, detail: str) -> None:
        self._emit(
            m.CommandDenied,
            ref_seq=cmd.seq,
            command=type(cmd).__name__,
            client_order_id=getattr(cmd, "client_order_id", None),
            reason=reason,
            detail=detail,
        )

    def _position_event(self, symbol: str) -> None:
        i = self._sym_index[symbol]
        p = self.machine.positions
        self._emit(
            m.PositionUpdate,
            symbol=symbol,
            qty=int(p[P_QTY, i]),
            cost_basis=int(p[P_COST, i]),
            realized_pnl=int(p[P_REALIZED, i]),
            fees_paid=int(p[P_FEES, i]),
            funding_paid=int(p[P_FUNDING, i]),
        )

    def _step(
        self,
        o: _Order,
        event: OrderEvent,
        qty: int = 0,
        price: int = 0,
        trigger: int = 0,
        fee: int = 0,
    ) -> Reason:
        return self.machine.step(o.slot, event, qty, price, trigger, fee)

    def _must(self, o: _Order, event: OrderEvent, **kw: int) -> None:
        """Apply an event the kernel itself decided; a refusal here is a kernel bug."""
        r = self._step(o, event, **kw)
        if r is not Reason.OK:
            raise OrderKernelError(
                f"internal: {event.name} refused ({r.name}) for order {o.cmd.client_order_id!r} "
                f"in state {self.machine.state(o.slot).name}; please report with the order log"
            )

    def _state(self, o: _Order) -> OrderState:
        if o.final_state is not None:
            return o.final_state
        return self.machine.state(o.slot)

    def _finalize_if_terminal(self, o: _Order) -> None:
        st = self.machine.state(o.slot)
        if st in TERMINAL_STATES and o.final_state is None:
            o.final_state = st
            o.filled = int(self.machine.orders[F_FILLED, o.slot])
            o.fill_cost = int(self.machine.orders[F_FILL_COST, o.slot])
            o.final_qty = int(self.machine.orders[F_QTY, o.slot])
            o.final_price = int(self.machine.orders[F_PRICE, o.slot])
            o.final_trigger = int(self.machine.orders[F_TRIGGER, o.slot])
            o.final_fees = int(self.machine.orders[F_FEES, o.slot])
            self._open.pop(o.cmd.client_order_id, None)
            self._sched_open.pop(o.cmd.client_order_id, None)
            self._by_slot.pop(o.slot, None)
            self.machine.release(o.slot)
            o.slot = -1
            if o.parent is not None:
                self._check_schedule_done(o.parent)

    # ================================================================ positions / equity

    def _pos(self, symbol: str) -> int:
        return int(self.machine.positions[P_QTY, self._sym_index[symbol]])

    def _equity(self) -> Decimal:
        """Net PnL in quote currency (realised - fees - funding + unrealised at last close)."""
        total = Decimal(0)
        p = self.machine.positions
        for sym, i in self._sym_index.items():
            units = int(p[P_REALIZED, i]) - int(p[P_FEES, i]) - int(p[P_FUNDING, i])
            close = self._last_close.get(sym)
            if close is not None:
                units += int(p[P_QTY, i]) * close - int(p[P_COST, i])
            total += self.instruments[sym].money_of(units)
        return total

    # ================================================================ submit

    def _on_submit(self, cmd: m.SubmitOrder) -> None:
        prior = self._orders.get(cmd.client_order_id)
        if prior is not None:  # idempotent: the original result stands, nothing new is created
            for ev in prior.response:
                self._out.append(msgspec.structs.replace(ev, possible_duplicate=True))
            return
        self._submit(cmd, internal=False)

    def _validate(self, cmd: m.SubmitOrder) -> tuple[Reason, str] | None:
        cid = cmd.client_order_id
        if not cid:
            return Reason.UNKNOWN_ORDER, "client_order_id is empty"
        if cmd.symbol not in self.instruments:
            return Reason.UNKNOWN_SYMBOL, f"{cmd.symbol!r} not in {sorted(self.instruments)}"
        if not 0 < cmd.qty <= MAX_LOTS:
            return Reason.INVALID_QTY, f"qty={cmd.qty} lots; must be in 1..{MAX_LOTS}"
        ot = cmd.order_type
        need_px = ot in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        need_trig = ot in (OrderType.STOP, OrderType.STOP_LIMIT)
        if (need_px and cmd.price is None) or (need_trig and cmd.trigger_price is None):
            return Reason.MISSING_PRICE, f"{ot.name} needs " + (
                "price and trigger_price"
                if ot is OrderType.STOP_LIMIT
                else "price"
                if need_px
                else "trigger_price"
            )
        if not need_px and cmd.price is not None:
            return Reason.INVALID_PRICE, f"{ot.name} takes no price (got {cmd.price})"
        if not need_trig and cmd.trigger_price is not None:
            return (
                Reason.INVALID_PRICE,
                f"{ot.name} takes no trigger_price (got {cmd.trigger_price})",
            )
        for name, v in (("price", cmd.price), ("trigger_price", cmd.trigger_price)):
            if v is not None and not 0 < v <= MAX_TICKS:
                return Reason.INVALID_PRICE, f"{name}={v} ticks; must be in 1..{MAX_TICKS}"
        ref = cmd.price or cmd.trigger_price or self._last_close.get(cmd.symbol)
        if ref is not None and cmd.qty * ref > MAX_NOTIONAL:
            return (
                Reason.INVALID_QTY,
                f"qty*price = {cmd.qty * ref} exceeds the kernel's int64 range",
            )
        if cmd.tif is TimeInForce.GTD:
            if cmd.expire_ts_ns is None or not self._now < cmd.expire_ts_ns <= MAX_TS:
                return (
                    Reason.INVALID_DEADLINE,
                    f"GTD needs expire_ts_ns > ts_ns ({self._now}), got {cmd.expire_ts_ns}",
                )
        elif cmd.expire_ts_ns is not None:
            return Reason.INVALID_DEADLINE, f"expire_ts_ns is only for GTD (tif is {cmd.tif.name})"
        if cmd.oco_group is not None and cmd.oco_group in self._oco_done:
            return (
                Reason.INVALID_TRANSITION,
                f"OCO group {cmd.oco_group!r} is closed (a member already filled); use a new group id",
            )
        if cmd.post_only and ot is not OrderType.LIMIT:
            return (
                Reason.POST_ONLY_WOULD_TAKE,
                f"post_only needs a LIMIT order ({ot.name} always takes)",
            )
        if cmd.post_only and cmd.tif in (TimeInForce.IOC, TimeInForce.FOK):
            return Reason.POST_ONLY_WOULD_TAKE, f"post_only with {cmd.tif.name} can never rest"
        if cmd.trailing is not None:
            tr = cmd.trailing
            if ot is not OrderType.STOP:
                return Reason.INVALID_PRICE, f"trailing needs a STOP order, not {ot.name}"
            if (tr.offset_ticks is None) == (tr.offset_bps is None):
                return Reason.INVALID_PRICE, "trailing: set exactly one of offset_ticks, offset_bps"
            off = tr.offset_ticks if tr.offset_ticks is not None else tr.offset_bps
            if off is None or not 0 < off <= MAX_TICKS:
                return Reason.INVALID_PRICE, f"trailing offset {off} must be positive"
        if cmd.display_qty is not None and not 0 < cmd.display_qty <= cmd.qty:
            return (
                Reason.INVALID_QTY,
                f"display_qty={cmd.display_qty} must be in 1..qty ({cmd.qty})",
            )
        if cmd.reduce_only:
            pos = self._pos(cmd.symbol)
            buy = cmd.side is Side.BUY
            if pos == 0 or (pos > 0) == buy:
                return (
                    Reason.REDUCE_ONLY_VIOLATION,
                    f"position is {pos} lots; a reduce-only {cmd.side.name} would not reduce it",
                )
            if cmd.bracket is not None:
                return Reason.REDUCE_ONLY_VIOLATION, "a reduce-only order cannot carry a bracket"
        if cmd.bracket is not None:
            b = cmd.bracket
            total = 0
            for k, leg in enumerate(b.take_profits, 1):
                if not 0 < leg.price <= MAX_TICKS:
                    return (
                        Reason.INVALID_PRICE,
                        f"bracket.take_profits[{k - 1}].price={leg.price} ticks must be positive",
                    )
                if leg.qty <= 0:
                    return (
                        Reason.INVALID_QTY,
                        f"bracket.take_profits[{k - 1}].qty={leg.qty} must be positive",
                    )
                total += leg.qty
            if total > cmd.qty:
                return (
                    Reason.INVALID_QTY,
                    f"take-profit legs total {total} lots > order qty {cmd.qty}",
                )
            if b.stop_loss is not None and not 0 < b.stop_loss <= MAX_TICKS:
                return (
                    Reason.INVALID_PRICE,
                    f"bracket.stop_loss={b.stop_loss} ticks must be positive",
                )
            entry = cmd.price or cmd.trigger_price
            if entry is not None:
                sign = 1 if cmd.side is Side.BUY else -1
                if b.stop_loss is not None and sign * (b.stop_loss - entry) >= 0:
                    return (
                        Reason.INVALID_PRICE,
                        f"bracket.stop_loss {b.stop_loss} is on the wrong side of entry {entry} for a {cmd.side.name}",
                    )
                for k, leg in enumerate(b.take_profits):
                    if sign * (leg.price - entry) <= 0:
                        return (
                            Reason.INVALID_PRICE,
                            f"bracket.take_profits[{k}].price {leg.price} is on the wrong side of entry {entry} for a {cmd.side.name}",
                        )
        if cmd.schedule is not None:
            return self._validate_schedule(cmd)
        return None

    def _validate_schedule(self, cmd: m.SubmitOrder) -> tuple[Reason, str] | None:
        """A TWAP parent: N >= 1 slices of at least one lot each, a positive interval, and only
        what a slice can carry (MARKET or LIMIT; no bracket, OCO, trailing or display qty)."""
        sc = cmd.schedule
        assert sc is not None
        if cmd.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return (
                Reason.INVALID_QTY,
                f"schedule needs a MARKET or LIMIT order, not {cmd.order_type.name}",
            )
        if not 1 <= sc.slices <= min(cmd.qty, MAX_SLICES):
            return (
                Reason.INVALID_QTY,
                f"schedule.slices={sc.slices}: must be in 1..min(qty={cmd.qty}, {MAX_SLICES}) "
                "so that every slice has at least one lot",
            )
        if sc.interval_ns <= 0 or self._now + (sc.slices - 1) * sc.interval_ns > MAX_TS:
            return (
                Reason.INVALID_DEADLINE,
                f"schedule.interval_ns={sc.interval_ns}: must be > 0 and the window must end "
                "before 2**63 ns",
            )
        for name, bad in (
            ("bracket", cmd.bracket is not None),
            ("oco_group", cmd.oco_group is not None),
            ("trailing", cmd.trailing is not None),
            ("display_qty", cmd.display_qty is not None),
        ):
            if bad:
                return (
                    Reason.INVALID_QTY,
                    f"schedule cannot be combined with {name}; submit the slices yourself",
                )
        return None

    def _submit(
        self, cmd: m.SubmitOrder, *, internal: bool, parent: _Order | None = None
    ) -> _Order | None:
        """Create, gate and send one order. `internal`: placed by the kernel (bracket, flatten,
        TWAP slice); `parent`: the TWAP parent of a slice."""
        cid = cmd.client_order_id
        refusal = self._validate(cmd)
        if refusal is None and self._kill and not internal:
            refusal = (
                Reason.KILL_SWITCH_ACTIVE,
                "KillSwitch was received; this session accepts no new orders",
            )
        if refusal is None and not internal:
            sign = 1 if cmd.side is Side.BUY else -1
            refusal = self._risk.check(
                symbol=cmd.symbol,
                qty=cmd.qty,
                signed_qty=sign * cmd.qty,
                ref_price=cmd.price or cmd.trigger_price or self._last_close.get(cmd.symbol),
                position=self._pos(cmd.symbol),
                open_orders=len(self._open),
                ts_ns=self._now,
                # Decimal equity costs µs per call: only the daily-loss stop needs it
                equity=self._equity() if self._daily_loss_on else Decimal(0),
                reduce_only=cmd.reduce_only,
            )
        if refusal is None and self.machine.free_slots == 0:
            refusal = Reason.BOOK_FULL, f"all {self.machine.capacity} slots hold open orders"
        if refusal is not None and self.machine.free_slots == 0:
            # No slot to run DENY through: record the denial without a machine record.
            o = _Order(
                cmd=cmd,
                slot=-1,
                order_seq=-1,
                venue_order_id="",
                final_state=S.DENIED,
                parent=parent,
            )
            self._orders[cid] = o
            if parent is not None:
                parent.slices.append(o)
            o.response.append(
                self._emit(m.OrderDenied, client_order_id=cid, reason=refusal[0], detail=refusal[1])
            )
            return None
        sym = self._sym_index.get(cmd.symbol, 0)
        held = self.live and cmd.schedule is None and cmd.order_type in (_STOP, _STOP_LIMIT)
        if (cmd.schedule is not None or held) and refusal is None:
            sym = self._sink  # a parent's mirrored fills must not move the position twice
        flags = (FLAG_POST_ONLY if cmd.post_only else 0) | (
            FLAG_REDUCE_ONLY if cmd.reduce_only else 0
        )
        oco = -1
        if cmd.oco_group is not None and refusal is None:
            oco = self._oco_ids.setdefault(cmd.oco_group, len(self._oco_ids))
        slot = self.machine.alloc(
            symbol=sym,
            side=int(cmd.side),
            order_type=int(cmd.order_type),
            tif=int(cmd.tif),
            qty=cmd.qty if refusal is None else 0,
            price=(cmd.price or 0) if refusal is None else 0,
            trigger=(cmd.trigger_price or 0) if refusal is None else 0,
            expire_ts_ns=(cmd.expire_ts_ns or 0) if refusal is None else 0,
            flags=flags,
            oco=oco,
            active_from=self._last_bar_ts.get(cmd.symbol, _NO_BAR),
        )
        order_seq = int(self.machine.orders[F_ORDER_SEQ, slot])
        o = _Order(
            cmd=cmd,
            slot=slot,
            order_seq=order_seq,
            venue_order_id=f"SIM-{order_seq}",
            arrival_ts=self._now + self.venue.latency_ns,
            parent=parent,
            sched_start=self._now,
            held=held,
        )
        self._orders[cid] = o
        self._by_slot[slot] = o
        self._queue_seq += 1
        o.priority = self._queue_seq
        if cmd.display_qty is not None:
            o.clip_left = min(cmd.display_qty, cmd.qty)
        if parent is not None:
            parent.slices.append(o)
        if refusal is not None:
            self._must(o, E.DENY)
            o.response.append(
                self._emit(m.OrderDenied, client_order_id=cid, reason=refusal[0], detail=refusal[1])
            )
            self._finalize_if_terminal(o)
            return None
        self._must(o, E.SUBMIT)
        self._open[cid] = o
        if held:  # a live stop stays in the kernel until a bar reaches its trigger
            self._must(o, E.ACCEPT)
            o.venue_order_id = f"HELD-{order_seq}"
            o.response.append(
                self._emit(m.OrderAccepted, client_order_id=cid, venue_order_id=o.venue_order_id)
            )
            return o
        if self.live and cmd.schedule is None:  # the exchange answers through live.py
            self.outbox.append(("submit", cid))
            return o
        # --- the simulated venue answers at once
        venue_refusal = self._venue_check_new(cmd)
        if venue_refusal is not None:
            self._must(o, E.REJECT)
            o.response.append(
                self._emit(
                    m.OrderRejected,
                    client_order_id=cid,
                    reason=venue_refusal[0],
                    detail=venue_refusal[1],
                )
            )
            self._finalize_if_terminal(o)
            return None
        self._must(o, E.ACCEPT)
        o.response.append(
            self._emit(m.OrderAccepted, client_order_id=cid, venue_order_id=o.venue_order_id)
        )
        if cmd.schedule is not None:
            self._sched_open[cid] = o
        return o

    def _venue_check_new(self, cmd: m.SubmitOrder) -> tuple[Reason, str] | None:
        if cmd.post_only and cmd.price is not None:
            close = self._last_close.get(cmd.symbol)
            if close is not None and SimVenue.crosses(cmd.side, cmd.price, close):
                return (
                    Reason.POST_ONLY_WOULD_TAKE,
                    f"limit {cmd.price} crosses the last close {close}",
                )
        return None

    # ================================================================ cancel / amend

    def _lookup(self, cmd: m.AmendOrder | m.CancelOrder) -> _Order | None:
        o = self._orders.get(cmd.client_order_id)
        if o is None:
            self._deny_cmd(
                cmd,
                Reason.UNKNOWN_ORDER,
                f"no order {cmd.client_order_id!r} in session {self.session_id!r}",
            )
            return None
        if o.final_state is not None:
            self._deny_cmd(
                cmd, Reason.ORDER_TERMINAL, f"order {cmd.client_order_id!r} is {o.final_state.name}"
            )
            return None
        return o

    def _on_cancel(self, cmd: m.CancelOrder) -> None:
        o = self._lookup(cmd)
        if o is None:
            return
        r = self._step(o, E.CANCEL)
        if r is not Reason.OK:
            self._deny_cmd(cmd, r, f"order {o.cmd.client_order_id!r} is {self._state(o).name}")
            return
        self._venue_cancel(o, Reason.OK, "")

    def _venue_cancel(
        self, o: _Order, reason: Reason, detail: str, *, confirmed: bool = False
    ) -> None:
        """The venue confirms a cancel (solicited after CANCEL, or unsolicited). A TWAP
        parent cancels its outstanding slices first, then itself. Live mode: unless the
        exchange itself `confirmed` it, the cancel is a request queued for the route."""
        if self.live and not confirmed and o.cmd.schedule is None:
            if not o.held:
                self.outbox.append(("cancel", o.cmd.client_order_id))
                return
            kid = o.slices[-1] if o.slices else None
            if kid is not None and kid.final_state is None:  # triggered: its order is out
                if self._state(o) is not S.PENDING_CANCEL:
                    self._must(o, E.CANCEL)
                if self._step(kid, E.CANCEL) is Reason.OK:
                    self._venue_cancel(kid, reason, detail)
                return  # the held parent ends when its triggered order does
            # untriggered: it exists only here, so the cancel is local
        if o.expiring and confirmed:  # the cancel enforced a GTD deadline
            self._must(o, E.EXPIRE)
            self._emit(m.OrderExpired, client_order_id=o.cmd.client_order_id)
            self._after_terminal(o)
            return
        if o.cmd.schedule is not None:
            o.closing = True
            self._cancel_slices(o, f"parent {o.cmd.client_order_id} cancelled")
        self._must(o, E.CANCEL_ACK)
        self._emit(
            m.OrderCancelled, client_order_id=o.cmd.client_order_id, reason=reason, detail=detail
        )
        self._after_terminal(o)

    def _on_cancel_all(self, cmd: m.CancelAll) -> None:
        if cmd.symbol is not None and cmd.symbol not in self.instruments:
            self._deny_cmd(
                cmd, Reason.UNKNOWN_SYMBOL, f"{cmd.symbol!r} not in {sorted(self.instruments)}"
            )
            return
        self._cancel_all(cmd.symbol, "CancelAll")

    def _cancel_all(self, symbol: str | None, detail: str) -> None:
        """Cancel until none is left: cancelling a partly filled bracket parent places its
        children, which are cancelled in the next pass (each parent places them only once)."""
        while True:
            todo = [
                o
                for o in self._open.values()
                if o.final_state is None and (symbol is None or o.cmd.symbol == symbol)
            ]
            if not todo:
                return
            for o in todo:
                if o.final_state is None and self._step(o, E.CANCEL) is Reason.OK:
                    self._venue_cancel(o, Reason.OK, detail)
            if self.live:  # the requests are queued; the exchange answers later
                return

    def _on_amend(self, cmd: m.AmendOrder) -> None:
        o = self._lookup(cmd)
        if o is None:
            return
        if self.live and o.held and self._state(o) is not S.SUBMITTED:
            self._deny_cmd(
                cmd,
                Reason.INVALID_TRANSITION,
                f"{o.cmd.client_order_id!r} is a triggered kernel-held stop; amend its "
                f"{self.trigger_id(o.cmd.client_order_id)!r} order at the exchange instead",
            )
            return
        if o.cmd.schedule is not None:
            self._deny_cmd(
                cmd,
                Reason.INVALID_TRANSITION,
                f"{o.cmd.client_order_id!r} is a TWAP parent; cancel it and submit a new schedule",
            )
            return
        orders = self.machine.orders
        if o.parent is not None and cmd.qty is not None and cmd.qty != int(orders[F_QTY, o.slot]):
            self._deny_cmd(
                cmd,
                Reason.INVALID_QTY,
                f"{o.cmd.client_order_id!r} is a TWAP slice; its qty is fixed by the schedule",
            )
            return
        ot = o.cmd.order_type
        qty = int(orders[F_QTY, o.slot]) if cmd.qty is None else cmd.qty
        price = int(orders[F_PRICE, o.slot]) if cmd.price is None else cmd.price
        trig = int(orders[F_TRIGGER, o.slot]) if cmd.trigger_price is None else cmd.trigger_price
        bad: tuple[Reason, str] | None = None
        if cmd.price is not None and ot not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            bad = Reason.INVALID_PRICE, f"{ot.name} has no limit price to amend"
        elif cmd.trigger_price is not None and ot not in (OrderType.STOP, OrderType.STOP_LIMIT):
            bad = Reason.INVALID_PRICE, f"{ot.name} has no trigger price to amend"
        elif cmd.expire_ts_ns is not None:
            bad = (
                Reason.INVALID_DEADLINE,
                "amending expire_ts_ns is not supported; cancel and resubmit",
            )
        elif not 0 < qty <= MAX_LOTS:
            bad = Reason.INVALID_QTY, f"qty={qty} lots; must be in 1..{MAX_LOTS}"
        elif (cmd.price is not None and not 0 < price <= MAX_TICKS) or (
            cmd.trigger_price is not None and not 0 < trig <= MAX_TICKS
        ):
            bad = (
                Reason.INVALID_PRICE,
                f"price={cmd.price} trigger_price={cmd.trigger_price}: must be in 1..{MAX_TICKS}",
            )
        elif qty <= int(orders[F_FILLED, o.slot]):
            bad = (
                Reason.INVALID_QTY,
                f"new qty {qty} must exceed the filled qty {int(orders[F_FILLED, o.slot])}",
            )
        elif price and qty * price > MAX_NOTIONAL:
            bad = Reason.INVALID_QTY, "qty*price exceeds the kernel's int64 range"
        if bad is not None:
            self._deny_cmd(cmd, bad[0], bad[1])
            return
        r = self._step(o, E.AMEND, qty=qty, price=price, trigger=trig)
        if r is not Reason.OK:
            self._deny_cmd(cmd, r, f"order {o.cmd.client_order_id!r} is {self._state(o).name}")
            return
        cid = o.cmd.client_order_id
        if self.live and not o.held:  # the exchange answers through live.py (edit or reject)
            self.outbox.append(("amend", cid))
            return
        close = self._last_close.get(o.cmd.symbol)
        if (
            o.cmd.post_only
            and cmd.price is not None
            and close is not None
            and SimVenue.crosses(o.cmd.side, price, close)
        ):
            self._must(o, E.AMEND_REJECT)
            self._emit(
                m.AmendRejected,
                client_order_id=cid,
                reason=Reason.POST_ONLY_WOULD_TAKE,
                detail=f"limit {price} crosses the last close {close}",
            )
            return
        old_price = int(orders[F_PRICE, o.slot])
        self._must(o, E.AMEND_ACK)
        if price != old_price:  # a re-priced order loses its place: it is new at the venue
            orders[F_FLAGS, o.slot] &= ~FLAG_RESTING
            orders[F_ACTIVE_FROM, o.slot] = self._last_bar_ts.get(o.cmd.symbol, _NO_BAR)
            o.arrival_ts = self._now + self.venue.latency_ns
        self._emit(
            m.AmendAccepted,
            client_order_id=cid,
            qty=qty,
            price=price or None,
            trigger_price=trig or None,
        )

    # ================================================================ timers, kill, heartbeat, resend

    def _on_set_timer(self, cmd: m.SetTimer) -> None:
        if cmd.client_order_id is not None and cmd.client_order_id not in self._orders:
            self._deny_cmd(
                cmd,
                Reason.UNKNOWN_ORDER,
                f"timer {cmd.timer_id!r} names unknown order {cmd.client_order_id!r}",
            )
            return
        if not 0 <= cmd.fire_ts_ns <= MAX_TS:
            self._deny_cmd(
                cmd, Reason.INVALID_DEADLINE, f"fire_ts_ns={cmd.fire_ts_ns} out of range"
            )
            return
        self._timer_reg += 1
        # Re-arming an existing timer id replaces it (heartbeat style).
        self._timers[cmd.timer_id] = _Timer(
            cmd.timer_id,
            cmd.fire_ts_ns,
            self._timer_reg,
            cmd.client_order_id,
            cmd.cancel_order_on_fire,
        )

    def _fire_timers(self, ts_ns: int) -> None:
        due = sorted(
            (t for t in self._timers.values() if t.fire_ts_ns <= ts_ns),
            key=lambda t: (t.fire_ts_ns, t.reg),
        )
        for t in due:
            del self._timers[t.timer_id]
            self._emit(m.TimerFired, timer_id=t.timer_id, client_order_id=t.client_order_id)
            if t.cancel_order_on_fire and t.client_order_id is not None:
                o = self._orders[t.client_order_id]
                if o.final_state is None and self._step(o, E.CANCEL) is Reason.OK:
                    self._venue_cancel(o, Reason.OK, f"timer {t.timer_id} fired")

    def _check_heartbeat(self, ts_ns: int) -> None:
        """Cancel everything once when the strategy has been silent past the timeout (any
        session command counts as a sign of life; orders are accepted again afterwards)."""
        timeout = self.heartbeat_timeout_ns
        if timeout is None or self._last_heard is None or self._silence_handled:
            return
        if ts_ns - self._last_heard > timeout:
            self._silence_handled = True
            self._cancel_all(
                None, f"heartbeat timeout: no command for {ts_ns - self._last_heard} ns"
            )

    def _on_kill(self, cmd: m.KillSwitch) -> None:
        self._kill = True
        self._cancel_all(None, f"kill switch: {cmd.reason}" if cmd.reason else "kill switch")
        if cmd.flatten:
            for sym in self.instruments:
                pos = self._pos(sym)
                cid = f"kill.{cmd.seq}.{sym}"
                if pos != 0 and cid not in self._orders:
                    flat = m.SubmitOrder(
                        session_id=self.session_id,
                        seq=cmd.seq,
                        ts_ns=cmd.ts_ns,
                        client_order_id=cid,
                        symbol=sym,
                        side=Side.SELL if pos > 0 else Side.BUY,
                        order_type=OrderType.MARKET,
                        qty=abs(pos),
                        reduce_only=True,
                        tag="flatten",
                    )
                    self._submit(flat, internal=True)

    def _on_heartbeat(self, cmd: m.Heartbeat) -> None:
        self._emit(m.Heartbeat)

    def _on_resend(self, cmd: m.ResendRequest) -> None:
        if cmd.end_seq == 0 and cmd.begin_seq == self._delivered_seq + 1:
            return  # "everything after what I have" and nothing is missing: an empty answer
        end = cmd.end_seq or self._delivered_seq
        oldest = self._sent[0].seq if self._sent else self._delivered_seq + 1
        if cmd.begin_seq < 1 or cmd.begin_seq > end:
            self._deny_cmd(cmd, Reason.SEQ_GAP, f"bad range {cmd.begin_seq}..{cmd.end_seq}")
            return
        if cmd.begin_seq < oldest:
            if self.log is None:
                self._deny_cmd(
                    cmd,
                    Reason.SEQ_GAP,
                    f"events before seq {oldest} are no longer retained and no log is configured",
                )
                return
            self.log.flush()
            replay: Iterable[m.Event] = (
                m.decode_event(e.raw)
                for e in order_log.read(self.log.path)
                if e.direction == order_log.OUT and cmd.begin_seq <= e.seq <= end
            )
        else:
            replay = [ev for ev in self._sent if cmd.begin_seq <= ev.seq <= end]
        for ev in list(replay):
            self._out.append(msgspec.structs.replace(ev, possible_duplicate=True))

    # ================================================================ market data

    def _on_bar(self, bar: m.MarketBar) -> None:
        sym = bar.symbol
        if sym not in self.instruments:
            self._deny_cmd(
                bar, Reason.UNKNOWN_SYMBOL, f"bar for {sym!r}, not in {sorted(self.instruments)}"
            )
            return
        if (
            not (  # 0 < low <= open, close <= high <= MAX_TICKS, without min()/max() calls
                0 < bar.low <= bar.open <= bar.high <= MAX_TICKS
                and bar.low <= bar.close <= bar.high
            )
            or bar.volume < 0
            or not 0 <= bar.interval_ns <= MAX_BAR_INTERVAL_NS
        ):
            self._deny_cmd(
                bar,
                Reason.MALFORMED_MESSAGE,
                f"bar {sym} @ {bar.ts_ns}: need 0 < low <= open,close <= high <= 2**48, volume >= 0, 0 <= interval_ns <= 366 days",
            )
            return
        last = self._last_bar_ts.get(sym, _NO_BAR)
        if bar.ts_ns <= last and bar.possible_duplicate:
            return  # a resend of market data already matched (client resend after a crash)
        if bar.ts_ns <= last:
            self._deny_cmd(
                bar,
                Reason.MALFORMED_MESSAGE,
                f"bar {sym} @ {bar.ts_ns} is not after the previous bar @ {last}",
            )
            return
        # the Decimal equity is computed only when roll_day takes a new day's snapshot
        if self._daily_loss_on and self._risk.is_new_day(bar.ts_ns):
            self._risk.roll_day(bar.ts_ns, self._equity())
        if self._timers:
            self._fire_timers(bar.ts_ns)
        if self.heartbeat_timeout_ns is not None:
            self._check_heartbeat(bar.ts_ns)
        if self._sched_open:
            self._fire_slices(bar.ts_ns)
        if self._open and not self.live:  # nothing to match otherwise (most bars of a backtest)
            self._match_bar(bar, sym)
        elif self._open:  # live: the exchange matches; the kernel expires and triggers its own
            self._expire_live(bar.ts_ns)
            self._trigger_held(bar, sym)
        self._last_bar_ts[sym] = bar.ts_ns
        self._last_close[sym] = bar.close
        if not self.live:  # a live venue charges funding itself
            self._funding(bar)

    def _match_bar(self, bar: m.MarketBar, sym: str) -> None:
        """The open orders against one bar: GTD expiry, then stops/markets/limits by class."""
        orders = self.machine.orders
        eligible = [
            o
            for o in self._open.values()
            if o.cmd.symbol == sym and orders.item(F_ACTIVE_FROM, o.slot) < bar.ts_ns
        ]
        # GTD expiry at the start of the bar
        for o in eligible:
            exp = o.cmd.expire_ts_ns
            if o.final_state is None and o.cmd.tif is _GTD and exp is not None and exp <= bar.ts_ns:
                self._must(o, E.EXPIRE)
                self._emit(m.OrderExpired, client_order_id=o.cmd.client_order_id)
                self._after_terminal(o)
        # orders still travelling to the venue (latency model) wait for a later bar; TWAP
        # parents never trade themselves (their slices do)
        eligible = [
            o
            for o in eligible
            if o.final_state is None and o.arrival_ts <= bar.ts_ns and o.cmd.schedule is None
        ]
        # by class, then venue queue position (submission order; an iceberg refill goes last)
        if len(eligible) > 1:
            eligible.sort(key=lambda o: (self._match_class(o), o.priority))
        budget = [self.venue.volume_budget(bar)]
        self._matching = bar
        self._same_bar = []
        try:
            queue = deque(eligible)
            while queue:
                o = queue.popleft()
                # an iceberg whose clip filled refills at the back of this bar's queue
                if (
                    o.final_state is None
                    and self._match(o, bar, budget)
                    and o.final_state is None
                    and (budget[0] is None or budget[0] > 0)
                ):
                    queue.append(o)
            live_children = self._match_same_bar_children(bar, budget) if self._same_bar else []
        finally:
            self._matching = None
            self._same_bar = []
        for o in eligible:
            if o.final_state is None:
                if not orders.item(F_FLAGS, o.slot) & FLAG_RESTING:  # write once, not every bar
                    orders[F_FLAGS, o.slot] |= FLAG_RESTING
                if o.cmd.trailing is not None:
                    self._trail(o, bar)
        for o in live_children:
            if o.final_state is None:
                orders[F_FLAGS, o.slot] |= FLAG_RESTING

    def _match_same_bar_children(self, bar: m.MarketBar, budget: list[int | None]) -> list[_Order]:
        """Bracket children placed by a fill in this bar are live for the rest of it (SimVenue
        rule 15): after a fill at the open, every child (stop first: adverse-first); after an
        intrabar fill (or with venue latency), only the stop-loss, at its stop price. Returns
        the children that were live for the whole rest of the bar (marked resting after it)."""
        live: list[_Order] = []
        kids = sorted(self._same_bar, key=lambda kb: self._match_class(kb[0]))
        for kid, at_open in kids:
            if kid.final_state is not None:
                continue
            arrived = kid.arrival_ts <= bar.ts_ns
            if not arrived and kid.arrival_ts >= bar.ts_ns + bar.interval_ns:
                continue  # reaches the venue after this bar: matched from the next one
            if at_open and arrived:
                live.append(kid)
                self._match(kid, bar, budget)
            elif self._match_class(kid) == 1:
                self._match(kid, bar, budget, intrabar=True)
        return live

    def _trail(self, o: _Order, bar: m.MarketBar) -> None:
        """Move a trailing stop's trigger after the bar (effective from the next bar): a sell
        stop follows high - offset upwards, a buy stop follows low + offset downwards. The
        change goes through the table as a venue-side amend (AMEND, AMEND_ACK); no event."""
        orders = self.machine.orders
        trailing = o.cmd.trailing
        if trailing is None or orders[F_FLAGS, o.slot] & FLAG_TRIGGERED:
            return
        new = SimVenue.trailing_trigger(o.cmd.side, trailing, bar)
        old = int(orders[F_TRIGGER, o.slot])
        better = new > old if o.cmd.side is Side.SELL else new < old
        if not better or new <= 0:
            return
        qty = int(orders[F_QTY, o.slot])
        price = int(orders[F_PRICE, o.slot])
        self._must(o, E.AMEND, qty=qty, price=price, trigger=new)
        self._must(o, E.AMEND_ACK)

    # ================================================================ live: held stops, deadlines

    @staticmethod
    def trigger_id(client_order_id: str) -> str:
        """Deterministic id of the order a live kernel-held stop sends when it triggers."""
        return f"{client_order_id}.trig"

    def _expire_live(self, ts_ns: int) -> None:
        """Live mode: GTD deadlines are enforced by the session clock. A held stop expires
        here; an order at the exchange is cancelled through the route and ends EXPIRED when
        the exchange confirms (a triggered stop's deadline travels with its `.trig` order)."""
        for o in list(self._open.values()):
            exp = o.cmd.expire_ts_ns
            if o.final_state is not None or o.cmd.tif is not _GTD or exp is None or exp > ts_ns:
                continue
            if o.cmd.schedule is not None:
                continue  # a TWAP parent: its slices carry the deadline
            st = self.machine.state(o.slot)
            if o.held:
                if st is S.SUBMITTED:
                    self._must(o, E.EXPIRE)
                    self._emit(m.OrderExpired, client_order_id=o.cmd.client_order_id)
                    self._after_terminal(o)
            elif st in (S.SUBMITTED, S.TRIGGERED, S.PARTIALLY_FILLED):
                # acknowledged and not being cancelled (a refused cancel is asked again)
                self._must(o, E.CANCEL)
                o.expiring = True
                self.outbox.append(("cancel", o.cmd.client_order_id))

    def _trigger_held(self, bar: m.MarketBar, sym: str) -> None:
        """Live mode: the SimVenue's stop rules on the kernel-held stops of `sym`, from the
        bar after their submission (rule 1), in submission order; trailing stops that did not
        trigger follow the bar afterwards (rule 13, effective from the next bar)."""
        orders = self.machine.orders
        held = [
            o
            for o in self._open.values()
            if o.held
            and o.cmd.symbol == sym
            and o.final_state is None
            and orders.item(F_ACTIVE_FROM, o.slot) < bar.ts_ns
        ]
        for o in held:
            if o.final_state is not None or self.machine.state(o.slot) is not S.SUBMITTED:
                continue  # already triggered, or cancelled by a sibling in this bar
            tp = SimVenue.trigger_price(o.cmd.side, orders.item(F_TRIGGER, o.slot), bar)
            if tp is not None:
                self._fire_held(o, tp)
        for o in held:
            if (
                o.final_state is None
                and o.cmd.trailing is not None
                and self.machine.state(o.slot) is S.SUBMITTED
            ):
                self._trail(o, bar)

    def _fire_held(self, o: _Order, tp: int) -> None:
        """A held stop triggered: its OCO / bracket siblings are cancelled first, then its
        remaining qty goes to the exchange as `<id>.trig` (MARKET; LIMIT for a STOP_LIMIT),
        whose fills the stop mirrors (it ends when `<id>.trig` ends). A reduce-only stop
        sends at most the open position."""
        cmd = o.cmd
        cid = cmd.client_order_id
        orders = self.machine.orders
        leaves = self.machine.leaves(o.slot)
        qty = leaves
        if cmd.reduce_only:
            pos = self._pos(cmd.symbol)
            if pos == 0 or (pos > 0) == (cmd.side is Side.BUY):
                self._venue_cancel(o, Reason.REDUCE_ONLY_VIOLATION, f"position is {pos} lots")
                return
            qty = min(qty, abs(pos))
        child_id = self.trigger_id(cid)
        if child_id in self._orders:
            self._venue_cancel(
                o,
                Reason.DUPLICATE_CLIENT_ORDER_ID,
                f"the triggered order's id {child_id!r} is already used by another order",
            )
            return
        if qty < leaves:  # shrink to the position, locally (nothing is at the exchange yet)
            price, trig = orders.item(F_PRICE, o.slot), orders.item(F_TRIGGER, o.slot)
            self._must(
                o, E.AMEND, qty=int(orders[F_FILLED, o.slot]) + qty, price=price, trigger=trig
            )
            self._must(o, E.AMEND_ACK)
        self._must(o, E.TRIGGER)
        self._emit(m.OrderTriggered, client_order_id=cid, trigger_price=tp)
        group, bracket = cmd.oco_group, o.bracket_parent
        if group is not None:
            self._oco_done.add(group)
        if group is not None or bracket is not None:
            for sib in list(self._open.values()):
                if sib is o or sib.final_state is not None:
                    continue
                linked = (group is not None and sib.cmd.oco_group == group) or (
                    bracket is not None and sib.bracket_parent == bracket
                )
                if linked and self._step(sib, E.CANCEL) is Reason.OK:
                    self._venue_cancel(sib, Reason.OK, f"OCO: {cid} triggered")
        limit = cmd.order_type is _STOP_LIMIT
        child = m.SubmitOrder(
            session_id=self.session_id,
            seq=cmd.seq,
            ts_ns=self._now,
            client_order_id=child_id,
            symbol=cmd.symbol,
            side=cmd.side,
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            qty=qty,
            price=orders.item(F_PRICE, o.slot) if limit else None,
            tif=cmd.tif if limit else TimeInForce.GTC,
            expire_ts_ns=cmd.expire_ts_ns if limit else None,
            reduce_only=cmd.reduce_only,
            venue_hint=cmd.venue_hint,
            tag="trig",
        )
        self._submit(child, internal=True, parent=o)
        self._held_child_done(o)  # a child denied by the kernel ends its parent at once

    def _held_child_done(self, parent: _Order) -> None:
        """A triggered held stop follows its `.trig` order: FILLED when it filled, else
        cancelled (or expired) with the child's outcome in the detail."""
        if parent.final_state is not None or not parent.slices:
            return
        kid = parent.slices[-1]
        if kid.final_state is None:
            return
        cid = parent.cmd.client_order_id
        if self.machine.state(parent.slot) is S.FILLED:
            self._after_terminal(parent)
            return
        if kid.final_state is S.EXPIRED:
            self._must(parent, E.EXPIRE)
            self._emit(m.OrderExpired, client_order_id=cid)
        else:
            self._must(parent, E.CANCEL_ACK)
            self._emit(
                m.OrderCancelled,
                client_order_id=cid,
                reason=Reason.VENUE_REJECTED if kid.final_state is S.REJECTED else Reason.OK,
                detail=f"triggered order {kid.cmd.client_order_id} ended {kid.final_state.name}",
            )
        self._after_terminal(parent)

    def _match_class(self, o: _Order) -> int:
        ot = o.cmd.order_type
        triggered = bool(self.machine.orders.item(F_FLAGS, o.slot) & FLAG_TRIGGERED)
        if ot is _MARKET or (ot is _STOP and triggered):
            return 0
        if (ot is _STOP or ot is _STOP_LIMIT) and not triggered:
            return 1
        return 2

    def _match(
        self, o: _Order, bar: m.MarketBar, budget: list[int | None], *, intrabar: bool = False
    ) -> bool:
        """One order against one bar, per the SimVenue rules (see venues/sim.py). `intrabar`:
        the order went live inside the bar (a bracket stop after an intrabar entry), so its
        trigger price is the stop itself, not the worse of open and stop. Returns True when an
        iceberg's displayed clip filled and was refilled (rule 16)."""
        orders = self.machine.orders
        side = o.cmd.side
        ot = o.cmd.order_type
        flags = orders.item(F_FLAGS, o.slot)  # .item(): a Python int without a numpy scalar
        first = not flags & FLAG_RESTING
        limit = orders.item(F_PRICE, o.slot)
        tif = o.cmd.tif
        immediate = tif is _IOC or tif is _FOK
        price: int | None = None
        maker = False
        opportunity = first  # IOC/FOK act at the first opportunity
        at_open = False  # does the fill happen at the bar's opening price?
        if ot is _MARKET or (ot is _STOP and flags & FLAG_TRIGGERED):
            price = self.venue.slipped(side, bar.open, bar)
            at_open = True
        elif (ot is _STOP or ot is _STOP_LIMIT) and not flags & FLAG_TRIGGERED:
            opportunity = False
            stop = orders.item(F_TRIGGER, o.slot)
            tp = (
                SimVenue.intrabar_trigger_price(side, stop, bar)
                if intrabar
                else SimVenue.trigger_price(side, stop, bar)
            )
            if tp is None:
                return False
            opportunity = True
            at_open = tp == bar.open and not intrabar
            self._must(o, E.TRIGGER)
            self._emit(m.OrderTriggered, client_order_id=o.cmd.client_order_id, trigger_price=tp)
            if ot is _STOP:
                price = self.venue.slipped(side, tp, bar)
            elif SimVenue.crosses(side, limit, tp):
                price = tp
        else:  # limit, or a stop-limit triggered on an earlier bar
            if first and SimVenue.crosses(side, limit, bar.open):
                if o.cmd.post_only:
                    self._venue_cancel(
                        o, Reason.POST_ONLY_WOULD_TAKE, f"open {bar.open} crosses limit {limit}"
                    )
                    return False
                price = bar.open
                at_open = True
            elif not (immediate and first):
                price = SimVenue.limit_price(side, limit, bar)
                maker = True
                at_open = price == bar.open
        qty = 0
        refilled = False
        if price is not None:
            leaves = self.machine.leaves(o.slot)
            qty = leaves
            if o.cmd.reduce_only:
                pos = self._pos(o.cmd.symbol)
                if pos == 0 or (pos > 0) == (side is Side.BUY):
                    self._venue_cancel(o, Reason.REDUCE_ONLY_VIOLATION, f"position is {pos} lots")
                    return False
                qty = min(qty, abs(pos))
            iceberg = maker and o.cmd.display_qty is not None
            if iceberg:  # only the displayed clip rests at the touch
                qty = min(qty, o.clip_left)
            if budget[0] is not None:
                qty = min(qty, budget[0])
            if tif is _FOK and qty < leaves:
                qty = 0
            cost = abs(int(self.machine.positions[P_COST, self._sym_index[o.cmd.symbol]]))
            if qty > 0 and cost + qty * price > MAX_NOTIONAL:
                self._venue_cancel(
                    o,
                    Reason.INVALID_QTY,
                    f"fill of {qty} x {price} exceeds the int64 notional range",
                )
                return False
            if qty > 0:
                if budget[0] is not None:
                    budget[0] -= qty
                o.last_fill_ts = bar.ts_ns
                o.last_fill_at_open = at_open
                self._fill(o, qty, price, maker)
                if iceberg and o.final_state is None:
                    o.clip_left -= qty
                    if o.clip_left <= 0:  # refill: a new clip, last in the venue's queue
                        assert o.cmd.display_qty is not None
                        o.clip_left = min(o.cmd.display_qty, self.machine.leaves(o.slot))
                        self._queue_seq += 1
                        o.priority = self._queue_seq
                        refilled = True
        if immediate and opportunity and o.final_state is None:
            if o.cmd.tif is TimeInForce.FOK:
                self._venue_cancel(
                    o,
                    Reason.FOK_NOT_FILLABLE,
                    f"only {qty} of {self.machine.leaves(o.slot)} lots available",
                )
            else:
                self._venue_cancel(o, Reason.OK, "IOC remainder")
        return refilled

    def _fill(
        self,
        o: _Order,
        qty: int,
        price: int,
        maker: bool,
        *,
        fee: int | None = None,
        trade_id: str | None = None,
    ) -> None:
        """Apply one fill; `fee`/`trade_id` override the instrument fee and the `<cid>#n` id
        (reconciliation applies venue-reported fills with deterministic ids)."""
        if fee is None:
            fee = self.instruments[o.cmd.symbol].fee(qty, price, maker)
        self._must(o, E.FILL_FULL, qty=qty, price=price, fee=fee)
        o.n_fills += 1
        orders = self.machine.orders
        filled = int(orders[F_FILLED, o.slot])
        leaves = int(orders[F_QTY, o.slot]) - filled
        cid = o.cmd.client_order_id
        self._emit(
            m.OrderFilled,
            client_order_id=cid,
            trade_id=f"{cid}#{o.n_fills}" if trade_id is None else trade_id,
            symbol=o.cmd.symbol,
            side=o.cmd.side,
            partial=leaves > 0,
            qty=qty,
            price=price,
            fee=fee,
            liquidity=Liquidity.MAKER if maker else Liquidity.TAKER,
            leaves_qty=leaves,
            filled_qty=filled,
        )
        self._position_event(o.cmd.symbol)
        p = o.parent
        if p is not None and p.final_state is None:
            # the parent's filled qty is the sum of its slices': mirror the fill (sink position)
            self._must(p, E.FILL_FULL, qty=qty, price=price, fee=fee)
        # OCO: any fill of a member cancels its open siblings (so two never both fill).
        if o.cmd.oco_group is not None:
            self._oco_done.add(o.cmd.oco_group)
            for sib in list(self._open.values()):
                if (
                    sib is not o
                    and sib.cmd.oco_group == o.cmd.oco_group
                    and sib.final_state is None
                ):
                    self._venue_cancel(sib, Reason.OK, f"OCO sibling {cid} filled")
        if leaves == 0:
            self._after_terminal(o)
        if self._pos(o.cmd.symbol) == 0:
            for ro in list(self._open.values()):
                if ro.cmd.symbol == o.cmd.symbol and ro.cmd.reduce_only and ro.final_state is None:
                    self._venue_cancel(
                        ro, Reason.OK, "position flat: reduce-only order no longer needed"
                    )

    def _after_terminal(self, o: _Order) -> None:
        """Release a finished order; a bracket parent with fills places its exit orders; a
        TWAP parent that ended (expired, filled) leaves no slice working."""
        filled = int(self.machine.orders[F_FILLED, o.slot])
        self._finalize_if_terminal(o)
        if o.cmd.schedule is not None:
            o.closing = True
            self._cancel_slices(o, f"parent {o.cmd.client_order_id} is {self._state(o).name}")
        if o.cmd.bracket is not None and filled > 0:
            self._place_bracket(o, filled)

    def _place_bracket(self, parent: _Order, filled: int) -> None:
        b = parent.cmd.bracket
        assert b is not None
        pc = parent.cmd
        exit_side = Side.SELL if pc.side is Side.BUY else Side.BUY
        children: list[m.SubmitOrder] = []

        def child(
            suffix: str, order_type: OrderType, qty: int, price: int | None, trigger: int | None
        ) -> m.SubmitOrder:
            return m.SubmitOrder(
                session_id=self.session_id,
                seq=0,
                ts_ns=self._now,
                client_order_id=f"{pc.client_order_id}.{suffix}",
                symbol=pc.symbol,
                side=exit_side,
                order_type=order_type,
                qty=qty,
                price=price,
                trigger_price=trigger,
                reduce_only=True,
                tag=suffix,
            )

        if b.stop_loss is not None:
            children.append(child("sl", OrderType.STOP, filled, None, b.stop_loss))
        left = filled
        for k, leg in enumerate(b.take_profits, 1):
            q = min(leg.qty, left)
            if q <= 0:
                break
            left -= q
            children.append(child(f"tp{k}", OrderType.LIMIT, q, leg.price, None))
        for kid in children:
            if kid.client_order_id in self._orders:
                self._emit(
                    m.OrderDenied,
                    client_order_id=kid.client_order_id,
                    reason=Reason.DUPLICATE_CLIENT_ORDER_ID,
                    detail="bracket child id already used by another order",
                )
                continue
            placed = self._submit(kid, internal=True)
            if placed is not None:
                placed.bracket_parent = pc.client_order_id
            bar = self._matching
            if placed is not None and bar is not None and parent.last_fill_ts == bar.ts_ns:
                self._same_bar.append((placed, parent.last_fill_at_open))

    # ================================================================ TWAP / interval schedules

    def _cancel_slices(self, parent: _Order, detail: str) -> None:
        for s in parent.slices:
            if s.final_state is None and self._step(s, E.CANCEL) is Reason.OK:
                self._venue_cancel(s, Reason.OK, detail)

    def _check_schedule_done(self, parent: _Order) -> None:
        """After a slice finished: a parent whose mirrored fills reached its qty is FILLED; a
        parent whose every slice was placed and finished short of it is cancelled (the
        unfilled remainder is reported in the detail)."""
        if parent.cmd.schedule is None:  # a triggered kernel-held stop (live mode)
            self._held_child_done(parent)
            return
        if parent.final_state is not None or parent.closing:
            return
        if self.machine.state(parent.slot) is S.FILLED:
            self._after_terminal(parent)
            return
        sc = parent.cmd.schedule
        assert sc is not None
        if parent.sched_placed < sc.slices or any(s.final_state is None for s in parent.slices):
            return
        if self._step(parent, E.CANCEL) is Reason.OK:
            filled = int(self.machine.orders[F_FILLED, parent.slot])
            self._venue_cancel(
                parent,
                Reason.OK,
                f"schedule finished: {filled} of {parent.cmd.qty} lots filled by its slices",
            )

    @staticmethod
    def slice_qty(qty: int, slices: int, index: int) -> int:
        """Lots of slice `index` (0-based): qty // slices each, the last one also takes the
        rounding remainder."""
        base = qty // slices
        return qty - base * (slices - 1) if index == slices - 1 else base

    @staticmethod
    def slice_id(parent_id: str, index: int) -> str:
        """Deterministic child id of slice `index` (0-based): `<parent>.s<index+1>`."""
        return f"{parent_id}.s{index + 1}"

    def _fire_slices(self, ts_ns: int) -> None:
        """Place every slice due strictly before `ts_ns` (the bar's open), ordered by due time,
        then parent submission, then index; placed slices are live in this bar."""
        due: list[tuple[int, int, int, _Order]] = []
        for p in self._sched_open.values():
            sc = p.cmd.schedule
            if sc is None or p.final_state is not None:
                continue
            if p.cmd.expire_ts_ns is not None and p.cmd.expire_ts_ns <= ts_ns:
                continue  # expires at this bar (GTD): no new slice
            j = p.sched_placed
            while j < sc.slices and p.sched_start + j * sc.interval_ns < ts_ns:
                due.append((p.sched_start + j * sc.interval_ns, p.order_seq, j, p))
                j += 1
        due.sort(key=lambda d: d[:3])
        touched: list[_Order] = []
        for _, _, j, p in due:
            if p.final_state is not None or p.closing:
                continue
            self._place_slice(p, j)
            if p not in touched:
                touched.append(p)
        for p in touched:
            self._check_schedule_done(p)

    def _place_slice(self, p: _Order, j: int) -> None:
        pc = p.cmd
        sc = pc.schedule
        assert sc is not None
        p.sched_placed = j + 1
        cid = self.slice_id(pc.client_order_id, j)
        if cid in self._orders:
            self._emit(
                m.OrderDenied,
                client_order_id=cid,
                reason=Reason.DUPLICATE_CLIENT_ORDER_ID,
                detail=f"slice id of schedule {pc.client_order_id!r} already used by another order",
            )
            return
        child = m.SubmitOrder(
            session_id=self.session_id,
            seq=pc.seq,
            ts_ns=self._now,
            client_order_id=cid,
            symbol=pc.symbol,
            side=pc.side,
            order_type=pc.order_type,
            qty=self.slice_qty(pc.qty, sc.slices, j),
            price=pc.price,
            tif=pc.tif,
            expire_ts_ns=pc.expire_ts_ns,
            post_only=pc.post_only,
            reduce_only=pc.reduce_only,
            venue_hint=pc.venue_hint,
            tag=f"s{j + 1}",
        )
        self._submit(child, internal=True, parent=p)

    def _funding(self, bar: m.MarketBar) -> None:
        sym = bar.symbol
        if self.instruments[sym].kind != "perp":
            return
        nxt = self._next_funding.get(sym)
        if nxt is None:
            nxt = self.venue.first_funding_ts(bar.ts_ns)
        end = bar.ts_ns + max(bar.interval_ns, 1)
        i = self._sym_index[sym]
        while nxt < end:
            rate = self.venue.funding_rate_ppb(sym, nxt)
            pos = int(self.machine.positions[P_QTY, i])
            if pos != 0 and rate != 0:
                amount = SimVenue.funding_amount(pos, bar.close, rate)
                self.machine.positions[P_FUNDING, i] += amount
                self._emit(m.FundingApplied, symbol=sym, rate_ppb=rate, amount=amount)
                self._position_event(sym)
            nxt += self.venue.funding_interval_ns
        self._next_funding[sym] = nxt

    # ================================================================ read-only views

    def order(self, client_order_id: str) -> OrderView:
        """Snapshot of one order (open or finished)."""
        o = self._orders.get(client_order_id)
        if o is None:
            raise KeyError(f"no order {client_order_id!r} in session {self.session_id!r}")
        if o.final_state is None:
            arr = self.machine.orders
            qty = int(arr[F_QTY, o.slot])
            filled = int(arr[F_FILLED, o.slot])
            price = int(arr[F_PRICE, o.slot]) or None
            trig = int(arr[F_TRIGGER, o.slot]) or None
            cost = int(arr[F_FILL_COST, o.slot])
        else:
            qty, filled, cost = o.final_qty, o.filled, o.fill_cost
            price, trig = o.final_price or None, o.final_trigger or None
        return OrderView(
            client_order_id,
            o.cmd.symbol,
            o.cmd.side,
            o.cmd.order_type,
            self._state(o),
            qty,
            filled,
            price,
            trig,
            cost,
        )

    def orders(self) -> list[OrderView]:
        """Every order of the session in submission order."""
        return [self.order(cid) for cid in self._orders]

    def open_orders(self) -> list[OrderView]:
        return [self.order(cid) for cid in self._open]

    def position(self, symbol: str) -> PositionView:
        i = self._sym_index[symbol]
        p = self.machine.positions
        qty = int(p[P_QTY, i])
        cost = int(p[P_COST, i])
        close = self._last_close.get(symbol)
        unreal = 0 if close is None else qty * close - cost
        return PositionView(
            symbol,
            qty,
            cost,
            int(p[P_REALIZED, i]),
            int(p[P_FEES, i]),
            int(p[P_FUNDING, i]),
            unreal,
        )

    @property
    def kill_switch_active(self) -> bool:
        return self._kill

    @property
    def refusals(self) -> int:
        """Events the numba machine refused (invalid transitions, overfills, ...)."""
        return self.machine.refused

    @property
    def last_seq(self) -> int:
        return self._out_seq

    @property
    def now_ns(self) -> int:
        """The session's clock: ts_ns of the last input it processed (0 before any)."""
        return self._now

    def venue_order_ids(self) -> VenueOrderIds:
        """client_order_id -> symbol of the open orders that live at the venue (TWAP parents
        and live kernel-held stops live in the kernel only; the held ones are listed in
        `.held`), for `CcxtVenue.snapshot` before a reconciliation."""
        a = self.machine.orders
        return VenueOrderIds(
            {
                cid: o.cmd.symbol
                for cid, o in self._open.items()
                if o.cmd.schedule is None and not o.held
            },
            {
                cid: (
                    o.cmd.symbol,
                    int(a[F_FILLED, o.slot]),
                    int(a[F_FILL_COST, o.slot]),
                    int(a[F_FEES, o.slot]),
                )
                for cid, o in self._open.items()
                if o.held
            },
            {cid: o.venue_gen for cid, o in self._open.items() if o.venue_gen},
        )

    def state_digest(self) -> bytes:
        """A canonical snapshot of everything that determines future behaviour (for recovery tests)."""
        snap = (
            self.machine.orders.tobytes(),
            self.machine.positions.tobytes(),
            self.machine.counters.tobytes(),
            [
                (
                    cid,
                    o.final_state,
                    o.slot,
                    o.n_fills,
                    o.sched_placed,
                    o.priority,
                    o.clip_left,
                    o.venue_gen,
                )
                for cid, o in self._orders.items()
            ],
            list(self._open),
            sorted((t.timer_id, t.fire_ts_ns, t.reg) for t in self._timers.values()),
            sorted(self._last_bar_ts.items()),
            sorted(self._last_close.items()),
            self._kill,
            self._out_seq,
            self._expected_in,
            sorted(self._queued),
            self._resend_upto,
            sorted(self._oco_done),
            sorted(self._next_funding.items()),
            self._last_heard,
            self._silence_handled,
            self._risk.snapshot(),
            self.venue.rng_state(),
            [m.encode(ev) for ev in self._held],
            self._last_visible,
        )
        return repr(snap).encode()

    # ================================================================ recovery

    @classmethod
    def recover(
        cls,
        log_path: str | Path,
        session_id: str,
        instruments: Mapping[str, InstrumentSpec],
        venue: SimVenue,
        risk: RiskLimits | None = None,
        *,
        fsync: order_log.FsyncPolicy = "batch",
        **kwargs: Any,
    ) -> OrderKernel:
        """Rebuild a kernel by replaying the logged commands, check it reproduces the logged
        events, and reopen the log for appending. `venue` must be a fresh venue built with the
        same parameters (and seed) as the original. A corrupt log raises LogIntegrityError."""
        path = Path(log_path)
        order_log.verify(path)
        kernel = cls(session_id, instruments, venue, None, risk, **kwargs)
        produced: list[bytes] = []
        logged: list[bytes] = []
        for entry in order_log.read(path):
            if entry.direction == order_log.IN and entry.raw.startswith(RECON_RECORD_PREFIX):
                from order_kernel.reconcile import replay_record  # reconcile imports kernel

                produced.extend(m.encode(ev) for ev in replay_record(kernel, entry.raw))
            elif entry.direction == order_log.IN and entry.raw.startswith(LIVE_RECORD_PREFIX):
                from order_kernel.live import replay_report  # live imports kernel

                produced.extend(m.encode(ev) for ev in replay_report(kernel, entry.raw))
            elif entry.direction == order_log.IN:
                produced.extend(
                    m.encode(ev)
                    for ev in kernel.handle_bytes(entry.raw)
                    if not ev.possible_duplicate
                )
            else:
                logged.append(entry.raw)
        if produced[: len(logged)] != logged:
            k = next(
                (i for i, (a, b) in enumerate(zip(produced, logged, strict=False)) if a != b),
                min(len(produced), len(logged)),
            )
            raise RecoveryError(
                f"{path}: replay diverged from the log at outbound event #{k}; the venue must be built "
                "with the same parameters and seed, and the instruments/risk limits must match the original run"
            )
        # requests replay queued were sent before the crash, or never: reconciliation decides
        kernel.outbox.clear()
        log = order_log.OrderLog(path, fsync=fsync)
        for raw in produced[len(logged) :]:  # events of a command logged just before a crash
            log.append_outbound(raw, seq=m.decode_event(raw).seq)
        kernel.log = log
        return kernel
