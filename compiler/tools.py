"""The compiler's tools: typed functions the model may call, each standing for part of an artifact.

Every tool has pydantic arguments (their JSON schema is the OpenAI tool definition) and returns a
`ToolOutcome`: an observation for the model plus the artifact nodes (or the artifact) the call
stands for, reachable through `to_executable_node()`. A `ToolSession` keeps the nodes composed so
far (the workspace) and a trace of every call, so a node can be traced to the turn that made it.
Data tools see only the in-sample bars the session was given: the held-out window stays unseen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from artifacts.errors import ArtifactError
from artifacts.graph import check
from artifacts.schema import (
    NODE_ID_RE,
    PRICE_COLUMNS,
    Artifact,
    DrawingLevelNode,
    Entry,
    Exit,
    IndicatorNode,
    Instrument,
    LevelMode,
    Node,
    Risk,
    SentimentNode,
)
from compiler.errors import CompilerError, ToolError
from compiler.tradingview import ParsedLayout
from feeds.schema import UnstructuredItem, timeframe_to_ns
from indicators.batch import compute
from indicators.errors import IndicatorError
from indicators.registry import get_indicator, validate_params

NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ToolContext:
    """What the tools may look at: in-sample bars, drawings, stored news and a sentiment model."""

    symbol: str
    timeframe: str
    bars: pl.DataFrame
    drawings: ParsedLayout | None = None
    news_path: Path | None = None
    sentiment: SentimentSetup | None = None
    venue: str = "sim"


@dataclass
class ToolOutcome:
    """The observation shown to the model and what the call stands for in the artifact."""

    observation: dict[str, Any]
    nodes: dict[str, Node] = field(default_factory=dict)
    artifact: Artifact | None = None
    stands_for: str | None = None  # the main node id, when the call stands for a node

    def to_executable_node(self) -> Node | Artifact:
        """The node (or, for emit_strategy, the artifact) this call stands for."""
        if self.artifact is not None:
            return self.artifact
        if self.stands_for is not None:
            return self.nodes[self.stands_for]
        raise ToolError("this tool call reads data; it stands for no node of the artifact")


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso_ns(text: str, field_name: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"{field_name}: invalid date {text!r}; use ISO 8601, e.g. 2024-03-01"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000


def _node_id(value: str, field_name: str = "node_id") -> str:
    if not NODE_ID_RE.match(value) or value in PRICE_COLUMNS:
        raise ToolError(
            f"{field_name}: {value!r} is not a valid node id (lower_snake_case, not a price column)"
        )
    return value


def _f(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(float(x)) else None


# ----------------------------------------------------------------------------- tools


class QueryChart(Args):
    """Bars and summary statistics of the chart (in-sample data only)."""

    start: str | None = Field(default=None, description="ISO date of the first bar")
    end: str | None = Field(default=None, description="ISO date after the last bar (exclusive)")
    last_n: int = Field(default=10, ge=0, le=200, description="how many of the last bars to list")

    name: ClassVar[str] = "query_chart"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        bars = ctx.bars
        if self.start:
            bars = bars.filter(pl.col("ts_ns") >= _parse_iso_ns(self.start, "start"))
        if self.end:
            bars = bars.filter(pl.col("ts_ns") < _parse_iso_ns(self.end, "end"))
        if bars.height == 0:
            raise ToolError("no bars in that range; query_chart without start/end shows the range")
        close = bars["close"].to_numpy()
        high, low = bars["high"].to_numpy(), bars["low"].to_numpy()
        tr = np.maximum(high[1:], close[:-1]) - np.minimum(low[1:], close[:-1])
        atr = float(np.mean(tr[-14:])) if len(tr) else math.nan
        tail = bars.tail(self.last_n)
        return ToolOutcome(
            {
                "symbol": ctx.symbol,
                "timeframe": ctx.timeframe,
                "bars": bars.height,
                "from": _iso(int(bars["ts_ns"][0])),
                "to": _iso(int(bars["ts_ns"][-1])),
                "last_close": _f(close[-1]),
                "min_low": _f(low.min()),
                "max_high": _f(high.max()),
                "return_pct": _f((close[-1] / close[0] - 1) * 100),
                "atr14": _f(atr),
                "atr14_pct": _f(atr / close[-1] * 100),
                "last_bars": [
                    [_iso(int(r["ts_ns"])), r["open"], r["high"], r["low"], r["close"]]
                    for r in tail.iter_rows(named=True)
                ],
            }
        )


class ComputeIndicator(Args):
    """Compute an indicator over the chart and add it as a node."""

    node_id: str = Field(description="id of the new node, lower_snake_case")
    fn: str = Field(description="indicator name, e.g. RSI, SMA, EMA, ATR, MACD")
    inputs: list[str] = Field(default_factory=list, description="price columns or node ids")
    params: dict[str, int | float] = Field(default_factory=dict)
    output: str | None = Field(default=None, description="output of a multi-output indicator")

    name: ClassVar[str] = "compute_indicator"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        node_id = _node_id(self.node_id)
        try:
            spec = get_indicator(self.fn)
            params = validate_params(spec.name, self.params)
        except IndicatorError as exc:
            raise ToolError(f"compute_indicator: {exc}") from None
        inputs = self.inputs or list(spec.inputs)
        columns: dict[str, np.ndarray[Any, Any]] = {}
        for name_in, src in zip(spec.inputs, inputs, strict=False):
            if src in PRICE_COLUMNS:
                columns[name_in] = ctx.bars[src].to_numpy()
            elif src in session.series:
                columns[name_in] = session.series[src]
            else:
                raise ToolError(
                    f"compute_indicator: input {src!r} is neither a price column nor a computed "
                    f"indicator node; known: {sorted(session.series) or 'none yet'}"
                )
        if len(inputs) != len(spec.inputs):
            raise ToolError(
                f"compute_indicator: {spec.name} takes inputs {list(spec.inputs)}, got {inputs}"
            )
        # a node input starts with its own warm-up NaNs: compute from the first complete bar on
        n = ctx.bars.height
        first = max((int(np.argmax(np.isfinite(c))) for c in columns.values()), default=0)
        try:
            tail = compute(spec.name, {k: c[first:] for k, c in columns.items()}, params)
        except IndicatorError as exc:
            raise ToolError(f"compute_indicator: {exc}") from None
        outputs = {k: np.concatenate([np.full(first, np.nan), v]) for k, v in tail.items()}
        assert all(len(v) == n for v in outputs.values())
        output = self.output or spec.outputs[0]
        if output not in outputs:
            raise ToolError(f"compute_indicator: {spec.name} outputs are {list(spec.outputs)}")
        values = outputs[output]
        session.series[node_id] = values
        finite = values[np.isfinite(values)]
        node = IndicatorNode(
            kind="indicator",
            fn=spec.name,
            inputs=list(self.inputs),
            params=dict(self.params),
            output=self.output if len(spec.outputs) > 1 else None,
        )
        return ToolOutcome(
            {
                "node_id": node_id,
                "last": _f(values[-1]) if len(values) else None,
                "min": _f(finite.min()) if len(finite) else None,
                "max": _f(finite.max()) if len(finite) else None,
                "mean": _f(finite.mean()) if len(finite) else None,
                "warmup_bars": spec.warmup(params),
            },
            nodes={node_id: node},
            stands_for=node_id,
        )


def swing_pivots(
    high: np.ndarray[Any, Any], low: np.ndarray[Any, Any], window: int
) -> list[tuple[int, float]]:
    """(bar, price) of swing highs and lows: the extreme of the `window` bars on each side."""
    out: list[tuple[int, float]] = []
    n = len(high)
    for i in range(window, n - window):
        lo_i, hi_i = i - window, i + window + 1
        if high[i] == high[lo_i:hi_i].max() and high[i] > high[lo_i:i].max():
            out.append((i, float(high[i])))
        if low[i] == low[lo_i:hi_i].min() and low[i] < low[lo_i:i].min():
            out.append((i, float(low[i])))
    return out


def cluster_levels(prices: Sequence[float], cluster_bps: float) -> list[tuple[float, int]]:
    """Greedy 1-D clustering of sorted prices: (mean price, touches), order independent of input."""
    clusters: list[list[float]] = []
    for p in sorted(prices):
        if clusters:
            c = clusters[-1]
            mean = sum(c) / len(c)
            if abs(p - mean) / mean * 10_000 <= cluster_bps:
                c.append(p)
                continue
        clusters.append([p])
    return [(sum(c) / len(c), len(c)) for c in clusters]


class DetectSRLevels(Args):
    """Support/resistance levels from swing pivots, clustered; each becomes a drawing_level node."""

    lookback_bars: int = Field(default=500, ge=20, le=100_000)
    pivot_window: int = Field(default=5, ge=1, le=100)
    cluster_bps: float = Field(default=50.0, gt=0, le=2000)
    max_levels: int = Field(default=5, ge=1, le=20)
    tolerance_bps: float = Field(default=10.0, ge=0, le=1000)
    prefix: str = Field(default="sr", description="node ids are <prefix>_<k>")

    name: ClassVar[str] = "detect_sr_levels"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        _node_id(f"{self.prefix}_0", "prefix")
        bars = ctx.bars.tail(self.lookback_bars)
        pivots = swing_pivots(bars["high"].to_numpy(), bars["low"].to_numpy(), self.pivot_window)
        if not pivots:
            raise ToolError("detect_sr_levels: no swing pivots; use more bars or a smaller window")
        clusters = cluster_levels([p for _, p in pivots], self.cluster_bps)
        ranked = sorted(clusters, key=lambda c: (-c[1], c[0]))[: self.max_levels]
        ranked.sort(key=lambda c: c[0])
        last = float(bars["close"][-1])
        nodes: dict[str, Node] = {}
        levels = []
        for k, (price, touches) in enumerate(ranked):
            node_id = f"{self.prefix}_{k}"
            nodes[node_id] = DrawingLevelNode(
                kind="drawing_level",
                price=round(price, 8),
                tolerance_bps=self.tolerance_bps,
                source="detect_sr_levels",
            )
            levels.append(
                {
                    "node_id": node_id,
                    "price": _f(price),
                    "touches": touches,
                    "role": "support" if price < last else "resistance",
                }
            )
        return ToolOutcome(
            {"last_close": _f(last), "levels": levels}, nodes=nodes, stands_for=f"{self.prefix}_0"
        )


@dataclass(frozen=True)
class SentimentSetup:
    """Which local sentiment backend the tools may use (the user's choice, never the model's).

    `backend: lexicon` is the built-in word list and is used only when named here; `model` needs
    `model_dir` as it will be written into the artifact (relative to the artifact file) and
    `base_dir`, where that path resolves now. The model's files are pinned by `model_revision`
    (computed from the files when not given).
    """

    backend: Literal["model", "lexicon"]
    model_dir: str | None = None
    base_dir: Path | None = None
    model_revision: str | None = None
    label_map: dict[str, float] | None = None
    max_length: int | None = None


class FetchNewsSentiment(Args):
    """Score stored news for the symbol with the configured local sentiment model as a sentiment node.

    The node is computed exactly as the runtime computes it (same node, same code path) on the
    in-sample bars: its value at a bar uses only items stamped before that bar's close.
    """

    node_id: str = Field(default="news_sentiment", description="id of the sentiment node")
    symbols: list[str] | None = Field(
        default=None, description="item symbol tags to use (default: the instrument's symbol)"
    )
    sources: list[str] | None = Field(default=None, description="source patterns, e.g. rss:*")
    include_untagged: bool = Field(default=False, description="also use items with no symbols")
    policy: Literal["ewm", "decay", "ffill"] = "ewm"
    half_life_bars: float | None = Field(
        default=24.0, gt=0, description="bars for an item's weight to halve (ewm/decay)"
    )
    max_age_bars: int | None = Field(default=None, ge=0, description="NaN once news is older")
    show_items: int = Field(default=10, ge=0, le=200, description="newest scored items to list")

    name: ClassVar[str] = "fetch_news_sentiment"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        node_id = _node_id(self.node_id)
        if ctx.news_path is None:
            raise ToolError(
                "fetch_news_sentiment: no stored news configured (news_path): nothing to score"
            )
        items = read_items(ctx.news_path)
        setup = ctx.sentiment
        if setup is None:
            raise ToolError(
                f"fetch_news_sentiment: {len(items)} stored item(s) found but no sentiment model "
                "is configured; a score is never made up: configure a local model (or name the "
                "lexicon backend) or do without"
            )
        node = self._node(setup, ctx.symbol)
        # only news up to the last visible bar's close: the held-out window stays unseen
        end = int(ctx.bars["ts_ns"][-1]) + timeframe_to_ns(ctx.timeframe) if ctx.bars.height else 0
        items = [it for it in items if it.ts_ns < end]
        series, values = sentiment_series(node, node_id, ctx, items)
        if series.items_accepted == 0:
            tags = sorted({s for it in items for s in it.symbols})
            raise ToolError(
                f"fetch_news_sentiment: none of the {len(items)} stored item(s) matches symbols "
                f"{node.symbols} / sources {node.sources}; the items are tagged {tags or 'with no symbol'}"
                ": pass matching symbols, or include_untagged"
            )
        session.series[node_id] = values
        finite = values[np.isfinite(values)]
        shown = (
            [it for it in items if series.matches(it)][-self.show_items :]
            if self.show_items
            else []
        )
        scores = series.scorer.score([it.text for it in shown]) if shown else []
        return ToolOutcome(
            {
                "node_id": node_id,
                "backend": node.backend,
                "items_visible": len(items),
                "items_used": series.items_accepted,
                "bars": len(values),
                "bars_with_value": len(finite),
                "last": _f(values[-1]) if len(values) else None,
                "min": _f(finite.min()) if len(finite) else None,
                "max": _f(finite.max()) if len(finite) else None,
                "mean": _f(finite.mean()) if len(finite) else None,
                "items": [
                    {"ts": _iso(it.ts_ns), "score": _f(sc), "text": it.text[:120]}
                    for it, sc in zip(shown, scores, strict=True)
                ],
            },
            nodes={node_id: node},
            stands_for=node_id,
        )

    def _node(self, setup: SentimentSetup, symbol: str) -> SentimentNode:
        revision = setup.model_revision
        if setup.backend == "model":
            if setup.model_dir is None:
                raise ToolError("fetch_news_sentiment: the model backend needs model_dir")
            where = (setup.base_dir or Path.cwd()) / setup.model_dir
            if not where.is_dir():
                raise ToolError(f"fetch_news_sentiment: model directory {where} does not exist")
            if revision is None:
                from indicators.sentiment_model import directory_digest

                revision = directory_digest(where)
        try:
            return SentimentNode(
                kind="sentiment",
                backend=setup.backend,
                model_dir=setup.model_dir if setup.backend == "model" else None,
                model_revision=revision if setup.backend == "model" else None,
                label_map=setup.label_map if setup.backend == "model" else None,
                max_length=setup.max_length,
                symbols=self.symbols or [symbol],
                sources=self.sources,
                include_untagged=self.include_untagged,
                policy=self.policy,
                half_life_bars=None if self.policy == "ffill" else self.half_life_bars,
                max_age_bars=self.max_age_bars,
            )
        except ValidationError as exc:
            raise ToolError(
                f"fetch_news_sentiment: {exc.errors(include_url=False)[0]['msg']}"
            ) from None


def sentiment_series(
    node: SentimentNode, node_id: str, ctx: ToolContext, items: Sequence[UnstructuredItem]
) -> tuple[Any, np.ndarray[Any, Any]]:
    """Evaluate a sentiment node over the context's bars the way the runtime does.

    A one-node artifact goes through the strategy kernel's own DAG evaluator (`DagEvaluator`:
    the node is built by the same code as in a run, items arrive through `on_items`, bars through
    `on_bar`); returns the node's series object and its value at every bar.
    """
    from indicators.nodes import BarValues
    from indicators.sentiment import SentimentError
    from strategy_kernel.dag import DagEvaluator

    probe = Artifact.model_validate(
        {
            "schema": "stratagem/v1",
            "name": "sentiment-probe",
            "version": 1,
            "instrument": {"venue": ctx.venue, "symbol": ctx.symbol, "timeframe": ctx.timeframe},
            "nodes": {
                node_id: node,
                "probe_positive": {"kind": "threshold", "input": node_id, "op": ">", "value": 0},
            },
            "entry": {"when": "probe_positive", "side": "long"},
        }
    )
    base = ctx.sentiment.base_dir if ctx.sentiment is not None else None
    try:
        dag = DagEvaluator(probe, check(probe, "fetch_news_sentiment"), base_dir=base)
        series = next(c.impl.series for c in dag.compiled if c.node_id == node_id)  # type: ignore[attr-defined]
        dag.on_items(items)
        out = np.empty(ctx.bars.height, dtype=np.float64)
        cols = ("ts_ns", "open", "high", "low", "close", "volume")
        for i, row in enumerate(ctx.bars.select(cols).iter_rows()):
            dag.on_bar(BarValues(*row))
            out[i] = float(dag.values[node_id])
    except (SentimentError, ArtifactError) as exc:
        raise ToolError(f"fetch_news_sentiment: {exc}") from None
    return series, out


def read_items(path: Path) -> list[UnstructuredItem]:
    """Stored unstructured items (JSON lines of `feeds.schema.UnstructuredItem`), in time order."""
    decoder = msgspec.json.Decoder(UnstructuredItem)
    out: list[UnstructuredItem] = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ToolError(f"{path}: stored news file not found") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(decoder.decode(line))
        except msgspec.ValidationError as exc:
            raise ToolError(f"{path}:{i}: not a news item: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ToolError(f"{path}:{i}: invalid JSON: {exc}") from None
    out.sort(key=lambda it: it.ts_ns)
    return out


class AnnotateDrawing(Args):
    """Turn one of the user's drawings into node(s): level, trend line, zone, channel or fib levels."""

    drawing_index: int = Field(ge=0, description="index of the drawing in the drawings summary")
    node_id: str = Field(description="id of the main node (a channel/fib adds <node_id>_... ids)")
    mode: LevelMode | None = Field(
        default=None, description="touch, above, below, break_up, break_down or retest"
    )
    tolerance_bps: float = Field(default=10.0, ge=0, le=1000)

    name: ClassVar[str] = "annotate_drawing"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        from compiler.drawings_compile import drawing_nodes

        node_id = _node_id(self.node_id)
        drawings = ctx.drawings.drawings if ctx.drawings else []
        if self.drawing_index >= len(drawings):
            raise ToolError(
                f"annotate_drawing: drawing_index {self.drawing_index} out of range: "
                f"{len(drawings)} drawing(s)"
            )
        d = drawings[self.drawing_index]
        try:
            raw, main = drawing_nodes(
                d,
                node_id,
                tolerance_bps=self.tolerance_bps,
                tf_ns=timeframe_to_ns(ctx.timeframe),
                source="drawings",
            )
        except CompilerError as exc:
            raise ToolError(f"annotate_drawing: {exc}") from None
        if self.mode is not None:
            targets = [main] if main is not None else list(raw)
            for t in targets:
                if "mode" not in raw[t]:
                    raise ToolError(
                        f"annotate_drawing: a {d.tool} is a combination of nodes; a mode cannot apply"
                    )
                raw[t]["mode"] = self.mode
        nodes = {k: NODE_ADAPTER.validate_python(v) for k, v in raw.items()}
        return ToolOutcome(
            {"tool": d.tool, "nodes": {k: v.kind for k, v in nodes.items()}},
            nodes=nodes,
            stands_for=main if main is not None else next(iter(nodes)),
        )


