"""The numba machine against the one table (`spec.TRANSITIONS`) and a plain-Python reference model."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from ok_helpers import RefOrder

from order_kernel import spec
from order_kernel.machine import (
    C_REFUSED,
    F_AMEND_QTY,
    F_FILLED,
    F_PREV_STATE,
    F_PRICE,
    F_QTY,
    F_STATE,
    P_COST,
    P_QTY,
    P_REALIZED,
    OrderMachine,
)
from order_kernel.spec import OrderEvent, OrderState, Reason

E = OrderEvent
S = OrderState


def _fresh(qty: int = 10) -> tuple[OrderMachine, int]:
    mach = OrderMachine(4, 1)
    slot = mach.alloc(symbol=0, side=0, order_type=1, tif=0, qty=qty, price=100)
    return mach, slot


def _force_state(mach: OrderMachine, slot: int, state: OrderState, prev: OrderState) -> None:
    mach.orders[F_STATE, slot] = state
    mach.orders[F_PREV_STATE, slot] = prev
    mach.orders[F_AMEND_QTY, slot] = mach.orders[F_QTY, slot]  # as if an AMEND had stored values
    if state is S.FILLED:
        mach.orders[F_FILLED, slot] = mach.orders[F_QTY, slot]


# ---------------------------------------------------------------- exhaustive table


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_every_state_event_pair_matches_the_table(state: OrderState) -> None:
    """All 12 x 14 pairs: numba result == the dict (next state, refusal reason, nothing changed)."""
    for ev in E:
        mach, slot = _fresh()
        _force_state(mach, slot, state, S.SUBMITTED)
        before = mach.orders.copy()
        qty = 3 if ev is E.FILL_PARTIAL else 10 if ev is E.FILL_FULL else 12 if ev is E.AMEND else 0
        r = mach.step(slot, ev, qty=qty, price=101, trigger=0, fee=1)
        t = spec.TRANSITIONS.get((state, ev))
        if t is None:
            assert r == spec.refusal_reason(state, ev), (state, ev)
            assert r == spec.REASONS[state, ev] != 0
            np.testing.assert_array_equal(mach.orders, before)
            assert mach.counters[C_REFUSED] == 1
        else:
            assert r is Reason.OK, (state, ev, r)
            want = S.SUBMITTED if t.next_state is None else t.next_state
            if spec.Action.SAVE_PREV in t.actions and t.next_state is None:
                want = state
            assert mach.state(slot) is want, (state, ev)
            assert mach.counters[C_REFUSED] == 0


def test_terminal_states_are_absorbing_for_every_event() -> None:
    for state in spec.TERMINAL_STATES:
        for ev in E:
            mach, slot = _fresh()
            _force_state(mach, slot, state, S.SUBMITTED)
            before = mach.orders.copy()
            assert mach.step(slot, ev, qty=1, price=100) is Reason.ORDER_TERMINAL
            np.testing.assert_array_equal(mach.orders, before)


def test_fill_kind_is_decided_from_leaves_and_overfill_changes_nothing() -> None:
    mach, slot = _fresh(qty=10)
    mach.step(slot, E.SUBMIT)
    mach.step(slot, E.ACCEPT)
    assert (
        mach.step(slot, E.FILL_FULL, qty=4, price=100) is Reason.OK
    )  # full requested, partial applied
    assert mach.state(slot) is S.PARTIALLY_FILLED
    before = (mach.orders.copy(), mach.positions.copy())
    assert mach.step(slot, E.FILL_PARTIAL, qty=7, price=100) is Reason.OVERFILL
    np.testing.assert_array_equal(mach.orders, before[0])
    np.testing.assert_array_equal(mach.positions, before[1])
    assert mach.refused == 1
    assert (
        mach.step(slot, E.FILL_PARTIAL, qty=6, price=100) is Reason.OK
    )  # partial requested, full applied
    assert mach.state(slot) is S.FILLED


def test_prev_restore_after_cancel_reject_and_fill_racing_cancel() -> None:
    mach, slot = _fresh(qty=10)
    for ev in (E.SUBMIT, E.ACCEPT, E.CANCEL):
        assert mach.step(slot, ev) is Reason.OK
    assert mach.step(slot, E.CANCEL_REJECT) is Reason.OK
    assert mach.state(slot) is S.SUBMITTED  # restored
    assert mach.step(slot, E.CANCEL) is Reason.OK
    assert mach.step(slot, E.FILL_PARTIAL, qty=2, price=100) is Reason.OK
    assert mach.state(slot) is S.PENDING_CANCEL
    assert mach.step(slot, E.CANCEL_REJECT) is Reason.OK
    assert mach.state(slot) is S.PARTIALLY_FILLED  # MARK_PREV_PARTIAL


def test_amend_applies_only_on_ack_and_refuses_below_filled() -> None:
    mach, slot = _fresh(qty=10)
    for ev in (E.SUBMIT, E.ACCEPT):
        mach.step(slot, ev)
    mach.step(slot, E.FILL_PARTIAL, qty=4, price=100)
    assert mach.step(slot, E.AMEND, qty=4, price=99) is Reason.INVALID_QTY
    assert mach.step(slot, E.AMEND, qty=8, price=99) is Reason.OK
    assert mach.orders[F_QTY, slot] == 10
    assert mach.step(slot, E.AMEND_ACK) is Reason.OK
    assert (mach.orders[F_QTY, slot], mach.orders[F_PRICE, slot]) == (8, 99)
    assert mach.state(slot) is S.PARTIALLY_FILLED


def test_batch_equals_single_steps() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    slots = rng.integers(0, 8, n)
    events = rng.integers(0, spec.N_EVENTS, n)
    qtys = rng.integers(1, 6, n)
    prices = rng.integers(90, 110, n)

    def setup() -> OrderMachine:
        mach = OrderMachine(8, 2)
        for i in range(8):
            mach.alloc(symbol=i % 2, side=i % 2, order_type=1, tif=0, qty=20, price=100)
        return mach

    a, b = setup(), setup()
    reasons, states = a.batch(slots, events, qtys, prices)
    for i in range(n):
        r = b.step(int(slots[i]), int(events[i]), int(qtys[i]), int(prices[i]))
        assert r == reasons[i]
        assert b.state(int(slots[i])) == states[i]
    np.testing.assert_array_equal(a.orders, b.orders)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.counters, b.counters)


def test_batch_reports_bad_slots_without_crashing() -> None:
    mach, _ = _fresh()
    r, s = mach.batch(np.array([-1, 99]), np.array([0, 0]), np.array([0, 0]), np.array([0, 0]))
    assert list(r) == [Reason.UNKNOWN_ORDER, Reason.UNKNOWN_ORDER]
    assert list(s) == [0xFF, 0xFF]


# ---------------------------------------------------------------- position accounting


@given(
    st.lists(
        st.tuples(st.sampled_from([1, -1]), st.integers(1, 50), st.integers(1, 1000)), max_size=40
    )
)
def test_position_accounting_matches_exact_average_cost(fills: list[tuple[int, int, int]]) -> None:
    """Integer machine vs an exact Fraction average-cost oracle: qty, cost and realised PnL agree
    up to the floor rounding of the pro-rata cost removal (at most 1 unit per reducing fill)."""
    mach = OrderMachine(len(fills) + 1, 1)
    q, avg, realized = 0, Fraction(0), Fraction(0)
    reductions = 0
    for sign, qty, price in fills:
        slot = mach.alloc(symbol=0, side=0 if sign > 0 else 1, order_type=0, tif=0, qty=qty)
        mach.step(slot, E.SUBMIT)
        assert mach.step(slot, E.FILL_FULL, qty=qty, price=price) is Reason.OK
        dq = sign * qty
        if q == 0 or (q > 0) == (dq > 0):
            avg = (avg * abs(q) + price * qty) / (abs(q) + qty)
            q += dq
        else:
            reductions += 1
            closed = min(abs(dq), abs(q))
            realized += closed * (price - avg) * (1 if q > 0 else -1)
            q += dq
            if q == 0:
                avg = Fraction(0)
            elif (q > 0) == (dq > 0):
                avg = Fraction(price)
    assert mach.positions[P_QTY, 0] == q
    assert abs(mach.positions[P_REALIZED, 0] - realized) <= reductions
    assert abs(mach.positions[P_COST, 0] - avg * q) <= reductions + 1
    if q == 0:
        assert mach.positions[P_COST, 0] == 0


# ---------------------------------------------------------------- stateful: numba vs reference


class MachineVsReference(RuleBasedStateMachine):
    """Random events on a few slots; the numba machine and the dict model must agree exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.mach = OrderMachine(6, 1)
        self.ref: list[RefOrder] = []
        self.refusals = 0

    @precondition(lambda self: len(self.ref) < 6)
    @rule(qty=st.integers(1, 20))
    def new_order(self, qty: int) -> None:
        self.mach.alloc(symbol=0, side=len(self.ref) % 2, order_type=1, tif=0, qty=qty, price=100)
        self.ref.append(RefOrder(qty=qty, price=100))

    @precondition(lambda self: bool(self.ref))
    @rule(
        data=st.data(),
        ev=st.sampled_from(list(E)),
        qty=st.integers(-1, 25),
        price=st.integers(0, 120),
    )
    def event(self, data: st.DataObject, ev: OrderEvent, qty: int, price: int) -> None:
        slot = data.draw(st.integers(0, len(self.ref) - 1))
        before = (self.mach.orders.copy(), self.mach.positions.copy())
        want = self.ref[slot].apply(ev, qty, price, 0)
        got = self.mach.step(slot, ev, qty, price, 0, 1)
        assert got == want, (ev, got, want)
        if got is not Reason.OK:
            self.refusals += 1
            np.testing.assert_array_equal(self.mach.orders, before[0])
            np.testing.assert_array_equal(self.mach.positions, before[1])

    @invariant()
    def agrees_with_reference(self) -> None:
        for slot, r in enumerate(self.ref):
            assert self.mach.state(slot) is r.state
            assert self.mach.orders[F_FILLED, slot] == r.filled
            assert self.mach.orders[F_QTY, slot] == r.qty
            assert 0 <= r.filled <= r.qty
        assert self.mach.refused == self.refusals

    @invariant()
    def position_is_sum_of_fills(self) -> None:
        total = sum(
            (1 if i % 2 == 0 else -1) * q for i, r in enumerate(self.ref) for q, _ in r.fills
        )
        assert self.mach.positions[P_QTY, 0] == total


