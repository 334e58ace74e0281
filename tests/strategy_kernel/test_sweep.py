"""Sweeps and walk-forward: parameter paths, validation, executors agree, deterministic order."""

from __future__ import annotations

import polars as pl
import pytest

from artifacts.graph import SignalGraph, check
from artifacts.schema import Artifact
from strategy_kernel.backtest import run_backtest
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
    results = sweep(sma_artifact[0], bars, COMBOS, executor="serial")
    assert [r.params for r in results] == COMBOS
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
    serial = sweep(sma_artifact[0], bars, combos, executor="serial")
    parallel = sweep(sma_artifact[0], bars, combos, executor=executor, workers=2)
    assert [(r.params, r.strategy_log_head, r.metrics) for r in parallel] == [
        (r.params, r.strategy_log_head, r.metrics) for r in serial
    ]


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
    with pytest.raises(SweepError, match="needs 3000 bars"):
        walk_forward(
            sma_artifact[0], bars, COMBOS, train_bars=2600, test_bars=400, executor="serial"
        )
