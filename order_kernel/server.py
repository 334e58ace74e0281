"""The order kernel as its own process: ROUTER for commands, PUB for events (see `wire.py`).

Multi-session design: one process serves many strategy sessions; each session id gets its own
`OrderKernel` and its own hash-chained log ``<log_dir>/<session_id>.log`` (so sessions never
share a seq space or a log, and a session recovers alone). A session is created on its first
command; at start-up every existing log is recovered (`OrderKernel.recover`) after an explicit
torn-tail cut, which is reported (`Server.startup_report`) before any new command is read.

Loop: block in the ROUTER's receive; the command that wakes the loop goes to its session's
kernel (which logs the raw command, then its events), its log is flushed (and per the fsync
policy fsynced) and it is answered at once; commands that arrived meanwhile (up to
`max_batch`) are then handled together, every touched log flushed once, and answered: group
commit. Either way an acknowledged command is always in the log and a SIGKILL loses only
unacknowledged commands, which clients resend with `possible_duplicate=True`. Events are
published after the reply. The cyclic garbage collector runs between commands (`_GcPacer`).
`stop()` (from a SIGTERM/SIGINT handler) makes the loop finish the current batch, close the
logs (flush + fsync) and the sockets.

The monotonic clock used for liveness beats is injected (`clock_ns`) by the composition root;
nothing it returns reaches a log.

Live mode (`[venue] kind = "ccxt"`, see `live.py`): every session's kernel queues its new
orders and cancels; after each command the `LiveRoute` sends them to the exchange and the
answers' events join the command's reply. Every `poll_interval_ms` of the loop clock the route
queries the open orders (fills, cancels, in-flight resolution) and the events are published.
The route's `SessionVenue` is the default `snapshot_source`: start-up reconciles with the
exchange.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TextIO

import msgspec
import zmq

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel import wire
from order_kernel.config import KernelConfig
from order_kernel.errors import ConfigError
from order_kernel.kernel import OrderKernel
from order_kernel.live import LiveRoute, route_from_config
from order_kernel.reconcile import ReconcileError, ReconReport, VenueSnapshot, reconcile
from order_kernel.spec import Reason

SESSION_ID_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class _Syncer:
    """fsyncs order logs on a background thread, off the command loop (`os.fsync` releases
    the GIL, so the loop keeps answering). At most one pending fsync per file: a pending one
    covers everything written before it runs, so the queue is bounded by the number of logs."""

    def __init__(self, report: TextIO) -> None:
        self._report = report
        self._cv = threading.Condition()
        self._pending: list[int] = []
        self._busy = False
        self._closed = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="order-log-fsync", daemon=True)
        self._thread.start()

    def submit(self, fd: int) -> None:
        with self._cv:
            if fd not in self._pending:
                self._pending.append(fd)
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                fd = self._pending.pop(0)
                self._busy = True
            try:
                os.fsync(fd)
            except OSError as exc:  # reported; the log's own close() fsyncs again
                self.errors += 1
                print(
                    f"order-kernel: background fsync failed: {exc}", file=self._report, flush=True
                )
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def close(self) -> None:
        """Finish the pending fsyncs and stop (before the logs are closed)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()


