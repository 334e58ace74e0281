"""Multi-symbol DAG inputs: point-in-time alignment, missing bars, errors, orders on the instrument."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactGraphError, ArtifactSchemaError
from artifacts.graph import check
from artifacts.io import loads, loads_with_lines
from artifacts.schema import Artifact
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.errors import BacktestError
from strategy_kernel.fastpath import FastPathUnsupported, fast_backtest
from strategy_kernel.multidata import DataFeed

START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000

YAML = """schema: stratagem/v1
name: btc-eth
version: 1
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
data:
  eth: {symbol: ETH/USDT, timeframe: %(tf)s%(missing)s}
nodes:
  fast: {kind: indicator, fn: SMA, inputs: [close], params: {period: 5}}
  slow: {kind: indicator, fn: SMA, inputs: [close], params: {period: 20}}
  golden: {kind: cross, a: fast, b: slow, direction: above}
  eth_sma: {kind: indicator, fn: SMA, inputs: [%(col)s], params: {period: 10}}
  eth_up: {kind: threshold, input: eth.close, op: ">", value: eth_sma}
  go: {kind: all, inputs: [golden, eth_up]}
entry: {when: go, side: long}
exit: {stop_loss: {pct: 2.0}, when: {node: eth.close, op: "<", value: eth_sma}}
risk: {sizing: {method: pct_equity, value: 50}}
"""


def art(tf: str = "1h", missing: str = "", col: str = "eth.close") -> Artifact:
    text = YAML % {"tf": tf, "missing": f", on_missing: {missing}" if missing else "", "col": col}
    return loads(text, "btc-eth.yaml")


def bars(seed: int, n: int, tf: str = "1h") -> pl.DataFrame:
    return generate_bars(seed=seed, start_ns=START, n=n, timeframe=tf)


def _log(path: Path) -> list[bytes]:
    return (path / "strategy.log.jsonl").read_bytes().splitlines()


def test_trades_only_the_instrument_and_reads_the_other_symbol(tmp_path: Path) -> None:
    a = art()
    btc, eth = bars(1, 1500), bars(2, 1500)
    res = run_backtest(
        a, check(a), btc, data_bars={"ETH/USDT": eth}, out_dir=tmp_path, record_nodes=("eth_sma",)
    )
    assert len(res.trades) > 5
    recs = [json.loads(x) for x in _log(tmp_path)]
    cmds = [r["msg"] for r in recs if r["kind"] == "command" and r["msg"]["type"] == "SubmitOrder"]
    assert cmds and {c["symbol"] for c in cmds} == {"BTC/USDT"}
    seen = [r for r in recs if r["kind"] == "data_bar"]
    assert len(seen) == 1500 and seen[0]["input"] == "eth"
    # eth_sma is SMA(10) of ETH closes, bar by bar
    want = eth["close"].rolling_mean(10).to_numpy()
    assert np.allclose(res.node_series["eth_sma"][9:], want[9:], rtol=1e-12)
    # without the ETH condition the strategy would trade differently: the input is really used
    plain = loads(
        (YAML % {"tf": "1h", "missing": "", "col": "eth.close"}).replace(
            "inputs: [golden, eth_up]", "inputs: [golden, golden]"
        )
    )
    other = run_backtest(plain, check(plain), btc, data_bars={"ETH/USDT": eth})
    assert [t.entry_bar for t in other.trades] != [t.entry_bar for t in res.trades]


@settings(max_examples=6, deadline=None)
@given(j=st.integers(30, 380), seed=st.integers(0, 1000))
def test_other_symbol_future_bars_never_change_past_decisions(
    j: int, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ETH bar j closes with BTC bar j: decisions before it are identical whatever it holds."""
    a = art()
    btc, eth = bars(1, 400), bars(2, 400)
    rng = np.random.default_rng(seed)
    scale = np.ones(400)
    scale[j:] = np.exp(rng.normal(0, 0.1, 400 - j))
    changed = eth.with_columns(*(pl.col(c) * scale for c in ("open", "high", "low", "close")))
    d = tmp_path_factory.mktemp("pit")
    for name, frame in (("a", eth), ("b", changed)):
        run_backtest(a, check(a), btc.head(j), data_bars={"ETH/USDT": frame}, out_dir=d / name)
    assert _log(d / "a") == _log(d / "b")
    # and bar j itself is seen at decision j, no later
    for name, frame in (("c", eth), ("d", changed)):
        run_backtest(a, check(a), btc.head(j + 1), data_bars={"ETH/USDT": frame}, out_dir=d / name)
    assert _log(d / "c") != _log(d / "d")