class ComposeSignalNode(Args):
    """Add any stratagem/v1 node (threshold, cross, all, any, not, rising, lookback, zone, ...)."""

    node_id: str
    node: dict[str, Any] = Field(
        description='the node, e.g. {"kind": "threshold", "input": "rsi", "op": "<", "value": 30}'
    )

    name: ClassVar[str] = "compose_signal_node"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        node_id = _node_id(self.node_id)
        try:
            node = NODE_ADAPTER.validate_python(self.node)
        except ValidationError as exc:
            problems = "; ".join(
                f"node.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolError(f"compose_signal_node: {problems}") from None
        missing = [
            ref
            for _, ref, _ in node.refs()
            if ref not in PRICE_COLUMNS and ref not in session.nodes and ref != node_id
        ]
        if missing:
            raise ToolError(
                f"compose_signal_node: {node_id} refers to unknown node(s) {missing}; "
                f"known: {sorted(session.nodes)}"
            )
        return ToolOutcome(
            {"node_id": node_id, "kind": node.kind}, {node_id: node}, stands_for=node_id
        )


class EmitStrategy(Args):
    """Emit the final artifact from the nodes composed so far plus entry/exit/risk rules."""

    name_: str = Field(alias="name", description="artifact name, lower-case with dashes")
    description: str = ""
    entry: dict[str, Any] = Field(description='e.g. {"when": "entry_ok", "side": "long"}')
    exit: dict[str, Any] = Field(default_factory=dict)
    risk: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: ClassVar[str] = "emit_strategy"

    def run(self, ctx: ToolContext, session: ToolSession) -> ToolOutcome:
        if not session.nodes:
            raise ToolError("emit_strategy: no nodes yet; compose the signal first")
        try:
            artifact = Artifact(
                schema="stratagem/v1",
                name=self.name_,
                version=1,
                description=self.description,
                instrument=Instrument(venue=ctx.venue, symbol=ctx.symbol, timeframe=ctx.timeframe),
                nodes=dict(session.nodes),
                entry=Entry.model_validate(self.entry),
                exit=Exit.model_validate(self.exit),
                risk=Risk.model_validate(self.risk),
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolError(f"emit_strategy: {problems}") from None
        try:
            check(artifact, "emit_strategy")
        except ArtifactError as exc:
            raise ToolError(f"emit_strategy: {exc}") from None
        return ToolOutcome(
            {"emitted": artifact.name, "nodes": len(artifact.nodes)}, artifact=artifact
        )


TOOLS: tuple[type[Args], ...] = (
    QueryChart,
    ComputeIndicator,
    DetectSRLevels,
    FetchNewsSentiment,
    AnnotateDrawing,
    ComposeSignalNode,
    EmitStrategy,
)
TOOLS_BY_NAME: dict[str, type[Args]] = {t.name: t for t in TOOLS}  # type: ignore[attr-defined]


def openai_tools(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """OpenAI tool definitions (function name, description, JSON schema of the arguments)."""
    out = []
    for tool in TOOLS:
        tname: str = tool.name  # type: ignore[attr-defined]
        if names is not None and tname not in names:
            continue
        out.append(
            {
                "type": "function",
                "function": {
                    "name": tname,
                    "description": (tool.__doc__ or "").strip(),
                    "parameters": tool.model_json_schema(by_alias=True),
                },
            }
        )
    return out


@dataclass
class TraceEntry:
    turn: int
    tool: str
    arguments: str
    ok: bool
    observation: dict[str, Any] | None = None
    error: str | None = None
    nodes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "tool": self.tool,
            "arguments": self.arguments,
            "ok": self.ok,
            "observation": self.observation,
            "error": self.error,
            "nodes": self.nodes,
        }


class ToolSession:
    """Runs tool calls against a context, keeps the node workspace and the trace of every call."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.nodes: dict[str, Node] = {}
        self.series: dict[str, np.ndarray[Any, Any]] = {}
        self.node_turn: dict[str, int] = {}
        self.trace: list[TraceEntry] = []
        self.artifact: Artifact | None = None

    def call(self, name: str, arguments: str | Mapping[str, Any], turn: int = 0) -> ToolOutcome:
        """Run one call; a ToolError is recorded in the trace and re-raised for the caller to report."""
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments, sort_keys=True)
        entry = TraceEntry(turn=turn, tool=name, arguments=raw, ok=False)
        self.trace.append(entry)
        try:
            outcome = self._run(name, raw)
        except ToolError as exc:
            entry.error = str(exc)
            raise
        entry.ok = True
        entry.observation = outcome.observation
        entry.nodes = list(outcome.nodes)
        for node_id, node in outcome.nodes.items():
            self.nodes[node_id] = node
            self.node_turn.setdefault(node_id, turn)
        if outcome.artifact is not None:
            self.artifact = outcome.artifact
        return outcome

    def _run(self, name: str, raw: str) -> ToolOutcome:
        tool = TOOLS_BY_NAME.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; tools: {', '.join(TOOLS_BY_NAME)}")
        try:
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolError(
                f"{name}: arguments are not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        try:
            args = tool.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolError(f"{name}: bad arguments: {problems}") from None
        outcome: ToolOutcome = args.run(self.ctx, self)  # type: ignore[attr-defined]
        return outcome

    def trace_json(self) -> str:
        """The whole trace as canonical JSON (what is committed and hashed)."""
        return json.dumps([e.as_dict() for e in self.trace], sort_keys=True, indent=1)
