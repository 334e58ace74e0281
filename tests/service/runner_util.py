"""Helpers for the service-runner tests: configs, a runner child process, waiting on health."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from stratagem.service.settings import ServiceSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data" / "btcusdt-1h-synthetic.csv"
END_NS = 1_706_745_600_000_000_000  # 2024-02-01: 744 hourly bars of the bundled data
TOKEN = "tok-runner-0123456789"


def artifacts(tmp: Path) -> dict[str, Path]:
    """rsi-reversion as shipped, sma-cross made a perp (one order kernel, one instrument table),
    and rsi-reversion v2 (RSI period 12, wider first target) for hot-swaps."""
    rsi = (REPO / "examples" / "rsi-reversion.yaml").read_text()
    sma = (REPO / "examples" / "sma-cross.yaml").read_text().replace("kind: spot", "kind: perp")
    v2 = (
        rsi.replace("version: 1", "version: 2")
        .replace("params: {period: 14}", "params: {period: 12}")
        .replace("{r: 1.5, size_pct: 50}", "{r: 2.0, size_pct: 50}")
    )
    out = {"rsi": tmp / "rsi.yaml", "sma": tmp / "sma.yaml", "rsi_v2": tmp / "rsi-v2.yaml"}
    out["rsi"].write_text(rsi)
    out["sma"].write_text(sma)
    out["rsi_v2"].write_text(v2)
    return out


def write_config(
    tmp: Path, strategies: dict[str, Path], *, bars_per_second: float, **runner: object
) -> Path:
    lines = [
        f'runs_dir = "{tmp / "runs"}"',
        f'db_path = "{tmp / "rm.sqlite"}"',
        f'journal_path = "{tmp / "journal.jsonl"}"',
        "live_refresh_s = 0",
        "[api_tokens]",
        f'trader = "{TOKEN}"',
        "[runner]",
        'name = "t"',
        f'state_dir = "{tmp / "state"}"',
    ]
    opts: dict[str, object] = {
        "snapshot_every_bars": 20,
        "health_interval_s": 0.2,
        "control_timeout_s": 5.0,
        **runner,
    }
    lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    lines += [
        "[runner.feed]",
        'mode = "replay"',
        f'data = "{DATA}"',
        f"bars_per_second = {bars_per_second}",
        f"end_ns = {END_NS}",
        "idle_timeout_s = 20",
    ]
    for name, path in strategies.items():
        lines += ["[[runner.strategies]]", f'name = "{name}"', f'artifact = "{path}"']
    cfg = tmp / "service.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def settings_of(cfg: Path) -> ServiceSettings:
    return load_settings(cfg, env={})


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class RunnerProcess:
    """`stratagem service run --config CFG` as a child process (killed if a test fails)."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.settings = settings_of(cfg)
        self.stderr = cfg.parent / "runner.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunnerProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stratagem.cli",
                    "service",
                    "run",
                    "--config",
                    str(self.cfg),
                ],
                stdout=err,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cfg.parent,
                start_new_session=True,  # its own process group, like a service in a terminal
            )
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.settings.runner.health_path().read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data

    def wait_bars(self, n: int, timeout_s: float = 60.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            h = self.health()
            if (
                h
                and h["strategies"]
                and all(
                    s["state"] == "running" and s["bars"] >= n for s in h["strategies"].values()
                )
            ):
                return h
            return None

        result: dict[str, Any] = wait_for(ready, timeout_s, f"{n} bars in every session")
        return result

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def ctrl_c(self) -> None:
        """SIGINT to the runner's whole process group, as a terminal's Ctrl-C does."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pid = ((self.health() or {}).get("order_kernel") or {}).get("pid")
                if pid:  # the runner could not stop its order kernel: do it here
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
