"""Streaming indicators: O(1) numba updates whose outputs equal the batch (TA-Lib) outputs.

Public API: `make_stream(name, params) -> Stream`, `run_stream(name, params, o, h, l, c, v)`,
`streaming_names()`. State lives in one float64 numpy array per stream so it can be
snapshotted, restored (recovery, hot-swap) and mirrored elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from indicators.errors import IndicatorInputError, StreamingUnsupportedError, StreamStateError
from indicators.registry import ParamValue, get_indicator, validate_params
from indicators.streaming import kernels as k
from indicators.streaming.kernels import H_KIND, H_VERSION, HEADER

FloatArray = npt.NDArray[np.float64]
InitFn = Callable[[int, Mapping[str, ParamValue]], np.ndarray]


@dataclass(frozen=True, slots=True)
class _Kernel:
    init: InitFn
    update: Any  # numba dispatcher: update(state, o, h, l, c, v) -> tuple[float, ...]
    run: Any  # numba dispatcher: run(state, o, h, l, c, v) -> (n_outputs, n) array
    # parameter values the kernel implements, beyond the registry's ranges (None = all)
    only: Mapping[str, int] | None = None


# The streaming table: name -> kernel. Kind codes are positions in this (sorted) table.
_KERNELS: dict[str, _Kernel] = {
    "ADX": _Kernel(k.init_dmi, k.update_adx, k.run_adx),
    "ATR": _Kernel(k.init_atr, k.update_atr, k.run_atr),
    "BBANDS": _Kernel(k.init_bbands, k.update_bbands, k.run_bbands, {"matype": 0}),
    "CCI": _Kernel(k.init_cci, k.update_cci, k.run_cci),
    "DEMA": _Kernel(k.init_dema, k.update_dema, k.run_dema),
    "DONCHIAN": _Kernel(k.init_hl_window, k.update_donchian, k.run_donchian),
    "EMA": _Kernel(k.init_ema, k.update_ema, k.run_ema),
    "MACD": _Kernel(k.init_macd, k.update_macd, k.run_macd),
    "MFI": _Kernel(k.init_mfi, k.update_mfi, k.run_mfi),
    "MINUS_DI": _Kernel(k.init_dmi, k.update_minus_di, k.run_minus_di),
    "NATR": _Kernel(k.init_atr, k.update_natr, k.run_natr),
    "OBV": _Kernel(k.init_obv, k.update_obv, k.run_obv),
    "PLUS_DI": _Kernel(k.init_dmi, k.update_plus_di, k.run_plus_di),
    "ROC": _Kernel(k.init_roc, k.update_roc, k.run_roc),
    "RSI": _Kernel(k.init_rsi, k.update_rsi, k.run_rsi),
    "SMA": _Kernel(k.init_sma, k.update_sma, k.run_sma),
    "STOCH": _Kernel(
        k.init_stoch, k.update_stoch, k.run_stoch, {"slowk_matype": 0, "slowd_matype": 0}
    ),
    "STOCHRSI": _Kernel(k.init_stochrsi, k.update_stochrsi, k.run_stochrsi, {"fastd_matype": 0}),
    "SUPERTREND": _Kernel(k.init_supertrend, k.update_supertrend, k.run_supertrend),
    "TEMA": _Kernel(k.init_tema, k.update_tema, k.run_tema),
    "VWAP": _Kernel(k.init_vwap, k.update_vwap, k.run_vwap),
    "WILLR": _Kernel(k.init_hl_window, k.update_willr, k.run_willr),
    "WMA": _Kernel(k.init_wma, k.update_wma, k.run_wma),
    "ZSCORE": _Kernel(k.init_zscore, k.update_zscore, k.run_zscore),
}
_KIND: dict[str, int] = {name: i + 1 for i, name in enumerate(sorted(_KERNELS))}


def streaming_names() -> tuple[str, ...]:
    """Names with a streaming implementation, sorted."""
    return tuple(sorted(_KERNELS))


def _resolve(
    name: str, params: Mapping[str, object] | None
) -> tuple[str, dict[str, ParamValue], _Kernel]:
    spec = get_indicator(name)
    p = validate_params(spec.name, params)
    kernel = _KERNELS.get(spec.name)
    if kernel is None:
        raise StreamingUnsupportedError(
            f"{spec.name} has no streaming implementation; use indicators.batch.compute, or one of "
            f"{', '.join(streaming_names())}."
        )
    for key, required in (kernel.only or {}).items():
        if p[key] != required:
            raise StreamingUnsupportedError(
                f"{spec.name}: streaming supports {key}={required} (SMA) only, got {key}={p[key]}; "
                f"use indicators.batch.compute for other moving-average types."
            )
    return spec.name, p, kernel


class Stream:
    """One live indicator instance: feed bars with `update`, persist with `snapshot`/`restore`."""

    __slots__ = ("_initial", "_state", "_update", "name", "outputs", "params", "warmup")

    def __init__(self, name: str, params: Mapping[str, ParamValue], kernel: _Kernel) -> None:
        spec = get_indicator(name)
        self.name: str = spec.name
        self.params: dict[str, ParamValue] = dict(params)
        self.outputs: tuple[str, ...] = spec.outputs
        self.warmup: int = spec.warmup(params)
        self._update = kernel.update
        self._state: np.ndarray = kernel.init(_KIND[spec.name], params)
        self._initial: np.ndarray = self._state.copy()

    def update(self, o: float, h: float, l: float, c: float, v: float) -> tuple[float, ...]:  # noqa: E741
        """Advance one bar; returns one float per output (NaN during warm-up / after bad input)."""
        result: tuple[float, ...] = self._update(
            self._state, float(o), float(h), float(l), float(c), float(v)
        )
        return result

    def update_floats(self, o: float, h: float, l: float, c: float, v: float) -> tuple[float, ...]:  # noqa: E741
        """`update` for callers that already hold Python floats (the per-bar DAG): no conversions."""
        result: tuple[float, ...] = self._update(self._state, o, h, l, c, v)
        return result

    def snapshot(self) -> np.ndarray:
        """A copy of the whole state (restore it into a stream with the same name and params)."""
        return self._state.copy()

    def restore(self, arr: npt.ArrayLike) -> None:
        """Replace the state with a snapshot; refuses one from another indicator or parameter set."""
        a = np.array(arr, dtype=np.float64, copy=True)
        ref = self._initial
        if a.shape != ref.shape:
            raise StreamStateError(
                f"{self.name}{self.params}: snapshot has shape {a.shape}, this stream's state has "
                f"{ref.shape}; restore a snapshot taken from a stream with the same name and params."
            )
        if a[H_KIND] != ref[H_KIND] or a[H_VERSION] != ref[H_VERSION]:
            raise StreamStateError(
                f"{self.name}: snapshot kind/version ({a[H_KIND]:g}, {a[H_VERSION]:g}) does not match "
                f"({ref[H_KIND]:g}, {ref[H_VERSION]:g}); it belongs to another indicator or layout."
            )
        self._state = a

    def reset(self) -> None:
        """Back to the freshly-made state (e.g. to re-anchor a VWAP at a session start)."""
        self._state = self._initial.copy()

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {self.params!r})"


def make_stream(name: str, params: Mapping[str, object] | None = None) -> Stream:
    """A fresh streaming instance of `name` with validated, defaulted params."""
    canonical, p, kernel = _resolve(name, params)
    return Stream(canonical, p, kernel)


def run_stream(
    name: str,
    params: Mapping[str, object] | None,
    o: npt.ArrayLike,
    h: npt.ArrayLike,
    l: npt.ArrayLike,  # noqa: E741
    c: npt.ArrayLike,
    v: npt.ArrayLike,
) -> dict[str, FloatArray]:
    """Run a fresh stream over whole columns inside one numba loop; {output: float64 array}."""
    canonical, p, kernel = _resolve(name, params)
    cols = [np.ascontiguousarray(x, dtype=np.float64) for x in (o, h, l, c, v)]
    n = cols[3].shape[0]
    if any(x.ndim != 1 or x.shape[0] != n for x in cols):
        shapes = {nm: x.shape for nm, x in zip("ohlcv", cols, strict=True)}
        raise IndicatorInputError(
            f"{canonical}: run_stream needs five 1-D columns of equal length, got {shapes}; pass "
            f"the unused columns too (any finite values, e.g. the close)."
        )
    state = kernel.init(_KIND[canonical], p)
    out = kernel.run(state, *cols)
    return {key: out[i] for i, key in enumerate(get_indicator(canonical).outputs)}


__all__ = ["HEADER", "Stream", "make_stream", "run_stream", "streaming_names"]
