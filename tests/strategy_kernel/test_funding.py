"""Perp funding in backtests: historical rates charged by the simulated venue at settlements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import SignalGraph, check
from artifacts.io import to_data
from artifacts.schema import Artifact
from feeds.errors import FeedError
from feeds.funding import generate_funding, rate_to_ppb, read_funding
from feeds.schema import FUNDING_SCHEMA, NS_PER_HOUR
from strategy_kernel.backtest import BacktestResult, run_backtest
from strategy_kernel.errors import BacktestError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FUNDING = ROOT / "examples" / "data" / "btcusdt-funding-synthetic.csv"
H8 = 8 * NS_PER_HOUR


def _settlements(bars: pl.DataFrame, interval: int = H8) -> list[int]:
    first = -(-int(bars["ts_ns"][0]) // interval) * interval
    return list(range(first, int(bars["ts_ns"][-1]) + NS_PER_HOUR, interval))


def _funding(bars: pl.DataFrame, rate: float | list[float], interval: int = H8) -> pl.DataFrame:
    ts = _settlements(bars, interval)
    rates = [rate] * len(ts) if isinstance(rate, float) else rate[: len(ts)]
    return pl.DataFrame(
        {
            "ts_ns": ts[: len(rates)],
            "funding_rate": rates,
            "interval_ns": [interval] * len(rates),
            "mark_price": [None] * len(rates),
        },
        schema=dict(FUNDING_SCHEMA),
    )


def _oracle(res: BacktestResult, bars: pl.DataFrame, funding: pl.DataFrame, unit: float) -> float:
    """Σ ceil(position x close x rate / 1e9) over the run's settlements, from its own positions:
    the venue charges a settlement on the bar containing it, after that bar's fills, at the
    newest published rate at or before it (0 before the first)."""
    ts = bars["ts_ns"].to_numpy()
    close_ticks = np.round(bars["close"].to_numpy() / 0.01).astype(np.int64)
    pub_ts = funding["ts_ns"].to_numpy()
    pub_ppb = [rate_to_ppb(r) for r in funding["funding_rate"].to_list()]
    total = 0
    for t in _settlements(bars, int(funding["interval_ns"][0])):
        i = int(np.searchsorted(ts, t, side="right")) - 1
        k = int(np.searchsorted(pub_ts, t, side="right")) - 1
        ppb = pub_ppb[k] if k >= 0 else 0
        num = int(res.position[i]) * int(close_ticks[i]) * ppb
        total += -(-num // 1_000_000_000)
    return total * unit


@pytest.fixture(scope="module")
def perp(rsi_artifact: tuple[Artifact, SignalGraph]) -> tuple[Artifact, SignalGraph]:
    assert rsi_artifact[0].instrument.kind == "perp"
    return rsi_artifact


def test_funding_is_charged_at_settlements_as_the_oracle_says(
    perp: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(3000)
    base = run_backtest(*perp, bars)
    funding = _funding(bars, 0.0001)
    res = run_backtest(*perp, bars, funding=funding)
    assert [t.entry_ts_ns for t in res.trades] == [t.entry_ts_ns for t in base.trades]
    unit = 0.01 * float(perp[0].instrument.size_increment)
    assert res.metrics.funding_paid > 0  # longs pay a positive rate
    assert res.metrics.funding_paid == pytest.approx(_oracle(res, bars, funding, unit), abs=1e-9)
    assert res.equity[-1] < base.equity[-1]  # funding comes out of equity
    assert base.metrics.funding_paid == 0


def test_negative_rate_pays_the_long(
    perp: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(3000)
    res = run_backtest(*perp, bars, funding=_funding(bars, -0.0002))
    assert res.metrics.funding_paid < 0


def test_short_receives_a_positive_rate(
    perp: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    data = to_data(perp[0])
    data["entry"]["side"] = "short"
    data["exit"]["take_profit"] = []
    art = Artifact.model_validate(data)
    bars = sample_bars.head(3000)
    funding = _funding(bars, 0.0001)
    res = run_backtest(art, check(art), bars, funding=funding)
    assert res.trades and all(t.side == "short" for t in res.trades)
    unit = 0.01 * float(art.instrument.size_increment)
    assert res.metrics.funding_paid < 0
    assert res.metrics.funding_paid == pytest.approx(_oracle(res, bars, funding, unit), abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-300, 300), min_size=5, max_size=60))
def test_any_rate_path_matches_the_oracle(rates_bp100: list[int]) -> None:
    from artifacts.io import load
    from feeds.files import read_bars

    art = load(ROOT / "examples" / "rsi-reversion.yaml")
    bars = read_bars(ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv").head(600)
    rates = [r / 1_000_000 for r in rates_bp100]  # up to ±3 bp
    funding = _funding(bars, rates)
    res = run_backtest(art, check(art), bars, funding=funding)
    unit = 0.01 * float(art.instrument.size_increment)
    assert res.metrics.funding_paid == pytest.approx(_oracle(res, bars, funding, unit), abs=1e-9)


def test_missing_settlements_are_logged_and_hold_the_last_rate(
    perp: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    bars = sample_bars.head(2000)
    full = _funding(bars, 0.0001)
    holed = full.filter((pl.int_range(pl.len()) % 10) != 3)  # every tenth settlement missing
    a = run_backtest(*perp, bars, funding=full, out_dir=tmp_path / "a")
    b = run_backtest(*perp, bars, funding=holed, out_dir=tmp_path / "b")
    # a constant rate held over the holes charges exactly what the full file charges
    assert a.metrics.funding_paid == b.metrics.funding_paid
    rec = [
        json.loads(x)
        for x in (tmp_path / "b" / "strategy.log.jsonl").read_text().splitlines()
        if '"kind":"funding"' in x
    ]
    assert len(rec) == 1
    assert rec[0]["missing"] == full.height - holed.height > 0
    assert rec[0]["first_missing_ts_ns"][0] == int(full["ts_ns"][3])
    assert "newest earlier" in rec[0]["rule"]


def test_spot_and_bad_rows_are_refused(
    sma_artifact: tuple[Artifact, SignalGraph],
    perp: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
) -> None:
    bars = sample_bars.head(500)
    with pytest.raises(BacktestError, match=r"instrument\.kind 'spot'"):
        run_backtest(*sma_artifact, bars, funding=_funding(bars, 0.0001))
    unsorted = _funding(bars, 0.0001).reverse()
    with pytest.raises(BacktestError, match="not after the previous"):
        run_backtest(*perp, bars, funding=unsorted)
    percent = _funding(bars, 1.5)
    with pytest.raises(BacktestError, match="a fraction"):
        run_backtest(*perp, bars, funding=percent)
    off_grid = _funding(bars, 0.0001).with_columns(pl.col("ts_ns") + 60_000_000_000)
    with pytest.raises(BacktestError, match="not on the 8 h UTC grid"):
        run_backtest(*perp, bars, funding=off_grid)


def test_funding_files_errors_name_the_row(tmp_path: Path) -> None:
    ok = tmp_path / "ok.csv"
    ok.write_text(
        "timestamp,funding_rate,interval_ns\n"
        f"2024-01-01T00:00:00Z,0.0001,{H8}\n2024-01-01T08:00:00Z,-0.00005,{H8}\n"
    )
    df = read_funding(ok)
    assert df.columns == list(FUNDING_SCHEMA) and df.height == 2
    assert df["ts_ns"].to_list() == [1_704_067_200_000_000_000, 1_704_067_200_000_000_000 + H8]
    cases = {
        "no time column": "rate,interval_ns\n0.1,1\n",
        "row 3": f"ts_ns,funding_rate,interval_ns\n{H8},0.0001,{H8}\n{H8},0.0001,{H8}\n",
        "row 2: 'abc'": f"ts_ns,funding_rate,interval_ns\n{H8},abc,{H8}\n",
        "one positive value": f"ts_ns,funding_rate,interval_ns\n{H8},0.0001,{H8}\n{2 * H8},0.0001,1\n",
        "file is empty": "",
    }
    for needle, text in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(FeedError, match=needle) as exc:
            read_funding(bad)
        assert "bad.csv" in str(exc.value)


def test_bundled_sample_regenerates_byte_identical(tmp_path: Path) -> None:
    from feeds.funding import main

    out = tmp_path / "f.csv"
    assert (
        main(["--seed", "7", "--start", "2024-01-01", "--end", "2025-01-10", "--out", str(out)])
        == 0
    )
    assert out.read_bytes() == SAMPLE_FUNDING.read_bytes()
    df = read_funding(SAMPLE_FUNDING)
    again = generate_funding(seed=7, start_ns=int(df["ts_ns"][0]), end_ns=int(df["ts_ns"][-1]) + 1)
    assert again["ts_ns"].to_list() == df["ts_ns"].to_list()


def _same(art: Artifact, bars: pl.DataFrame, funding: pl.DataFrame) -> BacktestResult:
    from strategy_kernel.fastpath import fast_backtest

    ev = run_backtest(art, check(art), bars, funding=funding)
    fp = fast_backtest(art, check(art), bars, funding=funding)
    assert fp.trades == ev.trades
    assert np.array_equal(fp.equity, ev.equity) and np.array_equal(fp.position, ev.position)
    assert fp.metrics.funding_paid == ev.metrics.funding_paid
    return ev


def test_fast_path_charges_funding_like_the_kernels(
    perp: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(3000)
    ev = _same(perp[0], bars, _funding(bars, 0.0001))
    assert ev.metrics.funding_paid > 0
    holed = _funding(bars, 0.0003).filter((pl.int_range(pl.len()) % 7) != 2)
    assert _same(perp[0], bars, holed).metrics.funding_paid > 0
    data = to_data(perp[0])
    data["entry"]["side"] = "short"
    data["exit"]["take_profit"] = []
    short = Artifact.model_validate(data)
    assert _same(short, bars, _funding(bars, 0.0001)).metrics.funding_paid < 0


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(-1_000_000, 1_000_000), min_size=1, max_size=40),
    st.sampled_from(["1h", "4h", "1d"]),
    st.sampled_from([H8, 4 * NS_PER_HOUR, 24 * NS_PER_HOUR]),
)
def test_fast_path_funding_parity_any_rates_timeframes_and_intervals(
    rates_ppb: list[int], timeframe: str, interval: int
) -> None:
    """Several settlements inside one bar (1d bars, 8h funding), settlements between bars, rates
    up to ±0.1 % per interval held past the last row: the fast path charges what the kernels do."""
    from artifacts.io import load
    from feeds.synthetic import generate_bars

    art = load(ROOT / "examples" / "rsi-reversion.yaml")
    data = to_data(art)
    data["instrument"]["timeframe"] = timeframe
    art = Artifact.model_validate(data)
    # seed 1: 12 / 12 / 8 trades on 1h / 4h / 1d, in position 154-246 of the 600 bars
    bars = generate_bars(seed=1, start_ns=1_704_067_200_000_000_000, n=600, timeframe=timeframe)
    ev = _same(art, bars, _funding(bars, [r / 1e9 for r in rates_ppb], interval))
    assert len(ev.trades) >= 8 and int((ev.position != 0).sum()) > 150