class _GcPacer:
    """Runs the cyclic garbage collector between commands instead of inside them.

    CPython collects when allocations cross a threshold, i.e. in the middle of whichever
    command crosses it: a young collection costs ~50 µs here, a middle one ~0.7 ms, a full one
    tens of ms (the server holds every session's history). While the loop runs, automatic
    collection is off and `step()` (called after the replies went out) makes the collection
    CPython would have made, with the same thresholds, so memory behaves as before. `start()`
    also freezes the start-up heap (modules, numba, recovered sessions) out of every later
    full collection. Nothing happens if the process had turned the collector off itself."""

    def __init__(self) -> None:
        self._active = False
        self._long_lived = 0  # objects in the oldest generation after the last full collection
        self._pending = 0  # objects that reached it since (survivors of middle collections)

    def start(self) -> None:
        if not gc.isenabled() or gc.get_threshold()[0] == 0:
            return
        gc.collect()
        gc.freeze()
        gc.disable()
        self._active = True

    def step(self) -> None:
        if not self._active:
            return
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = gc.get_threshold()
        if c0 <= t0:
            return
        # CPython's rule: a full collection only once the objects that reached the oldest
        # generation since the last one are >= 25 % of those it kept (keeps the cost linear)
        if c2 > t2 and self._pending >= self._long_lived // 4:
            gc.collect(2)
            self._long_lived = len(gc.get_objects(generation=2))
            self._pending = 0
        elif c1 > t1:
            young = len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))
            self._pending += max(0, young - gc.collect(1))
        else:
            gc.collect(0)

    def stop(self) -> None:
        """Automatic collection back on; the frozen heap collectable again."""
        if self._active:
            self._active = False
            gc.unfreeze()
            gc.enable()


class SnapshotSource(Protocol):
    """A venue adapter that can report its books (e.g. `CcxtVenue`): open orders of the account
    plus the given client order ids (id -> symbol) the kernel still holds open."""

    def snapshot(self, ts_ns: int, client_order_ids: Mapping[str, str]) -> VenueSnapshot: ...


@dataclass(slots=True)
class SessionRecovery:
    """What start-up did to one session's log (reported, never silent)."""

    session_id: str
    log_path: str
    torn_bytes_cut: int
    records: int
    last_seq: int
    reconciliation: ReconReport | None = None  # None: no snapshot source configured


