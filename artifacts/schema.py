"""The artifact contract `stratagem/v1`: pydantic models of the strategy YAML.

An artifact is everything the runtime needs to trade a strategy with no LLM in the loop: the
instrument, a typed signal DAG (`nodes`), entry / exit / risk rules, order templates and the
provenance of how it was made. Models are strict (`extra="forbid"`) so a typo is an error,
never a silently ignored field. Evolution rules: a new field needs a default; changing the
meaning of a field bumps `SCHEMA_VERSION` and comes with a migration and a test.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final[str] = "stratagem/v1"

#: Data columns every bar source provides; node inputs may name them directly.
PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")

NODE_ID_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_DURATION_RE: Final = re.compile(r"^\s*(\d+)\s*(bars?|s|m|h|d)\s*$")

ValueType = Literal["float", "bool"]
CompareOp = Literal["<", "<=", ">", ">=", "==", "!="]


class Strict(BaseModel):
    """Base for every artifact model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Duration(Strict):
    """A length of time in bars or wall units, written `"3 bars"`, `"90m"`, `"4h"`, `"2d"`."""

    count: int = Field(ge=1)
    unit: Literal["bars", "s", "m", "h", "d"]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, str):
            m = _DURATION_RE.match(value)
            if not m:
                raise ValueError(
                    f"invalid duration {value!r}: write a whole number and a unit, "
                    "e.g. '3 bars', '90m', '4h', '2d'"
                )
            unit = "bars" if m.group(2).startswith("bar") else m.group(2)
            return {"count": int(m.group(1)), "unit": unit}
        return value

    def bars(self, timeframe_ns: int) -> int:
        """The duration as a whole number of bars (rounded up) of the given timeframe."""
        if self.unit == "bars":
            return self.count
        unit_ns = {
            "s": 1_000_000_000,
            "m": 60_000_000_000,
            "h": 3_600_000_000_000,
            "d": 86_400_000_000_000,
        }
        total = self.count * unit_ns[self.unit]
        return -(-total // timeframe_ns)

    def __str__(self) -> str:
        return f"{self.count} bars" if self.unit == "bars" else f"{self.count}{self.unit}"


class Instrument(Strict):
    """What is traded, where, on which bar size; increments convert prices/sizes to ticks/lots."""

    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    timeframe: str = Field(pattern=r"^\d+(s|m|h|d|w)$")
    kind: Literal["spot", "perp", "future"] = "spot"
    price_increment: Decimal = Field(default=Decimal("0.01"), gt=0)
    size_increment: Decimal = Field(default=Decimal("0.0001"), gt=0)


# ----------------------------------------------------------------------------- nodes


class NodeBase(Strict):
    """A node of the signal DAG. `refs()` lists the inputs with the type each must have."""

    def refs(self) -> list[tuple[str, str, ValueType]]:
        """(field, referenced node or column, expected value type) for every input."""
        return []

    def output_type(self) -> ValueType:
        return "bool"


class IndicatorNode(NodeBase):
    """A technical indicator (TA-Lib name or one of ours) over price columns or other nodes."""

    kind: Literal["indicator"]
    fn: str = Field(min_length=1)
    inputs: list[str] = Field(default_factory=list)
    params: dict[str, int | float] = Field(default_factory=dict)
    output: str | None = None  # which output of a multi-output indicator (e.g. MACD: macdhist)

    @field_validator("fn")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [(f"inputs[{i}]", r, "float") for i, r in enumerate(self.inputs)]

    def output_type(self) -> ValueType:
        return "float"


class ThresholdNode(NodeBase):
    """`input op value`, where value is a number or another float node."""

    kind: Literal["threshold"]
    input: str
    op: CompareOp
    value: float | str

    def refs(self) -> list[tuple[str, str, ValueType]]:
        out: list[tuple[str, str, ValueType]] = [("input", self.input, "float")]
        if isinstance(self.value, str):
            out.append(("value", self.value, "float"))
        return out


class CrossNode(NodeBase):
    """True on the bar where `a` crosses `b` (above: a goes from <= b to > b; below: mirrored)."""

    kind: Literal["cross"]
    a: str
    b: float | str
    direction: Literal["above", "below"]

    def refs(self) -> list[tuple[str, str, ValueType]]:
        out: list[tuple[str, str, ValueType]] = [("a", self.a, "float")]
        if isinstance(self.b, str):
            out.append(("b", self.b, "float"))
        return out


class AllNode(NodeBase):
    kind: Literal["all"]
    inputs: list[str] = Field(min_length=1)

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [(f"inputs[{i}]", r, "bool") for i, r in enumerate(self.inputs)]


class AnyNode(NodeBase):
    kind: Literal["any"]
    inputs: list[str] = Field(min_length=1)

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [(f"inputs[{i}]", r, "bool") for i, r in enumerate(self.inputs)]


class NotNode(NodeBase):
    kind: Literal["not"]
    input: str

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [("input", self.input, "bool")]


class RisingNode(NodeBase):
    """True when the input rose (kind rising) or fell (kind falling) on each of the last `bars` bars."""

    kind: Literal["rising", "falling"]
    input: str
    bars: int = Field(default=1, ge=1, le=10_000)

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [("input", self.input, "float")]


class LookbackNode(NodeBase):
    """The input's value `bars` bars ago (NaN until enough history)."""

    kind: Literal["lookback"]
    input: str
    bars: int = Field(ge=1, le=10_000)

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [("input", self.input, "float")]

    def output_type(self) -> ValueType:
        return "float"


LevelMode = Literal["touch", "above", "below", "break_up", "break_down", "retest"]


class DrawingLevelNode(NodeBase):
    """A horizontal price level drawn by the trader (e.g. on TradingView). See level modes."""

    kind: Literal["drawing_level"]
    price: float = Field(gt=0)
    tolerance_bps: float = Field(default=10.0, ge=0, le=10_000)
    mode: LevelMode = "touch"
    source: str = "manual"
    drawing_id: str | None = None


class PricePoint(Strict):
    """A chart anchor: a time (ISO 8601 UTC or int ns) and a price."""

    time: int | str
    price: float = Field(gt=0)

    def ts_ns(self) -> int:
        if isinstance(self.time, int):
            return self.time
        from datetime import UTC, datetime

        dt = datetime.fromisoformat(self.time.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000

    @field_validator("time")
    @classmethod
    def _valid_time(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            from datetime import datetime

            try:
                datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"invalid time {v!r}: use ISO 8601, e.g. 2024-03-01T12:00Z"
                ) from None
        return v


class TrendLineNode(NodeBase):
    """A line through two chart points, projected in time to each bar's close; level modes apply."""

    kind: Literal["trend_line"]
    p1: PricePoint
    p2: PricePoint
    tolerance_bps: float = Field(default=10.0, ge=0, le=10_000)
    mode: LevelMode = "touch"
    extend: Literal["right", "both", "none"] = "right"  # where the line exists beyond p1..p2
    source: str = "manual"
    drawing_id: str | None = None

    @model_validator(mode="after")
    def _distinct_times(self) -> TrendLineNode:
        if self.p1.ts_ns() >= self.p2.ts_ns():
            raise ValueError("trend_line p1 must be earlier than p2")
        return self


class ZoneNode(NodeBase):
    """A price band [low, high] (a rectangle drawn on the chart); level modes apply to the band."""

    kind: Literal["zone"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    mode: LevelMode = "touch"
    source: str = "manual"
    drawing_id: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ZoneNode:
        if self.low >= self.high:
            raise ValueError(f"zone low {self.low} must be below high {self.high}")
        return self


class FibLevelNode(NodeBase):
    """A Fibonacci retracement level between a swing low and high; level modes apply."""

    kind: Literal["fib_level"]
    swing_low: float = Field(gt=0)
    swing_high: float = Field(gt=0)
    ratio: float = Field(ge=-1, le=5)  # 0.618 = 61.8 % retracement from the high
    tolerance_bps: float = Field(default=10.0, ge=0, le=10_000)
    mode: LevelMode = "touch"
    source: str = "manual"
    drawing_id: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FibLevelNode:
        if self.swing_low >= self.swing_high:
            raise ValueError("fib_level swing_low must be below swing_high")
        return self

    def price(self) -> float:
        return self.swing_high - self.ratio * (self.swing_high - self.swing_low)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TimeWindowNode(NodeBase):
    """True while the bar's open time falls in a session: `hours` "HH:MM-HH:MM" and `weekdays` in `tz`."""

    kind: Literal["time_window"]
    hours: str = Field(default="00:00-24:00", pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    weekdays: list[Weekday] = Field(default_factory=lambda: list(_WEEKDAYS))
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}: use an IANA name such as 'UTC' or 'America/New_York'"
            ) from None
        return v

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, v: str) -> str:
        start, end = (int(x[:2]) * 60 + int(x[3:]) for x in v.split("-"))
        if not (0 <= start < 24 * 60 and 0 < end <= 24 * 60 and start != end):
            raise ValueError(
                f"invalid hours {v!r}: write HH:MM-HH:MM with 00:00 <= start < end <= 24:00 (or wrap past midnight)"
            )
        return v


class ResampleNode(NodeBase):
    """The input aggregated over completed bars of a coarser timeframe (multi-timeframe, no look-ahead).

    The value changes only when a coarse bar is complete; nodes fed by it step on that coarser clock.
    """

    kind: Literal["resample"]
    input: str
    timeframe: str = Field(pattern=r"^\d+(m|h|d|w)$")
    agg: Literal["last", "first", "max", "min", "sum", "mean"] = "last"

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [("input", self.input, "float")]

    def output_type(self) -> ValueType:
        return "float"


class ConvictionNode(NodeBase):
    """A signed conviction in [-1, 1]: from a float mapped linearly over [lo, hi], or a bool's `value`.

    `scale: one_to_ten` reports it on a 1..10 scale instead (1 = -1, 10 = +1).
    """

    kind: Literal["conviction"]
    input: str | None = None
    lo: float | None = None
    hi: float | None = None
    when: str | None = None
    value: float = Field(default=1.0, ge=-1, le=1)
    scale: Literal["signed", "one_to_ten"] = "signed"

    @model_validator(mode="after")
    def _one_source(self) -> ConvictionNode:
        if (self.input is None) == (self.when is None):
            raise ValueError(
                "conviction needs exactly one of input (a float node, with lo and hi) or when (a bool node)"
            )
        if self.input is not None and (self.lo is None or self.hi is None or self.lo == self.hi):
            raise ValueError(
                "conviction from input needs lo and hi with lo != hi (input at lo -> -1, at hi -> +1)"
            )
        return self

    def refs(self) -> list[tuple[str, str, ValueType]]:
        if self.input is not None:
            return [("input", self.input, "float")]
        assert self.when is not None
        return [("when", self.when, "bool")]

    def output_type(self) -> ValueType:
        return "float"


class ConfluenceNode(NodeBase):
    """Combine convictions: `weighted_sum` (float in [-1, 1]), `k_of_n` (bool: at least k inputs >= threshold),
    `veto` (weighted sum, forced to 0 while any `vetoes` bool node is true)."""

    kind: Literal["confluence"]
    inputs: list[str] = Field(min_length=1)
    method: Literal["weighted_sum", "k_of_n", "veto"] = "weighted_sum"
    weights: list[float] | None = None
    k: int = Field(default=1, ge=1)
    threshold: float = Field(default=0.5, ge=-1, le=1)
    vetoes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> ConfluenceNode:
        if self.weights is not None and len(self.weights) != len(self.inputs):
            raise ValueError(
                f"confluence has {len(self.inputs)} inputs but {len(self.weights)} weights"
            )
        if self.weights is not None and sum(abs(w) for w in self.weights) == 0:
            raise ValueError("confluence weights are all zero")
        if self.method == "k_of_n" and self.k > len(self.inputs):
            raise ValueError(f"k_of_n with k={self.k} but only {len(self.inputs)} inputs")
        if self.method == "veto" and not self.vetoes:
            raise ValueError("method veto needs at least one node in vetoes")
        return self

    def refs(self) -> list[tuple[str, str, ValueType]]:
        out: list[tuple[str, str, ValueType]] = [
            (f"inputs[{i}]", r, "float") for i, r in enumerate(self.inputs)
        ]
        out += [(f"vetoes[{i}]", r, "bool") for i, r in enumerate(self.vetoes)]
        return out

    def output_type(self) -> ValueType:
        return "bool" if self.method == "k_of_n" else "float"


class PythonNode(NodeBase):
    """User code pinned by content hash: `path` (relative to the artifact file) defines `class_name`.

    The class implements initialize(params), update(inputs, bar) -> value, on_fill(fill),
    get_state() and load_state(state). A file whose sha256 differs from `sha256` is refused.
    """

    kind: Literal["python"]
    path: str = Field(pattern=r"^[^/\\].*\.py$")
    class_name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[str] = Field(default_factory=list)
    params: dict[str, int | float | str | bool] = Field(default_factory=dict)
    output: ValueType = "float"
    warmup: int = Field(default=0, ge=0)

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [(f"inputs[{i}]", r, "float") for i, r in enumerate(self.inputs)]

    def output_type(self) -> ValueType:
        return self.output


class SentimentNode(NodeBase):
    """Sentiment of news/posts (feed items) as a bar-aligned score in [-1, 1]; a local model, never an LLM.

    `model_dir` (relative to the artifact file) holds a saved text-classification model; pin its
    files with `model_revision` (sha256 reported by `SentimentModel.revision`). `backend: lexicon`
    uses the built-in word list instead, and only when named. The value at a bar uses items
    stamped before the bar's close only.
    """

    kind: Literal["sentiment"]
    backend: Literal["model", "lexicon"]
    model_dir: str | None = None
    model_revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    label_map: dict[str, float] | None = None
    max_length: int | None = Field(default=None, ge=8, le=4096)
    batch_size: int = Field(default=32, ge=1, le=4096)
    sources: list[str] | None = None
    symbols: list[str] | None = None  # default: the instrument's symbol
    include_untagged: bool = False
    policy: Literal["ewm", "decay", "ffill"] = "ewm"
    half_life_bars: float | None = Field(default=None, gt=0)
    max_age_bars: int | None = Field(default=None, ge=0)
    late: Literal["next_bar", "drop", "error"] = "next_bar"

    @model_validator(mode="after")
    def _backend_fields(self) -> SentimentNode:
        if self.backend == "model" and self.model_dir is None:
            raise ValueError(
                "backend model needs model_dir (a local model directory); or set backend: lexicon"
            )
        if self.backend == "lexicon" and (self.model_dir or self.model_revision or self.label_map):
            raise ValueError("backend lexicon takes no model_dir, model_revision or label_map")
        return self

    def output_type(self) -> ValueType:
        return "float"


_REGIME_DEFAULTS: Final[dict[str, dict[str, float | int]]] = {
    "volatility": {"window": 100, "low_pct": 33.0, "high_pct": 67.0},
    "trend": {"threshold": 0.3},
}


class RegimeNode(NodeBase):
    """The market state on each bar as a float code, to gate rules on (`threshold` on it, `==`).

    `volatility`: rv = sample stdev (n - 1) of the last `lookback` log returns ln(x[t] / x[t-1]);
    pr = 100 x (how many of the `window - 1` previous rv values are strictly below rv) / (window - 1);
    0 = low (pr <= `low_pct`), 2 = high (pr >= `high_pct`), else 1 = normal (defaults: window 100,
    33 / 67). `trend`: Kaufman's efficiency ratio er = |x[t] - x[t-lookback]| / sum of the
    `lookback` |x[i] - x[i-1]| (0 when the path is 0); 1 = up / -1 = down when er >= `threshold`
    (default 0.3) and the change is > 0 / < 0, else 0 = range. `input` defaults to close. NaN while
    any value used is undefined (warm-up: lookback + window - 1 steps, or lookback); a
    non-positive price gives an undefined log return. Parameters of the other method are errors.
    """

    kind: Literal["regime"]
    method: Literal["volatility", "trend"]
    input: str = "close"
    lookback: int = Field(default=20, ge=2, le=10_000)
    window: int | None = Field(default=None, ge=2, le=100_000)
    low_pct: float | None = Field(default=None, ge=0, le=100)
    high_pct: float | None = Field(default=None, ge=0, le=100)
    threshold: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _method_fields(cls, value: object) -> object:
        """Fill the method's defaults so the canonical form (and hash) pins them; refuse the others."""
        if not isinstance(value, dict) or value.get("method") not in _REGIME_DEFAULTS:
            return value
        method = value["method"]
        for other, params in _REGIME_DEFAULTS.items():
            if other == method:
                continue
            for name in params:
                if value.get(name) is not None:
                    raise ValueError(
                        f"{name} applies to method {other} only; remove {name} "
                        f"(method {method} takes {', '.join(_REGIME_DEFAULTS[method])})"
                    )
        return {**_REGIME_DEFAULTS[method], **{k: v for k, v in value.items() if v is not None}}

    @model_validator(mode="after")
    def _ordered(self) -> RegimeNode:
        if (
            self.low_pct is not None
            and self.high_pct is not None
            and not self.low_pct < self.high_pct
        ):
            raise ValueError(
                f"low_pct {self.low_pct} must be below high_pct {self.high_pct} (e.g. 33 and 67)"
            )
        return self

    def refs(self) -> list[tuple[str, str, ValueType]]:
        return [("input", self.input, "float")]

    def output_type(self) -> ValueType:
        return "float"

    def warmup(self) -> int:
        """Leading undefined steps over a fully defined input."""
        if self.method == "volatility":
            assert self.window is not None
            return self.lookback + self.window - 1
        return self.lookback


Node = Annotated[
    IndicatorNode
    | ThresholdNode
    | CrossNode
    | AllNode
    | AnyNode
    | NotNode
    | RisingNode
    | LookbackNode
    | DrawingLevelNode
    | TrendLineNode
    | ZoneNode
    | FibLevelNode
    | TimeWindowNode
    | ResampleNode
    | ConvictionNode
    | ConfluenceNode
    | PythonNode
    | SentimentNode
    | RegimeNode,
    Field(discriminator="kind"),
]

NODE_KINDS: Final[tuple[str, ...]] = (
    "indicator",
    "threshold",
    "cross",
    "all",
    "any",
    "not",
    "rising",
    "falling",
    "lookback",
    "drawing_level",
    "trend_line",
    "zone",
    "fib_level",
    "time_window",
    "resample",
    "conviction",
    "confluence",
    "python",
    "sentiment",
    "regime",
)


# ----------------------------------------------------------------------------- rules


class Condition(Strict):
    """An inline comparison `node op value`, usable where a bool node id is expected."""

    node: str
    op: CompareOp
    value: float | str


class OrderTemplate(Strict):
    """How the entry order is placed, relative to the signal bar's close."""

    type: Literal["market", "limit", "stop"] = "market"
    offset_ticks: int = 0  # limit/stop price = signal close + offset_ticks * price_increment
    tif: Literal["GTC", "IOC", "FOK", "GTD"] = "GTC"
    timeout: Duration | None = None  # cancel an unfilled entry after this long

    @model_validator(mode="after")
    def _check(self) -> OrderTemplate:
        if self.type == "market" and self.offset_ticks != 0:
            raise ValueError("a market order has no price: remove offset_ticks or use type: limit")
        if self.tif == "GTD" and self.timeout is None:
            raise ValueError("tif GTD needs a timeout (e.g. timeout: '3 bars')")
        return self


class ScaleIn(Strict):
    """Add to an open position at market while `when` is true: size_pct of the first entry's filled
    qty, at most `max_adds` times per trade (one add per bar; the stop covers the added lots)."""

    when: str | Condition
    size_pct: float = Field(gt=0, le=1000)
    max_adds: int = Field(default=1, ge=1, le=100)


class ScaleOut(Strict):
    """Close size_pct of the open position at market once per trade when `when` becomes true;
    the stop and the working take-profit legs are resized to what is left (amended in place)."""

    when: str | Condition
    size_pct: float = Field(gt=0, lt=100)


class Entry(Strict):
    """When to open a position (a bool node or an inline condition), which side, and how."""

    when: str | Condition
    side: Literal["long", "short"]
    order: OrderTemplate = Field(default_factory=OrderTemplate)
    invalid_if: str | Condition | None = (
        None  # while true: no entry, and a working entry is cancelled
    )
    scale_in: list[ScaleIn] | None = None  # adds while the position is open (event-driven path)


class StopLoss(Strict):
    """Exactly one of: ATR multiple, percent of entry, fixed ticks, or a float node (a level)."""

    atr_mult: float | None = Field(default=None, gt=0)
    atr_period: int = Field(default=14, ge=1, le=1000)
    pct: float | None = Field(default=None, gt=0, lt=100)
    ticks: int | None = Field(default=None, gt=0)
    level: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StopLoss:
        chosen = [n for n in ("atr_mult", "pct", "ticks", "level") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"stop_loss needs exactly one of atr_mult, pct, ticks, level; got {chosen or 'none'}"
            )
        return self


class TakeProfit(Strict):
    """A target at `r` multiples of the initial risk, or `pct` from entry; exits size_pct of the position."""

    r: float | None = Field(default=None, gt=0)
    pct: float | None = Field(default=None, gt=0)
    size_pct: float = Field(default=100.0, gt=0, le=100)

    @model_validator(mode="after")
    def _exactly_one(self) -> TakeProfit:
        if (self.r is None) == (self.pct is None):
            raise ValueError("a take_profit needs exactly one of r or pct")
        return self


class BreakEven(Strict):
    """Move the stop to entry (+ offset) once price has gone `after_r` multiples of R in our favour."""

    after_r: float = Field(default=1.0, gt=0)
    offset_ticks: int = Field(default=0, ge=0)


class TrailingStop(Strict):
    """Trail the stop behind the best close by ATR multiple, percent or ticks, once `activate_r` is reached.

    The stop only ever moves in the trade's favour; each move is an amend of the working stop.
    """

    atr_mult: float | None = Field(default=None, gt=0)
    pct: float | None = Field(default=None, gt=0, lt=100)
    ticks: int | None = Field(default=None, gt=0)
    activate_r: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> TrailingStop:
        chosen = [n for n in ("atr_mult", "pct", "ticks") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"trailing needs exactly one of atr_mult, pct, ticks; got {chosen or 'none'}"
            )
        return self


class Exit(Strict):
    """How a position ends: a stop-loss, a take-profit ladder, an exit condition, a time limit."""

    stop_loss: StopLoss | None = None
    take_profit: list[TakeProfit] = Field(default_factory=list)
    when: str | Condition | None = None
    time_exit: Duration | None = None
    break_even: BreakEven | None = None
    trailing: TrailingStop | None = None
    scale_out: list[ScaleOut] | None = None  # partial exits on conditions (event-driven path)

    @model_validator(mode="after")
    def _check(self) -> Exit:
        total = sum(tp.size_pct for tp in self.take_profit)
        if total > 100.0 + 1e-9:
            raise ValueError(f"take_profit size_pct adds up to {total:g} > 100")
        if any(tp.r is not None for tp in self.take_profit) and self.stop_loss is None:
            raise ValueError("take_profit in r multiples needs a stop_loss to define the risk R")
        if (self.break_even is not None or self.trailing is not None) and self.stop_loss is None:
            raise ValueError("break_even and trailing move the stop: they need a stop_loss")
        return self


class Sizing(Strict):
    """risk_pct: equity % lost if the stop is hit; pct_equity: notional as % equity; fixed: qty in base
    units; vol_target: notional = equity x value % / realised annualised vol over `lookback_bars`."""

    method: Literal["risk_pct", "pct_equity", "fixed", "vol_target"] = "risk_pct"
    value: float = Field(default=0.5, gt=0)
    lookback_bars: int | None = Field(default=None, ge=2, le=10_000)  # vol_target only

    @model_validator(mode="after")
    def _lookback(self) -> Sizing:
        if self.method == "vol_target" and self.lookback_bars is None:
            raise ValueError(
                "sizing method vol_target needs lookback_bars (bars of close-to-close returns "
                "for the realised volatility), e.g. {method: vol_target, value: 20, lookback_bars: 30}"
            )
        if self.method != "vol_target" and self.lookback_bars is not None:
            raise ValueError(
                f"lookback_bars is only used by sizing method vol_target, not {self.method}: remove it"
            )
        return self


class PortfolioLimits(Strict):
    """Cross-strategy limits this strategy asks for when it shares an account with others.

    They can only tighten the account's own limits (the tighter value wins), never loosen them.
    `max_exposure_pct`: gross notional of every open position and working entry, as % of the
    account equity; `max_correlation`: refuse an entry whose rolling return correlation with an
    open position of another strategy (signed by both sides: a hedge is negative) exceeds it.
    """

    max_exposure_pct: float | None = Field(default=None, gt=0, le=10_000)
    max_concurrent_positions: int | None = Field(default=None, ge=1)
    max_correlation: float | None = Field(default=None, gt=-1, le=1)


class Risk(Strict):
    """Sizing and the strategy's own limits; account-level hard limits live in risk_limits.toml."""

    risk_per_trade_pct: float | None = Field(default=None, gt=0, le=100)
    sizing: Sizing | None = None
    max_position_pct: float = Field(default=100.0, gt=0, le=1000)
    max_daily_loss_pct: float | None = Field(default=None, gt=0, le=100)
    max_consecutive_losses: int | None = Field(default=None, ge=1)
    cooldown_bars: int = Field(default=0, ge=0)
    # drawdown circuit breaker: trips once equity <= peak * (1 - pct/100); None = off (and left
    # out of the canonical form, so artifacts without it keep their content hash)
    max_drawdown_pct: float | None = Field(default=None, gt=0, le=100)
    portfolio: PortfolioLimits | None = None  # only used when run with other strategies

    def effective_sizing(self) -> Sizing:
        """`sizing` if given, else risk_pct at risk_per_trade_pct (default 0.5 %)."""
        if self.sizing is not None:
            return self.sizing
        return Sizing(method="risk_pct", value=self.risk_per_trade_pct or 0.5)


class Backtest(Strict):
    """Simulation settings used when the artifact is backtested or paper traded."""

    initial_equity: float = Field(default=10_000.0, gt=0)
    maker_fee_bps: float = Field(default=2.0, ge=-10, le=1000)
    taker_fee_bps: float = Field(default=5.0, ge=0, le=1000)
    slippage_ticks: int = Field(default=0, ge=0)
    seed: int = 0


_SHA256: Final = r"^[0-9a-f]{64}$"


def _utc_ns(value: object, field_name: str) -> object:
    """An ISO-8601 timestamp with a zone (`2026-01-02T03:04:05Z`) as int ns UTC; ints pass through."""
    if not isinstance(value, str):
        return value
    from datetime import UTC, datetime, timedelta

    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{field_name}: {value!r} is not a timestamp; write int nanoseconds UTC or ISO 8601 "
            "with a zone, e.g. 2026-01-02T03:04:05Z"
        ) from None
    if dt.tzinfo is None:
        raise ValueError(
            f"{field_name}: {value!r} has no time zone; add one (e.g. a trailing Z for UTC)"
        )
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1_000


