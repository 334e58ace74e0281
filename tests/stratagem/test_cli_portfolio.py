"""`stratagem run` with several artifacts on one account, and `--bars` for `data:` inputs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from stratagem.cli import main

ROOT = Path(__file__).resolve().parents[2]
RSI = ROOT / "examples" / "rsi-reversion.yaml"
SMA = ROOT / "examples" / "sma-cross.yaml"
DATA = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"
WINDOW = ["--from", "2024-01-01", "--to", "2024-04-01"]

BTC_ETH = """schema: stratagem/v1
name: btc-eth
version: 1
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
data:
  eth: {symbol: ETH/USDT, timeframe: 1h}
nodes:
  fast: {kind: indicator, fn: SMA, inputs: [close], params: {period: 5}}
  slow: {kind: indicator, fn: SMA, inputs: [close], params: {period: 20}}
  golden: {kind: cross, a: fast, b: slow, direction: above}
  eth_sma: {kind: indicator, fn: SMA, inputs: [eth.close], params: {period: 10}}
  eth_up: {kind: threshold, input: eth.close, op: ">", value: eth_sma}
  go: {kind: all, inputs: [golden, eth_up]}
entry: {when: go, side: long}
exit: {stop_loss: {pct: 2}, time_exit: {count: 12, unit: bars}}
risk: {sizing: {method: pct_equity, value: 50}}
"""


def _portfolio(tmp_path: Path, name: str, account: str | None) -> dict[str, object]:
    out = tmp_path / name
    args = ["run", str(RSI), str(SMA), *WINDOW, "--out", str(out), "--no-plots", "--json"]
    if account is not None:
        toml = tmp_path / f"{name}.toml"
        toml.write_text(account)
        args += ["--account", str(toml)]
    assert main(args) == 0
    data: dict[str, object] = json.loads((out / "portfolio.json").read_text())
    for strategy in ("rsi-reversion", "sma-cross"):
        for f in ("strategy.log.jsonl", "orders.log", "trades.csv", "metrics.json"):
            assert (out / strategy / f).stat().st_size > 0, (strategy, f)
    assert (out / "account.csv").read_text().startswith("ts_ns,equity,exposure,open_positions")
    return data


def test_several_artifacts_backtest_on_one_account_under_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    free = _portfolio(tmp_path, "free", None)
    capped = _portfolio(tmp_path, "capped", "[portfolio]\nmax_concurrent_positions = 1\n")
    capsys.readouterr()
    free_acc, capped_acc = free["account"], capped["account"]
    assert isinstance(free_acc, dict) and isinstance(capped_acc, dict)
    assert free_acc["max_open_positions"] == 2  # both strategies hold at once without limits
    assert capped_acc["max_open_positions"] == 1
    assert capped_acc["refusals"] > 0 and free_acc["refusals"] == 0
    account = pl.read_csv(tmp_path / "capped" / "account.csv")
    assert account["open_positions"].max() == 1


def test_account_option_needs_several_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[portfolio]\nmax_concurrent_positions = 1\n")
    assert main(["run", str(RSI), "--account", str(toml), "--out", str(tmp_path / "x")]) == 2
    assert "two or more artifacts" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[portfolio]\nmax_positions = 1\n")
    code = main(["run", str(RSI), str(SMA), "--account", str(bad), "--out", str(tmp_path / "y")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "max_positions" in err
    assert not (tmp_path / "y").exists()


def test_data_inputs_from_bars_option_are_recorded_and_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = tmp_path / "btc-eth.yaml"
    art.write_text(BTC_ETH)
    btc = pl.read_csv(DATA).head(24 * 60)
    eth = btc.with_columns((pl.col(c) * 0.05).round(2) for c in ("open", "high", "low", "close"))
    eth_file = tmp_path / "eth.csv"
    eth.write_csv(eth_file)
    out = tmp_path / "run"
    base = ["run", str(art), "--data", str(DATA), *WINDOW[:2], "--to", "2024-03-01"]
    assert main([*base, "--out", str(out), "--no-plots", "--quiet"]) == 2  # ETH bars missing
    assert "ETH/USDT" in capsys.readouterr().err
    code = main([*base, "--bars", f"ETH/USDT={eth_file}", "--out", str(out), "--no-plots"])
    assert code == 0
    info = json.loads((out / "run.json").read_text())
    assert info["data_inputs"]["ETH/USDT"]["data"] == str(eth_file.resolve())
    assert main(["replay", str(out)]) == 0
    assert "byte-identical" in capsys.readouterr().out
    ohlc = ("open", "high", "low", "close")
    eth.with_columns(pl.col(c) * 1.01 for c in ohlc).write_csv(eth_file)  # the ETH file changes
    assert main(["replay", str(out)]) == 2
    assert "ETH/USDT bars differ" in capsys.readouterr().err
    wrong = ["--bars", f"SOL/USDT={eth_file}", "--out", str(tmp_path / "z")]
    assert main([*base, *wrong]) == 2
    assert "no `data:` input on that symbol" in capsys.readouterr().err