class Server:
    """Serves every session of one venue account; single-threaded, driven by `serve()`."""

    def __init__(
        self,
        config: KernelConfig,
        bind: str,
        *,
        pub_bind: str | None = None,
        clock_ns: Callable[[], int],
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        max_batch: int = 256,
        report: TextIO | None = None,
        snapshot_source: Callable[[str], SnapshotSource | None] | None = None,
        halt_on_conflict: bool = True,
        live_route: LiveRoute | None = None,
    ) -> None:
        """`snapshot_source(session_id)`: the venue adapter of that session's account (or None);
        when given, every recovered session is reconciled with it before the first command is
        read. `halt_on_conflict`: refuse to start while a reconciliation flags a conflict.
        `live_route`: the exchange route of a live config (default: built from kernel.toml
        with credentials from the environment); it is also the default snapshot source."""
        self.config = config
        self.bind = bind
        self.pub_bind = pub_bind or wire.pub_endpoint(bind)
        self._clock = clock_ns
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self.max_batch = max_batch
        self._report = report if report is not None else sys.stderr
        self._instruments = config.instrument_specs()
        self._risk = config.risk()
        self._log_dir = config.log_path()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, OrderKernel] = {}
        self.startup_report: list[SessionRecovery] = []
        self._stop = False
        self._beat = 0
        self._router: zmq.Socket[bytes] | None = None
        self._pub: zmq.Socket[bytes] | None = None
        if config.live and live_route is None:
            live_route = route_from_config(
                config, clock_ns=clock_ns, sleep=time.sleep, environ=os.environ
            )
        if live_route is not None and not config.live:
            raise ConfigError(
                'Server(live_route=...) needs a live config: set [venue] kind = "ccxt"'
            )
        self._live = live_route
        if snapshot_source is None and live_route is not None:
            snapshot_source = live_route.session
        self._snapshot_source = snapshot_source
        self._halt_on_conflict = halt_on_conflict
        self._syncer: _Syncer | None = None
        self._subscribed: set[bytes] = set()  # prefixes SUB sockets asked the XPUB for
        self._wanted: dict[bytes, bool] = {}  # topic -> has a subscriber (cache)
        #: session id frame -> (id, kernel), filled once the id was validated (skips the
        #: decode, the regex and the dict lookup by str on every later command)
        self._by_frame: dict[bytes, tuple[str, OrderKernel]] = {}
        self._recover_all()

    # ---------------------------------------------------------------- sessions

    def log_path(self, session_id: str) -> Path:
        return self._log_dir / f"{session_id}.log"

    def _recover_all(self) -> None:
        """Recover every session that has a log, in name order, before serving anyone."""
        for path in sorted(self._log_dir.glob("*.log")):
            sid = path.stem
            if not SESSION_ID_RE.match(sid):
                raise ConfigError(
                    f"{path}: not a session log name; move the file out of log_dir {self._log_dir}"
                )
            cut = order_log.truncate_torn_tail(path)
            kernel = OrderKernel.recover(
                path,
                sid,
                self._instruments,
                self.config.make_venue(),
                self._risk,
                fsync=self.config.fsync_policy,
                capacity=self.config.capacity,
                heartbeat_timeout_ns=self.config.session_heartbeat_timeout_ns,
                live=self._live is not None,
            )
            rec = SessionRecovery(
                sid,
                str(path),
                cut,
                kernel.log.records if kernel.log is not None else 0,
                kernel.last_seq,
            )
            self._server_driven_sync(kernel)
            self.sessions[sid] = kernel
            self.startup_report.append(rec)
            print(
                f"order-kernel: recovered session {sid!r} from {path}: {rec.records} records, "
                f"last event seq {rec.last_seq}"
                + (f", cut a torn tail of {cut} bytes" if cut else ""),
                file=self._report,
                flush=True,
            )
            rec.reconciliation = self._reconcile(sid, kernel)
        conflicts = [
            (r.session_id, d)
            for r in self.startup_report
            if r.reconciliation is not None
            for d in r.reconciliation.conflicts
        ]
        if conflicts and self._halt_on_conflict:
            self.close()
            raise ReconcileError(
                f"{len(conflicts)} reconciliation conflict(s) at start-up, first: session "
                f"{conflicts[0][0]!r}: {conflicts[0][1].kind.value} {conflicts[0][1].client_order_id!r} "
                f"({conflicts[0][1].detail}); resolve them at the venue or in the log, "
                "or start with halt_on_conflict=False"
            )
        if self._live is not None:  # requests reconciliation queued (e.g. bracket exits)
            for sid, kernel in self.sessions.items():
                if kernel.outbox:
                    self._live.dispatch(sid, kernel)
                    if kernel.log is not None:
                        kernel.log.flush()

    def _reconcile(self, sid: str, kernel: OrderKernel) -> ReconReport | None:
        """Recovery = replay, then reconcile with the venue, then trade (RELIABILITY #6): the
        snapshot, differences and resulting events go into the session's log (flushed and
        fsynced here); the differences are reported. Snapshot ts = the session's own clock
        (its last input), so nothing from a wall clock reaches the log."""
        source = self._snapshot_source(sid) if self._snapshot_source is not None else None
        if source is None:
            return None
        snap = source.snapshot(kernel.now_ns, kernel.venue_order_ids())
        rep = reconcile(kernel, snap)
        if kernel.log is not None:
            kernel.log.flush()
            kernel.log.sync()
        print(
            f"order-kernel: reconciled session {sid!r} with the venue: "
            f"{len(rep.differences)} difference(s), {len(rep.conflicts)} conflict(s), "
            f"{len(rep.events)} event(s) (clients fetch them with a ResendRequest)",
            file=self._report,
            flush=True,
        )
        for d in rep.differences:
            print(
                f"order-kernel:   {d.resolution.value} {d.kind.value} {d.client_order_id or d.symbol!r}: "
                f"ours {d.ours}, venue {d.venue}; {d.detail}",
                file=self._report,
                flush=True,
            )
        return rep

    def _session(self, session_id: str) -> OrderKernel:
        kernel = self.sessions.get(session_id)
        if kernel is None:
            log = order_log.OrderLog(self.log_path(session_id), fsync=self.config.fsync_policy)
            kernel = OrderKernel(
                session_id,
                self._instruments,
                self.config.make_venue(),
                log,
                self._risk,
                capacity=self.config.capacity,
                heartbeat_timeout_ns=self.config.session_heartbeat_timeout_ns,
                live=self._live is not None,
            )
            self._server_driven_sync(kernel)
            self.sessions[session_id] = kernel
        return kernel

    def _server_driven_sync(self, kernel: OrderKernel) -> None:
        """With fsync "batch" the server, not the log, decides when to fsync: after the replies
        of a batch went out, once `SYNC_EVERY` records are pending (acks wait for the flush to
        the OS only, which a killed process cannot lose; "always" fsyncs before every ack)."""
        kernel.keep_encoded = True
        if kernel.log is not None and self.config.fsync == "batch":
            kernel.log.batch_records = 2**62

    SYNC_EVERY: Final = 256

    # ---------------------------------------------------------------- one command

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
        known = self._by_frame.get(frames[0])
        if known is None:
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
            known = self._by_frame[frames[0]] = (sid, self._session(sid))
        sid, kernel = known
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

    def _transport_denial(self, sid: str, detail: str) -> bytes:
        ev = m.CommandDenied(
            session_id=sid,
            seq=0,
            ts_ns=0,
            ref_seq=-1,
            command="?",
            reason=Reason.UNKNOWN_SESSION,
            detail=detail,
        )
        return wire.encode(wire.Reply(sid, wire.KIND_COMMAND, -1, [msgspec.Raw(m.encode(ev))]))

    # ---------------------------------------------------------------- live venue

    def poll_venue(self) -> dict[str, list[bytes]]:
        """Live mode: one poll of every session's open orders at the exchange; the resulting
        events are logged (flushed) and returned encoded, by session (name order)."""
        out: dict[str, list[bytes]] = {}
        if self._live is None:
            return out
        for sid in sorted(self.sessions):
            kernel = self.sessions[sid]
            events = self._live.poll(sid, kernel)
            if events:
                if kernel.log is not None:
                    kernel.log.flush()
                out[sid] = [m.encode(ev) for ev in events]
        for problem in self._live.problems:
            print(f"order-kernel: venue poll: {problem}", file=self._report, flush=True)
        self._live.problems.clear()
        return out

    # ---------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask the loop to finish its current batch and shut down (signal-handler safe)."""
        self._stop = True

    def open_sockets(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 2000)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.bind(self.bind)
        # XPUB (wire-compatible with PUB) tells us who subscribes: events of a session nobody
        # listens to are not sent at all (a send costs several µs even when libzmq drops it)
        pub = self._ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 2000)
        pub.setsockopt(zmq.SNDHWM, 1_000_000)
        pub.bind(self.pub_bind)
        self._router, self._pub = router, pub

    def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until `stop()`; then close logs and sockets. `ready` is called once bound.

        The loop blocks in the ROUTER's own receive (timeout = time to the next beat or venue
        poll): no poller, no readiness query and no exception per command on the way in. The
        XPUB's subscription messages are read before anything is published and at each beat."""
        if self._router is None:
            self.open_sockets()
        router, pub = self._router, self._pub
        assert router is not None and pub is not None
        interval_ns = self.config.heartbeat_interval_ms * 1_000_000
        next_beat = self._clock()
        next_poll = next_beat
        timeout_ms = -2  # the ROUTER's RCVTIMEO as last set
        pacer = _GcPacer()
        pacer.start()
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
                    self._read_subscriptions(pub)
                    next_beat = now + interval_ns
                wake = next_beat
                if self._live is not None:
                    if now >= next_poll:
                        self._publish_polled(pub)
                        next_poll = now + self._live.poll_interval_ns
                    wake = min(wake, next_poll)
                wait_ms = max(1, min(100, (wake - now) // 1_000_000))
                if wait_ms != timeout_ms:
                    router.setsockopt(zmq.RCVTIMEO, wait_ms)
                    timeout_ms = wait_ms
                try:
                    frames = router.recv_multipart()
                except zmq.Again:
                    continue
                self._answer_first(router, pub, frames)
                if int(router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    self._drain(router, pub)
                pacer.step()  # after the replies went out, never inside a command
        finally:
            pacer.stop()
            self.close()

    def _answer_first(
        self, router: zmq.Socket[bytes], pub: zmq.Socket[bytes], frames: list[bytes]
    ) -> None:
        """Answer the message that woke the loop at once: log it, flush, reply, publish (a
        group commit of one; whatever arrived meanwhile is then group-committed by `_drain`)."""
        identity = frames[0]
        if len(frames) == 2 and frames[1] == wire.PING:
            router.send_multipart([identity, wire.PONG])
            return
        sid, reply, events = self.handle_frames(frames[1:])
        kernel = self._by_frame[frames[1]][1] if sid else None
        if kernel is not None and kernel.log is not None:  # "always" already fsynced
            kernel.log.flush()
        router.send_multipart([identity, wire.REPLY, reply])
        if events:
            self._read_subscriptions(pub)
            topic = frames[1]  # the validated session id, as bytes
            if self._has_subscriber(topic):
                for ev in events:
                    pub.send_multipart([topic, ev])
        if kernel is not None and self.config.fsync == "batch":
            self._sync_behind(kernel)

    def _sync_behind(self, kernel: OrderKernel) -> None:
        """fsync policy "batch": once `SYNC_EVERY` records are pending, hand the log's fd to
        the background syncer (off the reply path and off the loop's thread)."""
        if kernel.log is not None and kernel.log.unsynced >= self.SYNC_EVERY:
            fd = kernel.log.handoff_sync()
            if fd is not None:
                if self._syncer is None:
                    self._syncer = _Syncer(self._report)
                self._syncer.submit(fd)

    def _publish_polled(self, pub: zmq.Socket[bytes]) -> None:
        """Poll the exchange and publish what it changed (logs flushed first)."""
        polled = self.poll_venue()
        if polled:
            self._read_subscriptions(pub)
        for sid, raws in polled.items():
            topic = sid.encode()
            if self._has_subscriber(topic):
                for raw in raws:
                    pub.send_multipart([topic, raw])

    def _read_subscriptions(self, pub: zmq.Socket[bytes]) -> None:
        """Track the XPUB's subscription messages (b"\\x01" + prefix / b"\\x00" + prefix; libzmq
        passes only the first subscribe and the last unsubscribe of a prefix)."""
        while int(pub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            msg = pub.recv(zmq.NOBLOCK)
            if msg[:1] == b"\x01":
                self._subscribed.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._subscribed.discard(msg[1:])
            self._wanted.clear()

    def _has_subscriber(self, topic: bytes) -> bool:
        hit = self._wanted.get(topic)
        if hit is None:
            hit = any(topic.startswith(p) for p in self._subscribed)
            self._wanted[topic] = hit
        return hit

    def _drain(self, router: zmq.Socket[bytes], pub: zmq.Socket[bytes]) -> None:
        """One group commit: handle the waiting commands, make the logs durable, then answer."""
        out: list[tuple[bytes, str, bytes, list[bytes]]] = []
        touched: dict[str, OrderKernel] = {}
        for k in range(self.max_batch):
            # EVENTS is a cheap getsockopt; a zmq.Again exception per batch is not
            if k and not int(router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                break
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) == 2 and frames[1] == wire.PING:
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
        if self.config.fsync == "batch":
            for kernel in touched.values():
                self._sync_behind(kernel)

    def close(self) -> None:
        """Flush and fsync every log, close sockets (lingering so sent replies go out)."""
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        for kernel in self.sessions.values():
            if kernel.log is not None:
                kernel.log.close()
        for sock in (self._router, self._pub):
            if sock is not None:
                sock.close()
        self._router = self._pub = None
        if self._own_ctx:
            self._ctx.term()
