"""How the strategy kernel reaches the order kernel: in-process, or over ZeroMQ to its own process.

Both expose `handle(command) -> events`, so the backtest loop and the paper loop are one loop.
The remote path waits for each command's acknowledgement (correlated by seq); on a timeout it
reconnects and resends what is unacknowledged with `possible_duplicate=True` (the kernel's
idempotency by client order id and seq makes that safe), a bounded number of times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from artifacts.schema import Artifact
from feeds.endpoints import ipc_endpoint
from order_kernel import messages as m
from order_kernel.client import ClientTimeoutError, OrderKernelClient
from strategy_kernel.errors import StrategyError

if TYPE_CHECKING:  # backtest imports this module
    from strategy_kernel.backtest import FundingSchedule


class TransportError(StrategyError):
    """The order kernel process did not answer or could not be started."""


class KernelPort(Protocol):
    def handle(self, cmd: m.Command) -> list[m.Event]: ...


class RemoteKernel:
    """The order kernel behind a ZeroMQ endpoint, used synchronously (one command, its events)."""

    def __init__(
        self, endpoint: str, session_id: str, *, timeout_ms: int = 5000, attempts: int = 3
    ) -> None:
        self.client = OrderKernelClient(endpoint, session_id, subscribe=False)
        self.timeout_ms = timeout_ms
        self.attempts = attempts
        self.resends = 0

    def handle(self, cmd: m.Command) -> list[m.Event]:
        from order_kernel import wire

        key = (wire.ref_kind(cmd), cmd.seq)
        self.client.send(cmd)
        for attempt in range(self.attempts):
            try:
                return self.client.wait(key, self.timeout_ms).events
            except ClientTimeoutError:
                if attempt == self.attempts - 1:
                    break
                self.client.reconnect()
                self.resends += self.client.resend_unacknowledged()
        raise TransportError(
            f"order kernel at {self.client.endpoint} did not acknowledge seq {cmd.seq} after "
            f"{self.attempts} attempts of {self.timeout_ms} ms; is the process running?"
        )

    def close(self) -> None:
        self.client.close()


KERNEL_TOML = """log_dir = "logs"
fsync = "batch"
heartbeat_interval_ms = 500

[venue]
kind = "sim"
slippage_ticks = {slippage}
seed = {seed}
{venue_extra}
[[instruments]]
symbol = "{symbol}"
price_increment = "{price_inc}"
size_increment = "{size_inc}"
maker_fee_bps = "{maker}"
taker_fee_bps = "{taker}"
kind = "{kind}"
"""


def kernel_config(artifact: Artifact, funding: FundingSchedule | None = None) -> str:
    """kernel.toml for a paper order kernel that simulates exactly what the backtest simulates
    (with `funding`, the same historical rates at the same settlements)."""
    inst, bt = artifact.instrument, artifact.backtest
    venue_extra = ""
    if funding is not None:
        rows = ", ".join(
            f"[{t}, {r}]" for t, r in zip(funding.ts_ns, funding.rate_ppb, strict=True)
        )
        venue_extra = (
            f"funding_interval_ns = {funding.interval_ns}\n"
            f"funding_schedule = {{ {json.dumps(inst.symbol)} = [{rows}] }}\n"
        )
    return KERNEL_TOML.format(
        venue_extra=venue_extra,
        slippage=bt.slippage_ticks,
        seed=bt.seed,
        symbol=inst.symbol,
        price_inc=inst.price_increment,
        size_inc=inst.size_increment,
        maker=bt.maker_fee_bps,
        taker=bt.taker_fee_bps,
        kind="perp" if inst.kind == "perp" else "spot",
    )


@contextmanager
def order_kernel_process(
    artifact: Artifact,
    workdir: Path,
    *,
    ready_timeout_s: float = 60.0,
    funding: FundingSchedule | None = None,
) -> Iterator[str]:
    """Start `stratagem order-kernel` for this artifact in `workdir`; yield its endpoint; stop it cleanly."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "kernel.toml"
    config.write_text(kernel_config(artifact, funding))
    endpoint = ipc_endpoint(workdir / "ok.sock")
    err_path = workdir / "order-kernel.stderr"
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratagem.commands_order_kernel",
                "--bind",
                endpoint,
                "--config",
                str(config),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            deadline = time.monotonic() + ready_timeout_s
            while "serving" not in err_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TransportError(
                        f"order kernel did not start (exit {proc.poll()}): {err_path.read_text(errors='replace')[-500:]}"
                    )
                time.sleep(0.02)
            yield endpoint
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
