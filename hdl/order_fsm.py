"""An N-slot order table in Amaranth 0.5, generated from `order_kernel.spec`.

Everything about the lifecycle (state and event encodings, the transition table, the
action bits, the reason codes) is read from the spec's dense arrays, so a change to the
spec changes the hardware on the next elaboration; nothing here restates the table.

Pipeline (one event per clock, three cycles from acceptance to result)::

    cycle t    A: events.valid & events.ready; the slot is read from RAM (sync read port)
    cycle t+1  B: table rows, quantity checks and the reason code on the slot as read;
                  candidate sums computed; all registered
    cycle t+2  C: the new slot is written back and the result registered
    cycle t+3  results.valid carries the outcome of the event accepted at cycle t

The read-modify-write loop of a slot spans B and C, so an event for the slot that is in
stage B right now is held for one cycle (events.ready low): the next cycle its read meets
C's write in the RAM's read-during-write bypass (the read port is transparent for the
write port). Events for other slots flow one per clock; back-to-back events for one slot
go one per two clocks. Splitting the decision (B) from the commit (C) is what lifts fmax
from ~85 MHz (single compute stage) to 120-130 MHz on ECP5 (docs/hdl.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from amaranth.hdl import Assert, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.errors import HdlConfigError
from order_kernel import spec

__all__ = [
    "LATENCY_CYCLES",
    "ActionCode",
    "OrderEventCode",
    "OrderStateCode",
    "OrderTable",
    "OrderTableConfig",
    "ReasonCode",
    "event_layout",
    "result_layout",
    "slot_layout",
]


def _hw_enum(name: str, source: type[IntEnum], width: int) -> type[enum.Enum]:
    """An `amaranth.lib.enum.Enum` with the same names and values as `source`, pinned to `width` bits."""
    if max(source) >= 1 << width:
        raise HdlConfigError(
            f"{source.__name__} has value {max(source)} that does not fit the {width}-bit "
            f"encoding in order_kernel/spec.py; widen the matching *_BITS constant"
        )
    namespace = enum.EnumMeta.__prepare__(name, (enum.Enum,), shape=width)
    for member in source:
        namespace[member.name] = member.value
    return enum.EnumMeta(name, (enum.Enum,), namespace, shape=width)  # type: ignore[no-any-return]


#: Hardware encodings, bit-identical to the spec's IntEnums (generated, never hand-written).
OrderStateCode: Final = _hw_enum("OrderStateCode", spec.OrderState, spec.STATE_BITS)
OrderEventCode: Final = _hw_enum("OrderEventCode", spec.OrderEvent, spec.EVENT_BITS)
ReasonCode: Final = _hw_enum("ReasonCode", spec.Reason, spec.REASON_BITS)
#: The action bitmask is a plain unsigned field; its bits are `spec.Action`.
ActionCode: Final = spec.Action

#: Cycles from an event's acceptance to its result appearing on `results` (no stalls).
LATENCY_CYCLES: Final = 3

_FILL_EVENTS: Final = (int(spec.OrderEvent.FILL_PARTIAL), int(spec.OrderEvent.FILL_FULL))


@dataclass(frozen=True, slots=True)
class OrderTableConfig:
    """Generator parameters: slot count (a power of two), field widths in bits, RAM style."""

    n_slots: int = 16
    qty_bits: int = 32
    price_bits: int = 32
    #: "distributed" (LUT RAM) or "block" (DP16KD on ECP5); passed to yosys as ram_style.
    ram_style: str = "distributed"

    def __post_init__(self) -> None:
        if self.n_slots < 2 or self.n_slots & (self.n_slots - 1):
            raise HdlConfigError(
                f"n_slots={self.n_slots}: the slot count must be a power of two >= 2 "
                f"(the slot index is a plain address into block RAM); try 16, 64 or 256"
            )
        if not 1 <= self.qty_bits <= 64:
            raise HdlConfigError(f"qty_bits={self.qty_bits}: must be between 1 and 64")
        if not 1 <= self.price_bits <= 64:
            raise HdlConfigError(f"price_bits={self.price_bits}: must be between 1 and 64")
        if self.ram_style not in ("distributed", "block"):
            raise HdlConfigError(
                f"ram_style={self.ram_style!r}: choose 'distributed' (LUT RAM) or 'block'"
            )

    @property
    def slot_bits(self) -> int:
        """Width of the slot index."""
        return (self.n_slots - 1).bit_length()


def slot_layout(config: OrderTableConfig) -> data.StructLayout:
    """One order slot as stored in RAM.

    leaves_qty is stored (rather than qty) so a fill compares against it without first
    subtracting; amend_* hold the values of an AMEND in flight until AMEND_ACK applies them,
    as the numba machine's F_AMEND_* fields do.
    """
    return data.StructLayout(
        {
            "state": OrderStateCode,
            "prev_state": OrderStateCode,
            "side": 1,  # spec.Side
            "order_type": 2,  # spec.OrderType
            "filled_qty": config.qty_bits,
            "leaves_qty": config.qty_bits,
            "price": config.price_bits,
            "trigger_price": config.price_bits,
            "amend_qty": config.qty_bits,
            "amend_price": config.price_bits,
            "amend_trigger": config.price_bits,
        }
    )


def event_layout(config: OrderTableConfig) -> data.StructLayout:
    """The event stream payload.

    `load` = 1 (re)initialises the slot from side/order_type/qty/price/trigger_price
    (state INITIALIZED, nothing filled). Otherwise `event` is applied: for FILL_* `qty` is
    the fill quantity and `price` the fill price (must be non-zero); for AMEND they are the
    new total quantity, price and trigger, stored until AMEND_ACK applies them. Other
    events ignore the fields, like `order_kernel.machine.apply_event`.
    """
    return data.StructLayout(
        {
            "slot": config.slot_bits,
            "load": 1,
            "event": OrderEventCode,
            "side": 1,
            "order_type": 2,
            "qty": config.qty_bits,
            "price": config.price_bits,
            "trigger_price": config.price_bits,
        }
    )


def result_layout(config: OrderTableConfig) -> data.StructLayout:
    """The result stream payload: one record per input event, in input order."""
    return data.StructLayout(
        {
            "slot": config.slot_bits,
            "load": 1,
            "event": OrderEventCode,  # FILL_* re-derived from leaves_qty
            "accepted": 1,
            "reason": ReasonCode,
            "state": OrderStateCode,  # after the event (unchanged when refused)
            "prev_state": OrderStateCode,
            "actions": spec.ACTION_BITS,  # spec.Action bits; 0 when refused
            "filled_qty": config.qty_bits,
            "leaves_qty": config.qty_bits,
        }
    )


class _Row:
    """Table outputs for one (state, event) lookup, as combinational signals."""

    def __init__(self, name: str) -> None:
        self.next_state = Signal(spec.STATE_BITS, name=f"{name}_next_state")
        self.is_prev = Signal(name=f"{name}_is_prev")
        self.actions = Signal(spec.ACTION_BITS, name=f"{name}_actions")
        self.reason = Signal(spec.REASON_BITS, name=f"{name}_reason")

    def assign(self, state: int, event: int) -> list[Any]:
        """Statements that load the table entry for a constant (state, event)."""
        nxt = int(spec.NEXT_STATE[state, event])
        return [
            self.next_state.eq(state if nxt == spec.PREV else nxt),
            self.is_prev.eq(nxt == spec.PREV),
            self.actions.eq(int(spec.ACTIONS[state, event])),
            self.reason.eq(int(spec.REASONS[state, event])),
        ]

    def refuse(self, state: Value) -> list[Any]:
        """An undefined code: refused with INVALID_TRANSITION, as the numba machine does."""
        return [
            self.next_state.eq(state),
            self.is_prev.eq(0),
            self.actions.eq(0),
            self.reason.eq(int(spec.Reason.INVALID_TRANSITION)),
        ]


def _lookup_row(m: Module, name: str, state: Value, event: Value | int) -> _Row:
    """A ROM generated from spec.NEXT_STATE/ACTIONS/REASONS, over (state, event) or state alone."""
    row = _Row(name)
    if isinstance(event, int):
        with m.Switch(state):
            for s in spec.OrderState:
                with m.Case(int(s)):
                    m.d.comb += row.assign(int(s), event)
            with m.Default():
                m.d.comb += row.refuse(state)
        return row
    with m.Switch(Cat(event, state)):
        for s in spec.OrderState:
            for e in spec.OrderEvent:
                with m.Case(int(e) | (int(s) << spec.EVENT_BITS)):
                    m.d.comb += row.assign(int(s), int(e))
        with m.Default():
            m.d.comb += row.refuse(state)
    return row


def _mux_row(m: Module, name: str, sel: Value, a: _Row, b: _Row) -> _Row:
    """Row `a` where `sel` is 1, else row `b`."""
    row = _Row(name)
    m.d.comb += [
        row.next_state.eq(Mux(sel, a.next_state, b.next_state)),
        row.is_prev.eq(Mux(sel, a.is_prev, b.is_prev)),
        row.actions.eq(Mux(sel, a.actions, b.actions)),
        row.reason.eq(Mux(sel, a.reason, b.reason)),
    ]
    return row


class OrderTable(wiring.Component):  # type: ignore[misc]
    """N order slots and the spec's transition table, one event per clock.

    Parameters
    ----------
    config : OrderTableConfig
        Slot count, field widths and RAM style.
    formal : bool
        Add the invariants `hdl.formal` proves as `Assert` statements (never synthesised).

    Attributes
    ----------
    events : In(stream.Signature(event_layout(config)))
        Event input; accepted when ``valid & ready``.
    results : Out(stream.Signature(result_layout(config)))
        One result per accepted event, `LATENCY_CYCLES` later, in order; honours ``ready``.
    slots : Memory
        The order table (LUT or block RAM per ``config.ram_style``), exposed for
        testbenches, which read its rows.

    Notes
    -----
    Semantics are those of `order_kernel.machine.apply_event`, field for field. Fills:
    FILL_PARTIAL and FILL_FULL are both "a fill of ``qty``"; the table row is chosen from
    the slot's leaves (``qty >= leaves`` is FILL_FULL, else FILL_PARTIAL). Refusal
    precedence: an undefined event code (INVALID_TRANSITION), the table's reason, then for
    a fill INVALID_QTY (qty 0), INVALID_PRICE (price 0), OVERFILL (qty above leaves), then
    INVALID_QTY for an AMEND whose quantity is not above filled_qty and for an AMEND_ACK
    whose stored quantity no longer is. A LOAD with qty 0 is refused with INVALID_QTY.
    A refused event leaves the slot exactly as it was.
    """

    events: stream.Interface
    results: stream.Interface

    def __init__(self, config: OrderTableConfig | None = None, *, formal: bool = False) -> None:
        self.config = config if config is not None else OrderTableConfig()
        self.formal = formal  # add the invariants as Assert statements (hdl.formal)
        super().__init__(
            {
                "events": In(stream.Signature(event_layout(self.config))),
                "results": Out(stream.Signature(result_layout(self.config))),
            }
        )
        self.slots = Memory(
            shape=slot_layout(self.config),
            depth=self.config.n_slots,
            init=[],
            attrs={"ram_style": self.config.ram_style},
        )

    def elaborate(self, platform: object) -> Module:
        """Build the read / decide / commit pipeline."""
        m = Module()
        m.submodules.slots = self.slots
        wr = self.slots.write_port()
        rd = self.slots.read_port(transparent_for=(wr,))
        cfg = self.config
        qbits = cfg.qty_bits
        ev_in = self.events.payload
        out = self.results

        # One enable for the whole pipeline: it moves when the result register is free.
        go = Signal()
        m.d.comb += go.eq(~out.valid | out.ready)

        # --- stage A (cycle t): accept the event and read its slot. An event for the slot
        # now in stage B waits one cycle: B's write lands only when B's event reaches C,
        # and the RAM's read-during-write bypass covers exactly that cycle.
        b_valid = Signal()
        b = Signal(event_layout(cfg))
        hazard = b_valid & (ev_in.slot == b.slot)
        m.d.comb += [
            self.events.ready.eq(go & ~hazard),
            rd.addr.eq(ev_in.slot),
            rd.en.eq(go),
        ]
        with m.If(go):
            m.d.sync += [b.eq(ev_in), b_valid.eq(self.events.valid & ~hazard)]

        # --- stage B (cycle t+1): the decision. Table rows (FILL_FULL and FILL_PARTIAL
        # looked up beside the raw event's, so the leaves compare only picks one), the
        # quantity checks, the reason code and the candidate sums, all registered.
        cur = rd.data
        raw_event = b.event.as_value()
        qty = b.qty
        cur_state = cur.state.as_value()
        is_fill = (raw_event == _FILL_EVENTS[0]) | (raw_event == _FILL_EVENTS[1])
        fill_completes = qty >= cur.leaves_qty
        row_raw = _lookup_row(m, "raw", cur_state, raw_event)
        row_full = _lookup_row(m, "full", cur_state, _FILL_EVENTS[1])
        row_part = _lookup_row(m, "part", cur_state, _FILL_EVENTS[0])
        row_fill = _mux_row(m, "fill", fill_completes, row_full, row_part)
        row_b = _mux_row(m, "row", is_fill, row_fill, row_raw)

        applies_fill_b = (row_b.actions & int(spec.Action.APPLY_FILL)).any()
        applies_amend_b = (row_b.actions & int(spec.Action.APPLY_AMEND)).any()
        is_amend = raw_event == int(spec.OrderEvent.AMEND)  # keyed on the event, as in numba
        qty_zero = qty == 0
        reason = Signal(spec.REASON_BITS)
        with m.If(b.load):
            m.d.comb += reason.eq(Mux(qty_zero, int(spec.Reason.INVALID_QTY), 0))
        with m.Elif(row_b.reason != 0):
            m.d.comb += reason.eq(row_b.reason)
        with m.Elif(applies_fill_b & qty_zero):
            m.d.comb += reason.eq(int(spec.Reason.INVALID_QTY))
        with m.Elif(applies_fill_b & (b.price == 0)):
            m.d.comb += reason.eq(int(spec.Reason.INVALID_PRICE))
        with m.Elif(applies_fill_b & (qty > cur.leaves_qty)):
            m.d.comb += reason.eq(int(spec.Reason.OVERFILL))
        with m.Elif(is_amend & (qty <= cur.filled_qty)):
            m.d.comb += reason.eq(int(spec.Reason.INVALID_QTY))
        with m.Elif(applies_amend_b & (cur.amend_qty <= cur.filled_qty)):
            # a fill raced the amend past its new quantity: the amend can no longer apply
            m.d.comb += reason.eq(int(spec.Reason.INVALID_QTY))

        c_valid = Signal()
        c = Signal(
            data.StructLayout(
                {
                    "ev": event_layout(cfg),
                    "cur": slot_layout(cfg),
                    "event": spec.EVENT_BITS,  # FILL_* re-derived from leaves
                    "next_state": spec.STATE_BITS,
                    "is_prev": 1,
                    "actions": spec.ACTION_BITS,
                    "reason": spec.REASON_BITS,
                    "take": 1,  # accepted and not a LOAD: apply the row
                    "load_ok": 1,  # accepted LOAD
                    "is_amend": 1,
                    "filled_plus_fill": qbits,
                    "leaves_minus_fill": qbits,
                    "amend_minus_filled": qbits,
                }
            )
        )
        with m.If(go):
            m.d.sync += [
                c_valid.eq(b_valid),
                c.ev.eq(b),
                c.cur.eq(cur),
                c.event.eq(
                    Mux(is_fill, Mux(fill_completes, _FILL_EVENTS[1], _FILL_EVENTS[0]), raw_event)
                ),
                c.next_state.eq(row_b.next_state),
                c.is_prev.eq(row_b.is_prev),
                c.actions.eq(row_b.actions),
                c.reason.eq(reason),
                c.take.eq((reason == 0) & ~b.load),
                c.load_ok.eq(b.load & ~qty_zero),
                c.is_amend.eq(is_amend),
                c.filled_plus_fill.eq(cur.filled_qty + qty),
                c.leaves_minus_fill.eq(cur.leaves_qty - qty),
                c.amend_minus_filled.eq(cur.amend_qty - cur.filled_qty),
            ]

        # --- stage C (cycle t+2): commit the slot and register the result.
        actions = c.actions
        applies_fill = (actions & int(spec.Action.APPLY_FILL)).any()
        applies_amend = (actions & int(spec.Action.APPLY_AMEND)).any()
        take = c.take
        # Every field keeps its value unless an accepted event changes it, so a refusal
        # writes the slot back unchanged (no write-enable path from the decision).
        old = c.cur
        new = Signal(slot_layout(cfg))
        with m.If(c.load_ok):
            m.d.comb += [
                new.state.eq(int(spec.OrderState.INITIALIZED)),
                new.prev_state.eq(int(spec.OrderState.INITIALIZED)),
                new.side.eq(c.ev.side),
                new.order_type.eq(c.ev.order_type),
                new.leaves_qty.eq(c.ev.qty),
                new.price.eq(c.ev.price),
                new.trigger_price.eq(c.ev.trigger_price),
            ]
        with m.Else():
            m.d.comb += new.eq(old)
            with m.If(take):
                m.d.comb += new.state.eq(Mux(c.is_prev, old.prev_state.as_value(), c.next_state))
            # MARK_PREV_PARTIAL wins over SAVE_PREV, as in numba (it is applied second there)
            with m.If(take & (actions & int(spec.Action.MARK_PREV_PARTIAL)).any()):
                m.d.comb += new.prev_state.eq(int(spec.OrderState.PARTIALLY_FILLED))
            with m.Elif(take & (actions & int(spec.Action.SAVE_PREV)).any()):
                m.d.comb += new.prev_state.eq(old.state.as_value())
            with m.If(take & applies_fill):
                m.d.comb += [
                    new.filled_qty.eq(c.filled_plus_fill),
                    new.leaves_qty.eq(c.leaves_minus_fill),
                ]
            with m.If(take & c.is_amend):
                m.d.comb += [
                    new.amend_qty.eq(c.ev.qty),
                    new.amend_price.eq(c.ev.price),
                    new.amend_trigger.eq(c.ev.trigger_price),
                ]
            with m.If(take & applies_amend):
                m.d.comb += [
                    new.leaves_qty.eq(c.amend_minus_filled),
                    new.price.eq(old.amend_price),
                    new.trigger_price.eq(old.amend_trigger),
                ]

        if self.formal:
            self._assert_invariants(m, c_valid & go, c.ev.load, c.reason, old, new, applies_fill)
        m.d.comb += [
            wr.addr.eq(c.ev.slot),
            wr.data.eq(new),
            wr.en.eq(go & c_valid),
        ]
        with m.If(go):
            m.d.sync += [
                out.valid.eq(c_valid),
                out.payload.slot.eq(c.ev.slot),
                out.payload.load.eq(c.ev.load),
                out.payload.event.eq(Mux(c.ev.load, Const(0, spec.EVENT_BITS), c.event)),
                out.payload.accepted.eq(c.reason == 0),
                out.payload.reason.eq(c.reason),
                out.payload.state.eq(new.state),
                out.payload.prev_state.eq(new.prev_state),
                out.payload.actions.eq(Mux(take, actions, 0)),
                out.payload.filled_qty.eq(new.filled_qty),
                out.payload.leaves_qty.eq(new.leaves_qty),
            ]
        return m

    def _assert_invariants(
        self,
        m: Module,
        commit: Value,
        load: Value,
        reason: Value,
        old: Any,
        new: Any,
        applies_fill: Value,
    ) -> None:
        """The properties `hdl.formal` proves, checked on every committed event."""
        qbits = self.config.qty_bits
        old_state = old.state.as_value()
        terminal = Const(0, 1)
        for s in sorted(spec.TERMINAL_STATES):
            terminal = terminal | (old_state == int(s))
        total_old = Signal(qbits + 1)
        total_new = Signal(qbits + 1)
        m.d.comb += [
            total_old.eq(old.filled_qty + old.leaves_qty),
            total_new.eq(new.filled_qty + new.leaves_qty),
        ]
        with m.If(commit & ~load):
            # no transition out of a terminal state: refused, slot untouched
            m.d.comb += Assert(~terminal | ((reason != 0) & (new.as_value() == old.as_value())))
            # a refusal leaves the whole slot unchanged
            m.d.comb += Assert((reason == 0) | (new.as_value() == old.as_value()))
            # a fill moves quantity from leaves to filled without wrapping: filled <= qty
            with m.If((reason == 0) & applies_fill):
                m.d.comb += Assert(total_new == total_old)
                m.d.comb += Assert(new.filled_qty > old.filled_qty)
                m.d.comb += Assert(new.leaves_qty < old.leaves_qty + 1)
