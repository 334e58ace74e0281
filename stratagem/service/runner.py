"""`stratagem service run`: the feed, ONE order-kernel process and a strategy session per artifact.

Start-up order: load and check every artifact (nothing starts if one is bad); start the order
kernel process, which recovers every session log before it prints "serving"; bind the control
socket; start the sessions (each recovers from its strategy log if the run directory has one,
then subscribes); start the replay feed once every session has subscribed. While running, the
runner writes `health.json` every `health_interval_s` and restarts the order kernel if it dies
(it recovers its logs). SIGINT/SIGTERM: the sessions stop taking bars (no new orders), cancel or
keep working orders by `on_stop`, write their final snapshot and close their logs; then the
order kernel is stopped with SIGTERM (logs flushed and fsynced) and `summary.json` is written.

Run directories are deterministic: `<runs_dir>/<name>-<strategy>/` holds `strategy.log.jsonl`,
`orders.log` (a hard link to the order kernel's session log), `artifact.yaml`, `equity.csv`,
`trades.csv`, `metrics.json` and `account.csv` (one account snapshot per bar), so the read model
imports a service run like any `stratagem run` directory, also while it is running.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

import msgspec
import zmq

from artifacts.io import load_with_lines
from artifacts.schema import Artifact
from feeds.bus import Publisher, bar_topic
from feeds.endpoints import ipc_endpoint
from feeds.files import read_bars
from feeds.schema import Bar, timeframe_to_ns
from order_kernel.client import OrderKernelClient
from stratagem.service import ServiceError
from stratagem.service.control import (
    ControlReply,
    decode_request,
    encode,
)
from stratagem.service.session import Pending, SessionConfig, StrategySession
from stratagem.service.settings import RunnerSettings, ServiceSettings
from strategy_kernel.replay import write_run_file

log = logging.getLogger("stratagem.service.runner")


class RunnerError(ServiceError):
    """The runner cannot start: a bad artifact, clashing instruments, a busy endpoint."""


# -- the order kernel process --------------------------------------------------------------------
def kernel_toml(artifacts: Sequence[tuple[str, Artifact]], settings: RunnerSettings) -> str:
    """One kernel.toml for every artifact: instruments merged by symbol (they must agree)."""
    first = artifacts[0][1]
    seen: dict[str, tuple[str, tuple[str, str, str, str, str]]] = {}
    for name, a in artifacts:
        inst, bt = a.instrument, a.backtest
        spec = (
            str(inst.price_increment),
            str(inst.size_increment),
            str(bt.maker_fee_bps),
            str(bt.taker_fee_bps),
            "perp" if inst.kind == "perp" else "spot",
        )
        if inst.symbol in seen and seen[inst.symbol][1] != spec:
            other = seen[inst.symbol][0]
            raise RunnerError(
                f"strategies {other!r} and {name!r} trade {inst.symbol} with different "
                f"increments/fees/kind ({seen[inst.symbol][1]} vs {spec}); one order kernel has one "
                "instrument table: make the artifacts agree or run two services"
            )
        seen[inst.symbol] = (name, spec)
    lines = [
        'log_dir = "logs"',
        f'fsync = "{settings.fsync}"',
        "heartbeat_interval_ms = 250",
    ]
    if settings.risk_limits is not None:
        lines.append(f"risk_limits = {json.dumps(str(settings.risk_limits.resolve()))}")
    lines += ["", "[venue]", *_venue_lines(first, settings)]
    for symbol, (_, spec) in sorted(seen.items()):
        lines += [
            "",
            "[[instruments]]",
            f"symbol = {json.dumps(symbol)}",
            f'price_increment = "{spec[0]}"',
            f'size_increment = "{spec[1]}"',
            f'maker_fee_bps = "{spec[2]}"',
            f'taker_fee_bps = "{spec[3]}"',
            f'kind = "{spec[4]}"',
        ]
    return "\n".join(lines) + "\n"


def _venue_lines(first: Artifact, settings: RunnerSettings) -> list[str]:
    """Paper: the simulated venue as the backtest configures it; live: ccxt routing."""
    if settings.mode == "paper":
        return [
            'kind = "sim"',
            f"slippage_ticks = {first.backtest.slippage_ticks}",
            f"seed = {first.backtest.seed}",
        ]
    v = settings.venue
    if v is None:
        raise RunnerError(
            "mode = 'live' needs a [runner.venue] table (exchange, credentials, ...): "
            "see docs/service.md"
        )
    if settings.feed.mode != "bus":
        raise RunnerError(
            "mode = 'live' trades on a live market-data bus: set feed.mode = 'bus' and "
            "feed.endpoint (a replayed file would send real orders on historical prices)"
        )
    creds = v.credentials if v.credentials == "env" else str(Path(v.credentials).resolve())
    out = [
        'kind = "ccxt"',
        f"exchange = {json.dumps(v.exchange)}",
        f"sandbox = {'true' if v.sandbox else 'false'}",
        f"credentials = {json.dumps(creds)}",
        f"poll_interval_ms = {v.poll_interval_ms}",
        f"timeout_ms = {v.timeout_ms}",
    ]
    if v.credentials_name is not None:
        out.append(f"credentials_name = {json.dumps(v.credentials_name)}")
    if v.api_url is not None:
        out.append(f"api_url = {json.dumps(v.api_url)}")
    return out


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the runner dies (even by SIGKILL), so an orphaned
    order kernel never keeps the session logs open for a new runner (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class OrderKernelProcess:
    """`stratagem order-kernel` as a child process; ready once it recovered its logs."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        workdir = workdir.resolve()
        self.workdir = workdir
        self.config_text = config_text  # written at start(): a refused runner touches nothing
        self.endpoint = ipc_endpoint(workdir / "ok.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.stderr_path = workdir / "order-kernel.stderr"

    def log_path(self, session: str) -> Path:
        return self.workdir / "logs" / f"{session}.log"

    def start(self, ready_timeout_s: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "kernel.toml").write_text(self.config_text)
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stratagem.commands_order_kernel", "--bind",
                 self.endpoint, "--config", str(self.workdir / "kernel.toml")],
                cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=err, env=env,
                # its own process group: a Ctrl-C at the terminal reaches the runner only, which
                # then stops the sessions by policy BEFORE it stops the order kernel
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + ready_timeout_s
        while True:
            text = self.stderr_path.read_bytes()[offset:].decode(errors="replace")
            if "serving" in text:
                for line in text.splitlines():
                    log.info("%s", line)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RunnerError(
                    f"the order kernel did not start (exit {self.proc.poll()}); its stderr "
                    f"({self.stderr_path}) ends with: {text[-500:]}"
                )
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the kernel flushes and fsyncs its logs), SIGKILL only after the timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- the replay feed -----------------------------------------------------------------------------
class ReplayFeed(threading.Thread):
    """Publishes a bar file on the bus at `bars_per_second` once `subscribers` joined."""

    def __init__(
        self,
        endpoint: str,
        data: Path,
        symbol: str,
        timeframe: str,
        *,
        bars_per_second: float,
        subscribers: int,
        start_ns: int | None,
        end_ns: int | None,
        stopping: threading.Event,
    ) -> None:
        super().__init__(name="replay-feed", daemon=True)
        self.bars = read_bars(data, start_ns=start_ns, end_ns=end_ns)
        self.topic = bar_topic(symbol, timeframe)
        self.publisher = Publisher(endpoint, session_id=0, sndhwm=100_000, linger_ms=2000)
        self.endpoint = self.publisher.endpoint
        self.interval = 1.0 / bars_per_second if bars_per_second > 0 else 0.0
        self.subscribers = subscribers
        self.stopping = stopping
        self.published = 0
        self.last_publish_mono: float | None = None
        self.first_publish_mono: float | None = None
        self.error = ""
        self.done = False

    def run(self) -> None:
        try:
            self.publisher.wait_for_subscribers(self.subscribers, timeout_s=60.0)
            cols = [
                self.bars[c].to_list() for c in ("ts_ns", "open", "high", "low", "close", "volume")
            ]
            start = time.monotonic()
            for i, row in enumerate(zip(*cols, strict=True)):
                if self.stopping.is_set():
                    return
                if self.interval:
                    wait = start + i * self.interval - time.monotonic()
                    if wait > 0 and self.stopping.wait(wait):
                        return
                bar = Bar(ts_ns=row[0], open=row[1], high=row[2], low=row[3], close=row[4],
                          volume=row[5])  # fmt: skip
                self.publisher.publish(self.topic, bar)
                self.published += 1
                self.last_publish_mono = time.monotonic()
                if self.first_publish_mono is None:
                    self.first_publish_mono = self.last_publish_mono
                if self.published % 100 == 0:
                    self.publisher.heartbeat()
            self.publisher.heartbeat()
            self.publisher.end(self.topic)
            self.done = True
        except Exception as exc:  # reported in health.json; sessions then go idle
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("replay feed failed: %s", self.error)

    def close(self) -> None:
        self.publisher.close()


