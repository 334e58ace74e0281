"""Order kernel benchmarks, as ratios against baselines measured in the same run.

1. Batch transitions/s of `machine.apply_batch` (table lookup + fill/position/amend work) vs a
   bare numba loop that only looks up NEXT_STATE for the same events (target >= 0.3x).
2. Single-event calls/s of `OrderMachine.step` from Python vs a call of an empty @njit function
   with the same number of arguments (the floor of any Python -> numba call).
3. `OrderKernel.handle` commands/s for a submit/bar/cancel mix (informative: no baseline).
4. Round trip strategy -> order-kernel server -> ack (a Reply carrying the events) over
   inproc, ipc and tcp loopback, p50/p99/p99.9, against a raw pyzmq ROUTER echo of the same
   command bytes over the same transport (DESIGN target: ipc p99 <= 1.3x the echo). The server
   logs every command and event (hash-chained, flushed before each ack, fsync policy "batch").
   For ipc/tcp the server and the echo run in a forked child process, for inproc in a thread.
   `RT_N` messages per cell (default 100000; RT_N=20000 for a quick run).

Run: `python benchmarks/bench_order_kernel.py` (prints a markdown table).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import zmq
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


RT_N = int(os.environ.get("RT_N", "100000"))
RT_CONFIG = """
log_dir = "logs"
fsync = "batch"
heartbeat_interval_ms = 1000
[[instruments]]
symbol = "BTC"
price_increment = "0.1"
size_increment = "0.001"
"""


def rt_commands(n: int) -> list[bytes]:
    """Alternating limit submit / cancel (one open order at a time), encoded once."""
    out: list[bytes] = []
    for i in range(n):
        seq = i + 1
        cmd: m.Command
        if i % 2 == 0:
            cmd = m.SubmitOrder(
                session_id="rt",
                seq=seq,
                ts_ns=seq,
                client_order_id=f"o{seq}",
                symbol="BTC",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                qty=1,
                price=1000,
            )
        else:
            cmd = m.CancelOrder(session_id="rt", seq=seq, ts_ns=seq, client_order_id=f"o{seq - 1}")
        out.append(m.encode(cmd))
    return out


def _echo(ctx: Any, endpoint: str, stop: threading.Event | None) -> None:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    try:
        while stop is None or not stop.is_set():
            if sock.poll(100, zmq.POLLIN):
                frames = sock.recv_multipart()
                sock.send_multipart([frames[0], b"R", frames[2]])
    finally:
        sock.close()


def _serve(ctx: Any, endpoint: str, workdir: Path, stop: threading.Event | None) -> None:
    from order_kernel.config import parse_config
    from order_kernel.server import Server

    config = parse_config(RT_CONFIG, base_dir=str(workdir))
    srv = Server(config, endpoint, clock_ns=time.monotonic_ns, context=ctx)
    if stop is None:
        signal.signal(signal.SIGTERM, lambda *_: srv.stop())
    else:
        threading.Thread(target=lambda: (stop.wait(), srv.stop()), daemon=True).start()
    srv.serve()


def _client_loop(ctx: Any, endpoint: str, payloads: list[bytes]) -> np.ndarray:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 20_000)  # a dead server raises zmq.Again, never hangs
    dealer.connect(endpoint)
    if not dealer.poll(0, zmq.POLLOUT):
        time.sleep(0.1)
    lat = np.empty(len(payloads), dtype=np.int64)
    clock = time.perf_counter_ns
    sid = b"rt"
    for k, p in enumerate(payloads):
        t0 = clock()
        dealer.send_multipart([sid, p])
        dealer.recv_multipart()
        lat[k] = clock() - t0
    dealer.close()
    return lat


def round_trip(transport: str, which: str, n: int) -> np.ndarray:
    """Latencies (ns) of n request/reply round trips against the raw echo or the kernel server."""
    payloads = rt_commands(n)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        if transport == "inproc":
            ctx = zmq.Context()
            endpoint = f"inproc://{which}"
            stop = threading.Event()
            if which == "echo":
                th = threading.Thread(target=_echo, args=(ctx, endpoint, stop))
            else:
                th = threading.Thread(target=_serve, args=(ctx, endpoint, work, stop))
            th.start()
            time.sleep(0.3)
            try:
                lat = _client_loop(ctx, endpoint, payloads)
            finally:
                stop.set()
                th.join()
                ctx.term()
            return lat
        endpoint = f"ipc://{work}/rt.sock" if transport == "ipc" else "tcp://127.0.0.1:47311"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                cctx = zmq.Context()
                if which == "echo":
                    _echo(cctx, endpoint, None)
                else:
                    _serve(cctx, endpoint, work, None)
                code = 0
            finally:
                os._exit(code)
        try:
            time.sleep(0.5)
            ctx = zmq.Context()
            lat = _client_loop(ctx, endpoint, payloads)
            ctx.term()
        finally:
            os.kill(pid, signal.SIGKILL if which == "echo" else signal.SIGTERM)
            os.waitpid(pid, 0)
        return lat


def main() -> None:
    batch, bare = bench_batch()
    single, empty = bench_single()
    handle = bench_handle()
    rts = [
        (tr, round_trip(tr, "echo", RT_N), round_trip(tr, "kernel", RT_N))
        for tr in ("inproc", "ipc", "tcp")
    ]
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
    print(f"\nRound trip strategy -> kernel server -> ack, {RT_N:,} messages per cell (µs)\n")
    print(
        "| transport | echo p50 | echo p99 | echo p99.9 | kernel p50 | kernel p99 | kernel p99.9 | p99 ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tr, echo, ours in rts:
        e = np.percentile(echo, [50, 99, 99.9]) / 1e3
        o = np.percentile(ours, [50, 99, 99.9]) / 1e3
        print(
            f"| {tr} | {e[0]:.1f} | {e[1]:.1f} | {e[2]:.1f} | {o[0]:.1f} | {o[1]:.1f} | {o[2]:.1f} | {o[1] / e[1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
