"""ZeroMQ market-data bus: serve any :class:`~feeds.sources.Source` to many subscribers.

Wire format: two-frame messages ``[topic, msgpack(BusMessage)]``. Topics are
``bar.<symbol key>.<timeframe>`` (``bar.BTC-USDT.1h``, :func:`bar_topic`) and ``hb`` for
heartbeats. Messages are msgspec tagged unions:

* :class:`BarEvent` (``type: "bar"``): the bar plus the publisher's ``session_id`` and a
  per-topic ``seq`` starting at 1 and increasing by exactly 1;
* :class:`Heartbeat` (``type: "hb"``): the last ``seq`` of every topic, so a subscriber also
  notices messages lost at the *end* of a burst;
* :class:`EndOfStream` (``type: "eos"``): the topic's source is exhausted, with its last seq.

**Slow-subscriber policy.** The publisher never blocks and never waits for a subscriber: it is
an XPUB socket whose per-subscriber queue holds ``sndhwm`` messages (plus the subscriber's
``rcvhwm`` and the OS socket buffers); beyond that ZeroMQ drops messages *for that subscriber
only*. A subscriber that falls behind therefore loses messages, and detects it: a ``seq`` jump
or a heartbeat ahead of what it has seen yields a :class:`Gap` with the missing inclusive range
``[first_missing, last_missing]``. Recovery is the subscriber's call (re-read the range from the
lake, or resubscribe); the feed itself is never slowed down by one slow reader.

A subscriber takes the first message (or heartbeat) of a topic as its baseline: messages
published before it joined are not gaps. A changed ``session_id`` (publisher restart) resets
the baseline and is counted in :attr:`Subscriber.restarts`. Frames that cannot be decoded are
ignored and counted in :attr:`Subscriber.garbled`; they never advance a sequence.

``python -m feeds.bus serve ...`` runs a publisher process; ``python -m feeds.bus listen ...``
prints what arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Final

import msgspec
import zmq

from feeds.errors import BusError, FeedError
from feeds.lake import symbol_key
from feeds.schema import Bar, timeframe_to_ns
from feeds.sources import Source

__all__ = [
    "HEARTBEAT_TOPIC",
    "BarEvent",
    "BusEvent",
    "BusMessage",
    "EndOfStream",
    "Gap",
    "Heartbeat",
    "Publisher",
    "Subscriber",
    "bar_topic",
    "main",
]

HEARTBEAT_TOPIC: Final = "hb"


class BarEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="bar"):
    """One bar on one topic."""

    topic: str
    session_id: int
    seq: int  # 1, 2, 3, ... per topic and session
    bar: Bar


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="hb"):
    """The last sequence number of every topic published so far in this session."""

    session_id: int
    last_seq: dict[str, int]


class EndOfStream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="eos"):
    """The source behind ``topic`` is exhausted; ``seq`` is its last bar's sequence number."""

    topic: str
    session_id: int
    seq: int


BusMessage = BarEvent | Heartbeat | EndOfStream