# -- the runner ----------------------------------------------------------------------------------
def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


class Runner:
    """Owns the processes and threads of one service; `run()` blocks until it is stopped."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        rs = settings.runner
        self.rs = rs
        if not rs.strategies:
            raise RunnerError(
                "no strategies: add [[runner.strategies]] entries (name, artifact) to the config"
            )
        names = [s.name for s in rs.strategies]
        if len(set(names)) != len(names):
            raise RunnerError(f"strategy names must be unique, got {names}")
        loaded: list[tuple[str, Artifact]] = []
        for s in rs.strategies:
            if not s.artifact.is_file():
                raise RunnerError(f"strategy {s.name!r}: artifact {s.artifact} not found")
            artifact, _ = load_with_lines(s.artifact)
            loaded.append((s.name, artifact))
        self.kernel_config = kernel_toml(loaded, rs)
        self.artifacts = dict(loaded)
        self.stopping = threading.Event()
        self.state = "created"
        self.state_dir = rs.state_dir
        self.kernel = OrderKernelProcess(rs.state_dir / "order-kernel", self.kernel_config)
        feed = rs.feed
        if feed.mode == "bus":
            if not feed.endpoint:
                raise RunnerError("feed.mode = 'bus' needs feed.endpoint (the publisher's address)")
            self.feed_endpoint = feed.endpoint
        else:
            if feed.data is None or not feed.data.is_file():
                raise RunnerError(
                    f"feed.mode = 'replay' needs feed.data, a bar file; got {feed.data}"
                )
            topics = {
                bar_topic(a.instrument.symbol, a.instrument.timeframe)
                for a in self.artifacts.values()
            }
            if len(topics) != 1:
                raise RunnerError(
                    f"a replay feed publishes one series but the strategies need {sorted(topics)}; "
                    "use feed.mode = 'bus' with a publisher per series"
                )
            for name, a in loaded:
                inputs = sorted(
                    f"data.{k} ({bar_topic(d.symbol, d.timeframe)})"
                    for k, d in (a.data or {}).items()
                    if bar_topic(d.symbol, d.timeframe) not in topics
                )
                if inputs:
                    raise RunnerError(
                        f"strategy {name!r} reads {', '.join(inputs)} but a replay feed publishes "
                        f"only {next(iter(topics))}; use feed.mode = 'bus' with a publisher of "
                        "every series (e.g. `stratagem run A.yaml B.yaml --paper --bars SYMBOL=FILE`)"
                    )
            self.feed_endpoint = feed.endpoint or f"ipc://{(rs.state_dir / 'feed.sock').resolve()}"
        self.sessions: dict[str, StrategySession] = {}
        self.feed: ReplayFeed | None = None
        self.kernel_timeout_ms = rs.kernel_timeout_ms
        self.kernel_attempts = rs.kernel_attempts
        self._ctl: zmq.Socket[bytes] | None = None
        self._ping: OrderKernelClient | None = None
        self._last_ping_mono: float | None = None
        self.control_endpoint = rs.control()
        self._lock: IO[str] | None = None

    def run_id(self, name: str) -> str:
        return f"{self.rs.name}-{name}"

    # -- start-up -----------------------------------------------------------------------------
    def _prepare_run_dirs(self) -> None:
        rs = self.rs
        for s in rs.strategies:
            run_id = self.run_id(s.name)
            d = self.settings.runs_dir / run_id
            d.mkdir(parents=True, exist_ok=True)
            kernel_log = self.kernel.log_path(run_id)
            orders = d / "orders.log"
            if orders.exists() and not (kernel_log.exists() and orders.samefile(kernel_log)):
                raise RunnerError(
                    f"{orders} is not this service's order log ({kernel_log}); the run directory "
                    "belongs to another state_dir: move it away or change runner.name"
                )
            if not (d / "artifact.yaml").exists():
                if rs.feed.mode == "replay" and rs.feed.data is not None and self.feed is not None:
                    write_run_file(
                        d, artifact=self.artifacts[s.name], artifact_path=s.artifact,
                        data_path=rs.feed.data, bars=self.feed.bars,
                        start_ns=rs.feed.start_ns, end_ns=rs.feed.end_ns,
                    )  # fmt: skip
                else:
                    (d / "artifact.yaml").write_bytes(s.artifact.read_bytes())
            self.sessions[s.name] = StrategySession(
                SessionConfig(
                    name=s.name,
                    run_id=run_id,
                    artifact_path=s.artifact,
                    run_dir=d,
                    kernel_endpoint=self.kernel.endpoint,
                    feed_endpoint=self.feed_endpoint,
                    kernel_log=kernel_log,
                    on_stop=rs.on_stop,
                    idle_timeout_s=rs.feed.idle_timeout_s,
                    snapshot_every_bars=rs.snapshot_every_bars,
                    snapshot_interval_s=rs.snapshot_interval_s,
                    max_restarts=rs.max_restarts,
                    backoff_s=rs.backoff_s,
                    backoff_max_s=rs.backoff_max_s,
                    kernel_timeout_ms=self.kernel_timeout_ms,
                    kernel_attempts=self.kernel_attempts,
                    data_wait_ms=rs.data_wait_ms,
                    # a live bus delivers a bar per timeframe: stale means several bars missing
                    stale_after_s=rs.stale_after_s
                    if rs.feed.mode == "replay"
                    else max(
                        rs.stale_after_s,
                        3 * timeframe_to_ns(self.artifacts[s.name].instrument.timeframe) / 1e9,
                    ),
                ),
                self.stopping,
            )

    def start(self) -> None:
        """Everything up, in order; raises RunnerError (and tears down) if a part fails."""
        rs = self.rs
        rs.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (rs.state_dir / "runner.lock").open("w")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise RunnerError(
                f"another runner holds {rs.state_dir / 'runner.lock'}: one runner per state_dir "
                "(stop it, or give this one another runner.state_dir)"
            ) from None
        self.state = "starting"
        try:
            if rs.feed.mode == "replay":
                assert rs.feed.data is not None
                first = next(iter(self.artifacts.values()))
                self.feed = ReplayFeed(
                    self.feed_endpoint, rs.feed.data, first.instrument.symbol,
                    first.instrument.timeframe, bars_per_second=rs.feed.bars_per_second,
                    subscribers=len(rs.strategies), start_ns=rs.feed.start_ns,
                    end_ns=rs.feed.end_ns, stopping=self.stopping,
                )  # fmt: skip
            self._prepare_run_dirs()
            self._check_links()
            self.kernel.start()  # recovers every session log before it serves
            self._ping = OrderKernelClient(self.kernel.endpoint, "_health", subscribe=False)
            self._bind_control()
            for session in self.sessions.values():
                session.start()
            if self.feed is not None:
                # publish once every session subscribed (or failed to start: it is not waited for)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not all(
                    s.subscribed.is_set() or not s.alive() for s in self.sessions.values()
                ):
                    time.sleep(0.01)
                self.feed.subscribers = sum(s.subscribed.is_set() for s in self.sessions.values())
                self.feed.start()
            self.state = "running"
            self.write_health()
        except BaseException:
            self.stopping.set()
            self._teardown()
            raise

    def _check_links(self) -> None:
        """orders.log is a hard link to the kernel's log: both must be on one filesystem."""
        self.kernel.workdir.mkdir(parents=True, exist_ok=True)
        probe = self.kernel.workdir / ".link-probe"
        target = self.settings.runs_dir / ".link-probe"
        probe.write_bytes(b"")
        try:
            target.unlink(missing_ok=True)
            os.link(probe, target)
        except OSError as exc:
            raise RunnerError(
                f"cannot hard-link {probe} into {self.settings.runs_dir} ({exc}); put runner."
                "state_dir and runs_dir on the same filesystem"
            ) from None
        finally:
            probe.unlink(missing_ok=True)
            target.unlink(missing_ok=True)

    def _bind_control(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 500)
        try:
            sock.bind(self.control_endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise RunnerError(
                f"cannot bind the control socket {self.control_endpoint}: {exc}; is another "
                "runner using this state_dir? stop it or set runner.control_endpoint"
            ) from None
        self._ctl = sock

    # -- control -------------------------------------------------------------------------------
    def handle_control(self, raw: bytes) -> ControlReply:
        """Decode, route to the targeted sessions, wait for them; never raises on bad input."""
        try:
            req = decode_request(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("control: refused a malformed request: %s", exc)
            return ControlReply(
                request_id=-1, action="?", ok=False, detail=f"malformed request: {exc}"
            )
        now = time.monotonic()
        status = {n: s.health(now) for n, s in sorted(self.sessions.items())}
        if req.action == "status":
            return ControlReply(request_id=req.request_id, action="status", ok=True, status=status)
        if req.scope == "all":
            if req.action == "swap":
                return ControlReply(request_id=req.request_id, action=req.action, ok=False,
                                    detail="swap needs one strategy name as scope")  # fmt: skip
            targets = sorted(self.sessions)
        elif req.scope in self.sessions:
            targets = [req.scope]
        else:
            return ControlReply(
                request_id=req.request_id, action=req.action, ok=False,
                detail=f"unknown scope {req.scope!r}; strategies: {sorted(self.sessions)} or 'all'",
            )  # fmt: skip
        pending: dict[str, Pending] = {}
        errors: dict[str, str] = {}
        for name in targets:
            s = self.sessions[name]
            if not s.alive() or s.state not in ("running", "starting", "restarting"):
                errors[name] = f"not running (state {s.state})"
                continue
            pending[name] = Pending(req)
            s.inbox.put(pending[name])
        deadline = time.monotonic() + max(0.1, self.rs.control_timeout_s * 0.8)
        next_health = time.monotonic() + self.rs.health_interval_s
        while time.monotonic() < deadline and not all(p.done.is_set() for p in pending.values()):
            time.sleep(0.001)
            if time.monotonic() >= next_health:  # a slow session must not make us look dead
                self.write_health()
                next_health = time.monotonic() + self.rs.health_interval_s
        applied: list[str] = []
        for name, p in pending.items():
            if not p.done.is_set():
                errors[name] = "no answer from the session in time (it may apply it later)"
            elif p.ok:
                applied.append(name)
            else:
                errors[name] = p.detail
        log.warning("control %s (#%d by %s, scope %s): applied %s, errors %s", req.action,
                    req.request_id, req.by, req.scope, applied, errors)  # fmt: skip
        status = {n: s.health(time.monotonic()) for n, s in sorted(self.sessions.items())}
        return ControlReply(
            request_id=req.request_id, action=req.action, ok=bool(applied) and not errors,
            applied=applied, errors=errors, status=status,
        )  # fmt: skip

    def _serve_control(self, timeout_ms: int) -> None:
        assert self._ctl is not None
        if not self._ctl.poll(timeout_ms, zmq.POLLIN):
            return
        frames = self._ctl.recv_multipart()
        if len(frames) != 2:
            reply = ControlReply(request_id=-1, action="?", ok=False,
                                 detail=f"expected one frame, got {len(frames) - 1}")  # fmt: skip
        else:
            reply = self.handle_control(frames[1])
        self._ctl.send_multipart([frames[0], encode(reply)])

    # -- health ---------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        kernel_alive = self.kernel.alive()
        if kernel_alive and self._ping is not None and self._ping.ping(200):
            self._last_ping_mono = now
        feed: dict[str, Any] = {"mode": self.rs.feed.mode, "endpoint": self.feed_endpoint}
        if self.feed is not None:
            feed.update(
                alive=self.feed.is_alive() or self.feed.done,
                published=self.feed.published,
                done=self.feed.done,
                error=self.feed.error,
                last_event_age_s=None
                if self.feed.last_publish_mono is None
                else round(now - self.feed.last_publish_mono, 3),
            )
        return {
            "service": self.rs.name,
            "pid": os.getpid(),
            "state": self.state,
            "updated_unix_ns": time.time_ns(),  # wall clock: this file is a view, never a log
            "interval_s": self.rs.health_interval_s,
            "stale_after_s": self.rs.stale_after_s,
            "control_endpoint": self.control_endpoint,
            "on_stop": self.rs.on_stop,
            "order_kernel": {
                "alive": kernel_alive,
                "pid": self.kernel.pid,
                "endpoint": self.kernel.endpoint,
                "restarts": self.kernel.restarts,
                "last_ping_age_s": None
                if self._last_ping_mono is None
                else round(now - self._last_ping_mono, 3),
            },
            "feed": feed,
            "strategies": {n: s.health(now) for n, s in sorted(self.sessions.items())},
        }

    def write_health(self) -> dict[str, Any]:
        h = self.health()
        _atomic_json(self.rs.health_path(), h)
        return h

    # -- the main loop ----------------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> int:
        """Start, serve control requests and health until stopped or every session is done."""
        old: dict[int, Any] = {}
        if install_signals:

            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.warning("signal %d: stopping (on_stop=%s)", signum, self.rs.on_stop)
                self.stopping.set()

            old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            next_health = 0.0
            while not self.stopping.is_set():
                self._serve_control(50)
                now = time.monotonic()
                if now >= next_health:
                    self._watch_kernel()
                    self.write_health()
                    next_health = now + self.rs.health_interval_s
                if all(not s.alive() for s in self.sessions.values()):
                    log.info("every strategy session ended: stopping")
                    break
        finally:
            self.stopping.set()
            self._teardown()
            for s, h in old.items():
                signal.signal(s, h)
        failed = [n for n, s in self.sessions.items() if s.state == "failed"]
        return 1 if failed else 0

    def _watch_kernel(self) -> None:
        """A dead order kernel is restarted (it recovers its logs); sessions retry meanwhile."""
        if self.kernel.alive() or self.stopping.is_set():
            return
        code = self.kernel.proc.returncode if self.kernel.proc else None
        log.error("order kernel exited unexpectedly (code %s): restarting it", code)
        self.kernel.restarts += 1
        try:
            self.kernel.start()
        except RunnerError as exc:
            log.error("order kernel restart failed: %s", exc)

    def _teardown(self) -> None:
        """Sessions first (stop orders, policy, snapshot), then control, feed, order kernel."""
        self.state = "stopping"
        for s in self.sessions.values():
            if s.thread.ident is not None:
                s.thread.join(timeout=60)
        if self.feed is not None:
            if self.feed.ident is not None:
                self.feed.join(timeout=5)
            self.feed.close()
        if self._ctl is not None:
            self._ctl.close(linger=0)
            self._ctl = None
        if self._ping is not None:
            self._ping.close()
            self._ping = None
        code = self.kernel.stop()
        self.state = "stopped"
        if self._lock is None:  # never started: nothing of ours in the state dir to report
            return
        if self.rs.state_dir.is_dir():
            h = self.write_health()
            summary = {
                "service": self.rs.name,
                "order_kernel_exit": code,
                "order_kernel_restarts": self.kernel.restarts,
                "on_stop": self.rs.on_stop,
                "strategies": h["strategies"],
            }
            _atomic_json(self.rs.state_dir / "summary.json", summary)
        self._lock.close()  # releases the flock
        self._lock = None


def run_service(
    settings: ServiceSettings, *, on_ready: Callable[[Runner], None] | None = None
) -> int:
    """The `stratagem service run` entry: build, run, return the exit code."""
    runner = Runner(settings)
    if on_ready is not None:
        on_ready(runner)
    return runner.run()
