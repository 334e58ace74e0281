"""Shared test helpers: hypothesis strategies for OHLCV series and the equality rule."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from indicators.registry import get_indicator

REL = 1e-9

Bars = dict[str, npt.NDArray[np.float64]]


def bars_from(
    close: npt.NDArray[np.float64], spread: npt.NDArray[np.float64], volume: npt.NDArray[np.float64]
) -> Bars:
    """Consistent bars (low <= open, close <= high) around a close path."""
    open_ = np.concatenate([close[:1], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread * 0.5)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


@st.composite
def series(draw: st.DrawFn, min_size: int = 1, max_size: int = 160) -> Bars:
    """Random and adversarial bar series: random walks, constants, huge jumps, tiny prices."""
    n = draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(["walk", "constant", "jumps", "steps", "huge", "tiny", "ulps"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "ulps":  # flat to within a few ulps: where 0/0 guards decide the output
        level = draw(st.sampled_from([1.0, 137.25, 3e-6]))
        close = level * (1.0 + rng.integers(-40, 41, n) * np.finfo(float).eps)
        spread = rng.integers(0, 3, n) * np.finfo(float).eps
    elif kind == "constant":
        level = draw(st.sampled_from([1.0, 0.1, 123.456, 5e4, 1e-7]))
        close = np.full(n, level)
        spread = np.zeros(n) if draw(st.booleans()) else np.full(n, 1e-3)
    else:
        scale = {"walk": 100.0, "jumps": 100.0, "tiny": 1e-6, "steps": 10.0, "huge": 1e9}[kind]
        close = scale * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
        if kind == "jumps" and n > 2:
            for _ in range(draw(st.integers(1, 3))):
                i = int(rng.integers(0, n))
                close[i:] *= float(rng.choice([1e4, 1e-4, 50.0, 0.02]))
        if kind == "steps":
            close = np.round(close)  # many exact ties and flat stretches
        spread = rng.uniform(0.0, 0.02, n)
    volume = rng.uniform(0.0, 1000.0, n)
    if draw(st.booleans()):
        volume[rng.random(n) < 0.3] = 0.0
    return bars_from(close, spread, volume)


def assert_same(
    name: str, key: str, got: npt.NDArray[np.float64], want: npt.NDArray[np.float64]
) -> None:
    """Equal on every bar: NaN exactly where the reference is NaN, else within 1e-9 relative.

    The absolute floor is 1e-9 times the largest |value| of that output in the series: running
    sums leave residues of that order where the exact answer is 0 (both in TA-Lib and here).
    """
    assert got.shape == want.shape, (name, key, got.shape, want.shape)
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if not np.array_equal(nan_got, nan_want):
        i = int(np.flatnonzero(nan_got != nan_want)[0])
        raise AssertionError(
            f"{name}.{key}: NaN mismatch at bar {i}: got {got[i]!r}, want {want[i]!r}"
        )
    ok = ~nan_want
    if not ok.any():
        return
    scale = float(np.max(np.abs(want[ok])))
    tol = REL * np.maximum(np.abs(want[ok]), scale)
    diff = np.abs(got[ok] - want[ok])
    if not np.all(diff <= tol):
        j = int(np.flatnonzero(diff > tol)[0])
        i = int(np.flatnonzero(ok)[j])
        raise AssertionError(
            f"{name}.{key}: bar {i}: got {got[i]!r}, want {want[i]!r} (|diff| {diff[j]:.3g} > tol {tol[j]:.3g})"
        )


@st.composite
def stream_params(draw: st.DrawFn, name: str) -> dict[str, int | float]:
    """Parameters in each indicator's allowed range (small periods so warm-ups end in-sample)."""
    spec = get_indicator(name)
    out: dict[str, int | float] = {}
    for key, p in spec.params.items():
        if "matype" in key:
            continue  # streaming implements the default (SMA) smoothing only
        if p.type is int:
            lo = int(p.min)
            out[key] = draw(st.integers(lo, max(lo, min(int(p.max), 25))))
        else:
            out[key] = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]))
    return out
