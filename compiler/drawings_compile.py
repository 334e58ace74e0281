"""Deterministic, offline drawings -> artifact compilation (no LLM).

Mapping (documented in docs/compiler.md):
- horizontal line -> `drawing_level` (touch); horizontal ray -> a flat `trend_line` that exists
  from its anchor time on; trend line / ray / extended line -> `trend_line` (touch);
- rectangle -> `zone` (touch); parallel channel -> two `trend_line`s (close above the lower,
  below the upper) and an `all` of both; fib retracement -> one `fib_level` per visible level;
- long/short position tool -> entry when the bar touches the entry price (market order on the
  next bar), stop-loss as % of entry, one take-profit at the drawn target in R multiples, and a
  time exit at the tool's right edge when it has one.
Without a position tool the drawn levels/zones are traded on `side` (entry on a touch of any).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError

from artifacts.graph import check
from artifacts.schema import Artifact
from compiler.errors import DrawingCompileError
from compiler.tradingview import Drawing, ParsedLayout, Point, parse_layout
from feeds.errors import FeedError
from feeds.schema import timeframe_to_ns

COMPILER_ID = "stratagem.compiler.drawings/1"
Side = Literal["long", "short"]


@dataclass
class DrawingsCompilation:
    """The artifact plus what the user must see: warnings and which drawing made which node."""

    artifact: Artifact
    warnings: list[str] = field(default_factory=list)
    node_drawings: dict[str, str] = field(default_factory=dict)  # node id -> drawing JSON path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _coeff_id(coeff: float) -> str:
    return re.sub(r"[^0-9a-z]+", "_", f"{coeff:g}".replace("-", "m"))


def _level(price: float, tolerance_bps: float, d: Drawing, mode: str = "touch") -> dict[str, Any]:
    return {
        "kind": "drawing_level",
        "price": round(price, 10),
        "tolerance_bps": tolerance_bps,
        "mode": mode,
        "source": "tradingview",
        "drawing_id": d.id,
    }


def _extend(d: Drawing) -> str:
    """TradingView's extendLeft/extendRight flags -> trend_line `extend` (rays and extended lines fixed)."""
    if d.tool == "LineToolRay":
        return "right"
    if d.tool == "LineToolExtended":
        return "both"
    left, right = d.extend_left, d.extend_right
    if left is None and right is None:
        return "right"  # no flags in the export: a strategy line is projected forward
    if left:
        return "both"
    return "right" if right else "none"


def _line(
    d: Drawing, a: Point, b: Point, tolerance_bps: float, mode: str, source: str
) -> dict[str, Any]:
    if a.time_s is None or b.time_s is None:
        raise DrawingCompileError(f"{source}: {d.path}: a {d.tool} needs times on its points")
    if a.time_s == b.time_s:
        raise DrawingCompileError(
            f"{source}: {d.path}: {d.tool} is vertical (both points at time {a.time_s}); redraw it"
        )
    (t1, p1), (t2, p2) = sorted(((a.time_s, a.price), (b.time_s, b.price)))
    return {
        "kind": "trend_line",
        "p1": {"time": t1 * 1_000_000_000, "price": p1},
        "p2": {"time": t2 * 1_000_000_000, "price": p2},
        "tolerance_bps": tolerance_bps,
        "mode": mode,
        "extend": _extend(d),
        "source": "tradingview",
        "drawing_id": d.id,
    }


