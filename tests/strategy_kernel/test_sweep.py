"""Sweeps and walk-forward: parameter paths, validation, executors agree, deterministic order."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from artifacts.graph import SignalGraph, check
from artifacts.schema import Artifact
from strategy_kernel import sweep as sweep_module
from strategy_kernel.backtest import run_backtest
from strategy_kernel.fastpath import FastPathUnsupported
from strategy_kernel.sweep import (
    SweepError,
    apply_params,
    best,
    combinations,
    parse_axis,
    sweep,
    walk_forward,
)


def test_parse_axis_forms_and_errors() -> None:
    assert parse_axis("nodes.fast.params.period=10,20").values == (10, 20)
    assert parse_axis("a=10:30:10").values == (10, 20, 30)
    assert parse_axis("a=1.0:2.0:0.5").values == (1.0, 1.5, 2.0)
    r = parse_axis("a=5..9")
    assert (r.low, r.high, r.integer) == (5.0, 9.0, True)
    for bad in ("a", "a=", "=1", "a=3..1", "a=1:0:1", "a=1:2:0"):
        with pytest.raises(SweepError):
            parse_axis(bad)


def test_combinations_grid_order_and_seeded_random() -> None:
    axes = [parse_axis("a=1,2"), parse_axis("b=x,y,z")]
    grid = combinations(axes)
    assert grid[:4] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
    ]
    rnd = [parse_axis("a=5..50"), parse_axis("b=0.5..2.5")]
    assert combinations(rnd, random_n=5, seed=3) == combinations(rnd, random_n=5, seed=3)
    assert combinations(rnd, random_n=5, seed=3) != combinations(rnd, random_n=5, seed=4)
    assert all(
        5 <= c["a"] <= 50 and isinstance(c["a"], int) for c in combinations(rnd, random_n=20)
    )
    with pytest.raises(SweepError, match="--random"):
        combinations(rnd)


def test_apply_params_validates_like_a_hand_written_artifact(
    sma_artifact: tuple[Artifact, SignalGraph],
) -> None:
    art = apply_params(sma_artifact[0], {"nodes.fast.params.period": 10, "exit.stop_loss.pct": 2.5})
    assert art.nodes["fast"].params == {"period": 10}  # type: ignore[union-attr]
    assert art.provenance.parent is not None
    with pytest.raises(SweepError, match="period"):
        apply_params(sma_artifact[0], {"nodes.fast.params.period": 0})
    with pytest.raises(SweepError, match="does not exist"):
        apply_params(sma_artifact[0], {"nodes.nope.params.period": 5})


COMBOS = [
    {"nodes.fast.params.period": f, "nodes.slow.params.period": s}
    for f in (10, 20)
    for s in (40, 60)
]


def test_serial_sweep_matches_direct_runs(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(1500)
    results = sweep(sma_artifact[0], bars, COMBOS, executor="serial", engine="event")
    assert [r.params for r in results] == COMBOS
    assert {r.engine for r in results} == {"event"}
    for r in results:
        art = apply_params(sma_artifact[0], r.params)
        direct = run_backtest(art, check(art), bars)
        assert r.strategy_log_head == direct.strategy_log_head
        assert r.trades == len(direct.trades)
    assert best(results, "total_return_pct").metrics["total_return_pct"] == max(
        r.metrics["total_return_pct"]
        for r in results  # type: ignore[type-var]
    )


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_parallel_executors_agree_with_serial(
    executor: str, sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(800)
    combos = COMBOS[:3]
    serial = sweep(sma_artifact[0], bars, combos, executor="serial", engine="event")
    parallel = sweep(sma_artifact[0], bars, combos, executor=executor, workers=2, engine="event")
    assert [(r.params, r.strategy_log_head, r.metrics) for r in parallel] == [
        (r.params, r.strategy_log_head, r.metrics) for r in serial
    ]


def _comparable(metrics: dict[str, float | int | None]) -> dict[str, object]:
    """NaN never equals NaN; compare it as a marker so equal results compare equal."""
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def test_auto_engine_runs_the_fast_path_with_the_event_driven_results(
    sma_artifact: tuple[Artifact, SignalGraph],
    rsi_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
) -> None:
    bars = sample_bars.head(1500)
    cases = [
        (sma_artifact[0], COMBOS),
        (rsi_artifact[0], [{"nodes.rsi.params.period": p} for p in (7, 14, 21)]),
    ]
    for art, combos in cases:
        auto = sweep(art, bars, combos, executor="serial")
        event = sweep(art, bars, combos, executor="serial", engine="event")
        assert {r.engine for r in auto} == {"fast"}
        assert all(r.strategy_log_head == "" for r in auto)  # the fast path writes no log
        assert [(r.params, r.trades, _comparable(r.metrics)) for r in auto] == [
            (r.params, r.trades, _comparable(r.metrics)) for r in event
        ]
        assert sum(r.trades for r in auto) > 0


def test_auto_engine_falls_back_to_the_kernels_and_says_so(
    sma_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the fast path refuses (a python node, say) runs on the kernels under auto."""

    def refuse(*_args: object, **_kw: object) -> None:
        raise FastPathUnsupported("node custom (kind python) has no fast path")

    monkeypatch.setattr(sweep_module, "fast_backtest", refuse)
    bars = sample_bars.head(900)
    auto = sweep(sma_artifact[0], bars, COMBOS[:2], executor="serial")
    event = sweep(sma_artifact[0], bars, COMBOS[:2], executor="serial", engine="event")
    assert [r.engine for r in auto] == ["event", "event"]
    assert [(r.strategy_log_head, r.trades, r.error) for r in auto] == [
        (r.strategy_log_head, r.trades, None) for r in event
    ]
    assert all(r.strategy_log_head for r in auto)
    fast = sweep(sma_artifact[0], bars, COMBOS[:2], executor="serial", engine="fast")
    assert all(r.engine == "fast" and r.error and "kind python" in r.error for r in fast)
    with pytest.raises(SweepError, match="unknown engine"):
        sweep(sma_artifact[0], bars, COMBOS[:1], executor="serial", engine="numba")