class ProvenanceBacktest(Strict):
    """The held-out backtest a compile was checked on: its window (bar open times, ns UTC) and result."""

    window_from_ns: int | None = None  # first bar of the window
    window_to_ns: int | None = None  # last bar of the window
    bars: int | None = Field(default=None, ge=0)
    trades: int | None = Field(default=None, ge=0)
    total_return_pct: float | None = Field(default=None, allow_inf_nan=False)
    sharpe: float | None = Field(default=None, allow_inf_nan=False)  # None when undefined
    max_drawdown_pct: float | None = Field(default=None, allow_inf_nan=False)


class ProvenanceGate(Strict):
    """One review gate's outcome (schema, backtest, paper, approval) for a promoted revision."""

    name: str = Field(min_length=1)
    status: Literal["passed", "failed", "pending", "skipped"]
    detail: str = ""


class Provenance(Strict):
    """How the artifact was made. Not part of the content hash: it describes, it does not act.

    `base_url_class` says which kind of model endpoint wrote it (`openai`: api.openai.com,
    `local`: loopback/private address, `proxy`: any other host, e.g. a LiteLLM proxy, `none`: a
    deterministic compile with no model). `trace_sha` is the sha256 of the committed tool-trace
    file; `backtest` the held-out check; `gates` the review gates a promoted revision passed.
    """

    compiler: str = "hand-written"
    model: str | None = None
    prompt_sha: str | None = None
    tools: list[str] = Field(default_factory=list)
    parent: str | None = None
    created: str | None = None
    notes: str | None = None
    base_url_class: Literal["openai", "local", "proxy", "none"] | None = None
    trace_sha: str | None = Field(default=None, pattern=_SHA256)
    conversation_turn: int | None = Field(default=None, ge=0)
    backtest: ProvenanceBacktest | None = None
    gates: list[ProvenanceGate] = Field(default_factory=list)