MachineVsReference.TestCase.settings = settings(
    max_examples=max(300, settings().max_examples), stateful_step_count=50, deadline=None
)
TestMachineVsReference = MachineVsReference.TestCase


def test_prev_targets_cover_every_restore_the_machine_can_reach() -> None:
    """Walk every event sequence (BFS over (state, prev) pairs): each PREV restore lands in
    spec.prev_targets, so the generated diagram draws all real PREV edges and no others."""
    seen: set[tuple[int, int, int]] = set()
    reached: dict[OrderState, set[OrderState]] = {}
    frontier = [(int(S.INITIALIZED), int(S.INITIALIZED), 0)]
    while frontier:
        state, prev, filled = frontier.pop()
        if (state, prev, filled) in seen:
            continue
        seen.add((state, prev, filled))
        for ev in E:
            mach, slot = _fresh(qty=3)
            mach.orders[F_STATE, slot], mach.orders[F_PREV_STATE, slot] = state, prev
            mach.orders[F_FILLED, slot] = filled
            mach.orders[F_AMEND_QTY, slot] = 3
            if mach.step(slot, ev, qty=1, price=100) is not Reason.OK:
                continue
            t = spec.TRANSITIONS[
                (
                    OrderState(state),
                    OrderEvent(ev)
                    if ev not in (E.FILL_FULL, E.FILL_PARTIAL)
                    else (E.FILL_FULL if filled == 2 else E.FILL_PARTIAL),
                )
            ]
            nxt = mach.state(slot)
            if t.next_state is None:
                reached.setdefault(OrderState(state), set()).add(nxt)
            frontier.append(
                (int(nxt), int(mach.orders[F_PREV_STATE, slot]), int(mach.orders[F_FILLED, slot]))
            )
    for state, targets in reached.items():
        assert targets == set(spec.prev_targets(state)), state
    assert set(reached) == {S.PENDING_CANCEL, S.PENDING_AMEND}


def test_docs_diagram_is_generated_from_the_table() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "order-kernel.md").read_text()
    assert "```mermaid\n" + spec.mermaid_diagram() + "```" in doc, (
        "docs/order-kernel.md is out of date: paste spec.mermaid_diagram() into its mermaid block"
    )


def test_machine_tables_are_the_spec_tables() -> None:
    from order_kernel import machine

    for mine, theirs in (
        (machine._NEXT_STATE, spec.NEXT_STATE),
        (machine._ACTIONS, spec.ACTIONS),
        (machine._REASONS, spec.REASONS),
    ):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)
