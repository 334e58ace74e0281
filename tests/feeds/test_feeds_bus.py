"""ZeroMQ market-data bus: delivery, sequence gaps, slow subscribers, the publisher process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from feeds.bus import (
    BarEvent,
    EndOfStream,
    Gap,
    Heartbeat,
    Publisher,
    Subscriber,
    bar_topic,
)
from feeds.errors import BusError
from feeds.files import write_bars
from feeds.schema import Bar
from feeds.sources import SyntheticSource, iter_bars
from feeds.synthetic import generate_bars

T0 = 1_704_067_200_000_000_000
TOPIC = "bar.BTC-USDT.1h"
BAR = Bar(ts_ns=T0, open=1.0, high=2.0, low=0.5, close=1.5, volume=3.0)


def _drain(sub: Subscriber, timeout_ms: int = 200) -> list[object]:
    events: list[object] = []
    while (event := sub.recv(timeout_ms)) is not None:
        events.append(event)
    return events


def test_topic_names() -> None:
    assert bar_topic("BTC/USDT", "1h") == TOPIC
    assert bar_topic("BTC/USDT:USDT", "4h") == "bar.BTC-USDT_USDT.4h"


def test_served_source_arrives_complete_and_in_order(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/bus.sock"
    source = SyntheticSource(seed=3, start_ns=T0, n=300, timeframe="1h")
    with Publisher(endpoint, session_id=7) as pub, Subscriber(endpoint, [TOPIC]) as sub:
        pub.wait_for_subscribers(1)
        n = asyncio.run(
            pub.serve(source, symbol="BTC/USDT", timeframe="1h", heartbeat_interval_s=None)
        )
        events = _drain(sub)
    assert n == 300
    bars = [e for e in events if isinstance(e, BarEvent)]
    assert [e.seq for e in bars] == list(range(1, 301))
    assert [e.bar for e in bars] == list(iter_bars(source.fetch()))
    assert {e.session_id for e in bars} == {7}
    assert isinstance(events[-1], EndOfStream) and events[-1].seq == 300
    beats = [e for e in events if isinstance(e, Heartbeat)]
    assert [b.last_seq[TOPIC] for b in beats] == [100, 200, 300, 300]
    assert sub.gaps == [] and sub.garbled == 0


def test_tcp_random_port_and_topic_filtering() -> None:
    with Publisher("tcp://127.0.0.1:*", session_id=1) as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
        with Subscriber(pub.endpoint, ["bar.ETH-USDT."]) as sub:
            pub.wait_for_subscribers(1)
            pub.publish(TOPIC, BAR)
            pub.publish("bar.ETH-USDT.1h", BAR)
            pub.publish("bar.ETH-USDT.4h", BAR)
            events = _drain(sub)
    assert [(e.topic, e.seq) for e in events if isinstance(e, BarEvent)] == [
        ("bar.ETH-USDT.1h", 1),
        ("bar.ETH-USDT.4h", 1),
    ]


def _raw(topic: str, message: object) -> list[bytes]:
    return [topic.encode(), msgspec.msgpack.encode(message)]


def test_gap_detection_duplicates_garbage_and_restarts(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/raw.sock"
    ctx = zmq.Context()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(endpoint)
    try:
        with Subscriber(endpoint, [TOPIC], context=ctx) as sub:
            raw.recv()  # a subscription arrived: the pipe is up
            raw.recv()

            def bar(seq: int, session: int = 1) -> list[bytes]:
                return _raw(TOPIC, BarEvent(topic=TOPIC, session_id=session, seq=seq, bar=BAR))

            raw.send_multipart([TOPIC.encode(), b"\xc1 not msgpack"])
            raw.send_multipart([TOPIC.encode()])  # wrong frame count
            for frames in (bar(1), bar(2), bar(2), bar(5)):
                raw.send_multipart(frames)
            raw.send_multipart(
                _raw("hb", Heartbeat(session_id=1, last_seq={TOPIC: 7, "bar.X.1h": 9}))
            )
            raw.send_multipart(_raw(TOPIC, EndOfStream(topic=TOPIC, session_id=1, seq=8)))
            raw.send_multipart(bar(3, session=2))  # a restarted publisher: new baseline
            raw.send_multipart(bar(4, session=2))
            events = _drain(sub)
            assert (sub.garbled, sub.duplicates, sub.restarts) == (2, 1, 1)
            assert sub.gaps == [
                Gap(topic=TOPIC, first_missing=3, last_missing=4),
                Gap(topic=TOPIC, first_missing=6, last_missing=7),
                Gap(topic=TOPIC, first_missing=8, last_missing=8),
            ]
    finally:
        raw.close(linger=0)
        ctx.term()
    summary = [
        (type(e).__name__, getattr(e, "seq", None) or getattr(e, "first_missing", None))
        for e in events
    ]
    assert summary == [
        ("BarEvent", 1),
        ("BarEvent", 2),
        ("Gap", 3),
        ("BarEvent", 5),
        ("Gap", 6),
        ("Heartbeat", None),
        ("Gap", 8),
        ("EndOfStream", 8),
        ("BarEvent", 3),
        ("BarEvent", 4),
    ]
    assert sum(g.count for g in sub.gaps) == 5


def test_slow_subscriber_drops_detects_and_never_blocks_the_publisher(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/slow.sock"
    total = 30_000
    with (
        Publisher(endpoint, sndhwm=20, session_id=1) as pub,
        Subscriber(endpoint, [TOPIC], rcvhwm=20) as sub,
    ):
        pub.wait_for_subscribers(1)
        started = time.perf_counter()
        for i in range(total):  # the subscriber reads nothing meanwhile
            pub.publish(
                TOPIC, Bar(ts_ns=T0 + i, open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0)
            )
        publish_s = time.perf_counter() - started
        events = _drain(sub, timeout_ms=300)
        while not any(isinstance(e, Heartbeat) for e in events):  # tell it where we are
            pub.heartbeat()
            events += _drain(sub, timeout_ms=50)
    seqs = [e.seq for e in events if isinstance(e, BarEvent)]
    assert seqs == sorted(seqs) and len(seqs) < total  # messages were dropped...
    assert sub.gaps  # ...and every drop is reported
    covered = set(seqs)
    for gap in sub.gaps:
        missing = set(range(gap.first_missing, gap.last_missing + 1))
        assert not missing & covered
        covered |= missing
    assert covered == set(range(1, total + 1))
    assert publish_s < 10.0  # no back-pressure: a blocked publisher would hang here


def test_bad_endpoints() -> None:
    with pytest.raises(BusError, match="unsupported endpoint 'http://x'"):
        Publisher("http://x")
    with pytest.raises(BusError, match="at least one topic"):
        Subscriber("tcp://127.0.0.1:1", [])
    with Publisher("tcp://127.0.0.1:*") as pub:
        with pytest.raises(BusError, match="cannot bind"):
            Publisher(pub.endpoint)
        with pytest.raises(BusError, match="only 0 of 1 subscribers"):
            pub.wait_for_subscribers(1, timeout_s=0.05)


def test_publisher_process(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    write_bars(generate_bars(seed=4, start_ns=T0, n=50, timeframe="1h"), data)
    endpoint = f"ipc://{tmp_path}/proc.sock"
    with Subscriber(endpoint, [TOPIC]) as sub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feeds.bus",
                "serve",
                "--endpoint",
                endpoint,
                "--file",
                str(data),
                "--symbol",
                "BTC/USDT",
                "--timeframe",
                "1h",
                "--wait-subscribers",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            events = []
            while not (events and isinstance(events[-1], EndOfStream)):
                event = sub.recv(20_000)
                if event is None:
                    proc.kill()
                    out, err = proc.communicate()
                    pytest.fail(f"publisher process sent nothing; stdout {out!r}, stderr {err!r}")
                events.append(event)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "published 50 bars on bar.BTC-USDT.1h" in out
    assert [e.seq for e in events if isinstance(e, BarEvent)] == list(range(1, 51))
    assert sub.gaps == []


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    from feeds.bus import main

    code = main(
        [
            "serve",
            "--endpoint",
            "http://nope",
            "--file",
            str(tmp_path / "x.csv"),
            "--symbol",
            "BTC/USDT",
            "--timeframe",
            "1h",
        ]
    )
    assert code == 2
