"""OrderKernelClient: a strategy session's connection to an order-kernel server (DEALER + SUB).

`send(cmd)` queues a command and remembers it until its Reply arrives (correlated by
`(kind, seq)`, see `wire.py`); `request(cmd)` sends and waits for that Reply and returns the
events it carried. `unacknowledged()` lists what was sent but not answered: after a server
restart, `resend_unacknowledged()` sends each again with `possible_duplicate=True`, and the
kernel either processes it (it never reached the log) or ignores it (it did): nothing is lost
or doubled, and client order ids keep submissions idempotent in any case. `events()` yields
the session's events from the PUB socket; `server_alive()` watches the server's liveness
beats (on a second SUB socket, so beats never keep `events()` waiting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
import zmq

from order_kernel import messages as m
from order_kernel import wire
from order_kernel.errors import OrderKernelError


class ClientTimeoutError(OrderKernelError):
    """No reply within the timeout: the command stays unacknowledged (resend it, never assume)."""


class OrderKernelClient:
    """One session's client. Not thread-safe (one strategy loop drives it)."""

    def __init__(
        self,
        endpoint: str,
        session_id: str,
        *,
        pub_endpoint: str | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        subscribe: bool = True,
        reconnect_ivl_ms: int = 100,
    ) -> None:
        self.session_id = session_id
        self._sid = session_id.encode()
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self.endpoint = endpoint
        self._reconnect_ivl_ms = reconnect_ivl_ms
        self._rcvtimeo = -1  # the dealer's RCVTIMEO as last set (libzmq's default: block)
        self._dealer = self._new_dealer()
        self._sub: zmq.Socket[bytes] | None = None
        self._beats: zmq.Socket[bytes] | None = None
        if subscribe:
            pub = pub_endpoint or wire.pub_endpoint(endpoint)
            self._sub = self._ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, self._sid)
            self._sub.connect(pub)
            self._beats = self._ctx.socket(zmq.SUB)  # apart, so beats never look like events
            self._beats.setsockopt(zmq.LINGER, 0)
            self._beats.setsockopt(zmq.SUBSCRIBE, wire.HEARTBEAT_TOPIC)
            self._beats.connect(pub)
        self._pending: dict[tuple[int, int], m.Command] = {}
        self._replies: dict[tuple[int, int], wire.DecodedReply] = {}
        self.server_beats = 0
        self._pongs = 0
        self.duplicate_replies = 0

    def _new_dealer(self) -> zmq.Socket[bytes]:
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RECONNECT_IVL, self._reconnect_ivl_ms)
        dealer.connect(self.endpoint)
        self._rcvtimeo = -1
        return dealer

    def reconnect(self) -> None:
        """Drop the command socket (and whatever it still queued) and connect a new one:
        after a server restart, call this, then `resend_unacknowledged()`, so the resends are
        the only copies in flight and arrive in the original order (no seq gap)."""
        self._dealer.close()
        self._dealer = self._new_dealer()
        self._replies.clear()

    # ---------------------------------------------------------------- commands

    def send(self, cmd: m.Command) -> None:
        """Send without waiting; the command is unacknowledged until its Reply arrives."""
        self._pending[(wire.ref_kind(cmd), cmd.seq)] = cmd
        self._dealer.send_multipart([self._sid, m.encode(cmd)])

    def send_raw(self, payload: bytes) -> None:
        """Send bytes as they are (tests: garbage must get a denial, never a crash)."""
        self._dealer.send_multipart([self._sid, payload])

    def poll_reply(self, timeout_ms: int) -> wire.DecodedReply | None:
        """Receive one Reply (None on timeout) and mark its command acknowledged.

        A receive with a timeout (RCVTIMEO, set only when it changes), not `poll()` then
        `recv()`: pyzmq's `Socket.poll` builds a Poller per call (~2 µs per reply)."""
        if timeout_ms != self._rcvtimeo:
            self._dealer.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._rcvtimeo = timeout_ms
        try:
            frames = self._dealer.recv_multipart()
        except zmq.Again:
            return None
        if frames == [wire.PONG]:
            self._pongs += 1
            return None
        if len(frames) != 2 or frames[0] != wire.REPLY:
            raise OrderKernelError(
                f"unexpected frames from the order kernel: {[f[:40] for f in frames]!r}; "
                "is the endpoint an order-kernel server of the same version?"
            )
        reply = wire.decode_reply(frames[1])
        key = (reply.ref_kind, reply.ref_seq)
        if self._pending.pop(key, None) is None:
            self.duplicate_replies += 1
        return reply

    def request(self, cmd: m.Command, timeout_ms: int = 5000) -> list[m.Event]:
        """Send and wait for this command's Reply; other replies that arrive are kept."""
        key = (wire.ref_kind(cmd), cmd.seq)
        self.send(cmd)
        return self.wait(key, timeout_ms).events

    def wait(self, key: tuple[int, int], timeout_ms: int) -> wire.DecodedReply:
        """Wait for the Reply to the command `(kind, seq)`."""
        got = self._replies.pop(key, None)
        if got is not None:
            return got
        remaining = timeout_ms
        while remaining > 0:
            step = min(remaining, 50)
            reply = self.poll_reply(step)
            remaining -= step
            if reply is None:
                continue
            rkey = (reply.ref_kind, reply.ref_seq)
            if rkey == key:
                return reply
            self._replies[rkey] = reply
            remaining += step  # a reply arrived: the server is alive, keep waiting
            remaining = min(remaining, timeout_ms)
        raise ClientTimeoutError(
            f"session {self.session_id!r}: no reply to command seq {key[1]} within {timeout_ms} ms; "
            "it stays unacknowledged: call resend_unacknowledged() once the server is back"
        )

    def ping(self, timeout_ms: int) -> bool:
        """Is the server up and reading commands? (no session is touched; replies that
        arrive meanwhile are processed as usual)"""
        before = self._pongs
        self._dealer.send_multipart([wire.PING])
        waited = 0
        while self._pongs == before and waited < timeout_ms:
            reply = self.poll_reply(10)
            if reply is not None:
                self._replies[(reply.ref_kind, reply.ref_seq)] = reply
            else:
                waited += 10
        return self._pongs > before

    def unacknowledged(self) -> list[m.Command]:
        """Commands sent but not yet answered, in the order they were first sent."""
        return list(self._pending.values())

    def resend_unacknowledged(self) -> int:
        """Send every unacknowledged command again, in the original order, marked
        possible_duplicate=True: the kernel ignores the ones it already has."""
        todo = self.unacknowledged()
        for cmd in todo:
            dup = msgspec.structs.replace(cmd, possible_duplicate=True)
            self._dealer.send_multipart([self._sid, m.encode(dup)])
        return len(todo)

    # ---------------------------------------------------------------- events

    def events(
        self, timeout_ms: int = 0, *, until: Callable[[m.Event], bool] | None = None
    ) -> Iterator[m.Event]:
        """Yield this session's published events until none arrives within `timeout_ms`
        (or `until(event)` is true for the last one yielded)."""
        if self._sub is None:
            raise OrderKernelError("this client was created with subscribe=False")
        while self._sub.poll(timeout_ms, zmq.POLLIN):
            topic, payload = self._sub.recv_multipart()
            if topic != self._sid:  # SUB matches prefixes: "s1" also receives "s10"
                continue
            ev = m.decode_event(payload)
            yield ev
            if until is not None and until(ev):
                return

    def server_alive(self, timeout_ms: int) -> bool:
        """Did a server liveness beat arrive within `timeout_ms`? (drains waiting beats)"""
        if self._beats is None:
            raise OrderKernelError("this client was created with subscribe=False")
        alive = False
        while self._beats.poll(0 if alive else timeout_ms, zmq.POLLIN):
            _topic, payload = self._beats.recv_multipart()
            wire.decode_beat(payload)
            self.server_beats += 1
            alive = True
        return alive

    def close(self) -> None:
        self._dealer.close()
        for sock in (self._sub, self._beats):
            if sock is not None:
                sock.close()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> OrderKernelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
