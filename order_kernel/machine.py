"""The numba order state machine: a struct-of-arrays order store driven by `spec`'s dense tables.

The transition function reads only `spec.NEXT_STATE / ACTIONS / REASONS` (passed in as arrays),
so the table stays data and the HDL mirror, docs and tests read the same source. A refused
event changes nothing (state, previous state, quantities, positions) and returns its reason code;
the refusal counter is the only thing that moves.

Layout: `orders[FIELD, slot]` is an int64 array of shape (N_FIELDS, capacity): each field is a
contiguous row (struct of arrays). `positions[FIELD, symbol_index]` likewise. Money is in
notional units (ticks x lots), so every number here is an exact int64.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit, types
from numba.extending import overload

from order_kernel import spec
from order_kernel.errors import StoreFullError
from order_kernel.spec import OrderEvent, OrderState, Reason, Side

I64 = npt.NDArray[np.int64]

# ---------------------------------------------------------------- order fields (rows of `orders`)
F_STATE: Final = 0
F_PREV_STATE: Final = 1
F_SIDE: Final = 2  # spec.Side
F_TYPE: Final = 3  # spec.OrderType
F_TIF: Final = 4  # spec.TimeInForce
F_QTY: Final = 5  # lots
F_FILLED: Final = 6  # lots
F_PRICE: Final = 7  # limit price in ticks, 0 = none
F_TRIGGER: Final = 8  # stop trigger in ticks, 0 = none
F_EXPIRE_TS: Final = 9  # GTD deadline ns, 0 = none
F_FLAGS: Final = 10  # FLAG_* bits
F_OCO: Final = 11  # OCO group id, -1 = none
F_SYMBOL: Final = 12  # symbol index into `positions`
F_AMEND_QTY: Final = 13  # values of an amend in flight
F_AMEND_PRICE: Final = 14
F_AMEND_TRIGGER: Final = 15
F_FILL_COST: Final = 16  # sum of fill qty*price (notional units): avg_px = cost / filled
F_FEES: Final = 17  # notional units
F_N_FILLS: Final = 18
F_ACTIVE_FROM: Final = 19  # ts of the last bar seen at submission: matches only later bars
F_ORDER_SEQ: Final = 20  # submission order, for deterministic matching
N_FIELDS: Final = 21

FLAG_POST_ONLY: Final = 1
FLAG_REDUCE_ONLY: Final = 2
FLAG_TRIGGERED: Final = 4  # a stop whose trigger was reached (survives PARTIALLY_FILLED)
FLAG_RESTING: Final = 8  # has been at the venue through at least one bar: fills as maker

# ---------------------------------------------------------------- position fields (rows of `positions`)
P_QTY: Final = 0  # signed lots, > 0 long
P_COST: Final = 1  # signed sum of qty*price of the open position (notional units)
P_REALIZED: Final = 2  # realised PnL gross of fees and funding (notional units)
P_FEES: Final = 3  # fees paid (notional units)
P_FUNDING: Final = 4  # funding paid (notional units, > 0 paid)
N_POS_FIELDS: Final = 5

# ---------------------------------------------------------------- counters
C_REFUSED: Final = 0
C_APPLIED: Final = 1
C_FILLS: Final = 2
N_COUNTERS: Final = 3

_PREV: Final = spec.PREV
_A_APPLY_FILL: Final = int(spec.Action.APPLY_FILL)
_A_APPLY_AMEND: Final = int(spec.Action.APPLY_AMEND)
_A_SAVE_PREV: Final = int(spec.Action.SAVE_PREV)
_A_MARK_PREV_PARTIAL: Final = int(spec.Action.MARK_PREV_PARTIAL)
_E_TRIGGER: Final = int(OrderEvent.TRIGGER)
_E_FILL_PARTIAL: Final = int(OrderEvent.FILL_PARTIAL)
_E_FILL_FULL: Final = int(OrderEvent.FILL_FULL)
_E_AMEND: Final = int(OrderEvent.AMEND)
_E_AMEND_ACK: Final = int(OrderEvent.AMEND_ACK)
_S_PARTIAL: Final = int(OrderState.PARTIALLY_FILLED)
_R_INVALID_QTY: Final = int(Reason.INVALID_QTY)
_R_INVALID_PRICE: Final = int(Reason.INVALID_PRICE)
_R_OVERFILL: Final = int(Reason.OVERFILL)
_R_UNKNOWN_ORDER: Final = int(Reason.UNKNOWN_ORDER)
_R_INVALID_TRANSITION: Final = int(Reason.INVALID_TRANSITION)
_SELL: Final = int(Side.SELL)
_N_EVENTS: Final = spec.N_EVENTS


@njit(cache=True, error_model="numpy")
def _apply_batch_reference(
    next_state: npt.NDArray[np.uint8],
    actions: npt.NDArray[np.uint16],
    reasons: npt.NDArray[np.uint8],
    orders: I64,
    positions: I64,
    counters: I64,
    slots: I64,
    events: I64,
    qtys: I64,
    prices: I64,
    triggers: I64,
    fees: I64,
    out_reasons: npt.NDArray[np.uint8],
    out_states: npt.NDArray[np.uint8],
) -> int:
    """The reference transition body, one event at a time (what `apply_event` runs).

    Same contract as `apply_batch`, which runs a faster but equivalent loop (proved equal by
    `tests/order_kernel/test_batch_equivalence.py`); this one is the readable definition.

    FILL_PARTIAL and FILL_FULL are interchangeable on input: the machine decides which from the
    order's leaves quantity. AMEND carries the complete new (qty, price, trigger); AMEND_ACK
    applies them. A refused event changes nothing but the refusal counter.

    The whole transition lives in this one loop body (no inner calls): passing arrays to an
    inner numba function costs reference counting per call, ~10x the work of a transition.
    Events whose table entry has no action (SUBMIT, ACCEPT, CANCEL_ACK, ...) take a short path
    that moves only the state and skips loading the per-event fields.
    """
    refused = 0
    applied = 0
    n_fills = 0
    n_slots = orders.shape[1]
    for i in range(slots.shape[0]):
        slot = slots[i]
        event = events[i]
        if slot < 0 or slot >= n_slots or event < 0 or event >= _N_EVENTS:
            refused += 1
            out_reasons[i] = (
                _R_UNKNOWN_ORDER if event >= 0 and event < _N_EVENTS else _R_INVALID_TRANSITION
            )
            out_states[i] = 0xFF if slot < 0 or slot >= n_slots else orders[F_STATE, slot]
            continue
        state = orders[F_STATE, slot]
        ev = event
        qty = qtys[i]
        if ev == _E_FILL_PARTIAL or ev == _E_FILL_FULL:  # noqa: SIM109 (numba: no tuple)
            leaves = orders[F_QTY, slot] - orders[F_FILLED, slot]
            ev = _E_FILL_FULL if qty >= leaves else _E_FILL_PARTIAL
        reason = int(reasons[state, ev])
        act = int(actions[state, ev])
        if reason == 0 and act == 0 and ev != _E_AMEND and ev != _E_TRIGGER:
            # fast path (SUBMIT, ACCEPT, CANCEL_ACK, ...): only the state moves
            nxt = int(next_state[state, ev])
            if nxt == _PREV:
                nxt = orders[F_PREV_STATE, slot]
            orders[F_STATE, slot] = nxt
            applied += 1
            out_reasons[i] = 0
            out_states[i] = nxt
            continue
        price = prices[i]
        trigger = triggers[i]
        fee = fees[i]
        if reason == 0 and act & _A_APPLY_FILL:
            if qty <= 0:
                reason = _R_INVALID_QTY
            elif price <= 0:
                reason = _R_INVALID_PRICE
            elif qty > orders[F_QTY, slot] - orders[F_FILLED, slot]:
                reason = _R_OVERFILL
        if reason == 0 and ev == _E_AMEND:
            if qty <= orders[F_FILLED, slot]:
                reason = _R_INVALID_QTY
            elif price < 0 or trigger < 0:
                reason = _R_INVALID_PRICE
        if (
            reason == 0
            and act & _A_APPLY_AMEND
            and orders[F_AMEND_QTY, slot] <= orders[F_FILLED, slot]
        ):
            reason = _R_INVALID_QTY  # a fill raced the amend past its new quantity
        if reason != 0:
            refused += 1
            out_reasons[i] = reason
            out_states[i] = state
            continue
        # ---- accepted: from here on the event changes state
        nxt = int(next_state[state, ev])
        if nxt == _PREV:
            nxt = orders[F_PREV_STATE, slot]
        if act & _A_SAVE_PREV:
            orders[F_PREV_STATE, slot] = state
        if act & _A_MARK_PREV_PARTIAL:
            orders[F_PREV_STATE, slot] = _S_PARTIAL
        if act & _A_APPLY_FILL:
            orders[F_FILLED, slot] += qty
            orders[F_FILL_COST, slot] += qty * price
            orders[F_FEES, slot] += fee
            orders[F_N_FILLS, slot] += 1
            n_fills += 1
            # average-cost position accounting in exact integers (cost removed pro rata)
            sym = orders[F_SYMBOL, slot]
            dq = -qty if orders[F_SIDE, slot] == _SELL else qty
            q = positions[P_QTY, sym]
            cost = positions[P_COST, sym]
            positions[P_FEES, sym] += fee
            if q == 0 or (q > 0) == (dq > 0):
                positions[P_QTY, sym] = q + dq
                positions[P_COST, sym] = cost + dq * price
            else:
                sgn = 1 if q > 0 else -1
                aq = q * sgn
                adq = -dq if dq < 0 else dq
                closed = adq if adq < aq else aq
                removed = (cost * closed) // aq
                positions[P_REALIZED, sym] += sgn * closed * price - removed
                cost -= removed
                q -= sgn * closed
                if adq > closed:  # the fill flips the position
                    q = -sgn * (adq - closed)
                    cost = q * price
                positions[P_QTY, sym] = q
                positions[P_COST, sym] = cost
        if ev == _E_AMEND:
            orders[F_AMEND_QTY, slot] = qty
            orders[F_AMEND_PRICE, slot] = price
            orders[F_AMEND_TRIGGER, slot] = trigger
        if act & _A_APPLY_AMEND:
            orders[F_QTY, slot] = orders[F_AMEND_QTY, slot]
            orders[F_PRICE, slot] = orders[F_AMEND_PRICE, slot]
            orders[F_TRIGGER, slot] = orders[F_AMEND_TRIGGER, slot]
        if ev == _E_TRIGGER:
            orders[F_FLAGS, slot] |= FLAG_TRIGGERED
        orders[F_STATE, slot] = nxt
        applied += 1
        out_reasons[i] = 0
        out_states[i] = nxt
    # counters are accumulated in registers: a read-modify-write of memory per event would be
    # a loop-carried dependency through the store buffer
    counters[C_REFUSED] += refused
    counters[C_APPLIED] += applied
    counters[C_FILLS] += n_fills
    return refused


@njit(cache=True)
def apply_event(
    next_state: npt.NDArray[np.uint8],
    actions: npt.NDArray[np.uint16],
    reasons: npt.NDArray[np.uint8],
    orders: I64,
    positions: I64,
    counters: I64,
    slot: int,
    event: int,
    qty: int,
    price: int,
    trigger: int,
    fee: int,
) -> int:
    """Single-event entry point (live path): one event through `_apply_batch_reference`, the
    readable transition body `apply_batch`'s packed loop is proved equal to; returns 0 or the
    refusal reason."""
    args = np.empty(6, dtype=np.int64)
    args[0] = slot
    args[1] = event
    args[2] = qty
    args[3] = price
    args[4] = trigger
    args[5] = fee
    out = np.empty(2, dtype=np.uint8)
    _apply_batch_reference(
        next_state,
        actions,
        reasons,
        orders,
        positions,
        counters,
        args[0:1],
        args[1:2],
        args[2:3],
        args[3:4],
        args[4:5],
        args[5:6],
        out[0:1],
        out[1:2],
    )
    return int(out[0])


# ---------------------------------------------------------------- the batch fast path
# `apply_batch` packs the three tables into one word per (state, event) and runs a loop that
# does one table load per event and sends the two common cases (a plain state move, a refusal
# by the table) down short paths. Bits of a packed word:
_T_NEXT: Final = 0xFF  # bits 0-7: next state (spec.PREV = restore the saved state)
_T_REASON_SHIFT: Final = 8  # bits 8-15: the table's refusal reason
_T_ACTION_SHIFT: Final = 16  # bits 16-24: the action bits
_T_ACTION_MASK: Final = 0x1FF
_T_FILL: Final = 1 << 29  # accepted FILL_PARTIAL/FILL_FULL: APPLY_FILL only, no PREV target
_T_REFUSE: Final = 1 << 30  # refused by the table: nothing but the refusal counter moves
_T_WORK: Final = 1 << 31  # accepted, anything else (amend, trigger, save/mark/restore prev)
_T_PATH: Final = _T_FILL | _T_REFUSE | _T_WORK  # none set: only the state moves (not PREV)
# actions that touch the store beyond the state (SEND_*, LINKED, RELEASE are the kernel's)
_MACHINE_ACTIONS: Final = int(
    spec.Action.APPLY_FILL
    | spec.Action.APPLY_AMEND
    | spec.Action.SAVE_PREV
    | spec.Action.MARK_PREV_PARTIAL
)
_PACK_STATES: Final = 16  # rows of the packed table (states are 4 bits: spec.STATE_BITS)
_PACK_EVENTS: Final = 16  # columns (events are 4 bits: spec.EVENT_BITS)


@njit(cache=True)
def pack_tables(
    next_state: npt.NDArray[np.uint8],
    actions: npt.NDArray[np.uint16],
    reasons: npt.NDArray[np.uint8],
) -> npt.NDArray[np.uint32]:
    """One uint32 per (state, event), flat [state * 16 + event]: next state, reason, actions
    and the loop path (see `_T_*`). Rows and columns outside the tables (states 12-15, which no
    order can reach) refuse with INVALID_TRANSITION and keep the state; the loop masks the
    index to 8 bits, so even a corrupt state cannot read outside the table."""
    packed = np.empty(_PACK_STATES * _PACK_EVENTS, dtype=np.uint32)
    for s in range(_PACK_STATES):
        for e in range(_PACK_EVENTS):
            if s < next_state.shape[0] and e < next_state.shape[1]:
                nxt = int(next_state[s, e])
                act = int(actions[s, e])
                reason = int(reasons[s, e])
            else:
                nxt = s
                act = 0
                reason = _R_INVALID_TRANSITION
            word = nxt | (reason << _T_REASON_SHIFT) | (act << _T_ACTION_SHIFT)
            if reason != 0:
                word |= _T_REFUSE
            elif (
                (e == _E_FILL_PARTIAL or e == _E_FILL_FULL)  # noqa: SIM109 (numba: no tuple)
                and act & _A_APPLY_FILL
                and act & _MACHINE_ACTIONS == _A_APPLY_FILL
                and nxt != _PREV
            ):
                word |= _T_FILL
            elif act & _MACHINE_ACTIONS or e == _E_AMEND or e == _E_TRIGGER or nxt == _PREV:  # noqa: SIM109
                word |= _T_WORK
            packed[s * _PACK_EVENTS + e] = word
    return packed


@njit(cache=True, error_model="numpy", boundscheck=False)
def _apply_batch_packed(
    packed: npt.NDArray[np.uint32],
    store: I64,
    n_slots: int,
    positions: I64,
    counters: I64,
    slots: I64,
    events: I64,
    qtys: I64,
    prices: I64,
    triggers: I64,
    fees: I64,
    out_reasons: npt.NDArray[np.uint8],
    out_states: npt.NDArray[np.uint8],
) -> int:
    """`_apply_batch_reference` rearranged for speed, same results field for field.

    Differences in how, not what: one packed table load per event; the state of the last
    order touched is kept in a register (consecutive events of one order then do not wait
    for the store of the previous event to reach the load); per-event fields are loaded only
    on the paths that use them."""
    refused = 0
    n_fills = 0
    pos_qty = positions[P_QTY]
    pos_cost = positions[P_COST]
    pos_realized = positions[P_REALIZED]
    pos_fees = positions[P_FEES]
    last_slot = -1
    last_state = 0
    for i in range(slots.shape[0]):
        slot = slots[i]
        event = events[i]
        # `|` not `or`: one flag test instead of four branches on the common path
        if (slot < 0) | (slot >= n_slots) | (event < 0) | (event >= _N_EVENTS):
            refused += 1
            out_reasons[i] = (
                _R_UNKNOWN_ORDER if event >= 0 and event < _N_EVENTS else _R_INVALID_TRANSITION
            )
            out_states[i] = 0xFF if slot < 0 or slot >= n_slots else store[slot * N_FIELDS]
            continue
        o = slot * N_FIELDS  # the order's first field in the slot-major store
        state = last_state if slot == last_slot else store[o + F_STATE]
        ev = event
        qty = 0
        leaves = 0
        if ev == _E_FILL_PARTIAL or ev == _E_FILL_FULL:  # noqa: SIM109 (numba: no tuple)
            qty = qtys[i]
            leaves = store[o + F_QTY] - store[o + F_FILLED]
            ev = _E_FILL_FULL if qty >= leaves else _E_FILL_PARTIAL
        word = int(packed[((state << 4) | ev) & 0xFF])
        last_slot = slot
        if word & _T_PATH == 0:
            # plain move (SUBMIT, ACCEPT, CANCEL_ACK, EXPIRE, ...): only the state
            nxt = word & _T_NEXT
            store[o + F_STATE] = nxt
            last_state = nxt
            out_reasons[i] = 0
            out_states[i] = nxt
            continue
        if word & _T_FILL:
            # a fill with nothing else to do (leaves set above); `|`: one branch, not three
            price = prices[i]
            if (qty <= 0) | (price <= 0) | (qty > leaves):
                last_state = state
                refused += 1
                out_reasons[i] = (
                    _R_INVALID_QTY if qty <= 0 else _R_INVALID_PRICE if price <= 0 else _R_OVERFILL
                )
                out_states[i] = state
                continue
            nxt = word & _T_NEXT
            fee = fees[i]
            store[o + F_FILLED] += qty
            store[o + F_FILL_COST] += qty * price
            store[o + F_FEES] += fee
            store[o + F_N_FILLS] += 1
            n_fills += 1
            sym = np.uint64(store[o + F_SYMBOL])  # unsigned: no negative-index fix-up
            dq = -qty if store[o + F_SIDE] == _SELL else qty
            q = pos_qty[sym]
            cost = pos_cost[sym]
            pos_fees[sym] += fee
            if (q == 0) | ((q ^ dq) >= 0):  # flat, or dq (never 0 here) has q's sign
                pos_qty[sym] = q + dq
                pos_cost[sym] = cost + dq * price
            else:
                sgn = 1 if q > 0 else -1
                aq = q * sgn
                adq = -dq if dq < 0 else dq
                closed = adq if adq < aq else aq
                removed = (cost * closed) // aq
                pos_realized[sym] += sgn * closed * price - removed
                cost -= removed
                q -= sgn * closed
                if adq > closed:  # the fill flips the position
                    q = -sgn * (adq - closed)
                    cost = q * price
                pos_qty[sym] = q
                pos_cost[sym] = cost
            store[o + F_STATE] = nxt
            last_state = nxt
            out_reasons[i] = 0
            out_states[i] = nxt
            continue
        if word & _T_REFUSE:
            last_state = state
            refused += 1
            out_reasons[i] = (word >> _T_REASON_SHIFT) & 0xFF
            out_states[i] = state
            continue
        act = (word >> _T_ACTION_SHIFT) & _T_ACTION_MASK
        qty = qtys[i]
        price = prices[i]
        reason = 0
        if act & _A_APPLY_FILL:
            if qty <= 0:
                reason = _R_INVALID_QTY
            elif price <= 0:
                reason = _R_INVALID_PRICE
            elif qty > store[o + F_QTY] - store[o + F_FILLED]:
                reason = _R_OVERFILL
        if reason == 0 and ev == _E_AMEND:
            if qty <= store[o + F_FILLED]:
                reason = _R_INVALID_QTY
            elif price < 0 or triggers[i] < 0:
                reason = _R_INVALID_PRICE
        if reason == 0 and act & _A_APPLY_AMEND and store[o + F_AMEND_QTY] <= store[o + F_FILLED]:
            reason = _R_INVALID_QTY
        if reason != 0:
            last_state = state
            refused += 1
            out_reasons[i] = reason
            out_states[i] = state
            continue
        nxt = word & _T_NEXT
        if nxt == _PREV:
            nxt = store[o + F_PREV_STATE]
        if act & _A_SAVE_PREV:
            store[o + F_PREV_STATE] = state
        if act & _A_MARK_PREV_PARTIAL:
            store[o + F_PREV_STATE] = _S_PARTIAL
        if act & _A_APPLY_FILL:
            fee = fees[i]
            store[o + F_FILLED] += qty
            store[o + F_FILL_COST] += qty * price
            store[o + F_FEES] += fee
            store[o + F_N_FILLS] += 1
            n_fills += 1
            sym = store[o + F_SYMBOL]
            dq = -qty if store[o + F_SIDE] == _SELL else qty
            q = pos_qty[sym]
            cost = pos_cost[sym]
            pos_fees[sym] += fee
            if q == 0 or (q > 0) == (dq > 0):
                pos_qty[sym] = q + dq
                pos_cost[sym] = cost + dq * price
            else:
                sgn = 1 if q > 0 else -1
                aq = q * sgn
                adq = -dq if dq < 0 else dq
                closed = adq if adq < aq else aq
                removed = (cost * closed) // aq
                pos_realized[sym] += sgn * closed * price - removed
                cost -= removed
                q -= sgn * closed
                if adq > closed:  # the fill flips the position
                    q = -sgn * (adq - closed)
                    cost = q * price
                pos_qty[sym] = q
                pos_cost[sym] = cost
        if ev == _E_AMEND:
            store[o + F_AMEND_QTY] = qty
            store[o + F_AMEND_PRICE] = price
            store[o + F_AMEND_TRIGGER] = triggers[i]
        if act & _A_APPLY_AMEND:
            store[o + F_QTY] = store[o + F_AMEND_QTY]
            store[o + F_PRICE] = store[o + F_AMEND_PRICE]
            store[o + F_TRIGGER] = store[o + F_AMEND_TRIGGER]
        if ev == _E_TRIGGER:
            store[o + F_FLAGS] |= FLAG_TRIGGERED
        store[o + F_STATE] = nxt
        last_state = nxt
        out_reasons[i] = 0
        out_states[i] = nxt
    counters[C_REFUSED] += refused
    counters[C_APPLIED] += slots.shape[0] - refused  # every event is one or the other
    counters[C_FILLS] += n_fills
    return refused


def _slot_major_view(orders: I64) -> I64:
    """A flat view of a slot-major store (`orders[F, slot]` at `flat[slot * N_FIELDS + F]`);
    numba-only (see `_slot_major_view_impl`)."""
    raise NotImplementedError("_slot_major_view is only callable from numba code")


@overload(_slot_major_view)
def _slot_major_view_impl(orders):  # type: ignore[no-untyped-def]  # numba: same names, no annotations
    """An F-contiguous (N_FIELDS, capacity) array is the transpose of a C-contiguous
    (capacity, N_FIELDS) one and flattens without a copy; other layouts get an empty array,
    which `apply_batch` reads as "not slot-major". Chosen at compile time from the array type:
    numba can only reshape arrays it knows to be contiguous."""
    if isinstance(orders, types.Array) and orders.layout == "F" and orders.ndim == 2:
        return lambda orders: orders.T.reshape(orders.size)
    return lambda orders: np.empty(0, dtype=np.int64)


@njit(cache=True)
def apply_batch(
    next_state: npt.NDArray[np.uint8],
    actions: npt.NDArray[np.uint16],
    reasons: npt.NDArray[np.uint8],
    orders: I64,
    positions: I64,
    counters: I64,
    slots: I64,
    events: I64,
    qtys: I64,
    prices: I64,
    triggers: I64,
    fees: I64,
    out_reasons: npt.NDArray[np.uint8],
    out_states: npt.NDArray[np.uint8],
) -> int:
    """Apply events in order; write each one's refusal reason (0 = applied) and the order's
    resulting state (0xFF for a bad slot). Returns the number of refused events.

    FILL_PARTIAL and FILL_FULL are interchangeable on input: the machine decides which from the
    order's leaves quantity. AMEND carries the complete new (qty, price, trigger); AMEND_ACK
    applies them. A refused event changes nothing but the refusal counter.

    Runs the packed-table loop (`_apply_batch_packed`) on stores in `new_orders`' slot-major
    layout; any other layout runs `_apply_batch_reference`. Either way the results are those of
    `apply_event` one event at a time (property-tested)."""
    flat = _slot_major_view(orders)
    if orders.shape[0] != N_FIELDS or flat.size != orders.size:
        return _apply_batch_reference(
            next_state,
            actions,
            reasons,
            orders,
            positions,
            counters,
            slots,
            events,
            qtys,
            prices,
            triggers,
            fees,
            out_reasons,
            out_states,
        )
    return _apply_batch_packed(
        pack_tables(next_state, actions, reasons),
        flat,
        orders.shape[1],
        positions,
        counters,
        slots,
        events,
        qtys,
        prices,
        triggers,
        fees,
        out_reasons,
        out_states,
    )


# Writable contiguous copies of the read-only spec tables: numba types read-only arrays
# differently, and one array type per argument keeps the compile count at one per entry point.
_NEXT_STATE: Final = np.array(spec.NEXT_STATE)
_ACTIONS: Final = np.array(spec.ACTIONS)
_REASONS: Final = np.array(spec.REASONS)
_REASON_OF: Final = {int(r): r for r in Reason}


def new_orders(capacity: int) -> I64:
    """An empty order store: every slot INITIALIZED, no OCO group.

    Indexed `orders[FIELD, slot]` like a struct of arrays, but laid out slot-major in memory
    (the transpose of a C-contiguous (capacity, N_FIELDS) array): one order's fields share two
    or three cache lines, so an event touches ~3 lines instead of one line per field."""
    orders = np.zeros((capacity, N_FIELDS), dtype=np.int64).T
    orders[F_OCO, :] = -1
    return orders


class OrderMachine:
    """Python handle on the numba machine: the arrays, the tables and a deterministic free list."""

    def __init__(self, capacity: int, n_symbols: int) -> None:
        if capacity <= 0 or n_symbols <= 0:
            raise ValueError(f"capacity ({capacity}) and n_symbols ({n_symbols}) must be positive")
        self.capacity = capacity
        self.orders = new_orders(capacity)
        self.positions = np.zeros((N_POS_FIELDS, n_symbols), dtype=np.int64)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self._next_slot = 0
        self._free: list[int] = []  # released slots, reused lowest-first for determinism
        self._next_order_seq = 0

    def alloc(
        self,
        *,
        symbol: int,
        side: int,
        order_type: int,
        tif: int,
        qty: int,
        price: int = 0,
        trigger: int = 0,
        expire_ts_ns: int = 0,
        flags: int = 0,
        oco: int = -1,
        active_from: int = -(2**62),
    ) -> int:
        """Take a free slot and write a fresh INITIALIZED order into it."""
        if self._free:
            self._free.sort()
            slot = self._free.pop(0)
        elif self._next_slot < self.capacity:
            slot = self._next_slot
            self._next_slot += 1
        else:
            raise StoreFullError(
                f"order store full ({self.capacity} slots all hold open orders); raise capacity"
            )
        o = self.orders
        o[:, slot] = 0
        o[F_OCO, slot] = oco
        o[F_STATE, slot] = OrderState.INITIALIZED
        o[F_SIDE, slot] = side
        o[F_TYPE, slot] = order_type
        o[F_TIF, slot] = tif
        o[F_QTY, slot] = qty
        o[F_PRICE, slot] = price
        o[F_TRIGGER, slot] = trigger
        o[F_EXPIRE_TS, slot] = expire_ts_ns
        o[F_FLAGS, slot] = flags
        o[F_SYMBOL, slot] = symbol
        o[F_ACTIVE_FROM, slot] = active_from
        o[F_ORDER_SEQ, slot] = self._next_order_seq
        self._next_order_seq += 1
        return slot

    @property
    def free_slots(self) -> int:
        return self.capacity - self._next_slot + len(self._free)

    def release(self, slot: int) -> None:
        """Return a terminal order's slot to the free list (after its events were logged)."""
        if not spec.is_terminal(int(self.orders[F_STATE, slot])):
            raise ValueError(f"slot {slot} is not terminal; only finished orders are released")
        self._free.append(slot)

    def step(
        self, slot: int, event: int, qty: int = 0, price: int = 0, trigger: int = 0, fee: int = 0
    ) -> Reason:
        """Single-event entry point (live path)."""
        # plain ints: an IntEnum argument defeats numba's fast dispatch and adds a specialisation
        r = apply_event(
            _NEXT_STATE,
            _ACTIONS,
            _REASONS,
            self.orders,
            self.positions,
            self.counters,
            int(slot),
            int(event),
            int(qty),
            int(price),
            int(trigger),
            int(fee),
        )
        return _REASON_OF[r]

    def batch(
        self,
        slots: I64,
        events: I64,
        qtys: I64,
        prices: I64,
        triggers: I64 | None = None,
        fees: I64 | None = None,
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Batch entry point (backtests): returns (reasons, resulting states), one per event."""
        n = len(slots)
        zeros = np.zeros(n, dtype=np.int64)
        out_r = np.zeros(n, dtype=np.uint8)
        out_s = np.zeros(n, dtype=np.uint8)
        apply_batch(
            _NEXT_STATE,
            _ACTIONS,
            _REASONS,
            self.orders,
            self.positions,
            self.counters,
            np.ascontiguousarray(slots, dtype=np.int64),
            np.ascontiguousarray(events, dtype=np.int64),
            np.ascontiguousarray(qtys, dtype=np.int64),
            np.ascontiguousarray(prices, dtype=np.int64),
            zeros if triggers is None else np.ascontiguousarray(triggers, dtype=np.int64),
            zeros if fees is None else np.ascontiguousarray(fees, dtype=np.int64),
            out_r,
            out_s,
        )
        return out_r, out_s

    def state(self, slot: int) -> OrderState:
        return OrderState(int(self.orders[F_STATE, slot]))

    def leaves(self, slot: int) -> int:
        return int(self.orders[F_QTY, slot] - self.orders[F_FILLED, slot])

    @property
    def refused(self) -> int:
        return int(self.counters[C_REFUSED])
