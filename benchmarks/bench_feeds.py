"""Bars/s read from the parquet lake with polars vs pandas.read_parquet of the same file, and
market-data bus messages/s and latency over ipc vs raw pyzmq.

Run: ``python benchmarks/bench_feeds.py [--bars 500000] [--repeat 7] [--messages 30000]
[--latency-samples 2000] [--bus-rounds 3] [--bus-only]``. Everything is measured in one invocation, so only the ratios are
meaningful on a noisy machine. Also times the strict CSV reader (``feeds.files.read_bars``)
against ``pandas.read_csv``.

Bus: a subscriber *process* (spawned) receives a burst of ``--messages`` (throughput, no drops:
unlimited HWM) and then ``--latency-samples`` messages paced by a 200 us sleep (one-way latency from
the embedded ``time.monotonic_ns`` send time, a system-wide clock on Linux). The baseline sends a
timestamp plus padding of the same size as an encoded :class:`feeds.bus.BarEvent` through a bare
pyzmq XPUB/SUB pair; the bus path encodes a ``BarEvent`` per message (``Publisher.publish``) and
decodes and sequence-checks it (``Subscriber.recv``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pandas as pd
import polars as pl

from feeds.files import read_bars, write_bars
from feeds.lake import Lake
from feeds.synthetic import generate_bars

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z


def _median_seconds(
    readers: list[tuple[str, Callable[[], object]]], repeat: int
) -> dict[str, float]:
    """Median wall time per reader, run round-robin so machine noise hits all alike."""
    for _, fn in readers:
        fn()  # warm-up (imports, page cache)
    times: dict[str, list[float]] = {name: [] for name, _ in readers}
    for _ in range(repeat):
        for name, fn in readers:
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(ts) for name, ts in times.items()}


TOPIC = "bar.BTC-USDT.1m"
PACE_S = 200e-6


def _payload_size() -> int:
    import msgspec

    from feeds.bus import BarEvent
    from feeds.schema import Bar

    bar = Bar(ts_ns=T0, open=42000.5, high=42010.25, low=41990.0, close=42001.0, volume=12.3456)
    return len(msgspec.msgpack.encode(BarEvent(topic=TOPIC, session_id=T0, seq=1, bar=bar)))


def _subscriber(endpoint: str, mode: str, burst: int, samples: int, conn: Connection) -> None:
    """Child process: receive the burst, then the paced samples; report timings over ``conn``."""
    import zmq

    from feeds.bus import BarEvent, Subscriber

    sub = Subscriber(endpoint, [TOPIC], rcvhwm=0) if mode == "bus" else None
    ctx = zmq.Context()
    raw = None
    if sub is None:
        raw = ctx.socket(zmq.SUB)
        raw.setsockopt(zmq.RCVHWM, 0)
        raw.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        raw.setsockopt(zmq.SUBSCRIBE, b"hb")  # what Publisher.wait_for_subscribers counts
        raw.connect(endpoint)

    def next_ts() -> int:
        if raw is not None:
            return int(struct.unpack_from("q", raw.recv_multipart()[1])[0])
        assert sub is not None
        while True:
            event = sub.recv(10_000)
            if event is None:
                raise TimeoutError("subscriber timed out")
            if isinstance(event, BarEvent):
                return event.bar.ts_ns

    next_ts()  # the first handshake message proves the pipe is up
    conn.send("joined")
    for _ in range(conn.recv() - 1):  # the other handshake messages sent meanwhile
        next_ts()
    conn.send("ready")
    first = time.perf_counter()
    for _ in range(burst):
        next_ts()
    burst_s = time.perf_counter() - first
    conn.send("burst done")
    latencies = [0] * samples
    for i in range(samples):
        sent = next_ts()
        latencies[i] = time.monotonic_ns() - sent
    conn.send((burst_s, latencies))
    if sub is not None:
        sub.close()
    if raw is not None:
        raw.close(linger=0)
    ctx.term()


def _bus_round(mode: str, burst: int, samples: int, tmp: Path) -> tuple[float, list[int]]:
    """Publisher side of one mode; returns (burst seconds, one-way latencies in ns)."""
    import zmq

    from feeds.bus import Publisher
    from feeds.schema import Bar

    tmp.mkdir(exist_ok=True)
    endpoint = f"ipc://{tmp}/{mode}.sock"
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(
        target=_subscriber, args=(endpoint, mode, burst, samples, child)
    )
    pub = Publisher(endpoint, sndhwm=0, session_id=1, linger_ms=0)
    proc.start()
    try:
        pub.wait_for_subscribers(1, timeout_s=30)
        pad = b"\0" * (_payload_size() - 8)
        topic = TOPIC.encode()

        def send(ts: int) -> None:
            if mode == "bus":
                pub.publish(
                    TOPIC,
                    Bar(
                        ts_ns=ts,
                        open=42000.5,
                        high=42010.25,
                        low=41990.0,
                        close=42001.0,
                        volume=12.3456,
                    ),
                )
            else:
                pub.socket.send_multipart([topic, struct.pack("q", ts) + pad], flags=zmq.NOBLOCK)

        handshakes = 0
        while not parent.poll(0.01):  # until the subscriber saw one message
            send(0)
            handshakes += 1
        parent.recv()
        parent.send(handshakes)
        parent.recv()  # ready
        for _ in range(burst):
            send(0)
        parent.recv()  # burst received
        for _ in range(samples):
            send(time.monotonic_ns())
            time.sleep(PACE_S)  # sleep, not spin: the subscriber needs the other core
        burst_s, latencies = parent.recv()
        proc.join(timeout=30)
    finally:
        pub.close()
        if proc.is_alive():
            proc.kill()
            proc.join()
    return burst_s, latencies


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def bench_bus(burst: int, samples: int, rounds: int) -> None:
    """Print the pub/sub table: messages/s and p50/p99 latency (each the median over rounds),
    bus vs raw pyzmq, the two modes alternating so machine noise hits both alike."""
    rates: dict[str, list[float]] = {"raw": [], "bus": []}
    p50s: dict[str, list[float]] = {"raw": [], "bus": []}
    p99s: dict[str, list[float]] = {"raw": [], "bus": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in ("raw", "bus"):
                seconds, lat = _bus_round(mode, burst, samples, Path(tmp) / f"{r}")
                rates[mode].append(burst / seconds)
                p50s[mode].append(_pct(lat, 0.5))
                p99s[mode].append(_pct(lat, 0.99))
    raw_rate = statistics.median(rates["raw"])
    raw_p50, raw_p99 = statistics.median(p50s["raw"]), statistics.median(p99s["raw"])
    print(
        f"\nbus over ipc: {rounds} rounds x (burst of {burst:,} messages + {samples:,} latency "
        f"samples paced by {PACE_S * 1e6:.0f} us sleeps), {_payload_size()} byte payload\n"
    )
    print("| path | msgs/s | x raw | p50 us | p50 x raw | p99 us | p99 x raw |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, label in (
        ("raw", "raw pyzmq XPUB/SUB (baseline)"),
        ("bus", "feeds.bus Publisher -> Subscriber"),
    ):
        rate = statistics.median(rates[mode])
        p50, p99 = statistics.median(p50s[mode]), statistics.median(p99s[mode])
        print(
            f"| {label} | {rate:,.0f} | {rate / raw_rate:.2f} | {p50:.1f} | {p50 / raw_p50:.2f} "
            f"| {p99:.1f} | {p99 / raw_p99:.2f} |"
        )


def main() -> None:
    """Build a one-year 1m lake partition and time the readers on it; then the bus."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=500_000, help="1m bars (<= 527,040 = 2024)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--messages", type=int, default=30_000, help="bus burst size")
    parser.add_argument("--latency-samples", type=int, default=2_000)
    parser.add_argument("--bus-rounds", type=int, default=3)
    parser.add_argument("--bus-only", action="store_true", help="skip the reader benchmark")
    args = parser.parse_args()
    if args.bus_only:
        bench_bus(args.messages, args.latency_samples, args.bus_rounds)
        return

    bars = generate_bars(seed=1, start_ns=T0, n=args.bars, timeframe="1m")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lake = Lake(root / "lake")
        lake.write("sim", "BTC/USDT", "1m", bars)
        path = lake.partition_path("sim", "BTC/USDT", "1m", 2024)
        csv = root / "bars.csv"
        write_bars(bars, csv)

        n = bars.height
        rows: list[tuple[str, Callable[[], object]]] = [
            ("lake.read (polars, checked)", lambda: lake.read("sim", "BTC/USDT", "1m")),
            ("pl.read_parquet", lambda: pl.read_parquet(path)),
            ("pd.read_parquet (baseline)", lambda: pd.read_parquet(path)),
            ("files.read_bars CSV (validated)", lambda: read_bars(csv)),
            ("pl.read_csv", lambda: pl.read_csv(csv)),
            ("pd.read_csv (CSV baseline)", lambda: pd.read_csv(csv)),
        ]
        timings = _median_seconds(rows, args.repeat)

    base_parquet = timings["pd.read_parquet (baseline)"]
    base_csv = timings["pd.read_csv (CSV baseline)"]
    print(f"{n:,} 1m bars, one parquet year file (zstd); median of {args.repeat} runs\n")
    print("| reader | ms | bars/s | x pandas (same format) |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        base = base_csv if "csv" in name.lower() else base_parquet
        print(f"| {name} | {seconds * 1e3:.1f} | {n / seconds:,.0f} | {base / seconds:.2f} |")
    bench_bus(args.messages, args.latency_samples, args.bus_rounds)


if __name__ == "__main__":
    main()
