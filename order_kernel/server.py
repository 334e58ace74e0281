"""The order kernel as its own process: ROUTER for commands, PUB for events (see `wire.py`).

Multi-session design: one process serves many strategy sessions; each session id gets its own
`OrderKernel` and its own hash-chained log ``<log_dir>/<session_id>.log`` (so sessions never
share a seq space or a log, and a session recovers alone). A session is created on its first
command; at start-up every existing log is recovered (`OrderKernel.recover`) after an explicit
torn-tail cut, which is reported (`Server.startup_report`) before any new command is read.

Loop: read up to `max_batch` waiting commands, hand each to its session's kernel (which logs
the raw command, then its events), flush (and per the fsync policy fsync) every touched log,
then send the replies and publish the events: group commit, so an acknowledged command is
always in the log and a SIGKILL loses only unacknowledged commands, which clients resend with
`possible_duplicate=True`. `stop()` (from a SIGTERM/SIGINT handler) makes the loop finish the
current batch, close the logs (flush + fsync) and the sockets.

The monotonic clock used for liveness beats is injected (`clock_ns`) by the composition root;
nothing it returns reaches a log.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import msgspec
import zmq

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel import wire
from order_kernel.config import KernelConfig
from order_kernel.errors import ConfigError
from order_kernel.kernel import OrderKernel
from order_kernel.spec import Reason

SESSION_ID_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(slots=True)
class SessionRecovery:
    """What start-up did to one session's log (reported, never silent)."""

    session_id: str
    log_path: str
    torn_bytes_cut: int
    records: int
    last_seq: int


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
    ) -> None:
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
            )
            self._server_driven_sync(kernel)
            self.sessions[session_id] = kernel
        return kernel

    def _server_driven_sync(self, kernel: OrderKernel) -> None:
        """With fsync "batch" the server, not the log, decides when to fsync: after the replies
        of a batch went out, once `SYNC_EVERY` records are pending (acks wait for the flush to
        the OS only, which a killed process cannot lose; "always" fsyncs before every ack)."""
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
            events = kernel.handle_bytes(payload)  # logs the bytes, answers MALFORMED_MESSAGE
            kind, ref = wire.KIND_COMMAND, -1
        else:
            events = kernel.handle_raw(cmd, payload)
            kind, ref = wire.ref_kind(cmd), cmd.seq
        raws = [m.encode(ev) for ev in events]
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

    # ---------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask the loop to finish its current batch and shut down (signal-handler safe)."""
        self._stop = True

    def open_sockets(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 2000)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.bind(self.bind)
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 2000)
        pub.setsockopt(zmq.SNDHWM, 1_000_000)
        pub.bind(self.pub_bind)
        self._router, self._pub = router, pub

    def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until `stop()`; then close logs and sockets. `ready` is called once bound."""
        if self._router is None:
            self.open_sockets()
        router, pub = self._router, self._pub
        assert router is not None and pub is not None
        interval_ns = self.config.heartbeat_interval_ms * 1_000_000
        next_beat = self._clock()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
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
                wait_ms = max(1, min(100, (next_beat - now) // 1_000_000))
                if not poller.poll(wait_ms):
                    continue
                self._drain(router, pub)
        finally:
            self.close()

    def _drain(self, router: zmq.Socket[bytes], pub: zmq.Socket[bytes]) -> None:
        """One group commit: handle waiting commands, make the logs durable, then answer."""
        out: list[tuple[bytes, str, bytes, list[bytes]]] = []
        touched: dict[str, OrderKernel] = {}
        for _ in range(self.max_batch):
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
        for identity, sid, reply, events in out:
            if reply is wire.PONG:
                router.send_multipart([identity, wire.PONG])
                continue
            router.send_multipart([identity, wire.REPLY, reply])
            topic = sid.encode()
            for ev in events:
                pub.send_multipart([topic, ev])
        if self.config.fsync == "batch":  # off the reply path
            for kernel in touched.values():
                if kernel.log is not None and kernel.log.unsynced >= self.SYNC_EVERY:
                    kernel.log.sync()

    def close(self) -> None:
        """Flush and fsync every log, close sockets (lingering so sent replies go out)."""
        for kernel in self.sessions.values():
            if kernel.log is not None:
                kernel.log.close()
        for sock in (self._router, self._pub):
            if sock is not None:
                sock.close()
        self._router = self._pub = None
        if self._own_ctx:
            self._ctx.term()
