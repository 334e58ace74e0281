"""Order kernel benchmarks, as ratios against baselines measured in the same run.

1. Batch transitions/s of `machine.apply_batch` (table lookup + fill/position/amend work) vs a
   bare numba loop that only looks up NEXT_STATE for the same events (target >= 0.3x).
2. Single-event calls/s of `OrderMachine.step` from Python vs a call of an empty @njit function
   with the same number of arguments (the floor of any Python -> numba call).
3. `OrderKernel.handle` commands/s for a submit/bar/cancel mix (informative: no baseline).

Run: `python benchmarks/bench_order_kernel.py` (prints a markdown table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np
from numba import njit

from order_kernel import messages as m
from order_kernel import spec
from order_kernel.instruments import InstrumentSpec
from order_kernel.kernel import OrderKernel
from order_kernel.machine import _ACTIONS, _NEXT_STATE, _REASONS, OrderMachine
from order_kernel.spec import OrderEvent, OrderType, Side
from order_kernel.venues.sim import SimVenue

N_ORDERS = int(__import__("os").environ.get("NORD", "250000"))
H = 3_600_000_000_000


@njit(cache=True)
def bare_lookup(next_state, states, slots, events):  # type: ignore[no-untyped-def]
    """Baseline: table lookup only, no validation, no fills, no positions."""
    for i in range(slots.shape[0]):
        s = slots[i]
        states[s] = next_state[states[s], events[i]]
    return states[0]


@njit(cache=True)
def empty_call(a, b, c, d, e, f, g, h, i, j, k, l):  # type: ignore[no-untyped-def]  # noqa: E741
    return 0


def best(fn: Callable[[], float], repeat: int = 5) -> float:
    return min(fn() for _ in range(repeat))


def lifecycle_events() -> tuple[np.ndarray, ...]:
    """SUBMIT, ACCEPT, partial fill, full fill for each order, interleaved in blocks."""
    rng = np.random.default_rng(0)
    per = [OrderEvent.SUBMIT, OrderEvent.ACCEPT, OrderEvent.FILL_PARTIAL, OrderEvent.FILL_FULL]
    slots = np.repeat(np.arange(N_ORDERS, dtype=np.int64), len(per))
    events = np.tile(np.array(per, dtype=np.int64), N_ORDERS)
    qtys = np.tile(np.array([0, 0, 4, 6], dtype=np.int64), N_ORDERS)
    prices = np.where(
        events >= OrderEvent.FILL_PARTIAL, rng.integers(900, 1100, len(slots)), 0
    ).astype(np.int64)
    fees = np.where(events >= OrderEvent.FILL_PARTIAL, 1, 0).astype(np.int64)
    return slots, events, qtys, prices, fees


def fresh_machine() -> OrderMachine:
    mach = OrderMachine(N_ORDERS, 4)
    mach.orders[0, :] = spec.OrderState.INITIALIZED
    mach.orders[5, :] = 10  # F_QTY
    mach.orders[2, :] = np.arange(N_ORDERS) % 2  # F_SIDE
    mach.orders[12, :] = np.arange(N_ORDERS) % 4  # F_SYMBOL
    return mach


def bench_batch() -> tuple[float, float]:
    slots, events, qtys, prices, fees = lifecycle_events()
    n = len(slots)
    out_r = np.zeros(n, dtype=np.uint8)
    out_s = np.zeros(n, dtype=np.uint8)
    trig = np.zeros(n, dtype=np.int64)

    def run_kernel() -> float:
        mach = fresh_machine()
        t = time.perf_counter()
        from order_kernel.machine import apply_batch

        refused = apply_batch(
            _NEXT_STATE,
            _ACTIONS,
            _REASONS,
            mach.orders,
            mach.positions,
            mach.counters,
            slots,
            events,
            qtys,
            prices,
            trig,
            fees,
            out_r,
            out_s,
        )
        dt = time.perf_counter() - t
        assert refused == 0
        return dt

    def run_bare() -> float:
        states = np.zeros(N_ORDERS, dtype=np.uint8)
        t = time.perf_counter()
        bare_lookup(_NEXT_STATE, states, slots, events)
        return time.perf_counter() - t

    run_kernel()
    run_bare()
    return n / best(run_kernel), n / best(run_bare)


def bench_single() -> tuple[float, float]:
    n = 100_000
    mach = OrderMachine(n, 1)
    for _ in range(n):
        mach.alloc(symbol=0, side=0, order_type=1, tif=0, qty=10, price=100)
    mach.step(0, OrderEvent.SUBMIT)
    args = (
        _NEXT_STATE,
        _ACTIONS,
        _REASONS,
        mach.orders,
        mach.positions,
        mach.counters,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    empty_call(*args)

    def run_step() -> float:
        step = mach.step
        t = time.perf_counter()
        for i in range(n):
            step(i, OrderEvent.ACCEPT)  # refused after the first pass: still a full call
        return time.perf_counter() - t

    def run_empty() -> float:
        t = time.perf_counter()
        for i in range(n):
            empty_call(
                _NEXT_STATE,
                _ACTIONS,
                _REASONS,
                mach.orders,
                mach.positions,
                mach.counters,
                i,
                2,
                0,
                0,
                0,
                0,
            )
        return time.perf_counter() - t

    return n / best(run_step, 3), n / best(run_empty, 3)


def bench_handle() -> float:
    inst = {"BTC": InstrumentSpec("BTC", Decimal("0.1"), Decimal("0.001"))}
    k = OrderKernel("b", inst, SimVenue(), capacity=8192)
    seq = 0
    n_bars = 5_000
    count = 0
    t = time.perf_counter()
    for i in range(n_bars):
        k.handle(
            m.MarketBar(
                session_id="f",
                seq=0,
                ts_ns=(i + 1) * H,
                symbol="BTC",
                open=1000,
                high=1010,
                low=990,
                close=1000,
                volume=10**6,
            )
        )
        count += 1
        for j in range(3):
            seq += 1
            k.handle(
                m.SubmitOrder(
                    session_id="b",
                    seq=seq,
                    ts_ns=(i + 1) * H,
                    client_order_id=f"o{i}.{j}",
                    symbol="BTC",
                    side=Side(j % 2),
                    order_type=OrderType.LIMIT,
                    qty=1,
                    price=1000 + (j - 1) * 20,
                )
            )
            count += 1
        seq += 1
        k.handle(m.CancelAll(session_id="b", seq=seq, ts_ns=(i + 1) * H))
        count += 1
    return count / (time.perf_counter() - t)


def main() -> None:
    batch, bare = bench_batch()
    single, empty = bench_single()
    handle = bench_handle()
    print("| benchmark | ours | baseline | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| batch transitions/s (apply_batch vs bare NEXT_STATE loop) | {batch / 1e6:.1f} M | {bare / 1e6:.1f} M | {batch / bare:.2f}x |"
    )
    print(
        f"| single-event calls/s from Python (step vs empty @njit call) | {single / 1e6:.2f} M | {empty / 1e6:.2f} M | {single / empty:.2f}x |"
    )
    print(
        f"| OrderKernel.handle commands/s (bar/submit/cancel-all mix) | {handle / 1e3:.1f} k | - | - |"
    )


if __name__ == "__main__":
    main()
