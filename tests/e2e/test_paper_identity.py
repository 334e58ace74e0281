"""Replay identity across transports: the same artifact and bars give the same strategy log
whether the order kernel runs in-process (backtest) or as its own process over ZeroMQ (paper)."""

from __future__ import annotations

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
