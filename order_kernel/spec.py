"""The order lifecycle as data: states, events, actions, reason codes and the transition table.

This module is the single source of truth for the order state machine. The numba kernel
(`order_kernel.machine`), the Amaranth mirror (`hdl`), the docs diagram and the tests all read
the dense arrays built here, so no copy can drift from another. It imports nothing but the
standard library and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

import numpy as np
import numpy.typing as npt


class OrderState(IntEnum):
    """Where an order is in its life. Values are the wire/HDL encoding: never renumber."""

    INITIALIZED = 0  # record created from SubmitOrder, not yet past our risk gate
    PENDING = 1  # passed our gate and sent to the venue; no acknowledgement yet
    SUBMITTED = 2  # acknowledged by the venue and working
    TRIGGERED = 3  # a stop / stop-limit whose trigger price was reached; working
    PARTIALLY_FILLED = 4
    PENDING_CANCEL = 5  # cancel sent, venue has not answered
    PENDING_AMEND = 6  # amend sent, venue has not answered
    FILLED = 7
    CANCELLED = 8
    REJECTED = 9  # refused by the venue
    EXPIRED = 10
    DENIED = 11  # refused by our own gate; never reached a venue


class OrderEvent(IntEnum):
    """What can happen to an order. Values are the wire/HDL encoding: never renumber."""

    SUBMIT = 0  # our risk gate passed the order: send it
    DENY = 1  # our risk gate refused the order
    ACCEPT = 2  # venue acknowledged the new order
    REJECT = 3  # venue refused the new order
    TRIGGER = 4  # stop trigger price reached
    FILL_PARTIAL = 5  # a fill that leaves quantity open
    FILL_FULL = 6  # a fill that completes the order
    CANCEL = 7  # the strategy asks to cancel
    CANCEL_ACK = 8  # venue confirms the order is cancelled (solicited or not)
    CANCEL_REJECT = 9  # venue refuses the cancel
    AMEND = 10  # the strategy asks to change price / quantity / trigger
    AMEND_ACK = 11  # venue confirms the amend
    AMEND_REJECT = 12  # venue refuses the amend
    EXPIRE = 13  # time in force ran out (GTD deadline, entry timeout)


class Action(IntFlag):
    """Side effects a transition asks the kernel to perform, as a bitmask (HDL-friendly)."""

    NONE = 0
    SEND_NEW = 1 << 0  # hand the order to the venue adapter
    SEND_CANCEL = 1 << 1  # hand a cancel request to the venue adapter
    SEND_AMEND = 1 << 2  # hand an amend request to the venue adapter
    APPLY_FILL = 1 << 3  # add the fill to filled_qty, position, fees
    APPLY_AMEND = 1 << 4  # replace price / qty / trigger with the amended values
    SAVE_PREV = 1 << 5  # remember the current state so a refusal can restore it
    MARK_PREV_PARTIAL = 1 << 6  # a fill while a request is in flight: restore to PARTIALLY_FILLED
    LINKED = 1 << 7  # apply the OCO / bracket rule to the order's linked siblings
    RELEASE = 1 << 8  # terminal: stop timers, free the slot for reuse after logging


class Reason(IntEnum):
    """Why a command or event was refused. Values are the wire/HDL encoding: never renumber.

    Codes below 32 come out of the transition table; the rest come from the kernel's
    validation, risk gate, sequencing and venue adapters.
    """

    OK = 0
    INVALID_TRANSITION = 1
    ORDER_TERMINAL = 2
    CANCEL_PENDING = 3
    AMEND_PENDING = 4
    NOT_ACKNOWLEDGED = 5
    NOT_TRIGGERABLE = 6
    ALREADY_SUBMITTED = 7
    # --- validation (ours) ---
    UNKNOWN_ORDER = 32
    DUPLICATE_CLIENT_ORDER_ID = 33
    INVALID_QTY = 34
    INVALID_PRICE = 35
    MISSING_PRICE = 36
    OVERFILL = 37
    UNKNOWN_SYMBOL = 38
    BOOK_FULL = 39
    POST_ONLY_WOULD_TAKE = 40
    REDUCE_ONLY_VIOLATION = 41
    FOK_NOT_FILLABLE = 42
    INVALID_DEADLINE = 43
    # --- risk gate (ours) ---
    RISK_MAX_NOTIONAL = 64
    RISK_MAX_POSITION = 65
    RISK_MAX_OPEN_ORDERS = 66
    RISK_RATE_LIMIT = 67
    RISK_DAILY_LOSS = 68
    RISK_RESTRICTED_SYMBOL = 69
    KILL_SWITCH_ACTIVE = 70
    # --- session (ours) ---
    SEQ_GAP = 96
    SEQ_DUPLICATE = 97
    SEQ_TOO_LOW = 98
    MALFORMED_MESSAGE = 99
    UNKNOWN_SESSION = 100
    # --- venue ---
    VENUE_REJECTED = 128
    VENUE_TIMEOUT = 129
    VENUE_ERROR = 130
    INSUFFICIENT_FUNDS = 131


REASON_TEXT: Final[dict[Reason, str]] = {
    Reason.OK: "accepted",
    Reason.INVALID_TRANSITION: "this event is not allowed in the order's current state",
    Reason.ORDER_TERMINAL: "the order is already finished (filled, cancelled, rejected, expired or denied)",
    Reason.CANCEL_PENDING: "a cancel is already in flight; wait for CancelAck/CancelReject",
    Reason.AMEND_PENDING: "an amend is in flight; wait for AmendAccepted/AmendRejected",
    Reason.NOT_ACKNOWLEDGED: "the venue has not acknowledged the order yet; retry after OrderAccepted",
    Reason.NOT_TRIGGERABLE: "only a working stop order that has not triggered can trigger",
    Reason.ALREADY_SUBMITTED: "the order was already submitted",
    Reason.UNKNOWN_ORDER: "no order with this client_order_id in this session",
    Reason.DUPLICATE_CLIENT_ORDER_ID: "client_order_id already used in this session; the original result stands",
    Reason.INVALID_QTY: "quantity must be a positive whole number of lots",
    Reason.INVALID_PRICE: "price must be a positive whole number of ticks",
    Reason.MISSING_PRICE: "LIMIT needs price, STOP needs trigger_price, STOP_LIMIT needs both",
    Reason.OVERFILL: "fill quantity exceeds the order's open quantity",
    Reason.UNKNOWN_SYMBOL: "the symbol is not configured on this kernel",
    Reason.BOOK_FULL: "the order store has no free slot",
    Reason.POST_ONLY_WOULD_TAKE: "a post-only order would take liquidity",
    Reason.REDUCE_ONLY_VIOLATION: "a reduce-only order would open or increase a position",
    Reason.FOK_NOT_FILLABLE: "fill-or-kill order cannot be filled in full at once",
    Reason.INVALID_DEADLINE: "GTD needs expire_ts_ns in the future; other TIFs must not set it",
    Reason.RISK_MAX_NOTIONAL: "order notional above max_order_notional in risk_limits",
    Reason.RISK_MAX_POSITION: "resulting position above max_position in risk_limits",
    Reason.RISK_MAX_OPEN_ORDERS: "open orders at max_open_orders in risk_limits",
    Reason.RISK_RATE_LIMIT: "orders per second above max_orders_per_sec in risk_limits",
    Reason.RISK_DAILY_LOSS: "daily loss stop reached; new risk is blocked until the next UTC day",
    Reason.RISK_RESTRICTED_SYMBOL: "symbol is restricted in risk_limits",
    Reason.KILL_SWITCH_ACTIVE: "the kill switch is active; new orders are blocked",
    Reason.SEQ_GAP: "sequence gap; a resend was requested",
    Reason.SEQ_DUPLICATE: "duplicate sequence number; message ignored",
    Reason.SEQ_TOO_LOW: "sequence number lower than expected without possible_duplicate",
    Reason.MALFORMED_MESSAGE: "message could not be decoded",
    Reason.UNKNOWN_SESSION: "unknown session_id",
    Reason.VENUE_REJECTED: "the venue refused the request",
    Reason.VENUE_TIMEOUT: "the venue did not answer in time; the outcome is unknown until queried",
    Reason.VENUE_ERROR: "the venue returned an error",
    Reason.INSUFFICIENT_FUNDS: "the venue reports insufficient funds or margin",
}


class Side(IntEnum):
    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    MARKET = 0
    LIMIT = 1
    STOP = 2  # stop-market
    STOP_LIMIT = 3


class TimeInForce(IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2
    GTD = 3  # good till expire_ts_ns


class Liquidity(IntEnum):
    MAKER = 0
    TAKER = 1


TERMINAL_STATES: Final[frozenset[OrderState]] = frozenset(
    {
        OrderState.FILLED,
        OrderState.CANCELLED,
        OrderState.REJECTED,
        OrderState.EXPIRED,
        OrderState.DENIED,
    }
)
#: States in which the order may still receive fills from the venue.
OPEN_STATES: Final[frozenset[OrderState]] = frozenset(
    {
        OrderState.PENDING,
        OrderState.SUBMITTED,
        OrderState.TRIGGERED,
        OrderState.PARTIALLY_FILLED,
        OrderState.PENDING_CANCEL,
        OrderState.PENDING_AMEND,
    }
)

#: `next_state` value meaning "return to the state saved by SAVE_PREV".
PREV: Final[int] = 0xFF


@dataclass(frozen=True, slots=True)
class Transition:
    """One allowed edge. `emits` names the message the kernel publishes (None: nothing)."""

    next_state: OrderState | None  # None means PREV
    actions: Action
    emits: str | None
    note: str = ""


S = OrderState
E = OrderEvent
A = Action

_FILL_SOURCES = (S.PENDING, S.SUBMITTED, S.TRIGGERED, S.PARTIALLY_FILLED)
_WORKING = (S.SUBMITTED, S.TRIGGERED, S.PARTIALLY_FILLED)

TRANSITIONS: Final[dict[tuple[OrderState, OrderEvent], Transition]] = {
    (S.INITIALIZED, E.SUBMIT): Transition(S.PENDING, A.SEND_NEW, None, "passed our risk gate"),
    (S.INITIALIZED, E.DENY): Transition(S.DENIED, A.RELEASE, "OrderDenied", "refused by our gate"),
    (S.PENDING, E.ACCEPT): Transition(S.SUBMITTED, A.NONE, "OrderAccepted"),
    (S.PENDING, E.REJECT): Transition(S.REJECTED, A.RELEASE, "OrderRejected"),
    # A venue may report an unacknowledged order cancelled (FOK/IOC not filled) or expired.
    (S.PENDING, E.CANCEL_ACK): Transition(
        S.CANCELLED, A.RELEASE, "OrderCancelled", "venue cancelled before acknowledging (IOC/FOK)"
    ),
    (S.PENDING, E.EXPIRE): Transition(S.EXPIRED, A.RELEASE, "OrderExpired"),
    (S.SUBMITTED, E.TRIGGER): Transition(S.TRIGGERED, A.NONE, "OrderTriggered"),
    # Fills: an unacknowledged order may be filled at once; the fill implies the ack.
    **{
        (s, E.FILL_PARTIAL): Transition(
            S.PARTIALLY_FILLED,
            A.APPLY_FILL | A.LINKED,
            "OrderFilled",
            "fill implies ack" if s is S.PENDING else "",
        )
        for s in _FILL_SOURCES
    },
    **{
        (s, E.FILL_FULL): Transition(
            S.FILLED,
            A.APPLY_FILL | A.LINKED | A.RELEASE,
            "OrderFilled",
            "fill implies ack" if s is S.PENDING else "",
        )
        for s in _FILL_SOURCES
    },
    # A fill racing an in-flight request: the fill wins and is applied; the request's
    # answer still arrives later and restores PARTIALLY_FILLED rather than the old state.
    (S.PENDING_CANCEL, E.FILL_PARTIAL): Transition(
        S.PENDING_CANCEL,
        A.APPLY_FILL | A.LINKED | A.MARK_PREV_PARTIAL,
        "OrderFilled",
        "fill races cancel",
    ),
    (S.PENDING_AMEND, E.FILL_PARTIAL): Transition(
        S.PENDING_AMEND,
        A.APPLY_FILL | A.LINKED | A.MARK_PREV_PARTIAL,
        "OrderFilled",
        "fill races amend",
    ),
    (S.PENDING_CANCEL, E.FILL_FULL): Transition(
        S.FILLED,
        A.APPLY_FILL | A.LINKED | A.RELEASE,
        "OrderFilled",
        "cancel lost the race: the fill stands",
    ),
    (S.PENDING_AMEND, E.FILL_FULL): Transition(
        S.FILLED,
        A.APPLY_FILL | A.LINKED | A.RELEASE,
        "OrderFilled",
        "amend lost the race: the fill stands",
    ),
    **{
        (s, E.CANCEL): Transition(S.PENDING_CANCEL, A.SEND_CANCEL | A.SAVE_PREV, None)
        for s in _WORKING
    },
    (S.PENDING_CANCEL, E.CANCEL_ACK): Transition(S.CANCELLED, A.RELEASE, "OrderCancelled"),
    (S.PENDING_CANCEL, E.CANCEL_REJECT): Transition(
        None, A.NONE, "CancelRejected", "venue kept the order: back to where it was"
    ),
    # Unsolicited cancels (venue-side cancel, IOC remainder, self-trade prevention): the venue is the truth.
    **{
        (s, E.CANCEL_ACK): Transition(
            S.CANCELLED, A.RELEASE, "OrderCancelled", "unsolicited venue cancel"
        )
        for s in (*_WORKING, S.PENDING_AMEND)
    },
    **{
        (s, E.AMEND): Transition(S.PENDING_AMEND, A.SEND_AMEND | A.SAVE_PREV, None)
        for s in _WORKING
    },
    (S.PENDING_AMEND, E.AMEND_ACK): Transition(
        None, A.APPLY_AMEND, "AmendAccepted", "order keeps its identity"
    ),
    (S.PENDING_AMEND, E.AMEND_REJECT): Transition(None, A.NONE, "AmendRejected"),
    **{
        (s, E.EXPIRE): Transition(S.EXPIRED, A.RELEASE, "OrderExpired")
        for s in (*_WORKING, S.PENDING_CANCEL, S.PENDING_AMEND)
    },
}

N_STATES: Final[int] = len(OrderState)
N_EVENTS: Final[int] = len(OrderEvent)


def refusal_reason(state: OrderState, event: OrderEvent) -> Reason:
    """The reason code for a (state, event) pair that is not in TRANSITIONS."""
    if state in TERMINAL_STATES:
        return Reason.ORDER_TERMINAL
    if event in (E.SUBMIT, E.DENY):
        return Reason.ALREADY_SUBMITTED
    if state is S.PENDING_CANCEL and event in (E.CANCEL, E.AMEND):
        return Reason.CANCEL_PENDING
    if state is S.PENDING_AMEND and event in (E.CANCEL, E.AMEND):
        return Reason.AMEND_PENDING
    if state is S.PENDING and event in (E.CANCEL, E.AMEND):
        return Reason.NOT_ACKNOWLEDGED
    if event is E.TRIGGER:
        return Reason.NOT_TRIGGERABLE
    return Reason.INVALID_TRANSITION


def _dense_tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    next_state = np.zeros((N_STATES, N_EVENTS), dtype=np.uint8)
    actions = np.zeros((N_STATES, N_EVENTS), dtype=np.uint16)
    reasons = np.zeros((N_STATES, N_EVENTS), dtype=np.uint8)
    for s in OrderState:
        for e in OrderEvent:
            t = TRANSITIONS.get((s, e))
            if t is None:
                next_state[s, e] = s  # a refusal changes nothing
                reasons[s, e] = refusal_reason(s, e)
            else:
                next_state[s, e] = PREV if t.next_state is None else t.next_state
                actions[s, e] = t.actions
    for arr in (next_state, actions, reasons):
        arr.setflags(write=False)
    return next_state, actions, reasons


#: Dense lookup tables indexed [state, event]; read-only. A non-zero REASON means refused.
NEXT_STATE, ACTIONS, REASONS = _dense_tables()

#: Bit widths the HDL uses for the encodings above (checked by tests).
STATE_BITS: Final[int] = 4
EVENT_BITS: Final[int] = 4
REASON_BITS: Final[int] = 8
ACTION_BITS: Final[int] = 9


def is_terminal(state: int) -> bool:
    return OrderState(state) in TERMINAL_STATES


def prev_targets(state: OrderState) -> tuple[OrderState, ...]:
    """The states a PREV transition out of `state` can restore: those that enter `state` with
    SAVE_PREV, plus PARTIALLY_FILLED if a fill in `state` marks it (MARK_PREV_PARTIAL)."""
    found = {
        s
        for (s, _e), t in TRANSITIONS.items()
        if t.next_state is state and Action.SAVE_PREV in t.actions
    }
    if any(
        s is state and Action.MARK_PREV_PARTIAL in t.actions for (s, _e), t in TRANSITIONS.items()
    ):
        found.add(S.PARTIALLY_FILLED)
    return tuple(sorted(found))


def mermaid_diagram() -> str:
    """A Mermaid state diagram generated from TRANSITIONS (used by docs/order-kernel.md).

    PREV edges are drawn to every state they can restore (see `prev_targets`)."""
    lines = ["stateDiagram-v2", "    [*] --> INITIALIZED"]
    for (s, e), t in sorted(TRANSITIONS.items()):
        if t.next_state is None:
            lines.extend(
                f"    {s.name} --> {target.name}: {e.name} (restores previous state)"
                for target in prev_targets(s)
            )
        else:
            lines.append(f"    {s.name} --> {t.next_state.name}: {e.name}")
    lines.extend(f"    {s.name} --> [*]" for s in sorted(TERMINAL_STATES))
    return "\n".join(lines) + "\n"