class Gap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Messages ``first_missing..last_missing`` (inclusive) of ``topic`` never arrived."""

    topic: str
    first_missing: int
    last_missing: int

    @property
    def count(self) -> int:
        """Number of missing messages."""
        return self.last_missing - self.first_missing + 1


BusEvent = BarEvent | Heartbeat | EndOfStream | Gap

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(BusMessage)


def bar_topic(symbol: str, timeframe: str) -> str:
    """``bar.BTC-USDT.1h`` for ``("BTC/USDT", "1h")``: symbol made path- and topic-safe."""
    timeframe_to_ns(timeframe)
    return f"bar.{symbol_key(symbol)}.{timeframe}"


def _check_endpoint(endpoint: str) -> None:
    if not endpoint.startswith(("ipc://", "tcp://", "inproc://")):
        raise BusError(
            f"unsupported endpoint {endpoint!r}",
            hint="use ipc:///path/to/socket, tcp://127.0.0.1:5555 (or tcp://127.0.0.1:* for a "
            "random port) or inproc://name",
        )


class Publisher:
    """Publishes bars on an XPUB socket; never blocks (see the module's slow-subscriber policy).

    ``endpoint`` is bound; ``tcp://host:*`` picks a free port and :attr:`endpoint` tells which.
    Closing waits up to ``linger_ms`` for queued messages to leave (the end of a finite source).
    ``session_id`` identifies this publisher run (default: ``time.time_ns()`` at start, so a
    restart is visible to subscribers).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        sndhwm: int = 10_000,
        session_id: int | None = None,
        linger_ms: int = 1000,
    ) -> None:
        _check_endpoint(endpoint)
        self._own_context = context is None
        self.context = zmq.Context() if context is None else context
        self.socket: zmq.Socket[bytes] = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, linger_ms)  # on close: flush queued bars this long
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscriber's subscriptions
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)
            if self._own_context:
                self.context.term()
            raise BusError(
                f"cannot bind {endpoint!r}: {exc}",
                hint="is another publisher running there? pick another endpoint",
            ) from exc
        self.endpoint: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.session_id = time.time_ns() if session_id is None else session_id
        self.last_seq: dict[str, int] = {}
        self._topic_bytes: dict[str, bytes] = {}
        self.subscriptions = 0  # heartbeat subscriptions seen = subscribers that joined
        self.sent = 0

    def _drain_subscriptions(self, timeout_ms: int = 0) -> None:
        while self.socket.poll(timeout_ms, zmq.POLLIN):
            frame = self.socket.recv()
            if frame[:1] == b"\x01" and frame[1:] == HEARTBEAT_TOPIC.encode():
                self.subscriptions += 1
            timeout_ms = 0

    def wait_for_subscribers(self, count: int, timeout_s: float = 5.0) -> None:
        """Block until ``count`` subscribers have joined (avoids ZeroMQ's slow-joiner loss)."""
        deadline = time.monotonic() + timeout_s
        while self.subscriptions < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusError(
                    f"only {self.subscriptions} of {count} subscribers joined {self.endpoint} "
                    f"within {timeout_s} s",
                    hint="start the subscribers first, or lower --wait-subscribers",
                )
            self._drain_subscriptions(max(1, int(left * 1000)))

    def _send(self, topic: str, message: BusMessage) -> None:
        key = self._topic_bytes.get(topic)
        if key is None:
            key = self._topic_bytes[topic] = topic.encode()
        self.socket.send_multipart([key, _ENCODER.encode(message)], flags=zmq.NOBLOCK)
        self.sent += 1

    def publish(self, topic: str, bar: Bar) -> int:
        """Send one bar on ``topic``; returns its sequence number. Never blocks."""
        seq = self.last_seq.get(topic, 0) + 1
        self.last_seq[topic] = seq
        self._send(topic, BarEvent(topic=topic, session_id=self.session_id, seq=seq, bar=bar))
        return seq

    def heartbeat(self) -> None:
        """Announce the last seq of every topic (lets subscribers see trailing losses)."""
        self._drain_subscriptions()
        beat = Heartbeat(session_id=self.session_id, last_seq=dict(sorted(self.last_seq.items())))
        self._send(HEARTBEAT_TOPIC, beat)

    def end(self, topic: str) -> None:
        """Announce that ``topic`` is finished."""
        seq = self.last_seq.get(topic, 0)
        self._send(topic, EndOfStream(topic=topic, session_id=self.session_id, seq=seq))

    async def serve(
        self,
        source: Source,
        *,
        symbol: str,
        timeframe: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        heartbeat_every: int = 100,
        heartbeat_interval_s: float | None = 1.0,
    ) -> int:
        """Publish ``source.stream(start_ns, end_ns)`` on :func:`bar_topic`; returns the count.

        Heartbeats go out every ``heartbeat_every`` bars, every ``heartbeat_interval_s`` seconds
        of real time (so an idle live feed still tells subscribers where it is), and at the
        end, before :class:`EndOfStream`.
        """
        topic = bar_topic(symbol, timeframe)
        beats: asyncio.Task[None] | None = None
        if heartbeat_interval_s is not None:

            async def beat() -> None:
                while True:
                    await asyncio.sleep(heartbeat_interval_s)
                    self.heartbeat()

            beats = asyncio.create_task(beat())
        count = 0
        try:
            async for bar in source.stream(start_ns, end_ns):
                self.publish(topic, bar)
                count += 1
                if count % heartbeat_every == 0:
                    self.heartbeat()
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
        self.heartbeat()
        self.end(topic)
        return count

    def close(self) -> None:
        """Close the socket, flushing queued messages for up to ``linger_ms`` (and the context
        if this publisher created it)."""
        self.socket.close()
        if self._own_context:
            self.context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscriber:
    """Receives bus messages for topic prefixes and reports sequence gaps.

    :meth:`recv` returns the next :data:`BusEvent`; a detected :class:`Gap` is returned *before*
    the message that revealed it. Gaps are also kept in :attr:`gaps`.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str],
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        rcvhwm: int = 10_000,
        heartbeats: bool = True,
    ) -> None:
        _check_endpoint(endpoint)
        if not topics:
            raise BusError("subscribe to at least one topic", hint="e.g. bar.BTC-USDT.1h or bar.")
        self._own_context = context is None
        self.context = zmq.Context() if context is None else context
        self.socket: zmq.Socket[bytes] = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.topics = tuple(topics)
        for topic in self.topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if heartbeats:
            self.socket.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC.encode())
        self.socket.connect(endpoint)
        self.last_seq: dict[str, int] = {}
        self.session: dict[str, int] = {}
        self.gaps: list[Gap] = []
        self.received = 0
        self.garbled = 0
        self.duplicates = 0
        self.restarts = 0
        self._pending: deque[BusEvent] = deque()

    def _wanted(self, topic: str) -> bool:
        return topic.startswith(self.topics)

    def _advance(self, topic: str, session_id: int, seq: int) -> Gap | None:
        """Move ``topic`` to ``seq``; the gap before it if any. ``None`` seq means baseline."""
        known = self.session.get(topic)
        if known is not None and known != session_id:
            self.restarts += 1
            known = None
        if known is None:
            self.session[topic] = session_id
            self.last_seq[topic] = seq
            return None
        last = self.last_seq[topic]
        if seq <= last:
            return None
        self.last_seq[topic] = seq
        if seq > last + 1:
            gap = Gap(topic=topic, first_missing=last + 1, last_missing=seq - 1)
            self.gaps.append(gap)
            return gap
        return None

    def _handle(self, message: BusMessage) -> None:
        if isinstance(message, BarEvent):
            if not self._wanted(message.topic):
                return
            known = self.session.get(message.topic) == message.session_id
            if known and message.seq <= self.last_seq[message.topic]:
                self.duplicates += 1
                return
            gap = self._advance(message.topic, message.session_id, message.seq)
            if gap is not None:
                self._pending.append(gap)
            self.received += 1
            self._pending.append(message)
        elif isinstance(message, Heartbeat):
            for topic, seq in message.last_seq.items():
                if not self._wanted(topic):
                    continue
                if self.session.get(topic) != message.session_id:
                    # baseline from a heartbeat: the next bar on this topic is seq + 1
                    self._advance(topic, message.session_id, seq)
                    continue
                last = self.last_seq[topic]
                if seq > last:
                    gap = Gap(topic=topic, first_missing=last + 1, last_missing=seq)
                    self.last_seq[topic] = seq
                    self.gaps.append(gap)
                    self._pending.append(gap)
            self._pending.append(message)
        else:
            if not self._wanted(message.topic):
                return
            if self.session.get(message.topic) == message.session_id:
                last = self.last_seq[message.topic]
                if message.seq > last:
                    gap = Gap(topic=message.topic, first_missing=last + 1, last_missing=message.seq)
                    self.last_seq[message.topic] = message.seq
                    self.gaps.append(gap)
                    self._pending.append(gap)
            self._pending.append(message)

    def recv(self, timeout_ms: int | None = None) -> BusEvent | None:
        """The next event, waiting up to ``timeout_ms`` (``None`` = forever); ``None`` on timeout."""
        while not self._pending:
            try:  # fast path: a message is already queued (no poll syscall)
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                if not self.socket.poll(timeout_ms, zmq.POLLIN):
                    return None
                continue
            try:
                if len(frames) != 2:
                    raise msgspec.DecodeError(f"expected 2 frames, got {len(frames)}")
                message = _DECODER.decode(frames[1])
            except msgspec.DecodeError:
                self.garbled += 1
                continue
            self._handle(message)
        return self._pending.popleft()

    def close(self) -> None:
        """Close the socket (and the context if this subscriber created it)."""
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve_source(
    source: Source,
    *,
    endpoint: str,
    symbol: str,
    timeframe: str,
    start_ns: int | None = None,
    end_ns: int | None = None,
    wait_subscribers: int = 0,
    sndhwm: int = 10_000,
    heartbeat_interval_s: float | None = 1.0,
) -> int:
    """Run a publisher for one source until it is exhausted; returns the bars published."""
    with Publisher(endpoint, sndhwm=sndhwm) as pub:
        if wait_subscribers:
            pub.wait_for_subscribers(wait_subscribers)
        return asyncio.run(
            pub.serve(
                source,
                symbol=symbol,
                timeframe=timeframe,
                start_ns=start_ns,
                end_ns=end_ns,
                heartbeat_interval_s=heartbeat_interval_s,
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m feeds.bus serve|listen``: a publisher process or a printing subscriber."""
    from feeds.sources import MonotonicClock, create_source

    parser = argparse.ArgumentParser(prog="python -m feeds.bus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="publish a bar file (or lake series) on the bus")
    s.add_argument("--endpoint", required=True, help="e.g. ipc:///tmp/bars or tcp://127.0.0.1:5555")
    s.add_argument("--file", required=True, help="bar file (CSV or parquet)")
    s.add_argument("--symbol", required=True)
    s.add_argument("--timeframe", required=True)
    s.add_argument(
        "--speed", type=float, help="replay at this multiple of real time (default: max)"
    )
    s.add_argument("--wait-subscribers", type=int, default=0, help="wait for N subscribers first")
    s.add_argument("--hwm", type=int, default=10_000, help="per-subscriber send queue (messages)")
    li = sub.add_parser("listen", help="print bus events")
    li.add_argument("--endpoint", required=True)
    li.add_argument("--topic", action="append", required=True, help="topic prefix (repeatable)")
    li.add_argument("--count", type=int, default=0, help="stop after N bars (0 = until eos)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "serve":
            kind = "parquet" if args.file.lower().endswith((".parquet", ".pq")) else "csv"
            source = create_source(
                "replay",
                source=create_source(kind, path=args.file),
                timeframe=args.timeframe,
                speed=args.speed,
                clock=MonotonicClock() if args.speed else None,
            )
            n = serve_source(
                source,
                endpoint=args.endpoint,
                symbol=args.symbol,
                timeframe=args.timeframe,
                wait_subscribers=args.wait_subscribers,
                sndhwm=args.hwm,
            )
            print(f"published {n} bars on {bar_topic(args.symbol, args.timeframe)}")
            return 0
        with Subscriber(args.endpoint, args.topic) as subscriber:
            bars = 0
            while True:
                event = subscriber.recv()
                print(msgspec.json.encode(event).decode(), flush=True)
                bars += isinstance(event, BarEvent)
                if isinstance(event, EndOfStream) or (args.count and bars >= args.count):
                    return 0
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
