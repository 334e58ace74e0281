"""One strategy session inside the service runner: a strategy kernel on the bar bus, talking to
the shared order kernel over ZeroMQ, controllable between bars, recoverable from its own log.

The strategy log is the session's memory. Everything that changes the session from outside the
bar stream is first written there as a ``control`` record (pause, resume, kill, swap, stop, the
resend request after a restart), then applied. A restarted session rebuilds its state by
replaying the log's inputs (bars, order-kernel events, control records) through a fresh kernel
and checks that the replay regenerates the log byte for byte before it trades again; then it
asks the order kernel to resend the events it missed (FIX-style ``ResendRequest``). Without
control records the log is the one `run_paper` and the backtest write for the same bars.

`data:` inputs (other symbols' bars) are stepped exactly as `run_paper` steps them, with its
`Inbox`/`Stepper`/`LiveDataFeed`: the session subscribes to the inputs' topics too, holds an
instrument bar until every input due at its decision has delivered (or `data_wait_ms` is spent),
then applies the backtest's `hold`/`error` rule. The delivered input bars are in the log
(`data_bar`, `data_missing`), so a restart rebuilds the inputs' state from it: the replay feeds
them to the kernel again, each input resumes after the last bar it delivered, and input bars at
or before that point (a feed replayed from its start) are dropped silently, like instrument
bars already stepped. An `on_missing: error` input with a missing bar stops the session
(`failed`, stop reason `data_missing`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from artifacts.graph import SignalGraph, check
from artifacts.io import content_hash, load_with_lines
from artifacts.schema import Artifact
from feeds.bus import BarEvent, BusEvent, Subscriber, bar_topic
from feeds.schema import timeframe_to_ns
from indicators.nodes import BarValues
from order_kernel import messages as m
from stratagem.service import ServiceError
from stratagem.service.control import ControlRequest
from strategy_kernel.backtest import (
    BarLoop,
    instrument_spec,
    log_run_header,
)
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.errors import BacktestError
from strategy_kernel.log import LogCorruptError, StrategyLog
from strategy_kernel.log import read as read_strategy_log
from strategy_kernel.multidata import LiveDataFeed
from strategy_kernel.paper import DATA_WAIT_MS, Inbox, Stepper, deliver_data
from strategy_kernel.report import write_reports
from strategy_kernel.transport import KernelPort, RemoteKernel

log = logging.getLogger("stratagem.service.runner")

#: Strategy-log kinds the session writes itself (inputs of a replay); the rest the kernel regenerates.
EXTERNAL_KINDS = ("run", "data_gaps", "feed_gap", "feed_out_of_order", "control")
#: Records of the data part of a step (`paper.deliver_data`): inputs of a replay, before the bar.
DATA_KINDS = ("data_bar", "data_missing")
ACCOUNT_HEADER = "ts_ns,close,equity,position_lots\n"


class SessionError(ServiceError):
    """A session that cannot start or recover (the message names the run and the fault)."""


# -- logs ----------------------------------------------------------------------------------------
class SessionLog(StrategyLog):
    """The strategy log continued in append mode after a verified prefix; flushable between bars."""

    def __init__(self, path: Path, head: str, count: int) -> None:
        super().__init__(None)
        self.path = path
        self._fh = path.open("ab")
        self.head, self.count = head, count

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()


class MemoryLog(StrategyLog):
    """Keeps the encoded records in memory: a replay writes here and is compared with the file."""

    def __init__(self) -> None:
        super().__init__(None)
        self._buf = io.BytesIO()
        self._fh = self._buf

    def lines(self) -> list[bytes]:
        return self._buf.getvalue().splitlines()


# -- the kernel and the loop, with the service's controls ----------------------------------------
class SessionLoop(BarLoop):
    """BarLoop whose strategy commands are dropped once the kill switch was sent (bars still go
    to the order kernel, so a flatten order fills); runner-injected commands pass (`force`)."""

    killed = False
    dropped = 0

    def deliver(self, cmds: list[m.Message], *, force: bool = False) -> None:
        queue_: list[m.Message] = list(cmds)
        while queue_:
            cmd = queue_.pop(0)
            passes = force or cmd.possible_duplicate or isinstance(cmd, m.MarketBar)
            if self.killed and not passes:
                self.dropped += 1
                continue
            if isinstance(self.sk.log, SessionLog) and not isinstance(cmd, m.MarketBar):
                self.sk.log.flush()  # write-ahead: a command is in the log before it is sent
            for ev in self.ok.handle(cmd):  # type: ignore[arg-type]
                if isinstance(ev, m.OrderFilled):
                    self.traded_units += ev.qty * ev.price
                queue_.extend(self.sk.on_event(ev))
            force = False  # follow-ups are the strategy's own: filtered again


def decision_ts(loop: BarLoop) -> int:
    """Controls act at the last bar's close (the strategy's clock), never at wall-clock time."""
    return loop.ts[-1] + loop.tf_ns if loop.ts else 0


# -- control records: written, then applied; a replay applies them the same way -------------------
def apply_control(
    sk: StrategyKernel, loop: SessionLoop, rec: dict[str, Any], run_dir: Path
) -> tuple[list[m.Message], bool]:
    """The commands a control record causes and whether they bypass the kill filter."""
    action = rec["action"]
    ts = int(rec["ts_ns"])
    if action == "pause":
        sk.paused = True
        return sk.cancel_entry(ts, "paused by control"), False
    if action == "resume":
        sk.paused = False
        sk.reset_drawdown_breaker(ts, "resumed by control")  # a human re-arms the breaker
        return [], False
    if action == "kill":
        sk.paused = True
        loop.killed = True
        flatten, reason = bool(rec.get("flatten")), str(rec.get("reason", ""))
        kill = sk.command(
            lambda seq: m.KillSwitch(
                session_id=sk.session_id, seq=seq, ts_ns=ts, flatten=flatten, reason=reason
            )
        )
        return [kill], True
    if action == "stop":
        if rec.get("on_stop") == "cancel":
            cancel = sk.command(
                lambda seq: m.CancelAll(session_id=sk.session_id, seq=seq, ts_ns=ts)
            )
            return [cancel], True
        return [], False
    if action == "resend":
        begin = int(rec["begin_seq"])
        resend = sk.command(
            lambda seq: m.ResendRequest(
                session_id=sk.session_id, seq=seq, ts_ns=ts, begin_seq=begin
            )
        )
        return [resend], True
    if action == "swap":
        path = run_dir / str(rec["artifact"])
        new, lines = load_with_lines(path)
        return sk.reparameterize(new, check(new, str(path), lines), ts), False
    raise SessionError(f"{run_dir}: unknown control action {action!r} in the strategy log")


def cut_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (the process died mid-write); returns the bytes cut.

    Safe because the log is written ahead of every command: a record that did not make it to
    disk whole belongs to a command that was never sent."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(data) - keep


def cut_unfinished_data_step(path: Path) -> int:
    """Cut the data records of a step that ended before its instrument bar reached the order
    kernel (the log ends with `data_bar`/`data_missing` records); returns the records cut.

    Safe for the same reason as `cut_torn_tail`: nothing of that step left the process (the
    order kernel hears of a step only with its bar), and the restarted session steps the bar
    again from its start, delivering the same input bars, so the records come back unchanged.
    """
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    keep = len(lines)
    while keep and msgspec.json.decode(lines[keep - 1]).get("kind") in DATA_KINDS:
        keep -= 1
    if keep == len(lines):
        return 0
    with path.open("r+b") as fh:
        fh.truncate(sum(len(line) for line in lines[:keep]))
    return len(lines) - keep


def _record_fields(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("n", "ts_ns", "kind", "prev")}


@dataclass
class Recovered:
    sk: StrategyKernel
    loop: SessionLoop
    last_event_seq: int
    last_bar_ts: int | None
    extra_lines: list[bytes]  # records the crashed step did not get to write
    #: per data input: (open ts of the first, of the last bar it delivered)
    data_seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: the log holds the data part of a step whose bar record is not there (a crash in between,
    #: after the bar went to the order kernel): the restarted step must not deliver it again
    data_done: bool = False


def replay_session(
    path: Path,
    make_kernel: Callable[[], StrategyKernel],
    ok: KernelPort,
    run_dir: Path,
    account: list[tuple[int, float, float, int]],
) -> Recovered:
    """Rebuild a session from its strategy log; raise SessionError if the replay diverges."""
    try:
        records = list(read_strategy_log(path))
    except LogCorruptError as exc:
        raise SessionError(
            f"{exc}; the session cannot be recovered from a damaged log (move the run directory "
            "away to start a new run)"
        ) from None
    file_lines = path.read_bytes().splitlines()
    sk = make_kernel()
    mem = MemoryLog()
    sk.log = mem
    inst = instrument_spec(sk.artifact)
    loop = SessionLoop(sk, ok, sk.artifact, inst, sk.timeframe_ns)
    last_event_seq = 0
    last_bar: int | None = None
    data_seen: dict[str, tuple[int, int]] = {}
    data_done = False
    for rec in records:
        kind = rec["kind"]
        if kind in DATA_KINDS:  # the data part of a step: fed to the kernel as it was then
            ts = int(rec["ts_ns"])
            if kind == "data_missing":
                sk.on_data(str(rec["input"]), None, ts)
            else:
                name = str(rec["input"])
                aux = BarValues(ts, rec["o"], rec["h"], rec["l"], rec["c"], rec["v"])
                sk.on_data(name, aux, ts)
                data_seen[name] = (data_seen.get(name, (ts, ts))[0], ts)
            data_done = True
        elif kind == "bar":
            data_done = False
            if loop.ts:  # the previous bar's account snapshot, from the sidecar when it has it
                _sample(loop, account)
            bar = BarValues(int(rec["ts_ns"]), rec["o"], rec["h"], rec["l"], rec["c"], rec["v"])
            sk.on_bar(bar)
            loop.ts.append(bar.ts_ns)
            loop.close.append(bar.close)
            loop.equity.append(math.nan)
            loop.position.append(0)
            last_bar = bar.ts_ns
        elif kind == "event":
            ev = msgspec.convert(rec["msg"], m.AnyMessage)
            if isinstance(ev, m.OrderFilled):
                loop.traded_units += ev.qty * ev.price
            last_event_seq = max(last_event_seq, ev.seq)
            sk.on_event(ev)
        elif kind in EXTERNAL_KINDS:
            mem.append(kind, int(rec["ts_ns"]), **_record_fields(rec))
            if kind == "control":
                apply_control(sk, loop, rec, run_dir)
    if loop.ts:
        _sample(loop, account)
    got = mem.lines()
    if got[: len(file_lines)] != file_lines:
        bad = next(
            (i for i, (a, b) in enumerate(zip(got, file_lines, strict=False)) if a != b),
            min(len(got), len(file_lines)),
        )
        raise SessionError(
            f"{path}:{bad + 1}: replaying the log does not reproduce this record; the session "
            "cannot be recovered safely (start a new run or inspect the log)"
        )
    return Recovered(
        sk, loop, last_event_seq, last_bar, got[len(file_lines) :], data_seen, data_done
    )


def restore_data_feed(feed: LiveDataFeed, seen: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Put a fresh feed where the recovered run left it: each input that delivered resumes on its
    grid after its last delivered bar. Returns, per topic, the newest bar ts already delivered:
    a bar of that topic at or before it is one the run has seen (drop it, do not push it)."""
    resume: dict[str, int] = {}
    for s in feed.streams:
        if s.name not in seen:
            continue
        first, last = seen[s.name]
        s.first_ts, s.last_ts, s.delivered = first, last, True
        resume[s.topic] = min(last, resume.get(s.topic, last))
    return resume


