"""Start/stop an order-kernel server subprocess for tests (always terminated, never leaked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KERNEL_TOML = """
log_dir = "logs"
fsync = "{fsync}"
heartbeat_interval_ms = {beat_ms}

[venue]
kind = "sim"
slippage_ticks = 1

[[instruments]]
symbol = "BTC"
price_increment = "0.1"
size_increment = "0.001"

[[instruments]]
symbol = "ETH"
price_increment = "0.01"
size_increment = "0.01"
"""


def write_config(d: Path, *, fsync: str = "batch", beat_ms: int = 200) -> Path:
    cfg = d / "kernel.toml"
    cfg.write_text(KERNEL_TOML.format(fsync=fsync, beat_ms=beat_ms))
    return cfg


class ServerProcess:
    """A running `python -m stratagem.commands_order_kernel` with its stderr in a file."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.sock = workdir / "ok.sock"
        self.endpoint = f"ipc://{self.sock}"
        n = len(list(workdir.glob("server-*.stderr")))
        self.stderr_path = workdir / f"server-{n}.stderr"
        self._err = self.stderr_path.open("wb")
        for p in (self.sock, Path(f"{self.sock}.events")):
            p.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratagem.commands_order_kernel",
                "--bind",
                self.endpoint,
                "--config",
                str(config),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env=env,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.stderr()}")
            if "serving" in self.stderr():
                return
            time.sleep(0.02)
        raise AssertionError(f"server not ready after {timeout_s}s: {self.stderr()}")

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._err.close()


@contextmanager
def running_server(workdir: Path, config: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(workdir, config)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.kill()
