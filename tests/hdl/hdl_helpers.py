"""Shared by the hdl tests: hypothesis intents turned into realistic event streams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st

from hdl.reference import EventIn, ReferenceOrderTable
from order_kernel import spec

N_SLOTS = 16
ALLOWED = [np.flatnonzero(spec.REASONS[s] == 0) for s in range(spec.N_STATES)]

Intent = tuple[int, int, int, int, int]
intents = st.tuples(
    st.integers(0, N_SLOTS - 1),  # slot (folded onto 4 hot slots below half the time)
    st.sampled_from([1, 1, 1, 1, 0, 2]),  # 0 load, 1 legal event, 2 any 4-bit code
    st.integers(0, 255),  # which event / order fields
    st.integers(0, 3),  # qty kind: exact leaves, leaves + k, small, any 32-bit
    st.integers(0, (1 << 32) - 1),
)


def realize(raw: Sequence[Intent], n_hot: int | None = None) -> list[EventIn]:
    """Turn intents into events with a shadow reference model (so 'legal' means legal now).

    By default half the picks fold onto 4 hot slots; `n_hot` folds every pick onto that
    many slots, so most events land within the pipeline's same-slot window.
    """
    shadow = ReferenceOrderTable(N_SLOTS)
    out: list[EventIn] = []
    for slot_pick, kind, pick, qty_kind, value in raw:
        if n_hot is not None:
            slot = slot_pick % n_hot
        else:
            slot = slot_pick % 4 if slot_pick < N_SLOTS // 2 else slot_pick
        cur = shadow.slots[slot]
        qty = [cur.leaves_qty, cur.leaves_qty + value % 3, value % 24, value][qty_kind]
        qty = min(qty, (1 << 32) - 1)  # the event port is 32 bits wide: "leaves + k" saturates
        if kind == 0:
            ev = EventIn(
                slot=slot,
                load=True,
                side=pick & 1,
                order_type=(pick >> 1) & 3,
                qty=qty,
                price=value & 0xFFFF,
                trigger_price=pick,
            )
        else:
            legal = ALLOWED[cur.state]
            code = (
                int(legal[pick % len(legal)])
                if kind == 1 and len(legal)
                else pick % (1 << spec.EVENT_BITS)
            )
            ev = EventIn(slot=slot, event=code, qty=qty, price=value & 0xFFFFF, trigger_price=pick)
        shadow.step(ev)
        out.append(ev)
    return out
