"""An N-slot order table in Amaranth 0.5, generated from `order_kernel.spec`.

Everything about the lifecycle (state and event encodings, the transition table, the
action bits, the reason codes) is read from the spec's dense arrays, so a change to the
spec changes the hardware on the next elaboration; nothing here restates the table.

Pipeline (one event per clock on distinct slots, five cycles from acceptance to result)::

    cycle t    A: events.valid & events.ready; the slot is read from RAM (an async read
                  per bank of `BANK_ROWS` slots, each into its own register)
    cycle t+1  B: forwarding: the bank's row as read, or E's new value for the slot, or
                  the one E wrote last cycle; the table column for the event (one LUT)
    cycle t+2  C: the comparators (each one CCU2C carry chain, straight into a register)
                  and the row of the column for the slot's state
    cycle t+3  D: the decision from registered bits (both fill rows decided in parallel,
                  `qty >= leaves` picks one last); the candidate sums
    cycle t+4  E: the new slot is muxed from registered candidates, written back, and the
                  result registered
    cycle t+5  results.valid carries the outcome of the event accepted at cycle t

A slot's read-modify-write loop runs from C (which needs the slot) to E (which produces
it). An event whose slot is in B or C waits in A (events.ready low); one whose slot is in
D is accepted, and in B takes E's combinational output; one whose slot is in E takes the
`written` register (the RAM read beside that write returned the old row). So events for
one slot are accepted at least `SAME_SLOT_GAP` = 3 cycles apart and events for other
slots flow one per clock. Every path is register to register through one carry chain or
about three LUT levels; docs/hdl.md has the measured critical paths.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "BANK_ROWS",
    "LATENCY_CYCLES",
    "SAME_SLOT_GAP",
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

#: Slots per RAM bank: each bank's read data is registered on its own in stage A, so the
#: LUT RAM output mux tree there is at most 4-way (64 rows = 4 groups of 16).
BANK_ROWS: Final = 64
#: Cycles from an event's acceptance to its result appearing on `results` (no stalls).
LATENCY_CYCLES: Final = 5
#: Minimum cycles between the acceptances of two events for the same slot: an event
#: waits while an earlier one for its slot is in stage B or C (see the module notes),
#: so an event directly behind one for its slot waits 2 cycles, one two behind waits 1.
SAME_SLOT_GAP: Final = 3

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


def _row_layout() -> data.StructLayout:
    """One table entry as the hardware carries it between stages."""
    return data.StructLayout(
        {
            "next_state": spec.STATE_BITS,
            "is_prev": 1,  # restore the saved state (spec.PREV)
            "actions": spec.ACTION_BITS,
            "reason": spec.REASON_BITS,
            # reason == 0 in the ROM; after `_fold_event_checks` also "not a LOAD and the
            # event's own fields pass", so the decision need not test 8 bits
            "ok": 1,
            "is_amend": 1,  # the event is AMEND (set by `_fold_event_checks`)
        }
    )


def _decision_layout() -> data.StructLayout:
    """What stage D decides for one candidate row (see `OrderTable._decide`)."""
    return data.StructLayout(
        {
            "reason": spec.REASON_BITS,
            "take": 1,  # accepted and not a LOAD
            "actions": spec.ACTION_BITS,  # the row's, unmasked
            "state": spec.STATE_BITS,  # after the event (LOADs included)
            "prev_state": spec.STATE_BITS,
            "fill": 1,  # take & APPLY_FILL
            "ack": 1,  # take & APPLY_AMEND
            "amend": 1,  # take & event is AMEND: store the amend in flight
        }
    )


def _row_values(state: int, event: int) -> dict[str, int]:
    """The table entry for a constant (state, event), field by field."""
    nxt = int(spec.NEXT_STATE[state, event])
    reason = int(spec.REASONS[state, event])
    return {
        "next_state": state if nxt == spec.PREV else nxt,
        "is_prev": int(nxt == spec.PREV),
        "actions": int(spec.ACTIONS[state, event]),
        "reason": reason,
        "ok": int(reason == 0),
    }


def _event_column(m: Module, name: str, event: Value) -> list[Any]:
    """The table's column for `event`: one row per spec state, from the event code alone.

    Each output bit is a function of the 4-bit code, one LUT4, so this stage costs one
    logic level; the state picks its row in the next stage (`_select_row`).
    """
    layout = _row_layout()
    column = [Signal(layout, name=f"{name}_s{int(s)}") for s in spec.OrderState]
    with m.Switch(event):
        for e in spec.OrderEvent:
            with m.Case(int(e)):
                m.d.comb += [
                    row.eq(layout.const(_row_values(int(s), int(e))))
                    for s, row in zip(spec.OrderState, column, strict=True)
                ]
        with m.Default():
            for s, row in zip(spec.OrderState, column, strict=True):
                m.d.comb += row.eq(_refuse_const(int(s)))
    return column


def _refuse_const(state: int) -> Any:
    """The row of an undefined code in a known `state`: INVALID_TRANSITION, state unchanged."""
    return _row_layout().const({"next_state": state, "reason": int(spec.Reason.INVALID_TRANSITION)})


def _state_rows(event: int) -> list[Any]:
    """The table's column for a constant `event`, as constants (the FILL_PARTIAL rows)."""
    return [_row_layout().const(_row_values(int(s), event)) for s in spec.OrderState]