def _sample(loop: BarLoop, account: list[tuple[int, float, float, int]]) -> None:
    """Fill the last bar's equity/position from the account sidecar (or the kernel state)."""
    i = len(loop.ts) - 1
    if i < len(account) and account[i][0] == loop.ts[i]:
        loop.equity[i], loop.position[i] = account[i][2], account[i][3]
    else:
        loop.equity[i], loop.position[i] = loop.sk.equity(), loop.sk.position


def read_account(path: Path) -> list[tuple[int, float, float, int]]:
    """The account sidecar (one line per bar); a torn last line is ignored."""
    if not path.is_file():
        return []
    out: list[tuple[int, float, float, int]] = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split(",")
        if len(parts) != 4:
            break
        try:
            out.append((int(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])))
        except ValueError:
            break
    return out


# -- the session ---------------------------------------------------------------------------------
class _StopError(Exception):
    """The service is stopping: raised out of a bus wait to end the bar loop between bars."""


class _SessionBus:
    """The session's subscriber as `paper.Stepper` reads it: every wait is cut into short slices
    so control requests are served (between bars, as ever) and a stop is noticed; bars the run
    has already stepped or delivered (`seen`: per topic, the newest such bar ts; a feed replayed
    from its start after a restart) are dropped silently instead of being logged out of order."""

    def __init__(
        self,
        sub: Subscriber,
        serve: Callable[[], None],
        stopping: threading.Event,
        seen: dict[str, int],
    ) -> None:
        self.sub = sub
        self.serve = serve
        self.stopping = stopping
        self.seen = seen
        self.skipped = 0

    @property
    def topics(self) -> tuple[str, ...]:
        return self.sub.topics

    def recv(self, timeout_ms: int) -> BusEvent | None:
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while True:
            self.serve()
            if self.stopping.is_set():
                raise _StopError
            left_ms = math.ceil((deadline - time.monotonic()) * 1000)
            ev = self.sub.recv(min(10, max(left_ms, 0)))
            if ev is None:
                if left_ms <= 0:
                    return None
                continue
            if isinstance(ev, BarEvent):
                newest = self.seen.get(ev.topic)
                if newest is not None and ev.bar.ts_ns <= newest:
                    self.skipped += 1
                    continue
            return ev


