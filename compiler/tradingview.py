"""Read TradingView chart layouts and drawing exports into typed, validated drawings.

TradingView saves a layout as JSON: ``{"charts": [{"panes": [{"sources": [...]}]}]}``, where each
source is ``{"type": "LineToolHorzLine", "id": ..., "state": {...}, "points": [{"time_t": s,
"price": p}, ...]}``; save/load adapters wrap it as ``{"content": "<the layout as a JSON
string>"}``; drawing exports and our widget send a bare list of sources or ``{"drawings": [...]}``.
All of these are accepted. Unknown fields and versions are ignored; unknown ``LineTool*`` types
and hidden drawings are skipped *with a warning in the result*, never silently; a malformed
drawing is an error naming its JSON path (``$.charts[0].panes[0].sources[3].points[1].price``).
Newer line-tools state keeps `sources` as an id -> drawing map (or [id, drawing] pairs, with
null for a removed drawing); both are read, in the order the JSON lists them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from compiler.errors import DrawingError

DrawingKind = Literal[
    "hline", "hray", "trendline", "rectangle", "channel", "fib", "long_position", "short_position"
]

#: TradingView tool type -> our drawing kind (and how many points it needs at least).
TOOLS: Final[Mapping[str, tuple[DrawingKind, int]]] = {
    "LineToolHorzLine": ("hline", 1),
    "LineToolHorzRay": ("hray", 1),
    "LineToolTrendLine": ("trendline", 2),
    "LineToolRay": ("trendline", 2),
    "LineToolExtended": ("trendline", 2),
    "LineToolRectangle": ("rectangle", 2),
    "LineToolParallelChannel": ("channel", 3),
    "LineToolFibRetracement": ("fib", 2),
    "LineToolRiskRewardLong": ("long_position", 1),
    "LineToolRiskRewardShort": ("short_position", 1),
}

#: TradingView's default fib retracement levels, used when a drawing lists none.
DEFAULT_FIB_LEVELS: Final[tuple[float, ...]] = (0.0, 0.236, 0.382, 0.5, 0.618, 0.786, 1.0)

_MS_THRESHOLD: Final = 10**11  # a "seconds" timestamp above this is really milliseconds


@dataclass(frozen=True)
class Point:
    """An anchor of a drawing: time in seconds UTC (None when the export has none) and price."""

    time_s: int | None
    price: float


@dataclass(frozen=True)
class Drawing:
    """One supported drawing, normalised. `path` is where it sits in the input JSON."""

    index: int  # position among the supported drawings, in input order
    path: str
    tool: str  # the TradingView type, e.g. "LineToolHorzLine"
    kind: DrawingKind
    id: str
    points: tuple[Point, ...]
    levels: tuple[tuple[float, float], ...] = ()  # fib: (coefficient, price) of each visible level
    entry: float | None = None  # position tools
    stop: float | None = None
    target: float | None = None
    text: str = ""
    extend_left: bool | None = (
        None  # TradingView's extendLeft/extendRight, when the export has them
    )
    extend_right: bool | None = None

    def line_price_at(self, time_s: int) -> float:
        """A trend line's price projected (linearly, through its two anchors) to `time_s`."""
        a, b = self.points[0], self.points[1]
        if a.time_s is None or b.time_s is None or a.time_s == b.time_s:
            raise DrawingError(
                "<drawing>",
                self.path,
                "a trend line needs two anchors at different times to be projected",
            )
        slope = (b.price - a.price) / (b.time_s - a.time_s)
        return a.price + slope * (time_s - a.time_s)


@dataclass
class ParsedLayout:
    """The supported drawings, every warning about what was skipped, and the chart's symbol/interval."""

    drawings: list[Drawing] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    symbol: str | None = None
    interval: str | None = None


def _fail(source: str, path: str, message: str) -> DrawingError:
    return DrawingError(source, path, message)


