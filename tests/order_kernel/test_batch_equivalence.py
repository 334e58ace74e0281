"""`apply_batch`'s packed fast path leaves exactly what `apply_event` leaves, event by event.

`apply_batch` runs `machine._apply_batch_packed` (one packed table word per event, the last
order's state kept in a register, a flat slot-major view of the store); `apply_event` runs the
readable reference body. These tests drive both over the same random event streams (bad slots,
bad event codes, zero/negative quantities and prices, overfills, amends racing fills) and
compare the whole store, the positions, the counters and every per-event output.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from order_kernel import machine as mk
from order_kernel import spec
from order_kernel.machine import F_STATE, OrderMachine
from order_kernel.spec import OrderEvent

E = OrderEvent
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

CAPACITY = 5
N_SYMBOLS = 2
# lifecycle events weighted so random streams reach the deep states (fills racing a cancel or
# an amend, PREV restores), plus codes outside the event range
EVENT_POOL = [
    *[E.SUBMIT] * 3,
    E.DENY,
    *[E.ACCEPT] * 3,
    E.REJECT,
    *[E.TRIGGER] * 2,
    *[E.FILL_PARTIAL] * 4,
    *[E.FILL_FULL] * 2,
    *[E.CANCEL] * 2,
    E.CANCEL_ACK,
    *[E.CANCEL_REJECT] * 2,
    *[E.AMEND] * 3,
    *[E.AMEND_ACK] * 2,
    E.AMEND_REJECT,
    E.EXPIRE,
]
BAD_EVENTS = [-1, spec.N_EVENTS, 99]

Stream = tuple[I64, I64, I64, I64, I64, I64]


def _machine(orders: list[tuple[int, int, int, int]]) -> OrderMachine:
    """A machine with one allocated order per (qty, side, symbol, order_type) tuple."""
    mach = OrderMachine(CAPACITY, N_SYMBOLS)
    for qty, side, symbol, order_type in orders:
        mach.alloc(symbol=symbol, side=side, order_type=order_type, tif=0, qty=qty, price=100)
    return mach


def _run_batch(mach: OrderMachine, stream: Stream) -> tuple[int, U8, U8]:
    slots, events, qtys, prices, triggers, fees = stream
    out_r = np.full(len(slots), 0xAA, dtype=np.uint8)
    out_s = np.full(len(slots), 0xAA, dtype=np.uint8)
    refused = mk.apply_batch(
        mk._NEXT_STATE,
        mk._ACTIONS,
        mk._REASONS,
        mach.orders,
        mach.positions,
        mach.counters,
        slots,
        events,
        qtys,
        prices,
        triggers,
        fees,
        out_r,
        out_s,
    )
    return int(refused), out_r, out_s


def _run_events(mach: OrderMachine, stream: Stream) -> tuple[int, U8, U8]:
    """The oracle: `apply_event` once per event, outputs rebuilt as the batch defines them."""
    slots, events, qtys, prices, triggers, fees = stream
    out_r = np.zeros(len(slots), dtype=np.uint8)
    out_s = np.zeros(len(slots), dtype=np.uint8)
    for i in range(len(slots)):
        slot = int(slots[i])
        out_r[i] = mk.apply_event(
            mk._NEXT_STATE,
            mk._ACTIONS,
            mk._REASONS,
            mach.orders,
            mach.positions,
            mach.counters,
            slot,
            int(events[i]),
            int(qtys[i]),
            int(prices[i]),
            int(triggers[i]),
            int(fees[i]),
        )
        out_s[i] = mach.orders[F_STATE, slot] if 0 <= slot < CAPACITY else 0xFF
    return int(np.count_nonzero(out_r)), out_r, out_s


def _assert_same(orders: list[tuple[int, int, int, int]], stream: Stream) -> None:
    fast, oracle = _machine(orders), _machine(orders)
    got = _run_batch(fast, stream)
    want = _run_events(oracle, stream)
    assert got[0] == want[0], "refused count"
    np.testing.assert_array_equal(got[1], want[1], err_msg="out_reasons")
    np.testing.assert_array_equal(got[2], want[2], err_msg="out_states")
    np.testing.assert_array_equal(fast.orders, oracle.orders, err_msg="order store")
    np.testing.assert_array_equal(fast.positions, oracle.positions, err_msg="positions")
    np.testing.assert_array_equal(fast.counters, oracle.counters, err_msg="counters")


order_st = st.tuples(
    st.integers(1, 10), st.integers(0, 1), st.integers(0, N_SYMBOLS - 1), st.integers(0, 3)
)
event_st = st.tuples(
    st.one_of(st.integers(0, CAPACITY - 1), st.sampled_from([-1, CAPACITY, 1 << 40])),
    st.one_of(st.sampled_from(EVENT_POOL).map(int), st.sampled_from(BAD_EVENTS)),
    st.integers(-1, 12),  # qty: <= 0 refused, above leaves overfills
    st.sampled_from([-1, 0, 1, 97, 100, 103]),  # price
    st.sampled_from([-1, 0, 95]),  # trigger
    st.integers(0, 2),  # fee
)


def _stream(rows: list[tuple[int, int, int, int, int, int]]) -> Stream:
    cols = np.array(rows, dtype=np.int64).reshape(len(rows), 6).T
    return tuple(np.ascontiguousarray(c) for c in cols)  # type: ignore[return-value]


@settings(max_examples=300)
@given(st.lists(order_st, min_size=1, max_size=CAPACITY), st.lists(event_st, max_size=120))
def test_batch_equals_apply_event_on_random_streams(
    orders: list[tuple[int, int, int, int]], rows: list[tuple[int, int, int, int, int, int]]
) -> None:
    _assert_same(orders, _stream(rows))


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1))
def test_batch_equals_apply_event_on_long_seeded_streams(seed: int) -> None:
    """Long streams (3,000 events on 5 orders) reach every state, including PREV restores
    after fills raced a cancel or an amend, and runs of events on one slot."""
    rng = np.random.default_rng(seed)
    n = 3000
    orders = [
        (int(rng.integers(5, 40)), int(rng.integers(0, 2)), int(rng.integers(0, N_SYMBOLS)), 2)
        for _ in range(CAPACITY)
    ]
    slots = rng.integers(0, CAPACITY, n)
    slots[rng.random(n) < 0.5] = slots[0]  # long runs on one slot (the register-kept state)
    slots[rng.random(n) < 0.01] = -1
    events = np.array(EVENT_POOL, dtype=np.int64)[rng.integers(0, len(EVENT_POOL), n)]
    events[rng.random(n) < 0.01] = spec.N_EVENTS
    stream = (
        slots.astype(np.int64),
        events,
        rng.integers(-1, 8, n).astype(np.int64),
        rng.integers(-1, 120, n).astype(np.int64),
        rng.integers(-1, 120, n).astype(np.int64),
        rng.integers(0, 3, n).astype(np.int64),
    )
    _assert_same(orders, stream)


def test_benchmark_lifecycle_workload_is_equal_and_fully_applied() -> None:
    """The benchmark's workload (SUBMIT, ACCEPT, partial, full fill per order) on both paths."""
    n_orders = 64
    per = [E.SUBMIT, E.ACCEPT, E.FILL_PARTIAL, E.FILL_FULL]
    slots = np.repeat(np.arange(n_orders, dtype=np.int64), 4) % CAPACITY
    events = np.tile(np.array(per, dtype=np.int64), n_orders)
    qtys = np.tile(np.array([0, 0, 4, 6], dtype=np.int64), n_orders)
    prices = np.where(events >= E.FILL_PARTIAL, 100 + np.arange(len(slots)) % 7, 0)
    stream = (slots, events, qtys, prices.astype(np.int64), np.zeros_like(qtys), qtys % 2)
    orders = [(10, i % 2, i % N_SYMBOLS, 1) for i in range(CAPACITY)]
    _assert_same(orders, stream)
    mach = _machine(orders)
    refused, reasons, states = _run_batch(mach, stream)
    # the first CAPACITY orders complete; later orders hit FILLED slots and are refused
    assert refused > 0
    assert list(reasons[:4]) == [0, 0, 0, 0]
    assert list(states[:4]) == [
        spec.OrderState.PENDING,
        spec.OrderState.SUBMITTED,
        spec.OrderState.PARTIALLY_FILLED,
        spec.OrderState.FILLED,
    ]


