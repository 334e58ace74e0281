"""Event-driven backtest: determinism, point-in-time, fill realism and golden statistics."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import SignalGraph
from artifacts.schema import Artifact
from order_kernel.log import read as read_order_log
from strategy_kernel.backtest import run_backtest
from strategy_kernel.errors import BacktestError
from strategy_kernel.report import summary

GOLDEN = Path(__file__).parent / "golden"


def _run(art: tuple[Artifact, SignalGraph], bars: pl.DataFrame, out: Path | None = None):  # type: ignore[no-untyped-def]
    return run_backtest(art[0], art[1], bars, out_dir=out)


@pytest.mark.parametrize("name", ["rsi_artifact", "sma_artifact"])
def test_same_run_twice_gives_byte_identical_logs(
    name: str, request: pytest.FixtureRequest, sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    art = request.getfixturevalue(name)
    bars = sample_bars.head(3000)
    r1 = _run(art, bars, tmp_path / "a")
    r2 = _run(art, bars, tmp_path / "b")
    for log in ("strategy.log.jsonl", "orders.log"):
        b1 = (tmp_path / "a" / log).read_bytes()
        assert len(b1) > 1000
        assert b1 == (tmp_path / "b" / log).read_bytes(), log
    assert r1.strategy_log_head == r2.strategy_log_head
    assert r1.order_state_digest == r2.order_state_digest
    assert len(r1.trades) > 0


def test_log_head_without_files_equals_head_with_files(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    bars = sample_bars.head(1500)
    assert (
        _run(rsi_artifact, bars).strategy_log_head
        == _run(rsi_artifact, bars, tmp_path).strategy_log_head
    )


def _log_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_truncating_the_future_never_changes_the_past(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    full = sample_bars.head(2500)
    _run(sma_artifact, full, tmp_path / "full")
    long_log = _log_lines(tmp_path / "full" / "strategy.log.jsonl")
    for k in (300, 1111, 2000):
        _run(sma_artifact, full.head(k), tmp_path / f"k{k}")
        short_log = _log_lines(tmp_path / f"k{k}" / "strategy.log.jsonl")
        assert long_log[: len(short_log)] == short_log, (
            f"history up to bar {k} changed when later bars were added"
        )


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(400, 1400))
def test_changing_future_bars_never_changes_past_decisions(
    sma_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
    seed: int,
    k: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bars = sample_bars.head(1500)
    rng = np.random.default_rng(seed)
    n = bars.height - k
    scale = np.exp(rng.normal(0, 0.05, n).cumsum())
    close = bars["close"].to_numpy()[k:] * scale
    opn = np.concatenate([[bars["close"][k - 1]], close[:-1]])
    high = np.maximum(opn, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(opn, close) * (1 - rng.uniform(0, 0.01, n))
    future = bars[k:].with_columns(
        pl.Series("open", opn),
        pl.Series("high", high),
        pl.Series("low", low),
        pl.Series("close", close),
    )
    changed = pl.concat([bars.head(k), future])
    d = tmp_path_factory.mktemp("pit")
    _run(sma_artifact, bars.head(k), d / "past")
    _run(sma_artifact, changed, d / "changed")
    past = _log_lines(d / "past" / "strategy.log.jsonl")
    # whatever the future holds, the log of the first k bars is a prefix of the longer run's log
    assert _log_lines(d / "changed" / "strategy.log.jsonl")[: len(past)] == past


def test_fills_are_inside_their_bar_and_after_the_decision(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    bars = sample_bars.head(4000)
    result = _run(rsi_artifact, bars, tmp_path)
    tick = result.price_increment
    ts = bars["ts_ns"].to_numpy()
    lo = np.rint(bars["low"].to_numpy() / tick).astype(np.int64)
    hi = np.rint(bars["high"].to_numpy() / tick).astype(np.int64)
    index = {int(t): i for i, t in enumerate(ts)}
    submitted_at: dict[str, int] = {}
    fills = 0
    for entry in read_order_log(tmp_path / "orders.log"):
        msg = entry.message
        kind = type(msg).__name__
        if kind == "SubmitOrder":
            submitted_at[msg.client_order_id] = msg.ts_ns
        if kind == "OrderFilled":
            fills += 1
            i = index[msg.ts_ns]
            assert lo[i] <= msg.price <= hi[i], (
                f"fill {msg.client_order_id} at {msg.price} outside bar [{lo[i]}, {hi[i]}]"
            )
            parent = msg.client_order_id.split(".")[0]
            if parent in submitted_at:
                assert msg.ts_ns >= submitted_at[parent], "filled before it was decided"
    assert fills > 0
    for t in result.trades:
        assert t.entry_bar <= t.exit_bar
        assert t.entry_ts_ns <= t.exit_ts_ns


def test_too_few_bars_is_a_clear_error(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    with pytest.raises(BacktestError, match="warm-up"):
        _run(rsi_artifact, sample_bars.head(10))


@pytest.mark.parametrize("name", ["rsi_artifact", "sma_artifact"])
def test_golden_metrics(
    name: str, request: pytest.FixtureRequest, sample_bars: pl.DataFrame
) -> None:
    art = request.getfixturevalue(name)
    result = _run(art, sample_bars)
    got = summary(result)
    path = GOLDEN / f"{art[0].name}.metrics.json"
    if os.environ.get("STRATAGEM_REGEN_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert got["strategy_log_head"] == want["strategy_log_head"]
    assert got["metrics"]["trades"] == want["metrics"]["trades"]
    for key, value in want["metrics"].items():
        g = got["metrics"][key]
        if value is None or g is None:
            assert g == value, key
        else:
            assert math.isclose(g, value, rel_tol=1e-8, abs_tol=1e-9), (key, g, value)
