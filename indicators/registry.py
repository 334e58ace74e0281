"""The indicator registry: one `IndicatorSpec` per indicator, built from TA-Lib's own metadata.

Every TA-Lib function that makes sense on bars is registered from `talib.abstract` (inputs,
defaults, outputs, lookback) plus `_talib_ranges` (parameter ranges read from the C library),
so the registry cannot drift from the library that computes the numbers. Indicators TA-Lib
lacks (or that we extend, like session VWAP) are declared in `_EXTRAS` below.

Naming conventions (documented in docs/indicators.md):
- TA-Lib's ``timeperiod`` is called ``period`` here (the artifact schema's name); every other
  parameter keeps its TA-Lib name.
- A single-output indicator has the output ``("value",)``; multi-output indicators keep
  TA-Lib's output names (MACD -> ``("macd", "macdsignal", "macdhist")``).
- ``warmup(params)`` is the number of leading NaN bars of every output, equal to TA-Lib's
  lookback for TA-Lib functions (unstable period at its default, 0).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

from indicators._talib_ranges import TALIB_PARAM_RANGES
from indicators.errors import IndicatorParamError, UnknownIndicatorError

Group = Literal[
    "overlap",
    "momentum",
    "volatility",
    "volume",
    "cycle",
    "pattern",
    "price",
    "statistic",
    "custom",
]
Column = Literal["open", "high", "low", "close", "volume"]
ParamValue = int | float

COLUMNS: tuple[Column, ...] = ("open", "high", "low", "close", "volume")

# TA-Lib group name -> ours.
_GROUPS: dict[str, Group] = {
    "Overlap Studies": "overlap",
    "Momentum Indicators": "momentum",
    "Volatility Indicators": "volatility",
    "Volume Indicators": "volume",
    "Cycle Indicators": "cycle",
    "Pattern Recognition": "pattern",
    "Price Transform": "price",
    "Statistic Functions": "statistic",
    "Math Operators": "statistic",
}

# TA-Lib functions left out, with the reason (listed in docs/indicators.md).
EXCLUDED_TALIB: Mapping[str, str] = MappingProxyType(
    {
        **{
            name: "element-wise math transform, not an indicator"
            for name in (
                "ACOS",
                "ASIN",
                "ATAN",
                "CEIL",
                "COS",
                "COSH",
                "EXP",
                "FLOOR",
                "LN",
                "LOG10",
                "SIN",
                "SINH",
                "SQRT",
                "TAN",
                "TANH",
            )
        },
        **{
            name: "element-wise arithmetic of two series, not an indicator"
            for name in ("ADD", "SUB", "MULT", "DIV")
        },
        "MAVP": "needs a per-bar period series, not a bar column",
    }
)

# Indicators with an O(1)-per-update numba implementation in `indicators.streaming`
# (tests/indicators/test_streaming.py checks this list against the streaming table).
STREAMING: frozenset[str] = frozenset(
    {
        "SMA",
        "EMA",
        "WMA",
        "DEMA",
        "TEMA",
        "RSI",
        "MACD",
        "BBANDS",
        "ATR",
        "NATR",
        "ADX",
        "PLUS_DI",
        "MINUS_DI",
        "STOCH",
        "STOCHRSI",
        "CCI",
        "MFI",
        "OBV",
        "ROC",
        "WILLR",
        "VWAP",
        "SUPERTREND",
        "DONCHIAN",
        "ZSCORE",
    }
)

# Other names people type for a registered indicator.
ALIASES: Mapping[str, str] = MappingProxyType({"KELTNER": "KC", "BOLLINGER": "BBANDS"})

_PERIOD_ALIAS = ("timeperiod", "period")  # TA-Lib name, our name
_MAX_RANGE = 3.0e37  # TA-Lib's "unbounded" real range


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: its type, default and inclusive allowed range (used for validation and sweeps)."""

    type: type[int] | type[float]
    default: ParamValue
    min: ParamValue
    max: ParamValue


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """Everything the kernel, the compiler and the docs need to know about one indicator."""

    name: str
    inputs: tuple[Column, ...]
    params: Mapping[str, ParamSpec]
    outputs: tuple[str, ...]
    group: Group
    streaming: bool
    display_name: str
    source: Literal["talib", "extra"]
    _warmup: Callable[[Mapping[str, ParamValue]], int] = field(repr=False, compare=False)
    # TA-Lib parameter name for each of our parameter names (identity except period).
    talib_params: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def warmup(self, params: Mapping[str, ParamValue] | None = None) -> int:
        """Number of leading NaN bars of every output for these (validated, defaulted) params."""
        return self._warmup(validate_params(self.name, params or {}))


