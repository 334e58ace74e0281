"""The transition table as a graph: every state reachable, terminals absorbing, every life ends."""

from __future__ import annotations

import networkx as nx

from order_kernel import spec
from order_kernel.spec import PREV, TERMINAL_STATES, TRANSITIONS, Action, OrderEvent, OrderState


def _graph() -> nx.DiGraph:
    """Edges of the table; a PREV edge goes to every state that can have been saved before it."""
    saved_from: dict[OrderState, set[OrderState]] = {}
    for (src, _), t in TRANSITIONS.items():
        if t.actions & Action.SAVE_PREV and t.next_state is not None:
            saved_from.setdefault(t.next_state, set()).add(src)
    for (src, _), t in TRANSITIONS.items():
        if t.actions & Action.MARK_PREV_PARTIAL:
            saved_from.setdefault(src, set()).add(OrderState.PARTIALLY_FILLED)
    g = nx.DiGraph()
    g.add_nodes_from(OrderState)
    for (src, _), t in TRANSITIONS.items():
        targets = saved_from.get(src, set()) if t.next_state is None else {t.next_state}
        for dst in targets:
            g.add_edge(src, dst)
    return g


def test_every_state_is_reachable_from_initialized() -> None:
    reachable = nx.descendants(_graph(), OrderState.INITIALIZED) | {OrderState.INITIALIZED}
    assert reachable == set(OrderState)


def test_terminal_states_are_absorbing_and_every_state_can_end() -> None:
    g = _graph()
    for s in TERMINAL_STATES:
        assert g.out_degree(s) == 0
        assert all(spec.REASONS[s, e] == spec.Reason.ORDER_TERMINAL for e in OrderEvent)
    for s in set(OrderState) - TERMINAL_STATES:
        assert nx.descendants(g, s) & TERMINAL_STATES, f"{s.name} can never finish"


def test_prev_only_where_a_state_was_saved() -> None:
    for (src, _), t in TRANSITIONS.items():
        if t.next_state is None:
            assert src in (OrderState.PENDING_CANCEL, OrderState.PENDING_AMEND)
            assert spec.NEXT_STATE[src, _] == PREV


def test_dense_tables_agree_with_transitions() -> None:
    for s in OrderState:
        for e in OrderEvent:
            t = TRANSITIONS.get((s, e))
            if t is None:
                assert (
                    spec.REASONS[s, e] != 0
                    and spec.NEXT_STATE[s, e] == s
                    and spec.ACTIONS[s, e] == 0
                )
            else:
                assert spec.REASONS[s, e] == 0 and spec.ACTIONS[s, e] == t.actions


def test_encodings_fit_the_hdl_widths() -> None:
    assert max(OrderState) < 2**spec.STATE_BITS
    assert max(OrderEvent) < 2**spec.EVENT_BITS
    assert max(spec.Reason) < 2**spec.REASON_BITS
    assert max(int(a) for a in Action) < 2**spec.ACTION_BITS
