"""Directed vectors: every (state, event) pair of the spec table, allowed and refused.

The expected outcome of each pair is read from `spec.TRANSITIONS` and
`spec.refusal_reason` (the readable table), not from the dense arrays the hardware is
built from, so a slip in building or reading the dense arrays shows up here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest

from hdl.order_fsm import OrderTableConfig
from hdl.reference import EventIn, ResultOut
from hdl.sim import simulate
from order_kernel import spec

S = spec.OrderState
E = spec.OrderEvent
A = spec.Action
QTY = 10  # every vector's order quantity
CFG = OrderTableConfig(n_slots=16)


def _qty_for(event: E, leaves: int, filled: int) -> int:
    """A quantity that makes `event` well-formed: fills of 1 or all leaves, amends above filled."""
    if event is E.FILL_PARTIAL:
        return 1
    if event is E.FILL_FULL:
        return leaves
    if event is E.AMEND:
        return filled + 5
    return 0


@dataclass(frozen=True)
class _Track:
    """What a path leaves in the slot, computed from spec.TRANSITIONS alone."""

    state: S
    prev: S
    filled: int
    leaves: int
    amend_qty: int = 0


def _apply(track: _Track, event: E, qty: int) -> _Track:
    t = spec.TRANSITIONS[(track.state, event)]
    state = track.prev if t.next_state is None else t.next_state
    prev = track.prev
    if t.actions & A.SAVE_PREV:
        prev = track.state
    if t.actions & A.MARK_PREV_PARTIAL:
        prev = S.PARTIALLY_FILLED
    filled, leaves, amend_qty = track.filled, track.leaves, track.amend_qty
    if t.actions & A.APPLY_FILL:
        filled, leaves = filled + qty, leaves - qty
    if event is E.AMEND:
        amend_qty = qty
    if t.actions & A.APPLY_AMEND:
        leaves = amend_qty - filled
    return _Track(state, prev, filled, leaves, amend_qty)


def _paths() -> dict[S, list[E]]:
    """Shortest event path from a freshly loaded slot to every state (BFS over the table)."""
    start = _Track(S.INITIALIZED, S.INITIALIZED, 0, QTY)
    paths: dict[S, list[E]] = {S.INITIALIZED: []}
    tracks = {S.INITIALIZED: start}
    queue = deque([S.INITIALIZED])
    while queue:
        s = queue.popleft()
        for (src, ev), _t in sorted(spec.TRANSITIONS.items()):
            if src is not s:
                continue
            tr = tracks[s]
            nxt = _apply(tr, ev, _qty_for(ev, tr.leaves, tr.filled))
            if nxt.state not in paths:
                paths[nxt.state] = [*paths[s], ev]
                tracks[nxt.state] = nxt
                queue.append(nxt.state)
    return paths


PATHS = _paths()


def test_every_state_is_reachable() -> None:
    assert set(PATHS) == set(S)


@dataclass(frozen=True)
class _Vector:
    state: S
    event: E
    before: _Track
    index: int  # position of the probe event in the stream


def _build_stream() -> tuple[list[EventIn], list[_Vector]]:
    stream: list[EventIn] = []
    vectors: list[_Vector] = []
    n = 0
    for state in S:
        for event in E:
            slot = n % CFG.n_slots
            n += 1
            stream.append(
                EventIn(
                    slot=slot,
                    load=True,
                    side=n % 2,
                    order_type=n % 4,
                    qty=QTY,
                    price=100 + n,
                    trigger_price=90,
                )
            )
            track = _Track(S.INITIALIZED, S.INITIALIZED, 0, QTY)
            for step in PATHS[state]:
                qty = _qty_for(step, track.leaves, track.filled)
                stream.append(EventIn(slot=slot, event=step, qty=qty, price=200, trigger_price=190))
                track = _apply(track, step, qty)
            qty = _qty_for(event, track.leaves, track.filled)
            stream.append(EventIn(slot=slot, event=event, qty=qty, price=300, trigger_price=290))
            vectors.append(_Vector(state, event, track, len(stream) - 1))
    return stream, vectors


STREAM, VECTORS = _build_stream()


@pytest.fixture(scope="module")
def results() -> list[ResultOut]:
    return simulate(STREAM, CFG).results


def test_vectors_cover_every_pair() -> None:
    assert {(v.state, v.event) for v in VECTORS} == {(s, e) for s in S for e in E}
    assert len(VECTORS) == spec.N_STATES * spec.N_EVENTS


def test_every_allowed_pair(results: list[ResultOut]) -> None:
    checked = 0
    for v in VECTORS:
        t = spec.TRANSITIONS.get((v.state, v.event))
        if t is None:
            continue
        got = results[v.index]
        after = _apply(v.before, v.event, _qty_for(v.event, v.before.leaves, v.before.filled))
        assert got.accepted, f"{v.state.name} + {v.event.name} refused: {got}"
        assert got.reason == spec.Reason.OK
        assert got.event == v.event
        assert got.state == after.state, f"{v.state.name} + {v.event.name}: {got}"
        assert got.prev_state == after.prev
        assert got.actions == int(t.actions)
        assert (got.filled_qty, got.leaves_qty) == (after.filled, after.leaves)
        checked += 1
    assert checked == len(spec.TRANSITIONS)


def test_every_refused_pair(results: list[ResultOut]) -> None:
    checked = 0
    for v in VECTORS:
        if (v.state, v.event) in spec.TRANSITIONS:
            continue
        got = results[v.index]
        assert not got.accepted, f"{v.state.name} + {v.event.name} accepted: {got}"
        assert got.reason == spec.refusal_reason(v.state, v.event), (
            f"{v.state.name} + {v.event.name}"
        )
        assert got.state == v.state
        assert got.prev_state == v.before.prev
        assert got.actions == 0
        assert (got.filled_qty, got.leaves_qty) == (v.before.filled, v.before.leaves)
        checked += 1
    assert checked == spec.N_STATES * spec.N_EVENTS - len(spec.TRANSITIONS)


def _run(events: list[EventIn]) -> list[ResultOut]:
    return simulate(events, CFG).results


def _load(slot: int = 0, qty: int = QTY) -> EventIn:
    return EventIn(slot=slot, load=True, qty=qty, price=100, trigger_price=0)


def _ev(event: E, qty: int = 0, slot: int = 0, price: int = 100) -> EventIn:
    return EventIn(slot=slot, event=event, qty=qty, price=price)


WORKING_PATHS = {
    S.SUBMITTED: [_ev(E.SUBMIT), _ev(E.ACCEPT)],
    S.TRIGGERED: [_ev(E.SUBMIT), _ev(E.ACCEPT), _ev(E.TRIGGER)],
    S.PARTIALLY_FILLED: [_ev(E.SUBMIT), _ev(E.ACCEPT), _ev(E.FILL_PARTIAL, 3)],
}


@pytest.mark.parametrize("working", list(WORKING_PATHS))
@pytest.mark.parametrize(
    ("request_event", "answer"),
    [(E.CANCEL, E.CANCEL_REJECT), (E.AMEND, E.AMEND_REJECT), (E.AMEND, E.AMEND_ACK)],
)
def test_prev_restores_the_saved_state(working: S, request_event: E, answer: E) -> None:
    out = _run(
        [_load(), *WORKING_PATHS[working], _ev(request_event, 20), _ev(answer, 20, price=555)]
    )
    pending, restored = out[-2], out[-1]
    assert pending.prev_state == working
    assert restored.accepted and restored.state == working
    if answer is E.AMEND_ACK:
        assert restored.actions == int(A.APPLY_AMEND)
        assert restored.filled_qty + restored.leaves_qty == 20


@pytest.mark.parametrize(
    ("request_event", "answer"), [(E.CANCEL, E.CANCEL_REJECT), (E.AMEND, E.AMEND_REJECT)]
)
def test_fill_racing_a_request_restores_partially_filled(request_event: E, answer: E) -> None:
    out = _run(
        [
            _load(),
            _ev(E.SUBMIT),
            _ev(E.ACCEPT),
            _ev(request_event, 20),
            _ev(E.FILL_PARTIAL, 4),
            _ev(answer, 20),
        ]
    )
    race, restored = out[-2], out[-1]
    assert race.accepted and race.prev_state == S.PARTIALLY_FILLED
    assert race.actions & A.MARK_PREV_PARTIAL
    assert restored.state == S.PARTIALLY_FILLED
    assert (restored.filled_qty, restored.leaves_qty) == (4, 6)


def test_fill_kind_is_derived_from_leaves() -> None:
    # FILL_FULL code with a partial quantity, then FILL_PARTIAL code with exactly the rest.
    out = _run([_load(), _ev(E.SUBMIT), _ev(E.ACCEPT), _ev(E.FILL_FULL, 4), _ev(E.FILL_PARTIAL, 6)])
    assert (out[-2].event, out[-2].state) == (E.FILL_PARTIAL, S.PARTIALLY_FILLED)
    assert (out[-1].event, out[-1].state) == (E.FILL_FULL, S.FILLED)
    assert out[-1].actions == int(A.APPLY_FILL | A.LINKED | A.RELEASE)
    assert (out[-1].filled_qty, out[-1].leaves_qty) == (QTY, 0)


def test_overfill_is_refused_and_changes_nothing() -> None:
    out = _run(
        [
            _load(),
            _ev(E.SUBMIT),
            _ev(E.ACCEPT),
            _ev(E.FILL_PARTIAL, 4),
            _ev(E.FILL_PARTIAL, 7),
            _ev(E.FILL_FULL, 6),
        ]
    )
    over, full = out[-2], out[-1]
    assert (over.accepted, over.reason) == (False, spec.Reason.OVERFILL)
    assert (over.state, over.filled_qty, over.leaves_qty, over.actions) == (
        S.PARTIALLY_FILLED,
        4,
        6,
        0,
    )
    assert full.state == S.FILLED


def test_quantity_and_price_refusals() -> None:
    out = _run(
        [
            _load(qty=0),  # LOAD of nothing
            _load(),
            _ev(E.SUBMIT),
            _ev(E.ACCEPT),
            _ev(E.FILL_PARTIAL, 0),  # empty fill
            _ev(E.FILL_PARTIAL, 4, price=0),  # fill without a price
            _ev(E.FILL_PARTIAL, 4),
            _ev(E.AMEND, 4),  # new total not above filled
            _ev(E.AMEND, 5, price=777),
            _ev(E.FILL_PARTIAL, 2),  # the fill races the amend past its new quantity
            _ev(E.AMEND_ACK),
            _ev(E.AMEND_REJECT),
        ]
    )
    assert (out[0].accepted, out[0].reason) == (False, spec.Reason.INVALID_QTY)
    assert out[4].reason == spec.Reason.INVALID_QTY
    assert out[5].reason == spec.Reason.INVALID_PRICE and out[5].filled_qty == 0
    assert out[7].reason == spec.Reason.INVALID_QTY and out[7].state == S.PARTIALLY_FILLED
    assert out[8].accepted and out[8].state == S.PENDING_AMEND
    assert out[9].accepted and out[9].prev_state == S.PARTIALLY_FILLED
    assert out[10].reason == spec.Reason.INVALID_QTY and out[10].state == S.PENDING_AMEND
    assert out[11].accepted and out[11].state == S.PARTIALLY_FILLED
    assert (out[11].filled_qty, out[11].leaves_qty) == (6, 4)


def test_amend_ack_applies_the_stored_amend() -> None:
    trace = simulate(
        [
            _load(),
            _ev(E.SUBMIT),
            _ev(E.ACCEPT),
            EventIn(slot=0, event=E.AMEND, qty=25, price=321, trigger_price=300),
            _ev(E.AMEND_ACK, 99, price=1),
        ],
        CFG,
    )
    ack = trace.results[-1]
    assert (ack.accepted, ack.state, ack.leaves_qty) == (True, S.SUBMITTED, 25)
    slot = trace.final_slots[0]
    assert (slot.price, slot.trigger_price) == (321, 300)


@pytest.mark.parametrize("code", [spec.N_EVENTS, (1 << spec.EVENT_BITS) - 1])
def test_undefined_event_code_is_an_invalid_transition(code: int) -> None:
    out = _run([_load(), EventIn(slot=0, event=code, qty=1)])
    assert (out[1].accepted, out[1].reason, out[1].state) == (
        False,
        spec.Reason.INVALID_TRANSITION,
        S.INITIALIZED,
    )


def test_slots_are_independent_and_back_to_back_events_see_each_other() -> None:
    # Same slot on consecutive cycles exercises the RAM's read-after-write bypass.
    events = [
        _load(0),
        _load(1, qty=7),
        _ev(E.SUBMIT, slot=0),
        _ev(E.ACCEPT, slot=0),
        _ev(E.FILL_PARTIAL, 2, slot=0),
        _ev(E.FILL_PARTIAL, 3, slot=0),
        _ev(E.DENY, slot=1),
    ]
    out = _run(events)
    assert (out[5].filled_qty, out[5].leaves_qty) == (5, 5)
    assert out[6].state == S.DENIED and out[6].leaves_qty == 7