def test_walk_forward_folds(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    bars = sample_bars.head(2400)
    folds = walk_forward(
        sma_artifact[0],
        bars,
        COMBOS[:2],
        train_bars=1200,
        test_bars=400,
        objective="total_return_pct",
        executor="serial",
    )
    assert [(f.train_range, f.test_range) for f in folds] == [
        ((0, 1200), (1200, 1600)),
        ((400, 1600), (1600, 2000)),
        ((800, 2000), (2000, 2400)),
    ]
    for f in folds:
        assert f.best_params in COMBOS[:2]
        assert f.test_result.error is None
        # the winner is confirmed on the real kernels, whatever engine optimised it
        assert f.test_result.engine == "event" and f.test_result.strategy_log_head
    with pytest.raises(SweepError, match="needs 3000 bars"):
        walk_forward(
            sma_artifact[0], bars, COMBOS, train_bars=2600, test_bars=400, executor="serial"
        )


def test_walk_forward_on_worker_processes_equals_serial(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    """The folds share one pool of workers; the answer is the serial one, fold for fold."""
    bars = sample_bars.head(2000)
    serial, pooled = (
        walk_forward(
            sma_artifact[0],
            bars,
            COMBOS[:3],
            train_bars=1000,
            test_bars=500,
            objective="total_return_pct",
            executor=executor,
            workers=2,
        )
        for executor in ("serial", "process")
    )
    assert len(serial) == 2
    assert [
        (f.best_params, f.test_result.strategy_log_head, f.test_result.trades) for f in pooled
    ] == [(f.best_params, f.test_result.strategy_log_head, f.test_result.trades) for f in serial]
    with pytest.raises(SweepError, match="unknown executor"):
        sweep(sma_artifact[0], bars, COMBOS[:1], executor="threads")


@pytest.mark.parametrize("worth_s", [0.0, 1e9])
def test_auto_executor_starts_workers_only_when_worth_it(
    worth_s: float,
    sma_artifact: tuple[Artifact, SignalGraph],
    sample_bars: pl.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []
    real_start = sweep_module._Runner._start

    def spy(self: sweep_module._Runner) -> object:
        started.append(1)
        return real_start(self)

    monkeypatch.setattr(sweep_module, "POOL_WORTH_S", worth_s)
    monkeypatch.setattr(sweep_module._Runner, "_start", spy)
    bars = sample_bars.head(800)
    seen: list[int] = []
    auto = sweep(sma_artifact[0], bars, COMBOS, executor="auto", progress=seen.append)
    serial = sweep(sma_artifact[0], bars, COMBOS, executor="serial")
    assert bool(started) is (worth_s == 0.0)
    assert sum(seen) == len(COMBOS)
    assert [(r.index, r.params, r.trades, r.engine) for r in auto] == [
        (r.index, r.params, r.trades, r.engine) for r in serial
    ]


def test_sweep_with_data_inputs_runs_the_fast_path_like_the_kernels() -> None:
    from test_multidata import art, bars

    btc, eth = bars(1, 1200), bars(2, 1200)
    combos = [{"nodes.eth_sma.params.period": p} for p in (5, 10, 20)]
    data = {"ETH/USDT": eth}
    auto = sweep(art(), btc, combos, executor="serial", data_bars=data)
    event = sweep(art(), btc, combos, executor="serial", engine="event", data_bars=data)
    assert [r.engine for r in auto] == ["fast"] * 3 and all(r.error is None for r in auto)
    assert [(r.trades, _comparable(r.metrics)) for r in auto] == [
        (r.trades, _comparable(r.metrics)) for r in event
    ]
    assert len({r.trades for r in auto}) > 1  # the swept input node matters
    missing = sweep(art(), btc, combos[:1], executor="serial")  # no data bars given
    assert missing[0].error and "ETH/USDT" in missing[0].error


def test_sweep_charges_funding_on_both_engines(
    rsi_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    from feeds.funding import read_funding

    funding = read_funding(
        Path(__file__).resolve().parents[2] / "examples" / "data" / "btcusdt-funding-synthetic.csv"
    )
    bars = sample_bars.head(3000)
    combos = [{"nodes.rsi.params.period": p} for p in (10, 14)]
    auto = sweep(rsi_artifact[0], bars, combos, executor="serial", funding=funding)
    event = sweep(rsi_artifact[0], bars, combos, executor="serial", engine="event", funding=funding)
    free = sweep(rsi_artifact[0], bars, combos, executor="serial")
    assert [r.engine for r in auto] == ["fast", "fast"]
    assert [r.metrics["funding_paid"] for r in auto] == [r.metrics["funding_paid"] for r in event]
    assert all(r.metrics["funding_paid"] > 0 for r in auto)  # type: ignore[operator]
    assert all(f.metrics["funding_paid"] == 0 for f in free)
