"""A plain-Python gold model of `hdl.order_fsm.OrderTable`, read from `order_kernel.spec` alone.

Testbenches step this model and the simulated hardware with the same events and compare
every result record and every slot. It shares no code with the generator (only the spec's
dense tables), so a bug in one is not silently copied into the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hdl.errors import HdlConfigError
from order_kernel import spec

__all__ = ["EventIn", "ReferenceOrderTable", "ResultOut", "Slot", "SpecTables"]


@dataclass(frozen=True, slots=True)
class EventIn:
    """One event-stream beat (see `hdl.order_fsm.event_layout`)."""

    slot: int
    event: int = 0
    load: bool = False
    side: int = 0
    order_type: int = 0
    qty: int = 0
    price: int = 0
    trigger_price: int = 0


@dataclass(frozen=True, slots=True)
class ResultOut:
    """One result-stream beat (see `hdl.order_fsm.result_layout`)."""

    slot: int
    load: bool
    event: int
    accepted: bool
    reason: int
    state: int
    prev_state: int
    actions: int
    filled_qty: int
    leaves_qty: int


@dataclass(frozen=True, slots=True)
class Slot:
    """One order slot; the all-zero slot is what block RAM holds after configuration."""

    state: int = int(spec.OrderState.INITIALIZED)
    prev_state: int = int(spec.OrderState.INITIALIZED)
    side: int = 0
    order_type: int = 0
    filled_qty: int = 0
    leaves_qty: int = 0
    price: int = 0
    trigger_price: int = 0
    amend_qty: int = 0
    amend_price: int = 0
    amend_trigger: int = 0


@dataclass(frozen=True, slots=True)
class SpecTables:
    """The three dense tables the model interprets; tests swap in modified copies."""

    next_state: npt.NDArray[np.uint8]
    actions: npt.NDArray[np.uint16]
    reasons: npt.NDArray[np.uint8]

    @classmethod
    def from_spec(cls) -> SpecTables:
        """The tables exactly as `order_kernel.spec` builds them."""
        return cls(spec.NEXT_STATE, spec.ACTIONS, spec.REASONS)


_FILL_PARTIAL = int(spec.OrderEvent.FILL_PARTIAL)
_FILL_FULL = int(spec.OrderEvent.FILL_FULL)
_AMEND = int(spec.OrderEvent.AMEND)
_A = spec.Action


class ReferenceOrderTable:
    """N slots stepped one event at a time with the hardware's exact semantics.

    Parameters mirror `hdl.order_fsm.OrderTableConfig`; inputs are truncated to their
    field widths the way the hardware ports truncate them.
    """

    def __init__(
        self,
        n_slots: int = 16,
        qty_bits: int = 32,
        price_bits: int = 32,
        tables: SpecTables | None = None,
    ) -> None:
        if n_slots < 2 or n_slots & (n_slots - 1):
            raise HdlConfigError(f"n_slots={n_slots}: must be a power of two >= 2")
        self.n_slots = n_slots
        self.qty_mask = (1 << qty_bits) - 1
        self.price_mask = (1 << price_bits) - 1
        self.tables = tables if tables is not None else SpecTables.from_spec()
        self.slots: list[Slot] = [Slot() for _ in range(n_slots)]

    def _lookup(self, state: int, event: int) -> tuple[int, bool, int, int]:
        if event >= spec.N_EVENTS or state >= spec.N_STATES:
            return state, False, 0, int(spec.Reason.INVALID_TRANSITION)
        nxt = int(self.tables.next_state[state, event])
        actions = int(self.tables.actions[state, event])
        reason = int(self.tables.reasons[state, event])
        if nxt == spec.PREV:
            return state, True, actions, reason
        return nxt, False, actions, reason

    def step(self, ev: EventIn) -> ResultOut:
        """Apply one event; a refused event leaves the slot exactly as it was.

        Checks and their order follow `order_kernel.machine.apply_event` (see
        `hdl.order_fsm.OrderTable`'s notes); fields are unsigned, so the machine's
        negative-price checks cannot fire here.
        """
        index = ev.slot & (self.n_slots - 1)
        event = ev.event & ((1 << spec.EVENT_BITS) - 1)
        qty = ev.qty & self.qty_mask
        price = ev.price & self.price_mask
        trigger = ev.trigger_price & self.price_mask
        cur = self.slots[index]

        if ev.load:
            if qty == 0:
                return self._result(index, ev, 0, int(spec.Reason.INVALID_QTY), 0, cur)
            new = Slot(
                side=ev.side & 1,
                order_type=ev.order_type & 3,
                leaves_qty=qty,
                price=price,
                trigger_price=trigger,
            )
            self.slots[index] = new
            return self._result(index, ev, 0, 0, 0, new)

        if event in (_FILL_PARTIAL, _FILL_FULL):
            event = _FILL_FULL if qty >= cur.leaves_qty else _FILL_PARTIAL
        nxt, is_prev, actions, reason = self._lookup(cur.state, event)
        if reason == 0:
            if actions & _A.APPLY_FILL and qty == 0:
                reason = int(spec.Reason.INVALID_QTY)
            elif actions & _A.APPLY_FILL and price == 0:
                reason = int(spec.Reason.INVALID_PRICE)
            elif actions & _A.APPLY_FILL and qty > cur.leaves_qty:
                reason = int(spec.Reason.OVERFILL)
            elif (event == _AMEND and qty <= cur.filled_qty) or (
                actions & _A.APPLY_AMEND and cur.amend_qty <= cur.filled_qty
            ):
                reason = int(spec.Reason.INVALID_QTY)
        if reason != 0:
            return self._result(index, ev, event, reason, 0, cur)

        new = dataclasses.replace(cur, state=cur.prev_state if is_prev else nxt)
        if actions & _A.SAVE_PREV:
            new = dataclasses.replace(new, prev_state=cur.state)
        if actions & _A.MARK_PREV_PARTIAL:  # applied second, so it wins (as in numba)
            new = dataclasses.replace(new, prev_state=int(spec.OrderState.PARTIALLY_FILLED))
        if actions & _A.APPLY_FILL:
            new = dataclasses.replace(
                new, filled_qty=cur.filled_qty + qty, leaves_qty=cur.leaves_qty - qty
            )
        if event == _AMEND:
            new = dataclasses.replace(new, amend_qty=qty, amend_price=price, amend_trigger=trigger)
        if actions & _A.APPLY_AMEND:
            new = dataclasses.replace(
                new,
                leaves_qty=cur.amend_qty - cur.filled_qty,
                price=cur.amend_price,
                trigger_price=cur.amend_trigger,
            )
        self.slots[index] = new
        return self._result(index, ev, event, 0, actions, new)

    @staticmethod
    def _result(
        index: int, ev: EventIn, event: int, reason: int, actions: int, slot: Slot
    ) -> ResultOut:
        return ResultOut(
            slot=index,
            load=ev.load,
            event=event,
            accepted=reason == 0,
            reason=reason,
            state=slot.state,
            prev_state=slot.prev_state,
            actions=actions,
            filled_qty=slot.filled_qty,
            leaves_qty=slot.leaves_qty,
        )
