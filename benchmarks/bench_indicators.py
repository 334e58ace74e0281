"""Per-indicator cost: TA-Lib batch ns/value vs streaming update ns/value, measured in one run.

Streaming is timed two ways: the numba loop (`run_stream`, what backtest fast paths use) and
one `Stream.update` call per bar from Python (what a live node pays). Ratio = numba streaming
ns/value / TA-Lib ns/value; the target is <= 2.0. Run: ``python benchmarks/bench_indicators.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from indicators.batch import compute
from indicators.streaming import make_stream, run_stream, streaming_names

N = 200_000
N_PY = 20_000


def _best(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def main() -> None:
    rng = np.random.default_rng(42)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N)))
    high = close * (1 + rng.uniform(0, 0.01, N))
    low = close * (1 - rng.uniform(0, 0.01, N))
    open_ = np.concatenate([close[:1], close[:-1]])
    volume = rng.uniform(1, 1000, N)
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    print(
        "| indicator | TA-Lib batch ns/value | streaming (numba loop) ns/value | ratio | streaming (Python call) ns/value |"
    )
    print("|---|---|---|---|---|")
    ratios = []
    for name in streaming_names():
        import talib  # noqa: F401  (imported by compute; kept explicit for the reader)

        compute(name, cols, {})
        run_stream(name, {}, open_, high, low, close, volume)  # compile / load cache
        t_batch = _best(lambda name=name: compute(name, cols, {})) / N
        t_stream = (
            _best(lambda name=name: run_stream(name, {}, open_, high, low, close, volume)) / N
        )
        s = make_stream(name, {})
        upd = s.update
        rows = list(
            zip(*(x[:N_PY].tolist() for x in (open_, high, low, close, volume)), strict=True)
        )

        def py_loop(
            upd: Callable[..., tuple[float, ...]] = upd, rows: list[tuple[float, ...]] = rows
        ) -> None:
            for row in rows:
                upd(*row)

        t_py = _best(py_loop, repeat=3) / N_PY
        ratio = t_stream / t_batch
        ratios.append(ratio)
        print(f"| {name} | {t_batch:.1f} | {t_stream:.1f} | {ratio:.2f} | {t_py:.0f} |")
    print(
        f"\nmedian ratio {float(np.median(ratios)):.2f}; N={N} bars (Python column: {N_PY} bars). "
        "TA-Lib column = indicators.batch.compute (TA-Lib call + input checks + NaN mask)."
    )


if __name__ == "__main__":
    main()
