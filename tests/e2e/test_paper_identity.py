"""Replay identity across transports: the same artifact and bars give the same strategy log
whether the order kernel runs in-process (backtest) or as its own process over ZeroMQ (paper)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from artifacts.graph import check
from artifacts.io import load
from feeds.files import read_bars
from order_kernel.log import verify
from stratagem.cli import main
from strategy_kernel.backtest import run_backtest
from strategy_kernel.transport import RemoteKernel, order_kernel_process

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["rsi-reversion", "sma-cross"])
def test_backtest_and_paper_over_zeromq_log_the_same_bytes(name: str, tmp_path: Path) -> None:
    art = load(ROOT / "examples" / f"{name}.yaml")
    graph = check(art)
    bars = read_bars(DATA).head(1500)
    local = run_backtest(art, graph, bars, out_dir=tmp_path / "local")
    with order_kernel_process(art, tmp_path / "kernel") as endpoint:
        remote = RemoteKernel(endpoint, "bt")
        try:
            paper = run_backtest(art, graph, bars, out_dir=tmp_path / "paper", kernel=remote)
        finally:
            remote.close()
    assert local.trades and [vars(t) for t in paper.trades] == [vars(t) for t in local.trades]
    assert (tmp_path / "paper" / "strategy.log.jsonl").read_bytes() == (
        tmp_path / "local" / "strategy.log.jsonl"
    ).read_bytes()
    # the kernel process kept its own hash-chained order log for the session
    assert verify(tmp_path / "kernel" / "logs" / "bt.log").records > 0


def test_run_paper_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    args = [
        "run",
        str(ROOT / "examples" / "sma-cross.yaml"),
        "--paper",
        "--to",
        "2024-02-15",
        "--out",
        str(out),
        "--quiet",
        "--no-plots",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "paper: order kernel in its own process over ZeroMQ" in text
    assert (out / "orders.log").exists() and verify(out / "orders.log").records > 0


def _publish(endpoint: str, bars: object, topic: str, ready: threading.Event) -> None:
    from feeds.bus import Publisher
    from feeds.schema import Bar

    with Publisher(endpoint, sndhwm=100_000) as pub:
        pub.wait_for_subscribers(1, timeout_s=20)
        ready.set()
        for row in bars.iter_rows(named=True):  # type: ignore[attr-defined]
            pub.publish(topic, Bar(**row))
        pub.end(topic)


@pytest.mark.parametrize("kernel_kind", ["in-process", "own process"])
def test_paper_on_the_live_bus_logs_the_same_bytes_as_the_backtest(
    kernel_kind: str, tmp_path: Path
) -> None:
    from feeds.bus import Subscriber, bar_topic
    from order_kernel.kernel import OrderKernel
    from order_kernel.venues.sim import SimVenue
    from strategy_kernel.backtest import instrument_spec
    from strategy_kernel.paper import run_paper

    art = load(ROOT / "examples" / "rsi-reversion.yaml")
    graph = check(art)
    bars = read_bars(DATA).head(1200)
    run_backtest(art, graph, bars, out_dir=tmp_path / "bt", session_id="paper")
    topic = bar_topic(art.instrument.symbol, art.instrument.timeframe)
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    with contextlib.ExitStack() as stack:
        if kernel_kind == "in-process":
            inst = instrument_spec(art)
            kernel = OrderKernel(
                "paper",
                {inst.symbol: inst},
                SimVenue(slippage_ticks=art.backtest.slippage_ticks, seed=art.backtest.seed),
            )
        else:
            kernel = RemoteKernel(
                stack.enter_context(order_kernel_process(art, tmp_path / "kernel")), "paper"
            )
            stack.callback(kernel.close)
        sub = stack.enter_context(Subscriber(endpoint, [topic], rcvhwm=100_000))
        ready = threading.Event()
        publisher = threading.Thread(
            target=_publish, args=(endpoint, bars, topic, ready), daemon=True
        )
        publisher.start()
        result, stop = run_paper(
            art, graph, sub, kernel, out_dir=tmp_path / "paper", idle_timeout_ms=20_000
        )
        publisher.join(timeout=30)
    assert stop.reason == "end_of_stream" and stop.bars == 1200 and stop.feed_gaps == 0
    assert result is not None and result.trades
    assert (tmp_path / "paper" / "strategy.log.jsonl").read_bytes() == (
        tmp_path / "bt" / "strategy.log.jsonl"
    ).read_bytes()


def test_paper_cli_on_a_live_bus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from feeds.bus import bar_topic

    art = load(ROOT / "examples" / "sma-cross.yaml")
    topic = bar_topic(art.instrument.symbol, art.instrument.timeframe)
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    ready = threading.Event()
    publisher = threading.Thread(
        target=_publish, args=(endpoint, read_bars(DATA).head(400), topic, ready), daemon=True
    )
    publisher.start()
    out = tmp_path / "paper"
    args = [
        "paper",
        str(ROOT / "examples" / "sma-cross.yaml"),
        "--feed",
        endpoint,
        "--out",
        str(out),
        "--no-plots",
        "--idle-timeout",
        "20",
    ]
    assert main(args) == 0
    publisher.join(timeout=30)
    text = capsys.readouterr().out
    assert "paper stopped (end_of_stream) after 400 bars; feed gaps 0" in text
    assert verify(out / "orders.log").records > 0 and not (out / "order-kernel").exists()
