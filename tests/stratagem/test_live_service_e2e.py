"""End to end in live mode: `stratagem service run --live` with `mode = "live"` starts the order
kernel as its own process, routed through ccxt to the local fake Binance; a strategy session
trades the bars this test publishes on a market-data bus. The entry fills at the exchange, the
bracket stop is held by the kernel, a later bar triggers it and its `.trig` market order closes
the position; both hash-chained logs verify and no credential reaches the run directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from feeds.bus import Publisher, bar_topic
from feeds.schema import Bar
from order_kernel import log as order_log
from order_kernel import messages as m
from strategy_kernel import log as strategy_log

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "order_kernel"))  # the fake exchange lives there
from fake_order_exchange import API_KEY, FakeOrderExchange  # noqa: E402

API_SECRET = "fake-secret-SK-e2e-never-written"
H = 3_600_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC
ARTIFACT = """\
schema: stratagem/v1
name: live-e2e
version: 1
description: Buy 1 BTC at market when the close is above 100.50; 2 % stop, held by the kernel.
instrument: {venue: binance, symbol: BTC/USDT, timeframe: 1h, kind: spot, price_increment: "0.01", size_increment: "0.001"}
nodes:
  up: {kind: threshold, input: close, op: ">", value: 100.5}
entry:
  when: up
  side: long
  order: {type: market}
exit:
  stop_loss: {pct: 2}
risk: {sizing: {method: fixed, value: 1}, max_position_pct: 1000}
backtest: {initial_equity: 100000, maker_fee_bps: 2, taker_fee_bps: 5, slippage_ticks: 0, seed: 0}
"""
# (open, high, low, close): quiet, the entry signal, quiet above the stop, the stop hit, quiet
BARS = [
    (100.0, 100.2, 99.8, 100.0),
    (100.0, 101.2, 99.9, 101.0),
    (100.5, 100.8, 99.5, 100.0),
    (99.0, 99.2, 96.0, 97.0),
    (97.0, 97.5, 96.5, 97.2),
]


@pytest.fixture
def fx() -> Iterator[FakeOrderExchange]:
    with FakeOrderExchange(delay_s=0.25) as fake:
        yield fake


def _config(tmp: Path, url: str, endpoint: str) -> Path:
    art = tmp / "live-e2e.yaml"
    art.write_text(ARTIFACT)
    cfg = tmp / "service.toml"
    cfg.write_text(
        "\n".join(
            [
                f'runs_dir = "{tmp / "runs"}"',
                f'db_path = "{tmp / "rm.sqlite"}"',
                f'journal_path = "{tmp / "journal.jsonl"}"',
                "live_refresh_s = 0",
                "[runner]",
                'name = "t"',
                f'state_dir = "{tmp / "state"}"',
                'mode = "live"',
                "health_interval_s = 0.2",
                "control_timeout_s = 5.0",
                "[runner.venue]",
                'exchange = "binance"',
                'credentials = "env"',
                f'api_url = "{url}"',
                "poll_interval_ms = 50",
                "timeout_ms = 2000",
                "[runner.feed]",
                'mode = "bus"',
                f'endpoint = "{endpoint}"',
                "idle_timeout_s = 20",
                "[[runner.strategies]]",
                'name = "e2e"',
                f'artifact = "{art}"',
            ]
        )
        + "\n"
    )
    return cfg


def _wait(
    pred: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen[bytes], err: Path
) -> None:
    """Poll `pred` while the runner lives (its output is the failure message otherwise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        assert proc.poll() is None, err.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{err.read_text(errors='replace')}")


def _kill_kernel_left_behind(health: Path) -> None:
    """A runner that failed may leave its order kernel running: stop it by its pid."""
    try:
        pid = (json.loads(health.read_text()).get("order_kernel") or {}).get("pid")
    except (OSError, json.JSONDecodeError):
        return
    cmdline = Path(f"/proc/{pid}/cmdline")
    # only our own kernel child: a pid from the file may have been reused since
    if pid and cmdline.exists() and str(health.parent).encode() in cmdline.read_bytes():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)