class OneShot(Strict):
    """A one-shot artifact (a trade proposal): at most `max_entries` entries, none from `expires_at` on.

    Times are int nanoseconds UTC (ISO 8601 with a zone is accepted on input and stored as ns).
    Contract for the strategy kernel: no entry decided at (bar close) or after `expires_at`, a
    working entry order is cancelled then; a position already open is managed by its exits.
    """

    created_at: int = Field(ge=0)
    expires_at: int = Field(ge=0)
    max_entries: int = Field(default=1, ge=1)

    @field_validator("created_at", "expires_at", mode="before")
    @classmethod
    def _timestamp(cls, value: object, info: ValidationInfo) -> object:
        return _utc_ns(value, str(info.field_name))

    @model_validator(mode="after")
    def _expiry_after_creation(self) -> OneShot:
        if self.expires_at <= self.created_at:
            raise ValueError(
                f"one_shot.expires_at ({self.expires_at}) must be after created_at "
                f"({self.created_at}): a one-shot artifact cannot expire before it exists"
            )
        return self


class DataInput(Strict):
    """Another symbol's bars as DAG inputs: nodes read `<name>.close` etc.; orders stay on `instrument`.

    A bar of the input is visible from the decision (close) of the first instrument bar whose
    close is at or after the input bar's close. `timeframe` must be a whole multiple of the
    instrument's. `on_missing`: `hold` keeps the last visible bar (nodes on its clock do not
    step; each missing bar is logged), `error` stops the run naming the missing bar.
    """

    symbol: str = Field(min_length=1)
    timeframe: str = Field(pattern=r"^\d+(s|m|h|d|w)$")
    on_missing: Literal["hold", "error"] = "hold"