@dataclass
class Pending:
    """A control request waiting for this session's answer."""

    request: ControlRequest
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    detail: str = ""


@dataclass
class SessionConfig:
    name: str
    run_id: str
    artifact_path: Path
    run_dir: Path
    kernel_endpoint: str
    feed_endpoint: str
    kernel_log: Path  # the order kernel's log of this session (hard-linked as orders.log)
    on_stop: str = "cancel"
    idle_timeout_s: float = 30.0
    snapshot_every_bars: int = 25
    snapshot_interval_s: float = 2.0
    max_restarts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    kernel_timeout_ms: int = 5000
    kernel_attempts: int = 3
    stale_after_s: float = 10.0
    data_wait_ms: int = DATA_WAIT_MS  # how long a bar waits for its `data:` inputs' bars


class StrategySession:
    """A supervised thread: run the session; on a crash, back off, recover from the log, go on."""

    def __init__(self, cfg: SessionConfig, stopping: threading.Event) -> None:
        self.cfg = cfg
        self.stopping = stopping
        artifact, lines = load_with_lines(cfg.artifact_path)
        self.artifact: Artifact = artifact  # the version the run started with (recovery base)
        self.current: Artifact = artifact  # the version trading now (after hot-swaps)
        self.graph: SignalGraph = check(artifact, str(cfg.artifact_path), lines)
        self.topic = bar_topic(artifact.instrument.symbol, artifact.instrument.timeframe)
        self.tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
        self.inbox: queue.Queue[Pending] = queue.Queue()
        self.state = "starting"
        self.error = ""
        self.restarts = 0
        self.bars = 0
        self.last_bar_ts_ns: int | None = None
        self.last_bar_mono: float | None = None
        self.snapshots = 0
        self.paused = False
        self.killed = False
        self.dropped = 0
        self.skipped_seen = 0
        self.stop_reason = ""
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name=f"session-{cfg.name}")
        self._deferred: list[Pending] = []
        self._last_snapshot_mono = time.monotonic()

    @property
    def log_path(self) -> Path:
        return self.cfg.run_dir / "strategy.log.jsonl"

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def health(self, now: float) -> dict[str, Any]:
        return {
            "run_id": self.cfg.run_id,
            "run_dir": str(self.cfg.run_dir),
            "artifact": f"{self.current.name} v{self.current.version}",
            "state": self.state,
            "alive": self.alive(),
            "bars": self.bars,
            "last_bar_ts_ns": self.last_bar_ts_ns,
            "last_bar_age_s": None
            if self.last_bar_mono is None
            else round(now - self.last_bar_mono, 3),
            "stale_after_s": self.cfg.stale_after_s,
            "restarts": self.restarts,
            "paused": self.paused,
            "killed": self.killed,
            "dropped_commands": self.dropped,
            "snapshots": self.snapshots,
            "stop_reason": self.stop_reason,
            "error": self.error,
        }

    # -- supervision --------------------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        while True:
            try:
                self._incarnation()
                self.state = "finished"
                return
            except SessionError as exc:  # the log cannot be trusted: a restart would not help
                self.error = str(exc)
                log.error("session %s cannot recover: %s", self.cfg.name, exc)
                self.state = "failed"
                self._fail_pending(f"session failed: {exc}")
                return
            except Exception as exc:  # a crash of this session: logged, then restarted
                failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("session %s crashed (%d): %s", self.cfg.name, failures, self.error)
                if failures > self.cfg.max_restarts or self.stopping.is_set():
                    self.state = "failed"
                    self._fail_pending(f"session failed: {self.error}")
                    return
                self.state = "restarting"
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (failures - 1))
                log.warning(
                    "session %s: restart %d/%d in %.2f s",
                    self.cfg.name,
                    failures,
                    self.cfg.max_restarts,
                    delay,
                )
                if self.stopping.wait(delay):
                    self.state = "failed"
                    self._fail_pending("the service is stopping")
                    return
                self.restarts += 1

    def _fail_pending(self, why: str) -> None:
        for p in self._deferred:
            p.detail = why
            p.done.set()
        self._deferred = []
        while True:
            try:
                p = self.inbox.get_nowait()
            except queue.Empty:
                return
            p.detail = why
            p.done.set()

    def _make_kernel(self) -> StrategyKernel:
        return StrategyKernel(
            self.artifact,
            self.graph,
            session_id=self.cfg.run_id,
            timeframe_ns=self.tf_ns,
            base_dir=self.cfg.artifact_path.parent,
        )

    def _incarnation(self) -> None:
        cfg = self.cfg
        kernel = RemoteKernel(
            cfg.kernel_endpoint,
            cfg.run_id,
            timeout_ms=cfg.kernel_timeout_ms,
            attempts=cfg.kernel_attempts,
        )
        account_path = cfg.run_dir / "account.csv"
        sk: StrategyKernel | None = None
        data_seen: dict[str, tuple[int, int]] = {}
        data_done = False
        try:
            if self.log_path.is_file() and self.log_path.stat().st_size:
                cut = cut_torn_tail(self.log_path)
                if cut:
                    log.warning("session %s: cut a torn tail of %d bytes from %s", cfg.name, cut,
                                self.log_path)  # fmt: skip
                cut = cut_unfinished_data_step(self.log_path)
                if cut:
                    log.warning("session %s: cut %d data records of an unfinished step from %s",
                                cfg.name, cut, self.log_path)  # fmt: skip
                rec = replay_session(
                    self.log_path,
                    self._make_kernel,
                    kernel,
                    cfg.run_dir,
                    read_account(account_path),
                )
                sk, loop = rec.sk, rec.loop
                data_seen, data_done = rec.data_seen, rec.data_done
                slog = SessionLog(self.log_path, sk.log.head, sk.log.count)
                if rec.extra_lines:  # finish writing the step the crash interrupted
                    assert slog._fh is not None
                    slog._fh.write(b"".join(line + b"\n" for line in rec.extra_lines))
                sk.log = slog
                self._rewrite_account(account_path, loop)
                last_ts = rec.last_bar_ts
                self.paused, self.killed = sk.paused, loop.killed
                self.current = sk.artifact  # swaps in the log were replayed
                log.warning(
                    "session %s: recovered from %s (%d records, %d bars, position %d)",
                    cfg.name,
                    self.log_path,
                    slog.count,
                    len(loop.ts),
                    sk.position,
                )
                # First the commands of the interrupted step (in seq order), then ask the order
                # kernel for every event this session has not seen.
                self._deliver_extra(sk, loop, rec.extra_lines)
                self._control_record(sk, loop, "resend", begin_seq=rec.last_event_seq + 1)
            else:
                sk = self._make_kernel()
                sk.log = SessionLog(self.log_path, "0" * 64, 0)
                loop = SessionLoop(
                    sk, kernel, self.artifact, instrument_spec(self.artifact), self.tf_ns
                )
                last_ts = None
            self.bars = len(loop.ts)
            # a swap keeps the data inputs (`_stage_swap`): the running version's are the ones
            feed = LiveDataFeed(sk.artifact, self.tf_ns) if sk.artifact.data else None
            seen = restore_data_feed(feed, data_seen) if feed is not None else {}
            topics = sorted({self.topic, *(feed.topics if feed is not None else ())})
            with (
                Subscriber(cfg.feed_endpoint, topics) as sub,
                account_path.open("a", encoding="utf-8") as account,
            ):
                if account.tell() == 0:
                    account.write(ACCOUNT_HEADER)
                self.subscribed.set()
                self.state = "running"
                self.error = ""
                if last_ts is not None:  # the instrument's own rule wins on a shared topic
                    seen[self.topic] = last_ts
                bus = _SessionBus(sub, lambda: self._serve_inbox(sk, loop), self.stopping, seen)
                bus.skipped = self.skipped_seen  # counted over every incarnation
                reason = self._bar_loop(sk, loop, bus, feed, account, last_ts, data_done)
                self.skipped_seen = bus.skipped
                self._finish(sk, loop, reason)
                if reason == "data_missing":  # `on_missing: error`: replaying would not help
                    raise SessionError(self.error)
        finally:
            kernel.close()
            if sk is not None:
                sk.log.close()

    def _rewrite_account(self, path: Path, loop: BarLoop) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(ACCOUNT_HEADER)
            for i in range(len(loop.ts)):
                fh.write(f"{loop.ts[i]},{loop.close[i]!r},{loop.equity[i]!r},{loop.position[i]}\n")
        os.replace(tmp, path)

    def _deliver_extra(self, sk: StrategyKernel, loop: SessionLoop, extra: list[bytes]) -> None:
        """Send the commands of the interrupted step (their records were just completed)."""
        seqs = []
        for line in extra:
            rec = msgspec.json.decode(line)
            if rec.get("kind") == "command":
                seqs.append(int(rec["msg"]["seq"]))
        cmds = sk.sent_commands(seqs)
        if cmds:
            loop.deliver(cmds)

    # -- the bar loop -------------------------------------------------------------------------
    def _bar_loop(
        self,
        sk: StrategyKernel,
        loop: SessionLoop,
        bus: _SessionBus,
        feed: LiveDataFeed | None,
        account: io.TextIOBase | Any,
        last_ts: int | None,
        data_done: bool,
    ) -> str:
        """Step bars as `run_paper` does (same inbox, stepper and data feed) until the feed ends,
        goes idle, the service stops, or an `on_missing: error` input misses a bar."""
        inbox = Inbox(bus, [self.topic], [feed] if feed is not None else [])
        if last_ts is not None:  # a bar at or before the last one stepped is out of order
            inbox.stepped(self.topic, last_ts)
        last = last_ts

        def on_record(_topic: str, kind: str, fields: dict[str, object]) -> None:
            if last is not None:  # before the first bar there is no run to log it in
                sk.log.append(kind, last, **fields)

        stepper = Stepper(
            inbox,
            {self.topic: [feed]} if feed is not None else {},
            bar_wait_ms=0,
            data_wait_ms=self.cfg.data_wait_ms,
            idle_timeout_ms=max(1, round(self.cfg.idle_timeout_s * 1000)),
            clock=time.monotonic_ns,
            on_record=on_record,
        )
        while True:
            try:
                nxt = stepper.next()
            except _StopError:
                return "stopped"
            if isinstance(nxt, str):
                return nxt
            ts, bars = nxt
            b = bars[self.topic]
            if sk.log.count == 0:
                log_run_header(sk.log, sk.artifact, ts, self.cfg.run_id)
            if feed is not None:
                if data_done:  # the recovered log holds this step's data part already: its
                    data_done = False  # bars were delivered (and are dropped if sent again)
                else:
                    try:
                        deliver_data(sk, inbox, 0, feed, ts)
                    except BacktestError as exc:
                        self.error = str(exc)
                        log.error("session %s: %s", self.cfg.name, exc)
                        return "data_missing"
            last = ts
            loop.step_prices(BarValues(ts, b.open, b.high, b.low, b.close, b.volume))
            now = time.monotonic()
            i = len(loop.ts) - 1
            account.write(f"{loop.ts[i]},{loop.close[i]!r},{loop.equity[i]!r},{loop.position[i]}\n")
            account.flush()
            self.bars = len(loop.ts)
            self.last_bar_ts_ns, self.last_bar_mono = ts, now
            self.dropped = loop.dropped
            self.skipped_seen = bus.skipped
            if self._deferred:
                deferred, self._deferred = self._deferred, []
                for p in deferred:
                    self._apply(sk, loop, p)
            if (
                self.bars % self.cfg.snapshot_every_bars == 0
                or now - self._last_snapshot_mono >= self.cfg.snapshot_interval_s
            ):
                self.snapshot(sk, loop)

    def _serve_inbox(self, sk: StrategyKernel, loop: SessionLoop) -> None:
        while True:
            try:
                p = self.inbox.get_nowait()
            except queue.Empty:
                return
            if sk.log.count == 0:  # no run header yet: nothing to cancel; act at the first bar
                if p.request.action == "kill":
                    loop.killed = self.killed = True
                self._deferred.append(p)
                continue
            self._apply(sk, loop, p)

    def _apply(self, sk: StrategyKernel, loop: SessionLoop, p: Pending) -> None:
        req = p.request
        try:
            fields: dict[str, Any] = {
                "request_id": req.request_id,
                "by": req.by,
                "reason": req.reason,
            }
            if req.action == "kill":
                fields["flatten"] = req.flatten
            if req.action == "swap":
                fields.update(self._stage_swap(sk, Path(req.artifact)))
            self._control_record(sk, loop, req.action, **fields)
            if isinstance(sk.log, SessionLog):
                sk.log.flush()  # the record is on disk before we say it was applied
            p.ok, p.detail = True, f"{req.action} applied at {decision_ts(loop)}"
        except (ServiceError, OSError, ValueError) as exc:
            p.ok, p.detail = False, str(exc)
        except Exception as exc:  # artifact load/check errors carry their own messages
            p.ok, p.detail = False, f"{type(exc).__name__}: {exc}"
        finally:
            self.paused, self.killed, self.dropped = sk.paused, loop.killed, loop.dropped
            self.current = sk.artifact
            p.done.set()

    def _stage_swap(self, sk: StrategyKernel, path: Path) -> dict[str, Any]:
        """Check the new version can be swapped in, copy it into the run directory."""
        new, lines = load_with_lines(path)
        check(new, str(path), lines)
        old = sk.artifact
        if new.instrument != old.instrument or new.entry.side != old.entry.side:
            raise SessionError(
                f"{path}: a hot-swap keeps the instrument and the entry side of "
                f"{old.name} v{old.version}; start a new run to change them"
            )
        if new.data != old.data:
            raise SessionError(
                f"{path}: a hot-swap keeps the data inputs (`data:`) of {old.name} "
                f"v{old.version}: a new or changed input would start with no history, and its "
                "point-in-time state could not be rebuilt from the log after a restart; start a "
                "new run to change them"
            )
        h = content_hash(new)
        rel = Path("artifacts") / f"{new.name}-v{new.version}-{h[:12]}.yaml"
        (self.cfg.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.cfg.run_dir / rel)
        return {"artifact": rel.as_posix(), "content_hash": h, "version": new.version}

    def _control_record(
        self, sk: StrategyKernel, loop: SessionLoop, action: str, **fields: Any
    ) -> None:
        ts = decision_ts(loop)
        sk.log.append("control", ts, action=action, **fields)
        rec = {"action": action, "ts_ns": ts, **fields}
        cmds, force = apply_control(sk, loop, rec, self.cfg.run_dir)
        loop.deliver(cmds, force=force)
        log.warning("session %s: %s %s", self.cfg.name, action, _record_fields(rec))

    def _finish(self, sk: StrategyKernel, loop: SessionLoop, reason: str) -> None:
        """Stop new orders (the bar loop is over), cancel or keep by policy, write the summary."""
        self.stop_reason = reason
        self.state = "stopping"
        if sk.log.count:
            self._control_record(sk, loop, "stop", reason=reason, on_stop=self.cfg.on_stop)
            self.snapshot(sk, loop)
        self._fail_pending(f"session stopped ({reason})")

    # -- snapshots: what the read model imports while the run goes on --------------------------
    def snapshot(self, sk: StrategyKernel, loop: BarLoop) -> None:
        """Metrics, equity and trades so far, written atomically; the logs flushed and linked."""
        if isinstance(sk.log, SessionLog):
            sk.log.flush()
        d = self.cfg.run_dir
        if self.cfg.kernel_log.is_file() and not (d / "orders.log").exists():
            os.link(self.cfg.kernel_log, d / "orders.log")
        if not loop.ts:
            return
        result = loop.result(final=False)
        with tempfile.TemporaryDirectory(dir=d, prefix=".snapshot.") as tmp:
            files = write_reports(result, Path(tmp), png=False, html=False)
            for p in files.values():
                os.replace(p, d / p.name)
        self.snapshots += 1
        self._last_snapshot_mono = time.monotonic()