def _talib_warmup(
    name: str, talib_params: Mapping[str, str]
) -> Callable[[Mapping[str, ParamValue]], int]:
    def warmup(params: Mapping[str, ParamValue]) -> int:
        key = tuple(sorted((talib_params[k], v) for k, v in params.items()))
        return _talib_lookback(name, key)

    return warmup


@lru_cache(maxsize=4096)
def _talib_lookback(name: str, params: tuple[tuple[str, ParamValue], ...]) -> int:
    """TA-Lib's own lookback for these parameters (unstable period at its default)."""
    from talib import abstract

    fn = getattr(abstract, "Function")(name)  # noqa: B009 (talib's stubs lack Function)
    fn.parameters = dict(params)
    return int(fn.lookback)


def _build_talib_specs() -> dict[str, IndicatorSpec]:
    import talib
    from talib import abstract

    specs: dict[str, IndicatorSpec] = {}
    groups: dict[str, list[str]] = getattr(talib, "get_function_groups")()  # noqa: B009
    for ta_group, names in groups.items():
        group = _GROUPS.get(ta_group)
        if group is None:
            continue
        for name in names:
            if name in EXCLUDED_TALIB:
                continue
            info = getattr(abstract, "Function")(name).info  # noqa: B009
            inputs: list[Column] = []
            for value in info["input_names"].values():
                for col in [value] if isinstance(value, str) else value:
                    if col not in COLUMNS:
                        raise RuntimeError(f"TA-Lib {name}: unexpected input column {col!r}")
                    inputs.append(col)
            ranges = TALIB_PARAM_RANGES.get(name, {})
            params: dict[str, ParamSpec] = {}
            talib_params: dict[str, str] = {}
            for ta_name, default in info["parameters"].items():
                ours = _PERIOD_ALIAS[1] if ta_name == _PERIOD_ALIAS[0] else ta_name
                lo, hi = ranges[ta_name]
                ptype: type[int] | type[float] = int if isinstance(default, int) else float
                params[ours] = ParamSpec(ptype, ptype(default), ptype(lo), ptype(hi))
                talib_params[ours] = ta_name
            outputs = tuple(info["output_names"])
            if len(outputs) == 1:
                outputs = ("value",)
            specs[name] = IndicatorSpec(
                name=name,
                inputs=tuple(inputs),
                params=MappingProxyType(params),
                outputs=outputs,
                group=group,
                streaming=name in STREAMING,
                display_name=str(info["display_name"]),
                source="talib",
                _warmup=_talib_warmup(name, talib_params),
                talib_params=MappingProxyType(talib_params),
            )
    return specs


def _extra(
    name: str,
    display_name: str,
    group: Group,
    inputs: tuple[Column, ...],
    params: dict[str, ParamSpec],
    outputs: tuple[str, ...],
    warmup: Callable[[Mapping[str, ParamValue]], int],
) -> IndicatorSpec:
    return IndicatorSpec(
        name=name,
        inputs=inputs,
        params=MappingProxyType(params),
        outputs=outputs,
        group=group,
        streaming=name in STREAMING,
        display_name=display_name,
        source="extra",
        _warmup=warmup,
    )


def _int(default: int, lo: int, hi: int = 100_000) -> ParamSpec:
    return ParamSpec(int, default, lo, hi)


def _ichimoku_warmup(p: Mapping[str, ParamValue]) -> int:
    return int(max(p["tenkan"], p["kijun"], p["senkou"]) - 1 + p["displacement"])


