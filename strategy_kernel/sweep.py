"""Parameter sweeps and walk-forward runs over artifact parameters.

A parameter is a dotted path into the artifact (`nodes.rsi.params.period`,
`exit.take_profit.0.r`). Every combination is a new artifact, validated exactly like a
hand-written one, then backtested by `evaluate`: one picklable task function that runs the same
in-process, in local worker processes or on a Dask cluster. Results come back in a
deterministic order (the order of the combinations), whatever order the workers finish in.

Engines: `auto` (the default) runs each combination on the fast path (batch indicators + one
numba loop, 60x the event-driven loop, trade for trade the same result) and falls back to the
event-driven kernels when the fast path refuses the artifact (a python node, for example); every
result says which engine produced it. `event` always runs the real kernels and records the
strategy-log head; `fast` refuses what the fast path cannot run. Walk-forward optimises with the
sweep's engine and always confirms each fold's winner on the event-driven kernels.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.io import content_hash, from_data, to_data
from artifacts.schema import Artifact
from strategy_kernel.backtest import run_backtest
from strategy_kernel.errors import StrategyError
from strategy_kernel.fastpath import FastPathUnsupported, fast_backtest

Value = int | float | str | bool
ENGINES = ("auto", "fast", "event")


class SweepError(StrategyError):
    """A sweep cannot run: bad parameter path or value, or an invalid combination."""


@dataclass(frozen=True)
class ParamAxis:
    """One swept parameter: an explicit list of values (grid) or a numeric range (random search)."""

    path: str
    values: tuple[Value, ...] = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False

    def sample(self, rng: random.Random) -> Value:
        if self.values:
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        return rng.uniform(self.low, self.high)


def _number(text: str) -> Value:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_axis(spec: str) -> ParamAxis:
    """`path=v1,v2,v3` (grid values), `path=lo:hi:step` (grid range) or `path=lo..hi` (random range)."""
    path, sep, rhs = spec.partition("=")
    if not sep or not path or not rhs:
        raise SweepError(f"--param {spec!r}: write PATH=V1,V2 or PATH=LO:HI:STEP or PATH=LO..HI")
    if ".." in rhs:
        lo, hi = (_number(x) for x in rhs.split("..", 1))
        if not isinstance(lo, int | float) or not isinstance(hi, int | float) or lo >= hi:
            raise SweepError(f"--param {spec!r}: a random range needs numbers LO < HI")
        integer = isinstance(lo, int) and isinstance(hi, int)
        return ParamAxis(path, low=float(lo), high=float(hi), integer=integer)
    if rhs.count(":") == 2:
        parts = [_number(x) for x in rhs.split(":")]
        nums = [p for p in parts if isinstance(p, int | float) and not isinstance(p, bool)]
        if len(nums) != 3 or nums[2] <= 0 or nums[0] > nums[1]:
            raise SweepError(f"--param {spec!r}: a grid range needs numbers LO <= HI and STEP > 0")
        lo, hi, step = nums
        n = math.floor((hi - lo) / step + 1e-9) + 1
        if all(isinstance(x, int) for x in nums):
            return ParamAxis(path, values=tuple(int(lo) + i * int(step) for i in range(n)))
        return ParamAxis(path, values=tuple(float(lo) + i * float(step) for i in range(n)))
    return ParamAxis(path, values=tuple(_number(x) for x in rhs.split(",")))


def set_param(data: dict[str, Any], path: str, value: Value) -> None:
    """Set `path` inside plain artifact data; every part but the last must already exist."""
    parts = path.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(parts[: i + 1])
            raise SweepError(
                f"parameter path {path!r}: {where!r} does not exist in the artifact"
            ) from None
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    if (
        isinstance(node, dict)
        and last not in node
        and not (len(parts) >= 2 and parts[-2] == "params")
    ):
        raise SweepError(
            f"parameter path {path!r}: no field {last!r} there (params may add new keys)"
        )
    node[last] = value


def apply_params(artifact: Artifact, params: Mapping[str, Value]) -> Artifact:
    """A new, fully validated artifact with `params` set (provenance notes the parent hash)."""
    return _apply(artifact, params)[0]


def _apply(artifact: Artifact, params: Mapping[str, Value]) -> tuple[Artifact, SignalGraph]:
    data = to_data(artifact)
    for path, value in params.items():
        set_param(data, path, value)
    data.setdefault("provenance", {})["parent"] = content_hash(artifact)
    try:
        new = from_data(data, f"<sweep {dict(params)}>")
        graph = check(new, f"<sweep {dict(params)}>")
    except Exception as exc:
        raise SweepError(f"parameters {dict(params)} make an invalid artifact:\n{exc}") from None
    return new, graph


def combinations(
    axes: Sequence[ParamAxis], *, random_n: int | None = None, seed: int = 0
) -> list[dict[str, Value]]:
    """Grid: the cartesian product in the given order. Random: `random_n` seeded samples."""
    if not axes:
        raise SweepError("no parameters to sweep: give at least one --param")
    if random_n is None:
        missing = [a.path for a in axes if not a.values]
        if missing:
            raise SweepError(
                f"{missing[0]}: a LO..HI range needs --random N; use V1,V2 or LO:HI:STEP for a grid"
            )
        return [
            dict(zip([a.path for a in axes], combo, strict=True))
            for combo in itertools.product(*(a.values for a in axes))
        ]
    rng = random.Random(seed)
    return [{a.path: a.sample(rng) for a in axes} for _ in range(random_n)]


@dataclass(frozen=True)
class SweepTask:
    artifact: dict[str, Any]  # plain data (artifacts.io.to_data): pickles small, validates fast
    params: dict[str, Value]
    bars: pl.DataFrame
    index: int
    engine: str = "auto"
    data_bars: dict[str, pl.DataFrame] | None = None  # the `data:` inputs' bars, by symbol
    funding: pl.DataFrame | None = None  # a perp's funding rates (FUNDING_SCHEMA)


@dataclass(frozen=True)
class SweepResult:
    index: int
    params: dict[str, Value]
    metrics: dict[str, float | int | None]
    trades: int
    strategy_log_head: str  # "" when the fast path ran: it writes no strategy log
    error: str | None = None
    engine: str = "event"  # the engine that produced this result: "fast" or "event"

    def objective(self, name: str) -> float:
        v = self.metrics.get(name)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else -math.inf


def evaluate(task: SweepTask) -> SweepResult:
    """Backtest one combination. Pure and picklable: the same function runs on every executor."""
    base = from_data(task.artifact)
    engine = "event" if task.engine == "event" else "fast"
    try:
        art, graph = _apply(base, task.params)
        if engine == "fast":
            try:
                fast = fast_backtest(
                    art, graph, task.bars, data_bars=task.data_bars, funding=task.funding
                )
            except FastPathUnsupported:
                if task.engine == "fast":
                    raise
                engine = "event"
            else:
                return SweepResult(
                    task.index,
                    task.params,
                    fast.metrics.as_dict(),
                    len(fast.trades),
                    "",
                    engine="fast",
                )
        result = run_backtest(art, graph, task.bars, data_bars=task.data_bars, funding=task.funding)
    except StrategyError as exc:
        return SweepResult(task.index, task.params, {}, 0, "", error=str(exc), engine=engine)
    return SweepResult(
        task.index,
        task.params,
        result.metrics.as_dict(),
        len(result.trades),
        result.strategy_log_head,
        engine=engine,
    )


EXECUTORS = ("auto", "serial", "process", "dask")
# Starting two spawned workers (interpreter, numba and polars imports, numba caches) costs ~3 s
# here; with two workers a pool saves at most half the serial time, so `auto` starts one only
# when the rest of the work is estimated at more than twice that.
POOL_WORTH_S = 6.0


class _Runner:
    """Runs task lists on one executor that starts once: a walk-forward's folds share the worker
    processes (or Dask client) instead of spawning fresh interpreters for every fold.

    `auto` runs the first task in-process and starts worker processes only when the remaining
    tasks, at that task's cost, are worth more than starting them (a fast-path combination takes
    milliseconds, an event-driven one seconds). The results never depend on the executor."""

    def __init__(self, executor: str, workers: int, address: str | None) -> None:
        if executor not in EXECUTORS:
            raise SweepError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
        self.executor, self.workers, self.address = executor, workers, address
        self._stack = contextlib.ExitStack()
        self._pool: Any = None

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self.executor in ("process", "auto"):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: polars and numba start threads that a forked child must not inherit
            self._pool = self._stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            )
        else:
            try:
                from distributed import Client
            except ImportError:
                raise SweepError(
                    "executor 'dask' needs the dask[distributed] package "
                    "(pip install 'stratagem[cluster]')"
                ) from None
            make_client: Any = Client  # distributed ships no type hints
            kwargs = (
                {"address": self.address}
                if self.address
                else {"processes": False, "n_workers": 1, "threads_per_worker": self.workers}
            )
            self._pool = self._stack.enter_context(make_client(**kwargs))
        return self._pool

    def run(
        self, tasks: list[SweepTask], progress: Callable[[int], None] | None
    ) -> list[SweepResult]:
        """Results in task order, whatever order the workers finish in."""
        results: list[SweepResult] = []
        if self.executor == "auto" and self._pool is None and tasks:
            started = time.perf_counter()  # chooses the executor only; never reaches a result
            results = self._serial(tasks[:1], progress)
            estimate = (time.perf_counter() - started) * (len(tasks) - 1)
            tasks = tasks[1:]
            if estimate <= POOL_WORTH_S or self.workers <= 1:
                return results + self._serial(tasks, progress)
        if self.executor == "serial" or len(tasks) <= 1:
            return results + self._serial(tasks, progress)
        pool = self._start()
        completed: Any
        if self.executor in ("process", "auto"):
            from concurrent.futures import as_completed as completed

            futures = [pool.submit(evaluate, t) for t in tasks]
        else:
            from distributed import as_completed as completed

            futures = pool.map(evaluate, tasks, pure=False)
        for fut in completed(futures):
            results.append(fut.result())
            if progress:
                progress(1)
        return sorted(results, key=lambda r: r.index)

    @staticmethod
    def _serial(
        tasks: list[SweepTask], progress: Callable[[int], None] | None
    ) -> list[SweepResult]:
        out = []
        for t in tasks:
            out.append(evaluate(t))
            if progress:
                progress(1)
        return out


def sweep(
    artifact: Artifact,
    bars: pl.DataFrame,
    combos: Iterable[Mapping[str, Value]],
    *,
    executor: str = "auto",
    workers: int = 2,
    address: str | None = None,
    progress: Callable[[int], None] | None = None,
    engine: str = "auto",
    runner: _Runner | None = None,
    data_bars: Mapping[str, pl.DataFrame] | None = None,
    funding: pl.DataFrame | None = None,
) -> list[SweepResult]:
    """Backtest every combination; results in combination order. Invalid combos fail up front."""
    if engine not in ENGINES:
        raise SweepError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    params = [dict(c) for c in combos]
    for p in params:
        apply_params(artifact, p)  # fail fast, in the caller, with the path and value named
    data = to_data(artifact)
    extra = dict(data_bars) if data_bars is not None else None
    tasks = [SweepTask(data, p, bars, i, engine, extra, funding) for i, p in enumerate(params)]
    if runner is not None:
        return runner.run(tasks, progress)
    with _Runner(executor, workers, address) as own:
        return own.run(tasks, progress)


def best(results: Sequence[SweepResult], objective: str) -> SweepResult:
    ok = [r for r in results if r.error is None]
    if not ok:
        raise SweepError(
            "every combination failed: " + (results[0].error or "") if results else "no results"
        )
    return max(ok, key=lambda r: (r.objective(objective), -r.index))


@dataclass(frozen=True)
class WalkForwardFold:
    train_range: tuple[int, int]
    test_range: tuple[int, int]
    best_params: dict[str, Value]
    train_objective: float
    test_result: SweepResult


def walk_forward(
    artifact: Artifact,
    bars: pl.DataFrame,
    combos: Sequence[Mapping[str, Value]],
    *,
    train_bars: int,
    test_bars: int,
    objective: str = "sharpe",
    executor: str = "auto",
    workers: int = 2,
    address: str | None = None,
    progress: Callable[[int], None] | None = None,
    engine: str = "auto",
    data_bars: Mapping[str, pl.DataFrame] | None = None,
    funding: pl.DataFrame | None = None,
) -> list[WalkForwardFold]:
    """Optimise on each train window, then run the winner on the following test window.

    The test run starts `warm-up` bars before the test window so indicators are defined when it
    begins; no trade can happen in those bars (the strategy is still warming up). The train
    windows run on `engine`; every test window runs on the event-driven kernels. `data_bars`
    (the artifact's `data:` inputs) and `funding` are given whole to every window: they are read
    point in time.
    """
    if train_bars <= 0 or test_bars <= 0:
        raise SweepError("walk-forward needs positive train and test lengths")
    n = bars.height
    if train_bars + test_bars > n:
        raise SweepError(
            f"walk-forward needs {train_bars + test_bars} bars (train + test); the data has {n}"
        )
    folds: list[WalkForwardFold] = []
    start = 0
    with _Runner(executor, workers, address) as runner:
        while start + train_bars + test_bars <= n:
            tr = (start, start + train_bars)
            te = (tr[1], tr[1] + test_bars)
            results = sweep(
                artifact,
                bars[tr[0] : tr[1]],
                combos,
                progress=progress,
                engine=engine,
                runner=runner,
                data_bars=data_bars,
                funding=funding,
            )
            winner = best(results, objective)
            art = apply_params(artifact, winner.params)
            warm = check(art).warmup
            lo = max(0, te[0] - warm - 1)
            test = evaluate(
                SweepTask(
                    to_data(art),
                    {},
                    bars[lo : te[1]],
                    0,
                    "event",
                    dict(data_bars) if data_bars is not None else None,
                    funding,
                )
            )
            folds.append(
                WalkForwardFold(tr, te, dict(winner.params), winner.objective(objective), test)
            )
            start += test_bars
    return folds
