"""The HDL order table against the numba machine (`order_kernel.machine`), event by event.

Both are driven with the same streams; after every event the hardware's result record and
the addressed RAM row are compared with the machine's return code and its struct-of-arrays
row (state, previous state, filled, leaves, prices, the amend in flight). A LOAD is the
hardware's way to put an order in a slot; for the machine the test writes the same fields
into the slot directly (its `alloc` picks slots itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from hdl_helpers import N_SLOTS, Intent, intents, realize
from hypothesis import given, settings
from hypothesis import strategies as st

from hdl.order_fsm import OrderTableConfig
from hdl.reference import EventIn, ResultOut, Slot
from hdl.sim import SimTrace, random_events, simulate
from order_kernel import machine as mk
from order_kernel import spec

CFG = OrderTableConfig(n_slots=N_SLOTS)


def _load(mach: mk.OrderMachine, ev: EventIn) -> None:
    o = mach.orders
    o[:, ev.slot] = 0
    o[mk.F_OCO, ev.slot] = -1
    o[mk.F_STATE, ev.slot] = spec.OrderState.INITIALIZED
    o[mk.F_PREV_STATE, ev.slot] = spec.OrderState.INITIALIZED
    o[mk.F_SIDE, ev.slot] = ev.side
    o[mk.F_TYPE, ev.slot] = ev.order_type
    o[mk.F_QTY, ev.slot] = ev.qty
    o[mk.F_PRICE, ev.slot] = ev.price
    o[mk.F_TRIGGER, ev.slot] = ev.trigger_price


def _machine_slot(mach: mk.OrderMachine, slot: int) -> Slot:
    o = mach.orders
    return Slot(
        state=int(o[mk.F_STATE, slot]),
        prev_state=int(o[mk.F_PREV_STATE, slot]),
        side=int(o[mk.F_SIDE, slot]),
        order_type=int(o[mk.F_TYPE, slot]),
        filled_qty=int(o[mk.F_FILLED, slot]),
        leaves_qty=int(o[mk.F_QTY, slot] - o[mk.F_FILLED, slot]),
        price=int(o[mk.F_PRICE, slot]),
        trigger_price=int(o[mk.F_TRIGGER, slot]),
        amend_qty=int(o[mk.F_AMEND_QTY, slot]),
        amend_price=int(o[mk.F_AMEND_PRICE, slot]),
        amend_trigger=int(o[mk.F_AMEND_TRIGGER, slot]),
    )


def first_difference(events: Sequence[EventIn], trace: SimTrace) -> str | None:
    """Step a fresh numba machine through `events`; describe the first disagreement, or None."""
    mach = mk.OrderMachine(N_SLOTS, 1)
    for i, (ev, got) in enumerate(zip(events, trace.results, strict=True)):
        before = _machine_slot(mach, ev.slot)
        if ev.load:
            if ev.qty == 0:  # the hardware refuses an empty order; the machine never sees one
                reason = int(spec.Reason.INVALID_QTY)
            else:
                _load(mach, ev)
                reason = 0
        else:
            reason = int(mach.step(ev.slot, ev.event, ev.qty, ev.price, ev.trigger_price, 0))
        after = _machine_slot(mach, ev.slot)
        want_actions = 0
        if reason == 0 and not ev.load:
            derived = ev.event
            if ev.event in (spec.OrderEvent.FILL_PARTIAL, spec.OrderEvent.FILL_FULL):
                full = ev.qty >= before.leaves_qty
                derived = spec.OrderEvent.FILL_FULL if full else spec.OrderEvent.FILL_PARTIAL
            want_actions = int(spec.ACTIONS[before.state, derived])
        want = ResultOut(
            slot=ev.slot,
            load=ev.load,
            event=got.event,  # checked through actions (the machine does not report it)
            accepted=reason == 0,
            reason=reason,
            state=after.state,
            prev_state=after.prev_state,
            actions=want_actions,
            filled_qty=after.filled_qty,
            leaves_qty=after.leaves_qty,
        )
        if got != want:
            return f"event #{i} {ev}: result differs\n  hdl:   {got}\n  numba: {want}"
        if trace.slot_after[i] != after:
            return (
                f"event #{i} {ev}: slot differs\n  hdl:   {trace.slot_after[i]}\n  numba: {after}"
            )
    for slot in range(N_SLOTS):
        if trace.final_slots[slot] != _machine_slot(mach, slot):
            return f"final slot {slot} differs"
    return None


#: Events in the seeded comparison: 10^4 in CI; the documented long run sets 10^6.
N_EVENTS = int(os.environ.get("HDL_EQUIV_EVENTS", "10000"))


def test_seeded_events_agree_with_numba() -> None:
    done = accepted = 0
    for batch in range(-(-N_EVENTS // 10_000)):
        size = min(10_000, N_EVENTS - done)
        events = random_events(size, seed=5 + batch, n_slots=N_SLOTS)
        trace = simulate(events, CFG)
        problem = first_difference(events, trace)
        assert problem is None, f"batch {batch} (seed {5 + batch}): {problem}"
        accepted += sum(r.accepted for r in trace.results)
        done += size
    assert done == N_EVENTS
    assert accepted > 0.4 * N_EVENTS


def test_numba_comparison_catches_a_divergence() -> None:
    events = random_events(300, seed=6, n_slots=N_SLOTS)
    trace = simulate(events, CFG)
    i = next(i for i, r in enumerate(trace.results) if r.accepted and r.filled_qty)
    r = trace.results[i]
    trace.results[i] = ResultOut(
        **{**{f: getattr(r, f) for f in r.__slots__}, "filled_qty": r.filled_qty + 1}
    )
    assert first_difference(events, trace) is not None


@settings(max_examples=15)
@given(raw=st.lists(intents, min_size=50, max_size=200))
def test_random_sequences_agree_with_numba(
    raw: list[Intent], tmp_path_factory: pytest.TempPathFactory
) -> None:
    events = realize(raw)
    trace = simulate(events, CFG)
    problem = first_difference(events, trace)
    if problem is not None:
        vcd: Path = tmp_path_factory.mktemp("hdl_numba_mismatch") / "trace.vcd"
        simulate(events, CFG, vcd_path=vcd)
        pytest.fail(f"{problem}\n  VCD trace: {vcd}")
