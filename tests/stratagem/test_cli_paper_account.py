"""`stratagem run ... --paper` runs what the backtest runs: `data:` inputs (`--bars`) and several
artifacts on one account (`--account`), over the market-data bus and order-kernel processes,
writing the backtest's strategy and portfolio logs byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_cli_portfolio import BTC_ETH, DATA, RSI, SMA  # one copy of the artifact and paths

from order_kernel.log import verify
from stratagem.cli import main

WINDOW = ["--from", "2024-01-01", "--to", "2024-03-01"]


@pytest.fixture
def btc_eth(tmp_path: Path) -> tuple[Path, Path]:
    """The artifact reading ETH bars, and an ETH file with a bar missing (held, logged)."""
    art = tmp_path / "btc-eth.yaml"
    art.write_text(BTC_ETH)
    btc = pl.read_csv(DATA).head(24 * 70)
    eth = btc.with_columns((pl.col(c) * 0.05).round(2) for c in ("open", "high", "low", "close"))
    eth = eth.filter(pl.int_range(pl.len()) != 24 * 40)
    eth_file = tmp_path / "eth.csv"
    eth.write_csv(eth_file)
    return art, eth_file


def _same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} differs from {b}"


def test_paper_run_with_data_inputs_logs_the_backtest_bytes(
    tmp_path: Path, btc_eth: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    art, eth_file = btc_eth
    base = ["run", str(art), *WINDOW, "--bars", f"ETH/USDT={eth_file}", "--no-plots", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "bt")]) == 0
    assert main([*base, "--paper", "--out", str(tmp_path / "paper")]) == 0
    assert "the recorded bars over the market-data bus" in capsys.readouterr().out
    bt, paper = tmp_path / "bt", tmp_path / "paper"
    log = (paper / "strategy.log.jsonl").read_bytes()
    assert b'"kind":"data_bar"' in log and b'"kind":"data_missing"' in log
    assert b'"type":"SubmitOrder"' in log
    _same_bytes(bt / "strategy.log.jsonl", paper / "strategy.log.jsonl")
    # run.json records the data inputs in paper mode as in backtest mode
    info_bt, info_paper = (json.loads((d / "run.json").read_text()) for d in (bt, paper))
    assert info_paper["data_inputs"] == info_bt["data_inputs"]
    assert info_paper["data_inputs"]["ETH/USDT"]["data"] == str(eth_file.resolve())
    # the order log is the kernel process's own, and nothing of the run's plumbing is left
    assert verify(paper / "orders.log").records > 0
    assert [p.name for p in paper.iterdir() if p.name.startswith(("order-kernel", "md."))] == []
    assert main(["replay", str(paper)]) == 0
    assert "byte-identical" in capsys.readouterr().out


def test_paper_account_runs_in_lockstep_and_logs_the_portfolio_backtest_bytes(
    tmp_path: Path, btc_eth: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Three artifacts (two venue settings: two kernel processes; one with a data input) under
    a concurrency limit: the same strategy logs and portfolio log as the portfolio backtest."""
    art, eth_file = btc_eth
    account = tmp_path / "account.toml"
    account.write_text("[portfolio]\nmax_concurrent_positions = 1\n")
    base = [
        "run", str(RSI), str(SMA), str(art), *WINDOW, "--bars", f"ETH/USDT={eth_file}",
        "--account", str(account), "--no-plots", "--json",
    ]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "bt")]) == 0
    assert main([*base, "--paper", "--out", str(tmp_path / "paper")]) == 0
    capsys.readouterr()
    bt, paper = tmp_path / "bt", tmp_path / "paper"
    _same_bytes(bt / "portfolio.log.jsonl", paper / "portfolio.log.jsonl")
    for name in ("rsi-reversion", "sma-cross", "btc-eth"):
        _same_bytes(bt / name / "strategy.log.jsonl", paper / name / "strategy.log.jsonl")
        assert verify(paper / name / "orders.log").records > 0
    _same_bytes(bt / "account.csv", paper / "account.csv")
    summary_bt, summary_paper = (
        json.loads((d / "portfolio.json").read_text()) for d in (bt, paper)
    )
    assert summary_paper["account"]["refusals"] == summary_bt["account"]["refusals"] > 0
    assert summary_paper["account"]["max_open_positions"] == 1
    assert summary_paper["inputs"]["mode"] == "paper" and "mode" not in summary_bt["inputs"]
    leftovers = [p.name for p in paper.iterdir() if p.name.startswith(("order-kernel", "md."))]
    assert leftovers == []


def test_account_with_paper_still_needs_several_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[portfolio]\nmax_concurrent_positions = 1\n")
    args = ["run", str(RSI), "--paper", "--account", str(toml), "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "two or more artifacts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_paper_command_subscribes_to_the_data_inputs_topics(
    tmp_path: Path, btc_eth: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`stratagem paper ART --feed EP` on a live bus carrying BTC and ETH: the backtest's bytes."""
    from artifacts.graph import check
    from artifacts.io import load
    from feeds.bus import bar_topic
    from feeds.files import read_bars
    from strategy_kernel.backtest import run_backtest
    from strategy_kernel.paper import RecordedFeed

    art, eth_file = btc_eth
    a = load(art)
    btc, eth = read_bars(DATA).head(600), read_bars(eth_file).head(600)
    run_backtest(
        a, check(a), btc, data_bars={"ETH/USDT": eth}, out_dir=tmp_path / "bt", session_id="paper"
    )
    hour = 3_600_000_000_000
    topics = [bar_topic("BTC/USDT", "1h"), bar_topic("ETH/USDT", "1h")]
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    feed = RecordedFeed(endpoint, {topics[0]: (btc, hour), topics[1]: (eth, hour)}, topics[:1])
    feed.start()
    try:
        args = ["paper", str(art), "--feed", endpoint, "--out", str(tmp_path / "paper")]
        assert main([*args, "--no-plots", "--idle-timeout", "30"]) == 0
    finally:
        feed.close()
    out = capsys.readouterr().out
    assert "data inputs bar.ETH-USDT.1h" in out and "after 600 bars" in out
    _same_bytes(tmp_path / "bt" / "strategy.log.jsonl", tmp_path / "paper" / "strategy.log.jsonl")