def _select_row(m: Module, name: str, state: Value, rows: Sequence[Value]) -> Any:
    """`rows[state]`, or an INVALID_TRANSITION row keeping `state` for an undefined code."""
    layout = _row_layout()
    row = Signal(layout, name=f"row_{name}")
    with m.Switch(state):
        for s, value in zip(spec.OrderState, rows, strict=True):
            with m.Case(int(s)):
                m.d.comb += row.eq(value)
        with m.Default():
            m.d.comb += [row.eq(_refuse_const(0)), row.next_state.eq(state)]
    return row


def _fold_event_checks(
    m: Module,
    name: str,
    row: Any,
    load: Value,
    qty_zero: Value,
    price_zero: Value,
    is_amend: Value,
) -> Any:
    """`row` with the checks that need only the event folded in, two stages early.

    An accepted fill row refuses an empty fill (INVALID_QTY) and one without a price
    (INVALID_PRICE), after the table's own reason; `ok` becomes "the table, the event
    fields and the event kind (not a LOAD) allow it" and `is_amend` marks an AMEND, so
    the decision stage is left with the quantity comparisons alone.
    """
    out = Signal(_row_layout(), name=f"row_{name}")
    applies_fill = (row.actions & int(spec.Action.APPLY_FILL)).any()
    m.d.comb += out.eq(row)
    with m.If(row.reason == 0):
        with m.If(applies_fill & qty_zero):
            m.d.comb += out.reason.eq(int(spec.Reason.INVALID_QTY))
        with m.Elif(applies_fill & price_zero):
            m.d.comb += out.reason.eq(int(spec.Reason.INVALID_PRICE))
    m.d.comb += [
        out.ok.eq(row.ok & ~load & ~(applies_fill & (qty_zero | price_zero))),
        out.is_amend.eq(is_amend),
    ]
    return out


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
    banks : list[Memory]
        The order table (LUT or block RAM per ``config.ram_style``) in banks of at most
        `BANK_ROWS` slots; testbenches read a slot's row through `row`.

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
        depth = min(self.config.n_slots, BANK_ROWS)
        self.banks = [
            Memory(
                shape=slot_layout(self.config),
                depth=depth,
                init=[],
                attrs={"ram_style": self.config.ram_style},
            )
            for _ in range(self.config.n_slots // depth)
        ]

    def row(self, slot: int) -> Any:
        """The RAM element holding `slot` (for testbenches: ``ctx.get(table.row(i))``)."""
        depth = self.banks[0].depth
        return self.banks[slot // depth].data[slot % depth]

    def elaborate(self, platform: object) -> Module:
        """Build the read / forward / compare / decide / commit pipeline."""
        m = Module()
        cfg = self.config
        qbits = cfg.qty_bits
        ev_in = self.events.payload
        out = self.results
        sl = slot_layout(cfg)
        # Banks of BANK_ROWS slots, each with an asynchronous read port and an explicit
        # register on its data. With a sync port yosys maps LUT RAM with the register on
        # the address side, which puts the read (address fan-out, LUT RAM, output mux
        # tree) into stage B in front of the forwarding mux; and one bank of 256 rows has
        # a 16-way output mux tree. Here A ends at one register per bank (a 4-way tree at
        # most) and B picks the bank beside the forwarding mux. Not transparent: the slots
        # E writes reach younger events through that mux.
        lo_bits = (self.banks[0].depth - 1).bit_length()
        reads = []
        writes = []
        for k, bank in enumerate(self.banks):
            m.submodules[f"slots{k}"] = bank
            writes.append(bank.write_port())
            reads.append((bank.read_port(domain="comb"), Signal(sl, name=f"bank{k}_data")))

        # One enable for the whole pipeline: it moves when the result register is free.
        go = Signal()
        m.d.comb += go.eq(~out.valid | out.ready)

        # Pipeline registers, declared first because stages A and B look at later ones.
        b_valid, c_valid, d_valid, e_valid = Signal(), Signal(), Signal(), Signal()
        b = Signal(
            data.StructLayout(
                {
                    "ev": event_layout(cfg),
                    "from_e": 1,  # take the slot E is writing now (comb), not the RAM's
                    "from_w": 1,  # take the slot E wrote last cycle (register `written`)
                    "qty_zero": 1,
                    "price_zero": 1,
                }
            )
        )
        written = Signal(sl)  # the slot E wrote last cycle
        c = Signal(
            data.StructLayout(
                {
                    "ev": event_layout(cfg),
                    "cur": sl,
                    "col": data.ArrayLayout(_row_layout(), spec.N_STATES),
                    "qty_minus_1": qbits,
                    "qty_zero": 1,
                    "price_zero": 1,
                }
            )
        )
        d = Signal(
            data.StructLayout(
                {
                    "ev": event_layout(cfg),
                    "cur": sl,
                    "x": _row_layout(),  # FILL_FULL row for fills, else the event's row
                    "y": _row_layout(),  # FILL_PARTIAL row
                    "is_fill": 1,
                    "qty_zero": 1,
                    "completes": 1,  # qty >= leaves
                    # qty > leaves; wrong for qty 0, but an empty fill is refused first
                    "over": 1,
                    "amend_low": 1,  # qty <= filled (AMEND refused)
                    "ack_low": 1,  # stored amend qty <= filled (AMEND_ACK refused)
                }
            )
        )
        e = Signal(
            data.StructLayout(
                {
                    "ev": event_layout(cfg),
                    "cur": sl,
                    "event": spec.EVENT_BITS,  # FILL_* re-derived from leaves; 0 for LOAD
                    "reason": spec.REASON_BITS,
                    "actions": spec.ACTION_BITS,  # the row's, unmasked
                    "take": 1,  # accepted and not a LOAD: the row applies
                    "load_ok": 1,  # accepted LOAD
                    "state": spec.STATE_BITS,  # new state and saved state, already final
                    "prev_state": spec.STATE_BITS,
                    "fill": 1,  # take & APPLY_FILL
                    "ack": 1,  # take & APPLY_AMEND
                    "amend": 1,  # take & event is AMEND: store the amend in flight
                    "filled_plus_fill": qbits,
                    "leaves_minus_fill": qbits,
                    "amend_minus_filled": qbits,
                    "write_bank": len(self.banks),  # one-hot: E writes this bank
                }
            )
        )
        new = Signal(sl)  # stage E's output: the slot after the event in E

        # --- stage A (cycle t): accept the event and read its slot. An event for a slot
        # that is in B or C waits (its new value does not exist yet); one whose slot is in
        # D or E gets that value forwarded in B.
        hazard = (b_valid & (ev_in.slot == b.ev.slot)) | (c_valid & (ev_in.slot == c.ev.slot))
        m.d.comb += [
            self.events.ready.eq(go & ~hazard),
            *[rd.addr.eq(ev_in.slot[:lo_bits]) for rd, _ in reads],
        ]
        with m.If(go):
            m.d.sync += [
                b.ev.eq(ev_in),
                b_valid.eq(self.events.valid & ~hazard),
                # D's event is in E next cycle, when this one is in B
                b.from_e.eq(d_valid & (ev_in.slot == d.ev.slot)),
                # E writes at the end of this cycle, after this read: stale by one write
                b.from_w.eq(e_valid & (ev_in.slot == e.ev.slot)),
                *[q.eq(rd.data) for rd, q in reads],
                b.qty_zero.eq(ev_in.qty == 0),
                b.price_zero.eq(ev_in.price == 0),
            ]

        rd_data = Signal(sl)  # the addressed bank's row as read in A
        if len(reads) == 1:
            m.d.comb += rd_data.eq(reads[0][1])
        else:
            with m.Switch(b.ev.slot[lo_bits:]):
                for k, (_, q) in enumerate(reads):
                    with m.Case(k):
                        m.d.comb += rd_data.eq(q)

        # --- stage B (cycle t+1): forwarding. The slot as the RAM returned it, or E's new
        # value, or the one E wrote last cycle; registered, so the comparators in C start
        # from a flip-flop. Beside it, the table's column for the event (the FILL_FULL
        # column for fills), a function of the event alone, with the event's own checks
        # folded in; the state that picks the row arrives in C.
        b_event = b.ev.event.as_value()
        b_is_fill = (b_event == _FILL_EVENTS[0]) | (b_event == _FILL_EVENTS[1])
        b_is_amend = b_event == int(spec.OrderEvent.AMEND)
        column = _event_column(m, "col", Mux(b_is_fill, _FILL_EVENTS[1], b_event))
        with m.If(go):
            m.d.sync += [
                c.col[i].eq(
                    _fold_event_checks(
                        m, f"col{i}", row, b.ev.load, b.qty_zero, b.price_zero, b_is_amend
                    )
                )
                for i, row in enumerate(column)
            ]
        with m.If(go):
            m.d.sync += [
                c.qty_minus_1.eq(b.ev.qty - 1),
                c.qty_zero.eq(b.qty_zero),
                c.price_zero.eq(b.price_zero),
            ]
            m.d.sync += [
                c_valid.eq(b_valid),
                c.ev.eq(b.ev),
                c.cur.eq(
                    Mux(
                        b.from_e,
                        new.as_value(),
                        Mux(b.from_w, written.as_value(), rd_data.as_value()),
                    )
                ),
            ]

        # --- stage C (cycle t+2): the comparators (one carry chain each) and the row of
        # the column for the slot's state, side by side, each registered on its own.
        cur = c.cur
        raw_event = c.ev.event.as_value()
        qty = c.ev.qty
        cur_state = cur.state.as_value()
        is_fill = (raw_event == _FILL_EVENTS[0]) | (raw_event == _FILL_EVENTS[1])
        row_x = _select_row(m, "x", cur_state, [c.col[i] for i in range(spec.N_STATES)])
        row_y = _fold_event_checks(
            m,
            "y_folded",
            _select_row(m, "y", cur_state, _state_rows(_FILL_EVENTS[0])),
            c.ev.load,
            c.qty_zero,
            c.price_zero,
            Const(0, 1),  # only ever picked for a fill
        )
        with m.If(go):
            m.d.sync += [
                d_valid.eq(c_valid),
                d.ev.eq(c.ev),
                d.cur.eq(cur),
                d.x.eq(row_x.as_value()),
                d.y.eq(row_y.as_value()),
                d.is_fill.eq(is_fill),
                d.qty_zero.eq(c.qty_zero),
                # Each comparison is `a >= b`, the carry out of one CCU2C chain. yosys
                # merges comparisons of one pair in opposite directions, or next to a
                # subtraction of the pair, into one ALU that needs a 32-bit zero detect
                # behind the chain; hence qty - 1 for `over` and the differences in D.
                d.completes.eq(qty >= cur.leaves_qty),
                d.over.eq(c.qty_minus_1 >= cur.leaves_qty),  # qty > leaves when qty != 0
                d.amend_low.eq(cur.filled_qty >= qty),
                d.ack_low.eq(cur.filled_qty >= cur.amend_qty),
            ]

        # --- stage D (cycle t+3): the decision, from registered bits only: acceptance,
        # the reason code, the new state and saved state, one select per field group for
        # E; and the candidate sums. Both candidate rows (FILL_FULL / the event's, and
        # FILL_PARTIAL) are decided in parallel and `completes` picks one at the end, so
        # the comparator's result passes one LUT, not the whole decision.
        load = d.ev.load
        load_ok = load & ~d.qty_zero
        decided_x = self._decide(m, "x", d, d.x, d.over)
        decided_y = self._decide(m, "y", d, d.y, Const(0, 1))  # partial: qty < leaves
        sel_y = d.is_fill & ~d.completes
        decided = Signal(_decision_layout())
        m.d.comb += decided.eq(Mux(sel_y, decided_y.as_value(), decided_x.as_value()))
        take = decided.take
        derived = Mux(d.is_fill, Mux(d.completes, _FILL_EVENTS[1], _FILL_EVENTS[0]), d.ev.event)
        with m.If(go):
            m.d.sync += [
                e_valid.eq(d_valid),
                # the bank decode is registered so E's write enables come from flip-flops
                e.write_bank.eq(
                    Cat(
                        d_valid & (d.ev.slot[lo_bits:] == k) if len(writes) > 1 else d_valid
                        for k in range(len(writes))
                    )
                ),
                e.ev.eq(d.ev),
                e.cur.eq(d.cur),
                e.event.eq(Mux(load, 0, derived)),
                e.reason.eq(decided.reason),
                e.actions.eq(decided.actions),
                e.take.eq(take),
                e.load_ok.eq(load_ok),
                e.state.eq(decided.state),
                e.prev_state.eq(decided.prev_state),
                e.fill.eq(decided.fill),
                e.ack.eq(decided.ack),
                e.amend.eq(decided.amend),
                e.filled_plus_fill.eq(d.cur.filled_qty + d.ev.qty),
                e.leaves_minus_fill.eq(d.cur.leaves_qty - d.ev.qty),
                e.amend_minus_filled.eq(d.cur.amend_qty - d.cur.filled_qty),
            ]

        # --- stage E (cycle t+4): commit. Each field is a small mux over registered
        # candidates chosen by registered selects; a refusal selects the old value, so
        # the slot is written back unchanged (no write-enable path from the decision).
        old = e.cur
        ev = e.ev
        fresh = e.load_ok  # a LOAD: the order's fields, nothing filled, no amend
        m.d.comb += [
            new.state.eq(e.state),
            new.prev_state.eq(e.prev_state),
            new.side.eq(Mux(fresh, ev.side, old.side)),
            new.order_type.eq(Mux(fresh, ev.order_type, old.order_type)),
            new.filled_qty.eq(Mux(fresh, 0, Mux(e.fill, e.filled_plus_fill, old.filled_qty))),
            new.leaves_qty.eq(
                Mux(
                    fresh,
                    ev.qty,
                    Mux(
                        e.ack,
                        e.amend_minus_filled,
                        Mux(e.fill, e.leaves_minus_fill, old.leaves_qty),
                    ),
                )
            ),
            new.price.eq(Mux(fresh, ev.price, Mux(e.ack, old.amend_price, old.price))),
            new.trigger_price.eq(
                Mux(fresh, ev.trigger_price, Mux(e.ack, old.amend_trigger, old.trigger_price))
            ),
            new.amend_qty.eq(Mux(fresh, 0, Mux(e.amend, ev.qty, old.amend_qty))),
            new.amend_price.eq(Mux(fresh, 0, Mux(e.amend, ev.price, old.amend_price))),
            new.amend_trigger.eq(Mux(fresh, 0, Mux(e.amend, ev.trigger_price, old.amend_trigger))),
        ]
        applies_fill_e = (e.actions & int(spec.Action.APPLY_FILL)).any()
        if self.formal:
            self._assert_invariants(m, e_valid & go, ev.load, e.reason, old, new, applies_fill_e)
        m.d.comb += [
            *[wr.addr.eq(ev.slot[:lo_bits]) for wr in writes],
            *[wr.data.eq(new) for wr in writes],
            # Not gated by `go`: while the pipeline holds, E rewrites the same value, and
            # the enable of every LUT RAM cell stays off the back-pressure path.
            *[wr.en.eq(e.write_bank[k]) for k, wr in enumerate(writes)],
        ]
        with m.If(go):
            m.d.sync += [
                written.eq(new),
                out.valid.eq(e_valid),
                out.payload.slot.eq(ev.slot),
                out.payload.load.eq(ev.load),
                out.payload.event.eq(e.event),
                out.payload.accepted.eq(e.reason == 0),
                out.payload.reason.eq(e.reason),
                out.payload.state.eq(new.state),
                out.payload.prev_state.eq(new.prev_state),
                out.payload.actions.eq(Mux(e.take, e.actions, 0)),
                out.payload.filled_qty.eq(new.filled_qty),
                out.payload.leaves_qty.eq(new.leaves_qty),
            ]
        return m

    @staticmethod
    def _decide(m: Module, name: str, d: Any, row: Any, over: Value) -> Any:
        """Acceptance, reason, new state / saved state and field selects for one row.

        Refusal precedence as in `order_kernel.machine.apply_event`: the table's reason,
        then for a fill INVALID_QTY, INVALID_PRICE, OVERFILL, then INVALID_QTY for an
        AMEND not above filled and an AMEND_ACK whose stored quantity no longer is.
        """
        out = Signal(_decision_layout(), name=f"decided_{name}")
        applies_fill = (row.actions & int(spec.Action.APPLY_FILL)).any()
        applies_amend = (row.actions & int(spec.Action.APPLY_AMEND)).any()
        load = d.ev.load
        reason = out.reason
        with m.If(load):
            m.d.comb += reason.eq(Mux(d.qty_zero, int(spec.Reason.INVALID_QTY), 0))
        with m.Elif(row.reason != 0):  # the table's, or an empty / unpriced fill
            m.d.comb += reason.eq(row.reason)
        with m.Elif(applies_fill & over):
            m.d.comb += reason.eq(int(spec.Reason.OVERFILL))
        with m.Elif(row.is_amend & d.amend_low):
            m.d.comb += reason.eq(int(spec.Reason.INVALID_QTY))
        with m.Elif(applies_amend & d.ack_low):
            # a fill raced the amend past its new quantity: the amend can no longer apply
            m.d.comb += reason.eq(int(spec.Reason.INVALID_QTY))
        # `take` is the same condition as `reason == 0 & ~load` (`row.ok` already holds
        # ~load and the event-only checks), written flat so it does not wait for the
        # priority chain that encodes the reason.
        take = row.ok & ~(applies_fill & over)
        take &= ~(row.is_amend & d.amend_low) & ~(applies_amend & d.ack_low)
        load_ok = load & ~d.qty_zero
        old_state = d.cur.state.as_value()
        old_prev = d.cur.prev_state.as_value()
        init = int(spec.OrderState.INITIALIZED)
        # Written as "changes ? new value : old value" with the new value independent of
        # `take`, so `take` (the deepest signal) meets each bit in the last LUT.
        taken_state = Mux(load, init, Mux(row.is_prev, old_prev, row.next_state))
        # MARK_PREV_PARTIAL wins over SAVE_PREV, as in numba (it is applied second there)
        mark = (row.actions & int(spec.Action.MARK_PREV_PARTIAL)).any()
        save = (row.actions & int(spec.Action.SAVE_PREV)).any()
        taken_prev = Mux(load, init, Mux(mark, int(spec.OrderState.PARTIALLY_FILLED), old_state))
        m.d.comb += [
            out.take.eq(take),
            out.actions.eq(row.actions),
            out.state.eq(Mux(take | load_ok, taken_state, old_state)),
            out.prev_state.eq(Mux(load_ok | (take & (mark | save)), taken_prev, old_prev)),
            out.fill.eq(take & applies_fill),
            out.ack.eq(take & applies_amend),
            out.amend.eq(take & row.is_amend),
        ]
        return out

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