class Artifact(Strict):
    """A complete, self-contained strategy: the runtime needs nothing else (and no LLM)."""

    schema_: Literal["stratagem/v1"] = Field(alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: int = Field(ge=1)
    description: str = ""
    instrument: Instrument
    nodes: dict[str, Node] = Field(min_length=1)
    entry: Entry
    exit: Exit = Field(default_factory=Exit)
    risk: Risk = Field(default_factory=Risk)
    backtest: Backtest = Field(default_factory=Backtest)
    one_shot: OneShot | None = None
    data: dict[str, DataInput] | None = None  # extra symbols the nodes read (multi-symbol)
    provenance: Provenance = Field(default_factory=Provenance)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("data")
    @classmethod
    def _data_names(cls, data: dict[str, DataInput] | None) -> dict[str, DataInput] | None:
        for name in data or {}:
            if not NODE_ID_RE.match(name) or name in PRICE_COLUMNS:
                raise ValueError(
                    f"data input name {name!r} must be lower_snake_case and not a price column "
                    "(nodes read it as <name>.close): rename it, e.g. eth"
                )
        return data

    @model_validator(mode="after")
    def _data_not_nodes(self) -> Artifact:
        clash = sorted(set(self.data or {}) & set(self.nodes))
        if clash:
            raise ValueError(
                f"data input(s) {', '.join(clash)} have the same name as a node: rename one of them"
            )
        return self

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, nodes: dict[str, Node]) -> dict[str, Node]:
        for node_id in nodes:
            if not NODE_ID_RE.match(node_id):
                raise ValueError(
                    f"node id {node_id!r} must be lower_snake_case (letters, digits, _), at most 64 chars"
                )
            if node_id in PRICE_COLUMNS:
                raise ValueError(
                    f"node id {node_id!r} shadows the data column of the same name: rename it"
                )
        return nodes
