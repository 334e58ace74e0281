"""Crash recovery soak: SIGKILL the server at seeded random points while a client streams.

The server runs in a forked child (the test process has numba compiled already, so a restart
costs milliseconds, not an interpreter start-up); each kill is a real SIGKILL of that process.
After every kill the server restarts with recovery (torn tails cut explicitly and reported),
the client reconnects and resends its unacknowledged commands with possible_duplicate=True.
At the end the recovered state must equal an uninterrupted in-process run of the same
commands: nothing lost, nothing doubled. Long run (>= 1,000 kills):

    STRATAGEM_SOAK_KILLS=1000 pytest tests/order_kernel/test_crash_soak.py -m slow -q
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from server_helpers import write_config

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.client import OrderKernelClient
from order_kernel.config import KernelConfig, load_config
from order_kernel.kernel import OrderKernel
from order_kernel.server import Server
from order_kernel.spec import OrderType, Side

H = 3_600_000_000_000
SID = "soak"


def command_stream(rng: random.Random, n: int) -> list[m.Command]:
    """A seeded mix of bars, market/limit/stop orders with brackets, cancels and duplicates."""
    out: list[m.Command] = []
    seq = bar_seq = t = 0
    px = 10_000
    cids: list[str] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.3:
            t += 1
            bar_seq += 1
            o = px
            px = max(100, px + rng.randint(-60, 60))
            hi, lo = max(o, px) + rng.randint(0, 40), min(o, px) - rng.randint(0, 40)
            out.append(
                m.MarketBar(
                    session_id=SID,
                    seq=bar_seq,
                    ts_ns=t * H,
                    symbol="BTC",
                    open=o,
                    high=hi,
                    low=lo,
                    close=px,
                    volume=1_000,
                    interval_ns=H,
                )
            )
            continue
        seq += 1
        head: dict[str, Any] = {"session_id": SID, "seq": seq, "ts_ns": t * H}
        if r < 0.75 or not cids:
            cid = rng.choice(cids) if cids and rng.random() < 0.1 else f"o{seq}"  # duplicate id
            side = rng.choice([Side.BUY, Side.SELL])
            kind = rng.choice([OrderType.MARKET, OrderType.LIMIT, OrderType.STOP])
            sign = 1 if side is Side.BUY else -1
            kw: dict[str, Any] = {}
            entry = px
            if kind is OrderType.LIMIT:
                entry = px - sign * rng.randint(0, 50)
                kw["price"] = entry
            elif kind is OrderType.STOP:
                entry = px + sign * rng.randint(1, 50)
                kw["trigger_price"] = entry
            if rng.random() < 0.4:
                kw["bracket"] = m.Bracket(
                    stop_loss=entry - sign * rng.randint(20, 80),
                    take_profits=(
                        m.TakeProfitLeg(price=entry + sign * rng.randint(20, 80), qty=1),
                    ),
                )
            cids.append(cid)
            out.append(
                m.SubmitOrder(
                    **head,
                    client_order_id=cid,
                    symbol="BTC",
                    side=side,
                    order_type=kind,
                    qty=rng.randint(1, 3),
                    **kw,
                )
            )
        elif r < 0.95:
            out.append(m.CancelOrder(**head, client_order_id=rng.choice(cids)))
        else:
            out.append(m.CancelAll(**head))
    return out


def start_child(config: KernelConfig, endpoint: str, report: Path) -> int:
    """Fork a server process; the child never returns into pytest."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    stop: list[Server] = []
    term = [False]

    def on_term(*_: object) -> None:  # installed first: a SIGTERM during start-up still counts
        term[0] = True
        for srv in stop:
            srv.stop()

    try:
        signal.signal(signal.SIGTERM, on_term)
        with report.open("a") as rep:
            srv = Server(config, endpoint, clock_ns=time.monotonic_ns, report=rep)
            stop.append(srv)
            if term[0]:
                srv.stop()
            srv.serve()
        code = 0
    finally:
        os._exit(code)


def wait_acknowledged(client: OrderKernelClient, timeout_ms: int) -> None:
    idle = 0
    while client.unacknowledged():
        if client.poll_reply(50) is None:
            idle += 50
            assert idle < timeout_ms, f"{len(client.unacknowledged())} commands never acknowledged"
        else:
            idle = 0


def run_soak(tmp_path: Path, kills: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    cfg_path = write_config(tmp_path, fsync="never")
    config = load_config(cfg_path)
    cmds = command_stream(rng, 8 * kills + 50)
    endpoint = f"ipc://{tmp_path}/soak.sock"
    report = tmp_path / "recovery.txt"
    pid = start_child(config, endpoint, report)
    client = OrderKernelClient(endpoint, SID, subscribe=False, reconnect_ivl_ms=5)
    done_kills = in_flight = 0
    try:
        pos = 0
        while done_kills < kills:
            burst = rng.randint(1, 12)
            for cmd in cmds[pos : pos + burst]:
                client.send(cmd)
            pos += burst
            while client.poll_reply(rng.choice([0, 0, 1, 2])) is not None:
                pass
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            done_kills += 1
            in_flight += bool(client.unacknowledged())
            pid = start_child(config, endpoint, report)
            client.reconnect()
            if rng.random() < 0.85:  # else the next kill may land during recovery itself
                assert client.ping(10_000)
            client.resend_unacknowledged()
            wait_acknowledged(client, 10_000)  # the restarted server is up and caught up
        for cmd in cmds[pos:]:
            client.send(cmd)
        wait_acknowledged(client, 20_000)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        client.close()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    ref = OrderKernel(SID, config.instrument_specs(), config.make_venue())
    for cmd in cmds:
        ref.handle(cmd)
    log = tmp_path / "logs" / f"{SID}.log"
    got = OrderKernel.recover(log, SID, config.instrument_specs(), config.make_venue())
    assert got.log is not None
    got.log.close()
    assert got.state_digest() == ref.state_digest()
    entries = list(order_log.read(log))
    trades = [e.message.trade_id for e in entries if isinstance(e.message, m.OrderFilled)]
    assert len(trades) == len(set(trades))  # nothing doubled
    assert not any(isinstance(e.message, m.ResendRequest) for e in entries)  # no seq gap
    inbound = [e.message for e in entries if e.direction == order_log.IN]
    assert len([c for c in inbound if not c or not c.possible_duplicate]) <= len(cmds)
    lines = report.read_text().splitlines()
    assert len(lines) >= kills * 0.7  # restarts recovered the session's log and said so
    assert in_flight >= kills // 2  # most kills cut a stream with commands unacknowledged
    torn = sum("torn tail" in line for line in lines)
    return done_kills, torn


def test_sigkill_soak_ci(tmp_path: Path) -> None:
    kills, _torn = run_soak(tmp_path, kills=100, seed=1)
    assert kills == 100


@pytest.mark.slow
def test_sigkill_soak_long(tmp_path: Path) -> None:
    n = int(os.environ.get("STRATAGEM_SOAK_KILLS", "300"))
    kills, _torn = run_soak(tmp_path, kills=n, seed=2)
    assert kills == n
