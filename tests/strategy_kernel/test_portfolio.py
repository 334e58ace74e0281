"""Cross-strategy limits on one account: exposure cap, concurrency, correlation guard, logging."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactSchemaError
from artifacts.graph import SignalGraph, check
from artifacts.io import loads, to_data
from artifacts.schema import Artifact, PortfolioLimits
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.portfolio import (
    AccountLimits,
    PortfolioError,
    correlation,
    load_account_limits,
    run_portfolio_backtest,
)

START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000


def _variant(base: Artifact, name: str, **changes: Any) -> Artifact:
    data = to_data(base)
    data["name"] = name
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return Artifact.model_validate(data)


def _always(
    name: str, symbol: str, side: str, pct: float, hold: int, add_pct: float | None = None
) -> Artifact:
    """Enter at market whenever flat, hold `hold` bars: maximal pressure on the limits."""
    scale = (
        {"scale_in": [{"when": "any_time", "size_pct": add_pct, "max_adds": 3}]} if add_pct else {}
    )
    return Artifact.model_validate(
        {
            "schema": "stratagem/v1",
            "name": name,
            "version": 1,
            "instrument": {"venue": "sim", "symbol": symbol, "timeframe": "1h"},
            "nodes": {"any_time": {"kind": "time_window"}},
            "entry": {"when": "any_time", "side": side, **scale},
            "exit": {"time_exit": f"{hold} bars"},
            "risk": {"sizing": {"method": "pct_equity", "value": pct}, "max_position_pct": 500},
            "backtest": {"initial_equity": 10_000, "maker_fee_bps": 0, "taker_fee_bps": 0},
        }
    )


def test_one_strategy_without_limits_is_exactly_the_single_backtest(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    a = rsi_artifact[0]
    bars = sample_bars.head(2500)
    single = run_backtest(a, check(a), bars, session_id=a.name)
    pf = run_portfolio_backtest([a], {a.instrument.symbol: bars})
    got = pf.results[a.name]
    assert got.trades == single.trades and len(got.trades) > 5
    assert got.strategy_log_head == single.strategy_log_head
    assert np.array_equal(got.equity, single.equity)
    assert np.array_equal(pf.equity, single.equity)


def test_same_symbol_same_side_is_refused_by_the_correlation_guard_and_logged(
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
    tmp_path: Path,
) -> None:
    a, b = sma_artifact[0], rsi_artifact[0]
    bars = sample_bars.head(3000)
    res = run_portfolio_backtest(
        [a, b], {"BTC/USDT": bars}, account=AccountLimits(max_correlation=0.8), out_dir=tmp_path
    )
    assert res.refusals and {r["rule"] for r in res.refusals} == {"portfolio.max_correlation"}
    pa, pb = (res.results[n].position for n in (a.name, b.name))
    assert not np.any((pa != 0) & (pb != 0)), "two correlated positions were open together"
    records = [json.loads(x) for x in (tmp_path / "portfolio.log.jsonl").read_text().splitlines()]
    refused = [r for r in records if r["kind"] == "portfolio" and not r["accepted"]]
    assert len(refused) == len(res.refusals)
    assert all("exceeds 0.8" in r["detail"] or "undefined" in r["detail"] for r in refused)
    # the refusing strategy's own log names the rule too
    for name in (a.name, b.name):
        log = (tmp_path / name / "strategy.log.jsonl").read_text().splitlines()
        n = sum(1 for x in log if '"rule":"portfolio.max_correlation"' in x)
        assert n == sum(1 for r in res.refusals if r["strategy"] == name)
    # and nothing is refused without the guard
    free = run_portfolio_backtest([a, b], {"BTC/USDT": bars})
    assert not free.refusals
    fa, fb = (free.results[n].position for n in (a.name, b.name))
    assert np.any((fa != 0) & (fb != 0))


def test_opposite_sides_of_one_market_are_a_hedge_not_a_correlation() -> None:
    bars = generate_bars(seed=5, start_ns=START, n=300, timeframe="1h")
    arts = [_always("l", "X/USD", "long", 10, 7), _always("s", "X/USD", "short", 10, 5)]
    res = run_portfolio_backtest(arts, {"X/USD": bars}, account=AccountLimits(max_correlation=0.5))
    both = (res.results["l"].position != 0) & (res.results["s"].position != 0)
    assert both.sum() > 100  # signed correlation -1 never exceeds 0.5
    # refused only while the correlation is undefined (25 common returns needed of the 50)
    assert res.refusals and all(int(str(r["bar"])) <= 25 for r in res.refusals)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_strats=st.integers(3, 4),
    cap=st.floats(20.0, 200.0),
    max_open=st.integers(1, 2),
    frac=st.floats(0.3, 0.95),
    holds=st.lists(st.integers(1, 9), min_size=4, max_size=4),
    add_pct=st.sampled_from([None, 30.0, 100.0]),
)
def test_exposure_and_concurrency_never_exceed_the_limits(
    seed: int,
    n_strats: int,
    cap: float,
    max_open: int,
    frac: float,
    holds: list[int],
    add_pct: float | None,
) -> None:
    """Flat prices and no fees: marked exposure equals the exposure decided at entry, exactly.

    Every strategy wants to be in the market all the time, so the limits are always tested.
    """
    pct = cap * frac  # one position always fits; two may not
    flat = generate_bars(seed=seed, start_ns=START, n=120, timeframe="1h").with_columns(
        pl.lit(100.0).alias("open"),
        pl.lit(100.0).alias("high"),
        pl.lit(100.0).alias("low"),
        pl.lit(100.0).alias("close"),
    )
    symbols = ["A/USD", "B/USD"]
    arts = [
        _always(f"s{k}", symbols[k % 2], "long", pct, holds[k], add_pct) for k in range(n_strats)
    ]
    limits = AccountLimits(max_exposure_pct=cap, max_concurrent_positions=max_open)
    res = run_portfolio_backtest(arts, {s: flat for s in symbols}, account=limits)
    rs = list(res.results.values())
    unit = rs[0].unit_value
    exposure = sum(np.abs(r.position) * np.rint(r.close / r.price_increment) for r in rs) * unit
    equity = sum(r.equity for r in rs)
    assert np.all(exposure <= cap / 100 * equity + 1e-9)
    open_count = sum((r.position != 0).astype(int) for r in rs)
    assert np.all(open_count <= max_open)
    assert sum(len(r.trades) for r in rs) > 0
    assert res.refusals, "the limits were never tested"
    if res.refusals:
        assert {str(r["rule"]) for r in res.refusals} <= {
            "portfolio.max_exposure_pct",
            "portfolio.max_concurrent_positions",
        }
    if add_pct:  # adds were tried and the exposure cap refused some (logged in the kernel)
        kernel_rules = {str(x["rule"]) for res_k in rs for x in res_k.refusals}
        assert kernel_rules <= {
            "portfolio.max_exposure_pct",
            "portfolio.max_concurrent_positions",
            "risk.max_position_pct",
        }


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(-0.5, 0.95), lookback=st.integers(3, 60))
def test_correlation_guard_never_lets_two_guarded_entries_coexist(
    seed: int, threshold: float, lookback: int
) -> None:
    """Same market, same side: correlation 1 whenever defined, so never two positions at once."""
    bars = generate_bars(seed=seed, start_ns=START, n=250, timeframe="1h")
    arts = [_always("a", "X/USD", "long", 20, 6), _always("b", "X/USD", "long", 30, 4)]
    res = run_portfolio_backtest(
        arts,
        {"X/USD": bars},
        account=AccountLimits(max_correlation=threshold, correlation_lookback=lookback),
    )
    pa, pb = res.results["a"].position, res.results["b"].position
    assert not np.any((pa != 0) & (pb != 0))
    assert np.any(pa != 0) and res.refusals


def test_artifact_limits_only_tighten(sma_artifact: tuple[Artifact, SignalGraph]) -> None:
    acc = AccountLimits(max_exposure_pct=100, max_concurrent_positions=3)
    own = PortfolioLimits(max_exposure_pct=150, max_concurrent_positions=1, max_correlation=0.7)
    t = acc.tighten(own)
    assert (t.max_exposure_pct, t.max_concurrent_positions, t.max_correlation) == (100, 1, 0.7)
    assert acc.tighten(None) == acc and acc.tighten(PortfolioLimits()) == acc


@given(
    a=st.lists(st.one_of(st.none(), st.floats(0.1, 500)), min_size=2, max_size=2),
    b=st.lists(st.one_of(st.none(), st.floats(0.1, 500)), min_size=2, max_size=2),
    ca=st.one_of(st.none(), st.integers(1, 9)),
    cb=st.one_of(st.none(), st.integers(1, 9)),
)
def test_tighten_never_loosens(
    a: list[float | None], b: list[float | None], ca: int | None, cb: int | None
) -> None:
    corr_a = None if a[1] is None else a[1] / 501
    corr_b = None if b[1] is None else b[1] / 501
    acc = AccountLimits(max_exposure_pct=a[0], max_concurrent_positions=ca, max_correlation=corr_a)
    own = PortfolioLimits(
        max_exposure_pct=b[0], max_concurrent_positions=cb, max_correlation=corr_b
    )
    t = acc.tighten(own)
    for got, x, y in (
        (t.max_exposure_pct, a[0], b[0]),
        (t.max_concurrent_positions, ca, cb),
        (t.max_correlation, corr_a, corr_b),
    ):
        for lim in (x, y):
            if lim is not None:
                assert got is not None and got <= lim


def test_artifact_portfolio_block_is_limited_per_strategy() -> None:
    bars = generate_bars(seed=1, start_ns=START, n=200, timeframe="1h")
    loose = _always("loose", "X/USD", "long", 10, 3)
    strict = _variant(
        _always("strict", "Y/USD", "long", 10, 3),
        "strict",
        risk__portfolio={"max_concurrent_positions": 1},
    )
    res = run_portfolio_backtest([loose, strict], {"X/USD": bars, "Y/USD": bars})
    rules = {(r["strategy"], r["rule"]) for r in res.refusals}
    assert rules == {("strict", "portfolio.max_concurrent_positions")}


def test_schema_errors_for_portfolio_block() -> None:
    text = (
        "schema: stratagem/v1\nname: v\nversion: 1\n"
        "instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}\n"
        "nodes:\n  up: {kind: rising, input: close}\n"
        "entry: {when: up, side: long}\n"
        "risk:\n  portfolio: {max_correlation: 1.5, max_open: 2}\n"
    )
    with pytest.raises(ArtifactSchemaError) as e:
        loads(text, "p.yaml")
    msg = str(e.value)
    assert "p.yaml:9: risk.portfolio.max_correlation:" in msg
    assert "unknown field 'max_open'" in msg


def test_account_config_file(tmp_path: Path) -> None:
    p = tmp_path / "account.toml"
    p.write_text("[portfolio]\nmax_exposure_pct = 150\nmax_concurrent_positions = 2\n")
    assert load_account_limits(p) == AccountLimits(max_exposure_pct=150, max_concurrent_positions=2)
    p.write_text("[portfolio]\nmax_exposure = 150\n")
    with pytest.raises(
        PortfolioError, match=r"account.toml: \[portfolio\] unknown key\(s\) max_exposure"
    ):
        load_account_limits(p)
    p.write_text('[portfolio]\nmax_concurrent_positions = "two"\n')
    with pytest.raises(PortfolioError, match="max_concurrent_positions = 'two' must be a whole"):
        load_account_limits(p)
    p.write_text("[portfolio]\nmax_correlation = 2.0\n")
    with pytest.raises(PortfolioError, match=r"max_correlation 2\.0 must be in"):
        load_account_limits(p)


def test_bad_portfolio_inputs_are_clear_errors(sma_artifact: tuple[Artifact, SignalGraph]) -> None:
    a = sma_artifact[0]
    bars = generate_bars(seed=1, start_ns=START, n=100, timeframe="1h")
    with pytest.raises(PortfolioError, match="appear more than once"):
        run_portfolio_backtest([a, a], {"BTC/USDT": bars})
    with pytest.raises(PortfolioError, match="no bars for BTC/USDT"):
        run_portfolio_backtest([a], {"ETH/USDT": bars})
    other_tf = _variant(a, "four-hour", instrument__timeframe="4h")
    with pytest.raises(PortfolioError, match="different timeframes"):
        run_portfolio_backtest([a, other_tf], {"BTC/USDT": bars})


def test_correlation_oracle() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert math.isclose(correlation(x, y), float(np.corrcoef(x, y)[0, 1]), rel_tol=1e-12)
    assert math.isclose(correlation(x, -2 * x), -1.0)
    assert math.isnan(correlation(x, np.ones(50)))
