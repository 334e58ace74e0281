"""Random event sequences: hardware and reference model compared event by event.

Hypothesis draws *intents* (load / legal event / any code, and a quantity kind) that a
shadow reference model turns into concrete events, so most sequences follow real
lifecycles and a failing one shrinks to a short, readable list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hdl_helpers import N_SLOTS, Intent, intents, realize
from hypothesis import given, settings
from hypothesis import strategies as st

from hdl.errors import HdlMismatchError
from hdl.order_fsm import LATENCY_CYCLES, SAME_SLOT_GAP, OrderTableConfig
from hdl.reference import EventIn, ReferenceOrderTable, SpecTables
from hdl.sim import (
    SimTrace,
    check_against_reference,
    compare_trace,
    random_events,
    run_equivalence,
    simulate,
)
from order_kernel import spec

CFG = OrderTableConfig(n_slots=N_SLOTS)


@pytest.fixture(scope="module")
def vcd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hdl_mismatch_vcd")


@settings(max_examples=50)
@given(
    raw=st.lists(intents, min_size=150, max_size=300),
    idle=st.lists(st.booleans(), max_size=7).filter(lambda xs: not xs or not all(xs)),
    stall=st.lists(st.booleans(), max_size=7).filter(lambda xs: not xs or not all(xs)),
)
def test_random_sequences_match_reference(
    raw: list[Intent], idle: list[bool], stall: list[bool], vcd_dir: Path
) -> None:
    events = realize(raw)
    trace = check_against_reference(events, CFG, idle=idle, stall=stall, vcd_dir=vcd_dir)
    assert len(trace.results) == len(events)
    assert trace.cycles >= len(events)


@pytest.fixture(scope="module")
def seeded() -> tuple[list[EventIn], SimTrace]:
    events = random_events(10_000, seed=2026, n_slots=N_SLOTS)
    return events, simulate(events, CFG)


def expected_cycles(slots: list[int]) -> int:
    """Cycles to accept a back-to-back stream: one per clock, same-slot events spaced."""
    last: dict[int, int] = {}
    t = -1
    for slot in slots:
        t = max(t + 1, last.get(slot, -SAME_SLOT_GAP) + SAME_SLOT_GAP)
        last[slot] = t
    return t + 1


def test_ten_thousand_seeded_events_match(seeded: tuple[list[EventIn], SimTrace]) -> None:
    events, trace = seeded
    assert compare_trace(events, trace, ReferenceOrderTable(N_SLOTS)) is None
    # One event per clock, except that an event is accepted no sooner than SAME_SLOT_GAP
    # cycles after the previous one for its slot; the pipeline latency once at the end.
    assert trace.cycles == expected_cycles([e.slot for e in events]) + LATENCY_CYCLES
    assert sum(r.accepted for r in trace.results) > len(events) * 0.4  # deep lifecycles, not noise


def test_every_table_entry_is_exercised(seeded: tuple[list[EventIn], SimTrace]) -> None:
    events, trace = seeded
    taken: set[tuple[int, int]] = set()
    refused: set[tuple[int, int]] = set()
    states = [0] * N_SLOTS
    for ev, res in zip(events, trace.results, strict=True):
        if not ev.load and res.event < spec.N_EVENTS:
            pair = (states[ev.slot], res.event)
            (taken if res.accepted else refused).add(pair)
        states[ev.slot] = res.state
    assert taken == {(int(s), int(e)) for s, e in spec.TRANSITIONS}
    all_pairs = {(s, e) for s in range(spec.N_STATES) for e in range(spec.N_EVENTS)}
    # FILLED has no leaves, so every fill there is derived as FILL_FULL, never FILL_PARTIAL.
    unreachable = {(int(spec.OrderState.FILLED), int(spec.OrderEvent.FILL_PARTIAL))}
    assert refused >= all_pairs - taken - unreachable


def _mutations() -> list[tuple[str, SpecTables]]:
    """One modified copy of the tables per allowed entry (next state) and per action bit."""
    out: list[tuple[str, SpecTables]] = []
    for (s, e), t in sorted(spec.TRANSITIONS.items()):
        nxt = spec.NEXT_STATE.copy()
        nxt[s, e] = (int(t.next_state) + 1) % spec.N_STATES if t.next_state is not None else int(s)
        out.append((f"next_state[{s.name},{e.name}]", SpecTables(nxt, spec.ACTIONS, spec.REASONS)))
    for bit in spec.Action:
        if bit is spec.Action.NONE:
            continue
        acts = spec.ACTIONS.copy()
        s, e = next((s, e) for (s, e), t in sorted(spec.TRANSITIONS.items()) if t.actions & bit)
        acts[s, e] ^= int(bit)
        out.append(
            (
                f"actions[{s.name},{e.name}] ^ {bit.name}",
                SpecTables(spec.NEXT_STATE, acts, spec.REASONS),
            )
        )
    reasons = spec.REASONS.copy()
    reasons[spec.OrderState.FILLED, spec.OrderEvent.CANCEL] = spec.Reason.INVALID_TRANSITION
    out.append(("reasons[FILLED,CANCEL]", SpecTables(spec.NEXT_STATE, spec.ACTIONS, reasons)))
    return out


@pytest.mark.parametrize(("name", "tables"), _mutations(), ids=[n for n, _ in _mutations()])
def test_a_table_change_the_hdl_does_not_follow_is_caught(
    name: str, tables: SpecTables, seeded: tuple[list[EventIn], SimTrace]
) -> None:
    events, trace = seeded
    problem = compare_trace(events, trace, ReferenceOrderTable(N_SLOTS, tables=tables))
    assert problem is not None, f"modified {name} went unnoticed"


def test_mismatch_raises_with_vcd(tmp_path: Path) -> None:
    nxt = spec.NEXT_STATE.copy()
    nxt[spec.OrderState.INITIALIZED, spec.OrderEvent.SUBMIT] = spec.OrderState.SUBMITTED
    events = [EventIn(slot=0, load=True, qty=5), EventIn(slot=0, event=spec.OrderEvent.SUBMIT)]
    with pytest.raises(HdlMismatchError, match=r"(?s)event #1 .*VCD trace") as info:
        check_against_reference(
            events, CFG, tables=SpecTables(nxt, spec.ACTIONS, spec.REASONS), vcd_dir=tmp_path
        )
    vcds = list(tmp_path.glob("*.vcd"))
    assert len(vcds) == 1 and vcds[0].stat().st_size > 0
    assert "hdl:" in str(info.value)


def test_run_equivalence_reports_counts() -> None:
    report = run_equivalence(500, seed=7, n_slots=N_SLOTS, batch=200)  # 3 batches
    assert report.n_events == 500
    assert report.accepted + report.refused == 500
    assert report.accepted > 100
    assert report.cycles_per_event >= 1.0  # idle/stall patterns only ever add cycles