def _build_extras() -> dict[str, IndicatorSpec]:
    hlcv: tuple[Column, ...] = ("high", "low", "close", "volume")
    extras = [
        # Replaces TA-Lib's VWAP (cumulative from the first bar) with a session-resetting one;
        # anchor_bars=0 is exactly TA-Lib's VWAP except for the no-volume-yet rule (NaN, not 0).
        _extra(
            "VWAP",
            "Volume Weighted Average Price (anchored / session)",
            "volume",
            hlcv,
            {"anchor_bars": _int(0, 0, 10_000_000)},
            ("value",),
            lambda p: 0,
        ),
        _extra(
            "ICHIMOKU",
            "Ichimoku Kinko Hyo (without the look-ahead chikou span)",
            "overlap",
            ("high", "low"),
            {
                "tenkan": _int(9, 1),
                "kijun": _int(26, 1),
                "senkou": _int(52, 1),
                "displacement": _int(26, 0),
            },
            ("tenkan", "kijun", "senkou_a", "senkou_b"),
            _ichimoku_warmup,
        ),
        _extra(
            "PIVOTS",
            "Classic floor pivot points of the previous session",
            "overlap",
            ("high", "low", "close"),
            {"period": _int(24, 1, 10_000_000)},
            ("pp", "r1", "s1", "r2", "s2", "r3", "s3"),
            lambda p: int(p["period"]),
        ),
        _extra(
            "ZSCORE",
            "Rolling z-score of price (population standard deviation)",
            "statistic",
            ("close",),
            {"period": _int(20, 2)},
            ("value",),
            lambda p: int(p["period"]) - 1,
        ),
        _extra(
            "REALVOL",
            "Realised volatility: root mean square of log returns, optionally annualised",
            "volatility",
            ("close",),
            {"period": _int(20, 2), "bars_per_year": ParamSpec(float, 1.0, 1e-12, 1e12)},
            ("value",),
            lambda p: int(p["period"]),
        ),
    ]
    return {spec.name: spec for spec in extras}


@lru_cache(maxsize=1)
def _registry() -> Mapping[str, IndicatorSpec]:
    specs = _build_talib_specs()
    specs.update(_build_extras())  # an extra with a TA-Lib name (VWAP) replaces it
    return MappingProxyType(dict(sorted(specs.items())))


def list_indicators() -> tuple[str, ...]:
    """Every registered indicator name, sorted."""
    return tuple(_registry())


def get_indicator(name: str) -> IndicatorSpec:
    """The spec for `name` (case-insensitive, aliases allowed); raises UnknownIndicatorError."""
    if not isinstance(name, str):
        raise UnknownIndicatorError(
            f"indicator name must be a string, got {type(name).__name__} {name!r}"
        )
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    registry = _registry()
    spec = registry.get(key)
    if spec is None:
        candidates = list(registry) + list(ALIASES)
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownIndicatorError(
            f"unknown indicator {name!r}.{hint} See list_indicators() or docs/indicators.md "
            f"for the {len(registry)} available names."
        )
    return spec


def _describe_range(p: ParamSpec) -> str:
    hi = "unbounded" if p.max >= _MAX_RANGE else repr(p.max)
    lo = "unbounded" if p.min <= -_MAX_RANGE else repr(p.min)
    return f"{p.type.__name__} in [{lo}, {hi}]"


def validate_params(name: str, params: Mapping[str, object] | None) -> dict[str, ParamValue]:
    """Check `params` against the spec and fill defaults; raises IndicatorParamError saying how to fix it."""
    spec = get_indicator(name)
    given = dict(params or {})
    out: dict[str, ParamValue] = {}
    for key in given:
        if key not in spec.params:
            allowed = ", ".join(spec.params) or "none"
            close = difflib.get_close_matches(str(key), list(spec.params), n=1)
            if key == _PERIOD_ALIAS[0] and _PERIOD_ALIAS[1] in spec.params:
                close = [_PERIOD_ALIAS[1]]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise IndicatorParamError(
                f"{spec.name}: unknown parameter {key!r}.{hint} Allowed parameters: {allowed}."
            )
    for key, pspec in spec.params.items():
        if key not in given:
            out[key] = pspec.default
            continue
        value = given[key]
        where = f"{spec.name}.{key}"
        allowed = _describe_range(pspec)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise IndicatorParamError(
                f"{where}: expected {pspec.type.__name__}, got {type(value).__name__} {value!r}; "
                f"allowed: {allowed} (default {pspec.default!r})."
            )
        if pspec.type is int:
            if not isinstance(value, numbers.Integral):
                raise IndicatorParamError(
                    f"{where}: expected int, got {type(value).__name__} {value!r}; write a whole "
                    f"number, allowed: {allowed} (default {pspec.default!r})."
                )
            checked: ParamValue = int(value)
        else:
            checked = float(value)
            if not math.isfinite(checked):
                raise IndicatorParamError(
                    f"{where}: {value!r} is not a finite number; allowed: {allowed} "
                    f"(default {pspec.default!r})."
                )
        if not pspec.min <= checked <= pspec.max:
            raise IndicatorParamError(
                f"{where} = {value!r} is out of range; allowed: {allowed}. "
                f"Use a value between {pspec.min!r} and {pspec.max!r} (default {pspec.default!r})."
            )
        out[key] = checked
    return out