def test_coarser_input_is_visible_only_once_closed() -> None:
    a = art(tf="4h")
    eth4 = bars(3, 50, "4h")
    feed = DataFeed(a, {"ETH/USDT": eth4}, HOUR)
    delivered: dict[int, int] = {}
    for i in range(40):
        for name, bar, at in feed.due(START + i * HOUR):
            assert name == "eth" and bar is not None
            assert bar.ts_ns + 4 * HOUR <= at == START + (i + 1) * HOUR
            delivered[i] = bar.ts_ns
    # the 00:00-04:00 bar becomes visible at the 03:00 bar's close (04:00), not before
    assert sorted(delivered) == [3 + 4 * k for k in range(10)]
    assert delivered[3] == START


def test_missing_bar_is_held_and_logged_or_an_error(tmp_path: Path) -> None:
    btc, eth = bars(1, 300), bars(2, 300)
    holed = eth.filter(pl.int_range(pl.len()) != 150)
    a = art()
    res = run_backtest(
        a, check(a), btc, data_bars={"ETH/USDT": holed}, out_dir=tmp_path, record_nodes=("eth_sma",)
    )
    recs = [json.loads(x) for x in _log(tmp_path)]
    missing = [r for r in recs if r["kind"] == "data_missing"]
    assert len(missing) == 1 and missing[0]["ts_ns"] == int(btc["ts_ns"][150]) + HOUR
    assert missing[0]["rule"] == "hold"
    # the ETH clock did not tick: eth_sma holds its value over the missing bar
    assert res.node_series["eth_sma"][150] == res.node_series["eth_sma"][149]
    strict = art(missing="error")
    with pytest.raises(BacktestError, match=r"data.eth: no ETH/USDT 1h bar closes at ts"):
        run_backtest(strict, check(strict), btc, data_bars={"ETH/USDT": holed})


def test_refusals_and_bad_input() -> None:
    a = art()
    with pytest.raises(BacktestError, match="no bars were given for it"):
        run_backtest(a, check(a), bars(1, 100))
    with pytest.raises(FastPathUnsupported, match="data inputs"):
        fast_backtest(a, check(a), bars(1, 100))
    with pytest.raises(BacktestError, match=r"s apart but data\.eth\.timeframe is 1h"):
        run_backtest(a, check(a), bars(1, 100), data_bars={"ETH/USDT": bars(2, 100, "15m")})


def test_schema_and_graph_errors() -> None:
    text = YAML % {"tf": "1h", "missing": "", "col": "eth.clsoe"}
    a, lines = loads_with_lines(text, "x.yaml")
    with pytest.raises(ArtifactGraphError) as e:
        check(a, "x.yaml", lines)
    assert "x.yaml:11: nodes.eth_sma.inputs[0]: unknown node or column 'eth.clsoe'" in str(e.value)
    assert "did you mean 'eth.close'" in str(e.value)
    text = YAML % {"tf": "90m", "missing": "", "col": "eth.close"}
    a, lines = loads_with_lines(text, "x.yaml")
    with pytest.raises(ArtifactGraphError, match=r"x.yaml:6: data.eth.timeframe: 90m must be"):
        check(a, "x.yaml", lines)
    with pytest.raises(ArtifactSchemaError, match="same name as a node"):
        loads((YAML % {"tf": "1h", "missing": "", "col": "eth.close"}).replace("  eth:", "  fast:"))
    with pytest.raises(ArtifactSchemaError, match="not a price column"):
        loads(
            (YAML % {"tf": "1h", "missing": "", "col": "eth.close"}).replace("  eth:", "  close:")
        )


def test_data_inputs_in_a_portfolio_run() -> None:
    from strategy_kernel.portfolio import run_portfolio_backtest

    a = art()
    btc, eth = bars(1, 600), bars(2, 600)
    single = run_backtest(a, check(a), btc, data_bars={"ETH/USDT": eth}, session_id=a.name)
    pf = run_portfolio_backtest([a], {"BTC/USDT": btc, "ETH/USDT": eth})
    assert pf.results[a.name].trades == single.trades
    assert pf.results[a.name].strategy_log_head == single.strategy_log_head