def test_live_service_enters_holds_the_stop_triggers_it_and_ends_flat(
    tmp_path: Path, fx: FakeOrderExchange
) -> None:
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    cfg = _config(tmp_path, fx.url, endpoint)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        STRATAGEM_BINANCE_API_KEY=API_KEY,
        STRATAGEM_BINANCE_API_SECRET=API_SECRET,
    )
    err = tmp_path / "runner.stderr"
    pub = Publisher(endpoint, session_id=1)
    topic = bar_topic("BTC/USDT", "1h")
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratagem.cli",
                "service",
                "run",
                "--config",
                str(cfg),
                "--live",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:

        def subscribed() -> bool:
            pub.heartbeat()  # also reads the subscriptions that arrived
            return pub.subscriptions >= 1

        _wait(subscribed, 60, "the strategy session to subscribe", proc, err)
        for i, (o, h, lo, c) in enumerate(BARS):
            pub.publish(topic, Bar(ts_ns=T0 + i * H, open=o, high=h, low=lo, close=c, volume=1.0))
            pub.heartbeat()
            time.sleep(0.3)
        _wait(
            lambda: len(fx.orders) >= 2,
            30,
            "the entry and the stop's order at the venue",
            proc,
            err,
        )
        pub.end(topic)
        assert proc.wait(timeout=60) == 0, err.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        pub.close()
        if proc.returncode != 0:
            _kill_kernel_left_behind(tmp_path / "state" / "health.json")
    run = tmp_path / "runs" / "t-e2e"
    # the exchange saw exactly the entry and the triggered stop, both filled at market
    entry, stop = fx.orders
    assert (entry.side, entry.type, entry.status, entry.qty) == (
        "BUY",
        "MARKET",
        "FILLED",
        Decimal(1),
    )
    assert (stop.side, stop.type, stop.status, stop.qty) == ("SELL", "MARKET", "FILLED", Decimal(1))
    assert stop.client_id.endswith(".trig")
    # the order log: hash chain intact; the stop was held (accepted, never sent until triggered)
    order_log.verify(run / "orders.log")
    events = [
        m.decode_event(e.raw)
        for e in order_log.read(run / "orders.log")
        if e.direction == order_log.OUT
    ]
    triggered = [e for e in events if isinstance(e, m.OrderTriggered)]
    assert len(triggered) == 1
    # 2 % below the signal close 101.00, reached by the fourth bar (low 96.00), not before
    assert (triggered[0].trigger_price, triggered[0].ts_ns) == (9_898, T0 + 3 * H)
    held = [
        e for e in events if isinstance(e, m.OrderAccepted) and e.client_order_id.endswith(".sl")
    ]
    assert len(held) == 1 and held[0].venue_order_id.startswith("HELD-")  # no exchange order
    fills = [e for e in events if isinstance(e, m.OrderFilled)]
    assert [(f.side.name, f.qty, f.price) for f in fills] == [
        ("BUY", 1000, 10_000),  # the fake's mark 100.00
        ("SELL", 1000, 10_000),
    ]
    assert fills[1].client_order_id == f"{fills[0].client_order_id}.sl.trig"
    positions = [e for e in events if isinstance(e, m.PositionUpdate)]
    assert [p.qty for p in positions] == [1000, 0]
    # the strategy log verifies too, and the run records one closed trade
    assert strategy_log.verify(run / "strategy.log.jsonl").records > len(BARS)
    assert len((run / "trades.csv").read_text().strip().splitlines()) == 2  # header + 1 trade
    # no credential in any file of the run, the service's state or the runner's output
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert run / "orders.log" in files and run / "strategy.log.jsonl" in files
    for f in files:
        data = f.read_bytes()
        assert API_SECRET.encode() not in data and API_KEY.encode() not in data, f