@settings(max_examples=60)
@given(st.lists(order_st, min_size=1, max_size=CAPACITY), st.lists(event_st, max_size=60))
def test_store_layouts_other_than_slot_major_give_the_same_results(
    orders: list[tuple[int, int, int, int]], rows: list[tuple[int, int, int, int, int, int]]
) -> None:
    """A C-contiguous (field-major) store takes the reference loop; same results as the
    slot-major store on the packed loop."""
    stream = _stream(rows)
    slot_major = _machine(orders)
    field_major = _machine(orders)
    field_major.orders = np.ascontiguousarray(field_major.orders)
    assert field_major.orders.flags.c_contiguous and not slot_major.orders.flags.c_contiguous
    a = _run_batch(slot_major, stream)
    b = _run_batch(field_major, stream)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(slot_major.orders, field_major.orders)
    np.testing.assert_array_equal(slot_major.positions, field_major.positions)
    np.testing.assert_array_equal(slot_major.counters, field_major.counters)


def test_packed_table_decodes_to_the_spec_tables() -> None:
    """Every (state, event) word carries the spec's next state, reason and actions, and the
    path bits agree with what the reference body would do for that pair."""
    packed = mk.pack_tables(mk._NEXT_STATE, mk._ACTIONS, mk._REASONS)
    assert packed.shape == (256,) and packed.dtype == np.uint32
    machine_work = int(
        spec.Action.APPLY_FILL
        | spec.Action.APPLY_AMEND
        | spec.Action.SAVE_PREV
        | spec.Action.MARK_PREV_PARTIAL
    )
    for s in range(16):
        for e in range(16):
            word = int(packed[s * 16 + e])
            paths = [bool(word & bit) for bit in (mk._T_FILL, mk._T_REFUSE, mk._T_WORK)]
            assert sum(paths) <= 1, (s, e)
            if s >= spec.N_STATES or e >= spec.N_EVENTS:
                assert word & mk._T_REFUSE and word & 0xFF == s, (s, e)
                continue
            assert word & 0xFF == spec.NEXT_STATE[s, e]
            assert (word >> 8) & 0xFF == spec.REASONS[s, e]
            act = (word >> 16) & 0x1FF
            assert act == spec.ACTIONS[s, e]
            accepted = spec.REASONS[s, e] == 0
            restores = spec.NEXT_STATE[s, e] == spec.PREV
            plain = accepted and not act & machine_work and not restores
            plain = plain and e not in (E.AMEND, E.TRIGGER)
            assert (not any(paths)) == plain, (s, e)
            assert bool(word & mk._T_REFUSE) == (not accepted)
            pure_fill = act & machine_work == spec.Action.APPLY_FILL and not restores
            pure_fill = pure_fill and e in (E.FILL_PARTIAL, E.FILL_FULL)
            assert bool(word & mk._T_FILL) == (accepted and pure_fill), (s, e)