def _number(value: object, source: str, path: str, *, positive: bool = True) -> float:
    """A finite float (strings of numbers are accepted: some exports quote them)."""
    if isinstance(value, bool):
        raise _fail(source, path, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(source, path, f"expected a number, got {value!r}") from None
    if not isinstance(value, int | float):
        raise _fail(source, path, f"expected a number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise _fail(source, path, f"expected a finite number, got {value!r}")
    if positive and out <= 0:
        raise _fail(source, path, f"a price must be > 0, got {value!r}")
    return out


def _point(raw: object, source: str, path: str, warnings: list[str]) -> Point:
    if not isinstance(raw, Mapping):
        raise _fail(source, path, f"a point must be an object {{time_t, price}}, got {raw!r}")
    if "price" not in raw:
        raise _fail(source, f"{path}.price", "missing price")
    price = _number(raw["price"], source, f"{path}.price")
    time_s: int | None = None
    for key in ("time_t", "time"):
        if key in raw and raw[key] is not None:
            t = _number(raw[key], source, f"{path}.{key}")
            if t >= _MS_THRESHOLD:
                warnings.append(f"{path}.{key}: {int(t)} looks like milliseconds; read as seconds")
                t = t / 1000.0
            time_s = int(t)
            break
    return Point(time_s, price)


def _points(src: Mapping[str, Any], source: str, path: str, warnings: list[str]) -> list[Point]:
    raw = src.get("points")
    if raw is None:
        raw = src.get("state", {}).get("points") if isinstance(src.get("state"), Mapping) else None
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _fail(source, f"{path}.points", f"expected a list of points, got {raw!r}")
    return [_point(p, source, f"{path}.points[{i}]", warnings) for i, p in enumerate(raw)]


def _fib_levels(state: Mapping[str, Any], source: str, path: str) -> list[float]:
    """Visible fib coefficients from `levelN: {coeff, visible}` entries, in N order."""
    keyed: list[tuple[int, float]] = []
    for key, val in state.items():
        if not (key.startswith("level") and key[5:].isdigit() and isinstance(val, Mapping)):
            continue
        if "coeff" not in val:
            raise _fail(source, f"{path}.state.{key}.coeff", "a fib level needs a coeff")
        if val.get("visible", True) is False:
            continue
        coeff = _number(val["coeff"], source, f"{path}.state.{key}.coeff", positive=False)
        keyed.append((int(key[5:]), coeff))
    if not keyed:
        return list(DEFAULT_FIB_LEVELS)
    return [c for _, c in sorted(keyed)]


def _position(
    src: Mapping[str, Any],
    state: Mapping[str, Any],
    pts: list[Point],
    kind: DrawingKind,
    source: str,
    path: str,
    tick_size: float,
) -> tuple[float, float, float]:
    """(entry, stop, target) of a long/short position tool.

    TradingView stores the entry as the first point (or `state.entryPrice`) and the stop and target
    as distances in ticks (`stopLevel`, `profitLevel`); explicit `stopPrice`/`targetPrice`, as some
    exporters write, win when present.
    """
    entry = (
        _number(state["entryPrice"], source, f"{path}.state.entryPrice")
        if "entryPrice" in state
        else pts[0].price
    )
    sign = 1.0 if kind == "long_position" else -1.0

    def price(explicit: str, ticks_key: str, direction: float) -> float:
        if explicit in state:
            return _number(state[explicit], source, f"{path}.state.{explicit}")
        if ticks_key in state:
            ticks = _number(state[ticks_key], source, f"{path}.state.{ticks_key}")
            out = entry + direction * ticks * tick_size
            if out <= 0:
                raise _fail(
                    source,
                    f"{path}.state.{ticks_key}",
                    f"{ticks:g} ticks of {tick_size:g} from entry {entry:g} gives price {out:g} <= 0; "
                    "check the tick size (tick_size=) or the drawing",
                )
            return out
        raise _fail(
            source,
            f"{path}.state",
            f"a position tool needs {explicit} or {ticks_key} (distance in ticks from the entry)",
        )

    stop = price("stopPrice", "stopLevel", -sign)
    target = price("targetPrice", "profitLevel", sign)
    return entry, stop, target


def _source_items(value: object, source: str, path: str) -> list[tuple[str, object]]:
    """Entries of a `sources` list, an id -> source map (newer line-tools state), or [id, source] pairs."""
    if isinstance(value, Mapping):
        return [(f"{path}.{key}", v) for key, v in value.items()]
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise _fail(source, path, "expected a list (or an id -> drawing map) of drawings")
    out: list[tuple[str, object]] = []
    for i, item in enumerate(value):
        pair = (
            isinstance(item, Sequence)
            and not isinstance(item, str | bytes)
            and len(item) == 2
            and isinstance(item[0], str)
        )
        out.append((f"{path}[{i}]", item[1] if pair else item))
    return out


def _iter_sources(data: object, source: str) -> list[tuple[str, object]]:
    """(JSON path, source object) for every drawing-like entry of any accepted layout shape."""
    if isinstance(data, Mapping) and isinstance(data.get("content"), str):
        try:
            inner = json.loads(data["content"])
        except json.JSONDecodeError as exc:
            raise _fail(source, "$.content", f"not valid JSON inside content: {exc}") from None
        return [(p.replace("$", "$.content", 1), s) for p, s in _iter_sources(inner, source)]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return _source_items(data, source, "$")
    if not isinstance(data, Mapping):
        raise _fail(
            source, "$", f"a layout must be a JSON object or a list of drawings, got {data!r:.80}"
        )
    if "charts" in data:
        charts = data["charts"]
        if not isinstance(charts, Sequence) or isinstance(charts, str):
            raise _fail(source, "$.charts", "expected a list of charts")
        out: list[tuple[str, object]] = []
        for ci, chart in enumerate(charts):
            panes = chart.get("panes") if isinstance(chart, Mapping) else None
            if not isinstance(panes, Sequence) or isinstance(panes, str):
                raise _fail(source, f"$.charts[{ci}].panes", "expected a list of panes")
            for pi, pane in enumerate(panes):
                if not isinstance(pane, Mapping) or "sources" not in pane:
                    raise _fail(
                        source, f"$.charts[{ci}].panes[{pi}].sources", "expected a list of sources"
                    )
                out.extend(
                    _source_items(pane["sources"], source, f"$.charts[{ci}].panes[{pi}].sources")
                )
        return out
    for wrapper in ("lineToolsState", "lineTools", "state"):
        if isinstance(data.get(wrapper), Mapping) and "sources" in data[wrapper]:
            return _source_items(data[wrapper]["sources"], source, f"$.{wrapper}.sources")
    for key in ("sources", "drawings", "shapes"):
        if key in data:
            return _source_items(data[key], source, f"$.{key}")
    raise _fail(
        source,
        "$",
        "no drawings found: expected 'charts' (a saved layout), 'content', 'sources' or 'drawings'",
    )


def parse_layout(
    data: str | bytes | Mapping[str, Any] | Sequence[Any],
    source: str = "<layout>",
    *,
    tick_size: float = 0.01,
) -> ParsedLayout:
    """Parse a layout (JSON text or decoded JSON) into supported drawings plus warnings.

    `tick_size` converts a position tool's stop/target distances (TradingView stores ticks).
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise _fail(
                source, "$", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    result = ParsedLayout()
    for path, src in _iter_sources(data, source):
        if src is None:
            result.warnings.append(f"{path}: skipped a removed drawing (null)")
            continue
        if not isinstance(src, Mapping):
            raise _fail(source, path, f"a drawing must be a JSON object, got {src!r:.80}")
        tool = src.get("type", src.get("tool", src.get("name")))
        if not isinstance(tool, str) or not tool:
            raise _fail(source, f"{path}.type", "missing drawing type (e.g. 'LineToolHorzLine')")
        state_raw = src.get("state", {})
        if state_raw is None:
            state_raw = {}
        if not isinstance(state_raw, Mapping):
            raise _fail(source, f"{path}.state", f"expected an object, got {state_raw!r:.80}")
        state: Mapping[str, Any] = state_raw
        if tool == "MainSeries":
            sym, interval = state.get("symbol"), state.get("interval")
            result.symbol = sym if isinstance(sym, str) else result.symbol
            result.interval = str(interval) if interval is not None else result.interval
            continue
        if not tool.startswith("LineTool"):
            continue  # studies, strategies, alerts: chart furniture, not drawings
        if tool not in TOOLS:
            result.warnings.append(
                f"{path}: skipped unsupported drawing type {tool!r} "
                f"(supported: {', '.join(sorted(TOOLS))})"
            )
            continue
        if state.get("visible", True) is False:
            result.warnings.append(f"{path}: skipped hidden {tool} (visible: false)")
            continue
        kind, needed = TOOLS[tool]
        pts = _points(src, source, path, result.warnings)
        if len(pts) < needed:
            raise _fail(
                source,
                f"{path}.points",
                f"{tool} needs at least {needed} point(s), got {len(pts)}",
            )
        raw_id = src.get("id", "")
        drawing_id = str(raw_id) if raw_id not in (None, "") else f"d{len(result.drawings)}"
        text = state.get("text", "")
        extra: dict[str, Any] = {}
        for flag, key in (("extend_left", "extendLeft"), ("extend_right", "extendRight")):
            if isinstance(state.get(key), bool):
                extra[flag] = state[key]
        if kind == "fib":
            hi_end, lo_end = pts[1].price, pts[0].price
            extra["levels"] = tuple(
                (c, hi_end + (lo_end - hi_end) * c) for c in _fib_levels(state, source, path)
            )
            bad = [(c, p) for c, p in extra["levels"] if p <= 0]
            if bad:
                raise _fail(
                    source,
                    f"{path}.state",
                    f"fib level {bad[0][0]:g} lands at price {bad[0][1]:g} <= 0",
                )
        elif kind in ("long_position", "short_position"):
            extra["entry"], extra["stop"], extra["target"] = _position(
                src, state, pts, kind, source, path, tick_size
            )
        result.drawings.append(
            Drawing(
                index=len(result.drawings),
                path=path,
                tool=tool,
                kind=kind,
                id=drawing_id,
                points=tuple(pts),
                text=text if isinstance(text, str) else "",
                **extra,
            )
        )
    return result


def read_layout(path: str | Path, *, tick_size: float = 0.01) -> ParsedLayout:
    """Read and parse a layout file; a missing or non-UTF-8 file is a DrawingError naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DrawingError(str(p), "$", "file not found") from None
    except UnicodeDecodeError as exc:
        raise DrawingError(
            str(p), "$", f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except IsADirectoryError:
        raise DrawingError(str(p), "$", "is a directory, not a layout file") from None
    return parse_layout(text, str(p), tick_size=tick_size)
