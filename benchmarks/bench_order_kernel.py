"""Order kernel benchmarks, as ratios against baselines measured in the same run.

1. Batch transitions/s of `machine.apply_batch` (table lookup + fill/position/amend work) vs a
   bare numba loop that only looks up NEXT_STATE for the same events (target >= 0.3x), on two
   workloads: a 4096-slot store reused pass after pass (cache-resident, what a backtest's
   kernel does with its free list) and 250k distinct slots (streams a 42 MB store once).
   `machine._apply_batch_reference` (the one-event-at-a-time body `apply_event` runs, which
   was `apply_batch` before the packed fast path) runs interleaved in the same repeats as the
   "before" row. Each row also prints the spread of the per-repeat ratios (min-max).
2. Single-event calls/s of `OrderMachine.step` from Python vs a call of an empty @njit function
   with the same number of arguments (the floor of any Python -> numba call).
3. `OrderKernel.handle` commands/s for a submit/bar/cancel mix (informative: no baseline).
4. Round trip strategy -> order-kernel server -> ack (a Reply carrying the events) over
   inproc, ipc and tcp loopback, p50/p99/p99.9, against a raw pyzmq ROUTER echo of the same
   command bytes over the same transport (DESIGN target: ipc p99 <= 1.3x the echo), and
   against `LegacyServer`, the server loop as it was before the round-trip work (the "before"
   row: same kernel, log and wire bytes). The servers log every command and event
   (hash-chained, flushed before each ack, fsync policy "batch"). For ipc/tcp the servers and
   the echo run in forked child processes, for inproc in threads (one GIL: indicative only);
   all run at once and the client alternates between them every CHUNK (1,000) messages, so
   all see the same background load on this shared 2-core host.
   `RT_N` messages per cell (default 100000; RT_N=20000 for a quick run); `RT_TRANSPORTS`
   (default inproc,ipc,tcp).

Run: `python benchmarks/bench_order_kernel.py` (prints a markdown table).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq
from numba import njit

from order_kernel import messages as m
from order_kernel import spec, wire
from order_kernel.instruments import InstrumentSpec
from order_kernel.kernel import OrderKernel
from order_kernel.machine import (
    _ACTIONS,
    _NEXT_STATE,
    _REASONS,
    OrderMachine,
    _apply_batch_reference,
    apply_batch,
)
from order_kernel.server import SESSION_ID_RE, Server, _Syncer
from order_kernel.spec import OrderEvent, OrderType, Side
from order_kernel.venues.sim import SimVenue

N_ORDERS = int(os.environ.get("NORD", "250000"))
WORKING_SET = 4096  # OrderKernel's default capacity
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


REPEAT = 15  # best of: the minimum is the run least disturbed by other jobs on the host


def lifecycle_events(n_orders: int = N_ORDERS) -> tuple[np.ndarray, ...]:
    """SUBMIT, ACCEPT, partial fill, full fill for each of `n_orders` orders on slots 0..n-1."""
    rng = np.random.default_rng(0)
    per = [OrderEvent.SUBMIT, OrderEvent.ACCEPT, OrderEvent.FILL_PARTIAL, OrderEvent.FILL_FULL]
    slots = np.repeat(np.arange(n_orders, dtype=np.int64), len(per))
    events = np.tile(np.array(per, dtype=np.int64), n_orders)
    qtys = np.tile(np.array([0, 0, 4, 6], dtype=np.int64), n_orders)
    prices = np.where(
        events >= OrderEvent.FILL_PARTIAL, rng.integers(900, 1100, len(slots)), 0
    ).astype(np.int64)
    fees = np.where(events >= OrderEvent.FILL_PARTIAL, 1, 0).astype(np.int64)
    return slots, events, qtys, prices, fees


def fresh_machine(n_slots: int = N_ORDERS) -> OrderMachine:
    mach = OrderMachine(n_slots, 4)
    reset_store(mach)
    return mach


def reset_store(mach: OrderMachine) -> None:
    """Every slot a fresh 10-lot order (what alloc does when the kernel reuses a slot)."""
    o = mach.orders
    o[:, :] = 0
    o[0, :] = spec.OrderState.INITIALIZED
    o[5, :] = 10  # F_QTY
    o[2, :] = np.arange(o.shape[1]) % 2  # F_SIDE
    o[11, :] = -1  # F_OCO
    o[12, :] = np.arange(o.shape[1]) % 4  # F_SYMBOL


@dataclass(frozen=True)
class BatchResult:
    """Best-of-REPEAT events/s of each loop, and the spread of the per-repeat ratios."""

    fast: float
    reference: float
    bare: float
    fast_ratios: tuple[float, float]  # (min, max) of fast/bare over the interleaved repeats
    reference_ratios: tuple[float, float]


def bench_batch(n_slots: int = N_ORDERS) -> BatchResult:
    """N_ORDERS orders (4 events each) on a store of `n_slots` slots, in passes of n_slots
    orders with the store reset between passes (untimed, for every loop): n_slots = N_ORDERS
    streams one 42 MB store once; n_slots = 4096 reuses a cache-resident store, as the
    kernel's lowest-first free list does in a backtest."""
    passes = max(1, N_ORDERS // n_slots)
    slots, events, qtys, prices, fees = lifecycle_events(n_slots)
    n = len(slots)
    out_r = np.zeros(n, dtype=np.uint8)
    out_s = np.zeros(n, dtype=np.uint8)
    trig = np.zeros(n, dtype=np.int64)

    def run_kernel(fn: Any) -> float:
        mach = fresh_machine(n_slots)
        dt = 0.0
        for _ in range(passes):
            reset_store(mach)
            t = time.perf_counter()
            refused = fn(
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
            dt += time.perf_counter() - t
            assert refused == 0
        return dt

    def run_bare() -> float:
        states = np.zeros(n_slots, dtype=np.uint8)
        dt = 0.0
        for _ in range(passes):
            states[:] = 0
            t = time.perf_counter()
            bare_lookup(_NEXT_STATE, states, slots, events)
            dt += time.perf_counter() - t
        return dt

    run_kernel(apply_batch)
    run_kernel(_apply_batch_reference)
    run_bare()
    fast_t, ref_t, bare_t = [], [], []
    for _ in range(REPEAT):  # interleaved: all loops see the same background load
        fast_t.append(run_kernel(apply_batch))
        ref_t.append(run_kernel(_apply_batch_reference))
        bare_t.append(run_bare())
    fast_r = [b / f for f, b in zip(fast_t, bare_t, strict=True)]
    ref_r = [b / f for f, b in zip(ref_t, bare_t, strict=True)]
    total = passes * n
    return BatchResult(
        total / min(fast_t),
        total / min(ref_t),
        total / min(bare_t),
        (min(fast_r), max(fast_r)),
        (min(ref_r), max(ref_r)),
    )


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
#: RT_TRANSPORTS=ipc for the round trip over ipc only
RT_TRANSPORTS = os.environ.get("RT_TRANSPORTS", "inproc,ipc,tcp").split(",")
CHUNK = 1000  # messages per alternation between the echo and the kernel
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


class LegacyServer(Server):
    """The server loop as it was before the round-trip work (the "before" baseline, run in
    the same invocation): zmq.Poller over ROUTER + XPUB, a readiness query per message, every
    reply sent after the batch, session id decoded and regex-checked per command, automatic
    garbage collection inside commands. Kernel, log and wire bytes are shared with `Server`."""

    def handle_frames(self, frames: list[bytes]) -> tuple[str, bytes, list[bytes]]:
        """Process one inbound message `[session_id, command]`; returns (session, reply, events)."""
        if len(frames) != 2:
            return (
                "",
                self._transport_denial(
                    "", f"expected 2 frames [session_id, command], got {len(frames)}"
                ),
                [],
            )
        try:
            sid = frames[0].decode()
        except UnicodeDecodeError:
            sid = ""
        if not SESSION_ID_RE.match(sid):
            return (
                "",
                self._transport_denial(
                    "", f"session id {frames[0][:80]!r} must match {SESSION_ID_RE.pattern}"
                ),
                [],
            )
        kernel = self._session(sid)
        payload = frames[1]
        try:
            cmd = m.decode_command(payload)
        except (msgspec.MsgspecError, ValueError):
            kernel.handle_bytes(payload)  # logs the bytes, answers MALFORMED_MESSAGE
            kind, ref = wire.KIND_COMMAND, -1
        else:
            kernel.handle_raw(cmd, payload)
            kind, ref = wire.ref_kind(cmd), cmd.seq
        raws = kernel.last_encoded  # encoded once, for the log and the wire
        if self._live is not None and kernel.outbox:  # the exchange's answers join the reply
            raws = raws + [m.encode(ev) for ev in self._live.dispatch(sid, kernel)]
        reply = wire.encode(wire.Reply(sid, kind, ref, [msgspec.Raw(r) for r in raws]))
        return sid, reply, raws

    def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until `stop()`; then close logs and sockets. `ready` is called once bound."""
        if self._router is None:
            self.open_sockets()
        router, pub = self._router, self._pub
        assert router is not None and pub is not None
        interval_ns = self.config.heartbeat_interval_ms * 1_000_000
        next_beat = self._clock()
        next_poll = next_beat
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pub, zmq.POLLIN)
        if ready is not None:
            ready()
        try:
            while not self._stop:
                now = self._clock()
                if now >= next_beat:
                    self._beat += 1
                    pub.send_multipart(
                        [
                            wire.HEARTBEAT_TOPIC,
                            wire.encode(wire.ServerBeat(self._beat, len(self.sessions))),
                        ]
                    )
                    next_beat = now + interval_ns
                wake = next_beat
                if self._live is not None:
                    if now >= next_poll:
                        self._publish_polled(pub)
                        next_poll = now + self._live.poll_interval_ns
                    wake = min(wake, next_poll)
                wait_ms = max(1, min(100, (wake - now) // 1_000_000))
                ready_socks = poller.poll(wait_ms)
                if not ready_socks:
                    continue
                for sock, _ in ready_socks:
                    if sock is router:
                        self._drain(router, pub, first_ready=True)
                    else:
                        self._read_subscriptions(pub)
        finally:
            self.close()

    def _drain(
        self, router: zmq.Socket[bytes], pub: zmq.Socket[bytes], *, first_ready: bool = False
    ) -> None:
        """One group commit: handle waiting commands, make the logs durable, then answer.
        `first_ready`: the poller just said a message is waiting (skip one readiness check)."""
        out: list[tuple[bytes, str, bytes, list[bytes]]] = []
        touched: dict[str, OrderKernel] = {}
        for k in range(self.max_batch):
            # EVENTS is a cheap getsockopt; a zmq.Again exception per batch is not
            if not (first_ready and k == 0) and not int(router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                break
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[1:] == [wire.PING]:
                out.append((frames[0], "", wire.PONG, []))
                continue
            sid, reply, events = self.handle_frames(frames[1:])
            out.append((frames[0], sid, reply, events))
            if sid:
                touched[sid] = self.sessions[sid]
        for kernel in touched.values():
            if kernel.log is not None:  # "always" already fsynced each record
                kernel.log.flush()
        # subscriptions that reached the XPUB before we publish count, as they would on a PUB
        if any(events for _, _, _, events in out):
            self._read_subscriptions(pub)
        for identity, sid, reply, events in out:
            if reply is wire.PONG:
                router.send_multipart([identity, wire.PONG])
                continue
            router.send_multipart([identity, wire.REPLY, reply])
            topic = sid.encode()
            if events and self._has_subscriber(topic):
                for ev in events:
                    pub.send_multipart([topic, ev])
        if self.config.fsync == "batch":  # off the reply path and off the loop's thread
            for kernel in touched.values():
                if kernel.log is not None and kernel.log.unsynced >= self.SYNC_EVERY:
                    fd = kernel.log.handoff_sync()
                    if fd is not None:
                        if self._syncer is None:
                            self._syncer = _Syncer(self._report)
                        self._syncer.submit(fd)


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


def _serve(
    ctx: Any, endpoint: str, workdir: Path, stop: threading.Event | None, cls: type[Server]
) -> None:
    from order_kernel.config import parse_config

    workdir.mkdir(exist_ok=True)
    config = parse_config(RT_CONFIG, base_dir=str(workdir))
    srv = cls(config, endpoint, clock_ns=time.monotonic_ns, context=ctx)
    if stop is None:
        signal.signal(signal.SIGTERM, lambda *_: srv.stop())
    else:

        def stop_when_told() -> None:
            stop.wait()
            srv.stop()

        threading.Thread(target=stop_when_told, daemon=True).start()
    srv.serve()


def _dealer(ctx: Any, endpoint: str) -> Any:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 20_000)  # a dead server raises zmq.Again, never hangs
    dealer.connect(endpoint)
    return dealer


def _client_chunks(ctx: Any, endpoints: dict[str, str], payloads: list[bytes]) -> dict[str, Any]:
    """Send the same payloads to every endpoint, alternating chunks of CHUNK messages, so the
    echo and the kernel see the same background load (this 2-core host is shared)."""
    dealers = {w: _dealer(ctx, ep) for w, ep in endpoints.items()}
    time.sleep(0.2)  # connections established before the first timed message
    lat = {w: np.empty(len(payloads), dtype=np.int64) for w in endpoints}
    clock = time.perf_counter_ns
    sid = b"rt"
    for start in range(0, len(payloads), CHUNK):
        for w, d in dealers.items():
            out = lat[w]
            for k in range(start, min(start + CHUNK, len(payloads))):
                t0 = clock()
                d.send_multipart([sid, payloads[k]])
                d.recv_multipart()
                out[k] = clock() - t0
    for d in dealers.values():
        d.close()
    return lat


#: the round-trip workers: the raw echo (baseline), the server before and after this work
RT_SERVERS: dict[str, type[Server]] = {"before": LegacyServer, "kernel": Server}
RT_TCP_PORTS = {"echo": 47311, "before": 47313, "kernel": 47315}  # +1: each server's PUB


def round_trip(transport: str, n: int) -> dict[str, np.ndarray]:
    """Latencies (ns) of n request/reply round trips against the raw echo, the server before
    this work (`LegacyServer`) and the current one, all running at once, measured in
    alternating chunks."""
    payloads = rt_commands(n)
    workers = ["echo", *RT_SERVERS]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        if transport == "inproc":
            endpoints = {w: f"inproc://{w}" for w in workers}
        elif transport == "ipc":
            endpoints = {w: f"ipc://{work}/{w}.sock" for w in workers}
        else:
            endpoints = {w: f"tcp://127.0.0.1:{RT_TCP_PORTS[w]}" for w in workers}
        if transport == "inproc":
            ctx = zmq.Context()
            stop = threading.Event()
            ths = [threading.Thread(target=_echo, args=(ctx, endpoints["echo"], stop))]
            ths += [
                threading.Thread(target=_serve, args=(ctx, endpoints[w], work / w, stop, cls))
                for w, cls in RT_SERVERS.items()
            ]
            for th in ths:
                th.start()
            time.sleep(0.3)
            try:
                lat = _client_chunks(ctx, endpoints, payloads)
            finally:
                stop.set()
                for th in ths:
                    th.join()
                ctx.term()
            return lat
        pids: dict[str, int] = {}
        for which, ep in endpoints.items():
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    cctx = zmq.Context()
                    if which == "echo":
                        _echo(cctx, ep, None)
                    else:
                        _serve(cctx, ep, work / which, None, RT_SERVERS[which])
                    code = 0
                finally:
                    os._exit(code)
            pids[which] = pid
        try:
            time.sleep(0.5)
            ctx = zmq.Context()
            lat = _client_chunks(ctx, endpoints, payloads)
            ctx.term()
        finally:
            for which, pid in pids.items():
                os.kill(pid, signal.SIGKILL if which == "echo" else signal.SIGTERM)
                os.waitpid(pid, 0)
        return lat


def main() -> None:
    batches = [(f"{WORKING_SET}-slot store reused", bench_batch(WORKING_SET))]
    batches.append((f"{N_ORDERS:,} distinct slots", bench_batch()))
    single, empty = bench_single()
    handle = bench_handle()
    rts = [(tr, round_trip(tr, RT_N)) for tr in RT_TRANSPORTS]
    print("| benchmark | ours | baseline | ratio |")
    print("|---|---:|---:|---:|")
    for name, r in batches:
        for label, rate, (lo, hi) in (
            ("apply_batch", r.fast, r.fast_ratios),
            ("reference loop (before)", r.reference, r.reference_ratios),
        ):
            print(
                f"| batch transitions/s, {name} ({label} vs bare NEXT_STATE loop; per-repeat {lo:.2f}-{hi:.2f}x) | {rate / 1e6:.1f} M | {r.bare / 1e6:.1f} M | {rate / r.bare:.2f}x |"
            )
    print(
        f"| single-event calls/s from Python (step vs empty @njit call) | {single / 1e6:.2f} M | {empty / 1e6:.2f} M | {single / empty:.2f}x |"
    )
    print(
        f"| OrderKernel.handle commands/s (bar/submit/cancel-all mix) | {handle / 1e3:.1f} k | - | - |"
    )
    print(f"\nRound trip strategy -> kernel server -> ack, {RT_N:,} messages per cell (µs)\n")
    print(
        "| transport | server | p50 | p90 | p99 | p99.9 | p50 ratio | p90 ratio | p99 ratio | > 1 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tr, lat in rts:
        e = np.percentile(lat["echo"], [50, 90, 99, 99.9]) / 1e3
        for w, label in (("echo", "raw pyzmq echo"), ("before", "before"), ("kernel", "kernel")):
            o = np.percentile(lat[w], [50, 90, 99, 99.9]) / 1e3
            cells = " | ".join(f"{v:.1f}" for v in o)
            ratios = " | ".join(f"{o[i] / e[i]:.2f}x" for i in range(3))
            print(f"| {tr} | {label} | {cells} | {ratios} | {(lat[w] > 1e6).mean():.2%} |")


if __name__ == "__main__":
    main()