def drawing_nodes(
    d: Drawing, prefix: str, *, tolerance_bps: float, tf_ns: int, source: str = "<layout>"
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The node(s) one drawing stands for, ids starting with `prefix`, and the main node id.

    Position tools give only their entry level here; their stop/target become exit rules.
    """
    if d.kind == "hline":
        return {prefix: _level(d.points[0].price, tolerance_bps, d)}, prefix
    if d.kind == "hray":
        p = d.points[0]
        if p.time_s is None:
            return {prefix: _level(p.price, tolerance_bps, d)}, prefix
        # a ray is a flat line that exists from its anchor on: no signal before it was drawn
        end = Point(p.time_s + max(1, tf_ns // 1_000_000_000), p.price)
        node = _line(d, p, end, tolerance_bps, "touch", source)
        node["extend"] = "right"
        return {prefix: node}, prefix
    if d.kind == "trendline":
        return {prefix: _line(d, d.points[0], d.points[1], tolerance_bps, "touch", source)}, prefix
    if d.kind == "rectangle":
        lo, hi = sorted((d.points[0].price, d.points[1].price))
        if lo == hi:
            raise DrawingCompileError(f"{source}: {d.path}: the rectangle has no height ({lo:g})")
        zone = {
            "kind": "zone",
            "low": lo,
            "high": hi,
            "mode": "touch",
            "source": "tradingview",
            "drawing_id": d.id,
        }
        return {prefix: zone}, prefix
    if d.kind == "channel":
        a, b, c = d.points[0], d.points[1], d.points[2]
        base = _line(d, a, b, 0.0, "above", source)
        if c.time_s is None:
            raise DrawingCompileError(f"{source}: {d.path}: a channel needs times on its points")
        offset = c.price - d.line_price_at(c.time_s)
        a2, b2 = Point(a.time_s, a.price + offset), Point(b.time_s, b.price + offset)
        if min(a2.price, b2.price) <= 0:
            raise DrawingCompileError(
                f"{source}: {d.path}: the channel's parallel line goes below 0"
            )
        other = _line(d, a2, b2, 0.0, "below", source)
        lower, upper = (base, other) if offset > 0 else (other, base)
        lower["mode"], upper["mode"] = "above", "below"
        nodes = {
            f"{prefix}_lo": lower,
            f"{prefix}_hi": upper,
            prefix: {"kind": "all", "inputs": [f"{prefix}_lo", f"{prefix}_hi"]},
        }
        return nodes, prefix
    if d.kind == "fib":
        lo, hi = sorted((d.points[0].price, d.points[1].price))
        up = d.points[1].price >= d.points[0].price  # drawn low -> high: level 0 at the high
        nodes = {}
        for coeff, price in d.levels:
            ratio = coeff if up else 1.0 - coeff
            node_id = f"{prefix}_{_coeff_id(coeff)}"
            if lo < hi and -1.0 <= ratio <= 5.0:
                nodes[node_id] = {
                    "kind": "fib_level", "swing_low": lo, "swing_high": hi, "ratio": round(ratio, 10),
                    "tolerance_bps": tolerance_bps, "source": "tradingview", "drawing_id": d.id,
                }  # fmt: skip
            else:
                nodes[node_id] = _level(price, tolerance_bps, d)
        return nodes, None
    assert d.entry is not None
    return {prefix: _level(d.entry, tolerance_bps, d)}, prefix


def _sanity(d: Drawing, source: str) -> tuple[float, float, float]:
    """Direction sanity of a position tool: long SL < entry < TP, short mirrored."""
    assert d.entry is not None and d.stop is not None and d.target is not None
    entry, stop, target = d.entry, d.stop, d.target
    if d.kind == "long_position" and not stop < entry < target:
        raise DrawingCompileError(
            f"{source}: {d.path}: long position needs stop < entry < target, got stop {stop:g}, "
            f"entry {entry:g}, target {target:g}: redraw it or use a Short Position"
        )
    if d.kind == "short_position" and not target < entry < stop:
        raise DrawingCompileError(
            f"{source}: {d.path}: short position needs target < entry < stop, got target {target:g}, "
            f"entry {entry:g}, stop {stop:g}: redraw it or use a Long Position"
        )
    return entry, stop, target


def compile_layout(
    layout: str | bytes | Mapping[str, Any] | Sequence[Any] | ParsedLayout,
    symbol: str,
    timeframe: str,
    *,
    source: str = "<layout>",
    venue: str = "sim",
    kind: Literal["spot", "perp", "future"] = "spot",
    side: Side | None = None,
    name: str | None = None,
    tolerance_bps: float = 10.0,
    risk_pct: float = 0.5,
    default_stop_pct: float = 1.0,
    default_rr: float = 2.0,
    price_increment: Decimal = Decimal("0.01"),
) -> DrawingsCompilation:
    """Compile drawings to a checked artifact; raise DrawingError/DrawingCompileError otherwise."""
    try:
        tf_ns = timeframe_to_ns(timeframe)
    except FeedError as exc:
        raise DrawingCompileError(f"--timeframe: {exc}") from None
    parsed = (
        layout
        if isinstance(layout, ParsedLayout)
        else parse_layout(layout, source, tick_size=float(price_increment))
    )
    warnings = list(parsed.warnings)
    nodes: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    triggers: list[str] = []
    positions: list[Drawing] = []

    prefixes = {
        "hline": "level",
        "hray": "level",
        "trendline": "trend",
        "rectangle": "zone",
        "channel": "channel",
        "fib": "fib",
    }
    for d in parsed.drawings:
        if d.kind in ("long_position", "short_position"):
            positions.append(d)
            continue
        made, main = drawing_nodes(
            d,
            f"{prefixes[d.kind]}_{d.index}",
            tolerance_bps=tolerance_bps,
            tf_ns=tf_ns,
            source=source,
        )
        for node_id, node in made.items():
            nodes[node_id] = node
            origin[node_id] = d.path
        triggers.extend([main] if main is not None else list(made))

    stop_loss: dict[str, Any]
    take_profit: list[dict[str, Any]]
    time_exit: str | None = None
    if positions:
        chosen = max(positions, key=lambda p: (p.points[0].time_s or 0, p.index))
        for other in positions:
            if other is not chosen:
                warnings.append(
                    f"{other.path}: ignored {other.tool}: an artifact has one entry rule and "
                    f"{chosen.path} is the latest position tool"
                )
        entry, stop, target = _sanity(chosen, source)
        pos_side: Side = "long" if chosen.kind == "long_position" else "short"
        if side is not None and side != pos_side:
            raise DrawingCompileError(
                f"{source}: {chosen.path}: side {side!r} was asked for but the drawing is a "
                f"{pos_side} position: drop --side or redraw"
            )
        side = pos_side
        entry_node = f"entry_{chosen.index}"
        nodes[entry_node] = _level(entry, tolerance_bps, chosen)
        origin[entry_node] = chosen.path
        risk = abs(entry - stop)
        stop_loss = {"pct": round(risk / entry * 100.0, 10)}
        take_profit = [{"r": round(abs(target - entry) / risk, 10), "size_pct": 100.0}]
        p0, p1 = chosen.points[0], chosen.points[-1]
        if p0.time_s is not None and p1.time_s is not None and p1.time_s > p0.time_s:
            bars = math.ceil((p1.time_s - p0.time_s) * 1_000_000_000 / tf_ns)
            time_exit = f"{bars} bars"
        when = entry_node
    else:
        if not triggers:
            found = "; ".join(warnings) if warnings else "the layout has no drawings"
            raise DrawingCompileError(
                f"{source}: nothing to compile: no supported drawing made a node ({found})"
            )
        if side is None:
            raise DrawingCompileError(
                f"{source}: the layout has levels/zones but no Long/Short Position tool: pass "
                "side (--side long|short) to trade them, or draw a position tool"
            )
        if len(triggers) == 1:
            when = triggers[0]
        else:
            nodes["entry_any"] = {"kind": "any", "inputs": triggers}
            when = "entry_any"
        stop_loss = {"pct": default_stop_pct}
        take_profit = [{"r": default_rr, "size_pct": 100.0}]

    data: dict[str, Any] = {
        "schema": "stratagem/v1",
        "name": name or f"tv-{_slug(symbol)}-{_slug(timeframe)}",
        "version": 1,
        "description": f"Compiled offline from {len(parsed.drawings)} TradingView drawing(s).",
        "instrument": {
            "venue": venue,
            "symbol": symbol,
            "timeframe": timeframe,
            "kind": kind,
            "price_increment": str(price_increment),
        },
        "nodes": nodes,
        "entry": {"when": when, "side": side, "order": {"type": "market"}},
        "exit": {"stop_loss": stop_loss, "take_profit": take_profit},
        "risk": {"risk_per_trade_pct": risk_pct},
        "provenance": {
            "compiler": COMPILER_ID,
            "tools": [f"tradingview:{d.tool}@{d.path}" for d in parsed.drawings],
            "notes": "; ".join(warnings) if warnings else None,
        },
    }
    if time_exit is not None:
        data["exit"]["time_exit"] = time_exit
    try:
        artifact = Artifact.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DrawingCompileError(
            f"{source}: the drawings give an invalid artifact at {where}: {first['msg']}"
        ) from None
    check(artifact, source)
    return DrawingsCompilation(artifact=artifact, warnings=warnings, node_drawings=origin)


def compile_drawings(
    layout_json: str | bytes | Mapping[str, Any] | Sequence[Any] | ParsedLayout,
    symbol: str,
    timeframe: str,
    **options: Any,
) -> Artifact:
    """The artifact only; warnings are kept in `provenance.notes` (use compile_layout to list them)."""
    return compile_layout(layout_json, symbol, timeframe, **options).artifact
