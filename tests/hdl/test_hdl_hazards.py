"""Same-slot events close together: the forwarding path and the same-slot stall.

An event for a slot whose previous event is still in stage B or C waits; one whose
previous event is in D reads the forwarding register instead of the RAM. Each test
compares every result and every addressed slot with the reference model, and the cycle
counts with the documented spacing (`SAME_SLOT_GAP`).
"""

from __future__ import annotations

import dataclasses

import pytest
from amaranth.back import rtlil
from hdl_helpers import Intent, intents, realize
from hypothesis import given, settings
from hypothesis import strategies as st

from hdl.order_fsm import BANK_ROWS, LATENCY_CYCLES, SAME_SLOT_GAP, OrderTable, OrderTableConfig
from hdl.reference import EventIn, ReferenceOrderTable
from hdl.sim import check_against_reference, random_events, simulate
from order_kernel import spec

E = spec.OrderEvent
S = spec.OrderState
CFG = OrderTableConfig(n_slots=16)


def _ev(event: E, qty: int = 0, slot: int = 0, price: int = 100, trigger: int = 0) -> EventIn:
    return EventIn(slot=slot, event=event, qty=qty, price=price, trigger_price=trigger)


def _load(slot: int = 0, qty: int = 10) -> EventIn:
    return EventIn(slot=slot, load=True, qty=qty, price=100, trigger_price=90)


#: One slot's lifecycle in which every event reads what the one before it wrote:
#: fills that complete or overfill depending on the previous fill, an amend raced by a
#: fill, a PREV restore of a state saved one event earlier, a stale AMEND_ACK.
CHAIN = [
    _load(qty=10),
    _ev(E.SUBMIT),
    _ev(E.ACCEPT),
    _ev(E.FILL_PARTIAL, 3),
    _ev(E.FILL_PARTIAL, 3),
    _ev(E.AMEND, 8, price=150, trigger=140),
    _ev(E.FILL_PARTIAL, 2),  # filled 8: the amend no longer applies
    _ev(E.AMEND_ACK),  # refused (stored amend qty <= filled)
    _ev(E.AMEND_REJECT),  # restores PARTIALLY_FILLED
    _ev(E.FILL_FULL, 3),  # 2 left: overfill, refused
    _ev(E.AMEND, 12, price=160, trigger=150),
    _ev(E.AMEND_ACK),  # leaves = 12 - 8
    _ev(E.FILL_FULL, 4),  # completes exactly
    _ev(E.CANCEL),  # terminal: refused
    _load(qty=5),
    _ev(E.DENY),
    _ev(E.SUBMIT),  # refused in DENIED
]


def _expected_cycles(slots: list[int]) -> int:
    last: dict[int, int] = {}
    t = -1
    for slot in slots:
        t = max(t + 1, last.get(slot, -SAME_SLOT_GAP) + SAME_SLOT_GAP)
        last[slot] = t
    return t + 1 + LATENCY_CYCLES


def _spread(chain: list[EventIn], distance: int) -> list[EventIn]:
    """`chain` on slot 0 with `distance - 1` events for other slots between its events."""
    out: list[EventIn] = []
    for i, ev in enumerate(chain):
        out.append(ev)
        for k in range(distance - 1):
            # LOADs and refused events on slots 1.. keep those slots busy and distinct
            filler = _load(1 + k, qty=7 + i) if i % 2 else _ev(E.ACCEPT, 1, slot=1 + k)
            out.append(filler)
    return out


def test_chain_reads_back_its_own_writes() -> None:
    ref = ReferenceOrderTable(CFG.n_slots)
    want = [ref.step(ev) for ev in CHAIN]
    got = check_against_reference(CHAIN, CFG).results
    assert got == want
    # the chain really depends on each previous write
    assert [r.reason for r in got[6:10]] == [
        0,
        int(spec.Reason.INVALID_QTY),
        0,
        int(spec.Reason.OVERFILL),
    ]
    assert (got[12].state, got[12].filled_qty, got[12].leaves_qty) == (S.FILLED, 12, 0)


@pytest.mark.parametrize("distance", [1, 2, 3, 4, 5])
def test_same_slot_at_every_distance(distance: int) -> None:
    events = _spread(CHAIN, distance)
    trace = check_against_reference(events, CFG)
    assert trace.cycles == _expected_cycles([e.slot for e in events])
    # the stall is exactly what the spacing rule says: none from distance GAP on
    stalls = max(0, SAME_SLOT_GAP - distance) * (len(CHAIN) - 1)
    assert trace.cycles == len(events) + stalls + LATENCY_CYCLES


@pytest.mark.parametrize("distance", [1, 2, 3, 4])
def test_same_slot_under_back_pressure_and_idle_input(distance: int) -> None:
    events = _spread(CHAIN, distance)
    for stall, idle in [
        ([False, True], []),
        ([True, False, False], [False, True]),
        ([], [True, False]),
    ]:
        trace = check_against_reference(events, CFG, idle=idle, stall=stall)
        assert len(trace.results) == len(events)


@settings(max_examples=25)
@given(
    raw=st.lists(intents, min_size=40, max_size=120),
    n_hot=st.integers(1, 3),
    stall=st.lists(st.booleans(), max_size=5).filter(lambda xs: not xs or not all(xs)),
)
def test_random_sequences_on_few_slots_match_reference(
    raw: list[Intent], n_hot: int, stall: list[bool]
) -> None:
    events = realize(raw, n_hot=n_hot)
    trace = check_against_reference(events, CFG, stall=stall)
    if not stall:
        assert trace.cycles == _expected_cycles([e.slot for e in events])


def test_distinct_slots_run_one_event_per_clock() -> None:
    events = [_load(i % CFG.n_slots, qty=1 + i) for i in range(64)]
    trace = simulate(events, CFG)
    assert trace.cycles == len(events) + LATENCY_CYCLES


@pytest.mark.parametrize("n_slots", [128, 256])
def test_banked_tables_match_reference(n_slots: int) -> None:
    # A seeded 16-slot stream with its slots spread over every bank (hot slots 0-3 land in
    # different banks), so bank select, per-bank writes and forwarding across banks are
    # all exercised; same-slot spacing and the cycle count as for one bank.
    cfg = OrderTableConfig(n_slots=n_slots)
    n_banks = n_slots // BANK_ROWS
    table = OrderTable(cfg)
    assert [bank.depth for bank in table.banks] == [BANK_ROWS] * n_banks
    assert f"slots{n_banks - 1}" in rtlil.convert(table)  # every bank is elaborated
    events = [
        dataclasses.replace(e, slot=(e.slot % n_banks) * BANK_ROWS + e.slot // n_banks)
        for e in random_events(2_000, seed=31, n_slots=16)
    ]
    trace = check_against_reference(events, cfg)
    assert trace.cycles == _expected_cycles([e.slot for e in events])
    assert len({e.slot // BANK_ROWS for e in events}) == n_banks
    trace = check_against_reference(events[:400], cfg, stall=[False, True, False])
    assert len(trace.results) == 400
