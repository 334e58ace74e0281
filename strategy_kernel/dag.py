"""Compile a checked signal graph into executable nodes and evaluate it incrementally, bar by bar.

Incremental rule: clocked nodes (indicators, crosses, windows, levels) run on every bar of their
stream because their state advances with time; pure nodes (threshold, all/any/not) run only when
one of their inputs changed value. The topological order is fixed at compile time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts.graph import SignalGraph, python_node_file
from artifacts.schema import (
    PRICE_COLUMNS,
    AllNode,
    AnyNode,
    Artifact,
    ConfluenceNode,
    ConvictionNode,
    CrossNode,
    DrawingLevelNode,
    FibLevelNode,
    IndicatorNode,
    LookbackNode,
    NotNode,
    PythonNode,
    RegimeNode,
    ResampleNode,
    RisingNode,
    SentimentNode,
    ThresholdNode,
    TimeWindowNode,
    TrendLineNode,
    ZoneNode,
)
from feeds.schema import UnstructuredItem, timeframe_to_ns
from indicators import nodes as sn
from indicators.registry import get_indicator

BASE_CLOCK: frozenset[str] = frozenset({"base"})
#: position of each price column in `BarValues` (ts_ns comes first)
_COLUMN_INDEX: dict[str, int] = {col: i + 1 for i, col in enumerate(PRICE_COLUMNS)}
if PRICE_COLUMNS != ("open", "high", "low", "close", "volume"):  # on_bar stores them by name
    raise ImportError(f"DagEvaluator.on_bar expects the columns of BarValues, not {PRICE_COLUMNS}")


@dataclass
class _Compiled:
    node_id: str
    impl: sn.SignalNode
    inputs: tuple[str, ...]  # ids of nodes/columns whose values are passed, in order
    clocks: frozenset[str] = BASE_CLOCK  # the clocks this node steps on


def sn_sentiment_signal(signal: Any) -> sn.SignalNode:
    """The sentiment adapter satisfies the SignalNode protocol (typed loosely to keep imports lazy)."""
    node: sn.SignalNode = signal
    return node


def regime_signal(node: RegimeNode) -> sn.SignalNode:
    """The streaming classifier of a regime node (its method's parameters were filled by the schema)."""
    if node.method == "volatility":
        assert node.window is not None and node.low_pct is not None and node.high_pct is not None
        return sn.VolatilityRegime(node.lookback, node.window, node.low_pct, node.high_pct)
    assert node.threshold is not None
    return sn.TrendRegime(node.lookback, node.threshold)


def _build(node_id: str, artifact: Artifact, graph: SignalGraph, base_dir: Path) -> _Compiled:
    node = artifact.nodes[node_id]
    base_ns = timeframe_to_ns(artifact.instrument.timeframe)
    impl: sn.SignalNode
    inputs: tuple[str, ...]
    if isinstance(node, IndicatorNode):
        b = graph.indicators[node_id]
        spec = get_indicator(b.fn)
        impl = sn.IndicatorSignal(b.fn, dict(b.params), spec.inputs, b.output_index)
        inputs = b.inputs
    elif isinstance(node, ThresholdNode):
        const = node.value if not isinstance(node.value, str) else None
        impl = sn.Threshold(node.op, None if const is None else float(const))
        inputs = (node.input,) if const is not None else (node.input, str(node.value))
    elif isinstance(node, CrossNode):
        const = node.b if not isinstance(node.b, str) else None
        impl = sn.Cross(node.direction, None if const is None else float(const))
        inputs = (node.a,) if const is not None else (node.a, str(node.b))
    elif isinstance(node, AllNode):
        impl, inputs = sn.AllOf(), tuple(node.inputs)
    elif isinstance(node, AnyNode):
        impl, inputs = sn.AnyOf(), tuple(node.inputs)
    elif isinstance(node, NotNode):
        impl, inputs = sn.Not(), (node.input,)
    elif isinstance(node, RisingNode):
        impl, inputs = sn.Rising(node.bars, node.kind == "rising"), (node.input,)
    elif isinstance(node, LookbackNode):
        impl, inputs = sn.Lookback(node.bars), (node.input,)
    elif isinstance(node, DrawingLevelNode):
        impl, inputs = sn.Level(node.mode, sn.fixed_band(node.price, node.tolerance_bps)), ()
    elif isinstance(node, ZoneNode):
        impl, inputs = sn.Level(node.mode, sn.zone_band(node.low, node.high)), ()
    elif isinstance(node, FibLevelNode):
        impl, inputs = sn.Level(node.mode, sn.fixed_band(node.price(), node.tolerance_bps)), ()
    elif isinstance(node, TrendLineNode):
        band = sn.line_band(
            node.p1.ts_ns(),
            node.p1.price,
            node.p2.ts_ns(),
            node.p2.price,
            node.tolerance_bps,
            node.extend,
        )
        impl, inputs = sn.Level(node.mode, band), ()
    elif isinstance(node, TimeWindowNode):
        impl, inputs = sn.TimeWindow(node.hours, node.weekdays, node.tz), ()
    elif isinstance(node, ResampleNode):
        impl = sn.Resample(timeframe_to_ns(node.timeframe), base_ns, node.agg)
        inputs = (node.input,)
    elif isinstance(node, ConvictionNode):
        impl = sn.Conviction(node.lo, node.hi, node.value, node.scale == "one_to_ten")
        inputs = (node.input,) if node.input is not None else (str(node.when),)
    elif isinstance(node, ConfluenceNode):
        impl = sn.Confluence(node.method, len(node.inputs), node.weights, node.k, node.threshold)
        inputs = (*node.inputs, *node.vetoes)
    elif isinstance(node, RegimeNode):
        impl, inputs = regime_signal(node), (node.input,)
    elif isinstance(node, SentimentNode):
        from indicators.sentiment import SentimentSeries, SentimentSignal, make_scorer

        scorer = make_scorer(
            node.backend,
            model_dir=(base_dir / node.model_dir) if node.model_dir else None,
            batch_size=node.batch_size,
            max_length=node.max_length,
            label_map=node.label_map,
            expected_revision=node.model_revision,
        )
        series = SentimentSeries(
            scorer,
            symbols=node.symbols or [artifact.instrument.symbol],
            include_untagged=node.include_untagged,
            sources=node.sources,
            policy=node.policy,
            half_life_bars=node.half_life_bars,
            max_age_bars=node.max_age_bars,
            late=node.late,
        )
        impl, inputs = sn_sentiment_signal(SentimentSignal(series, base_ns)), ()
    elif isinstance(node, PythonNode):
        path = python_node_file(node, base_dir)
        impl = sn.PythonSignal(str(path), node.class_name, node.sha256, dict(node.params))
        inputs = tuple(node.inputs)
    else:  # pragma: no cover - the schema's discriminated union makes this unreachable
        raise TypeError(f"no executable node for kind {node.kind!r}")
    return _Compiled(node_id, impl, inputs)


class DagEvaluator:
    """Holds node state and current values; `on_bar` returns the nodes whose value changed.

    Clocks: every node steps on the clocks of its inputs. Price columns and input-less nodes
    (levels, time windows) are on the base clock (every bar); a resample node starts a clock of
    its own that ticks when a coarse bar completes, so an SMA over 4h closes steps every 4 hours.
    """

    def __init__(
        self, artifact: Artifact, graph: SignalGraph, base_dir: Path | None = None
    ) -> None:
        self.graph = graph
        base = base_dir or Path.cwd()
        self.compiled = [_build(n, artifact, graph, base) for n in graph.order]
        self.values: dict[str, sn.Value] = {c: math.nan for c in PRICE_COLUMNS}
        clocks: dict[str, frozenset[str]] = {c: BASE_CLOCK for c in PRICE_COLUMNS}
        for name in artifact.data or {}:  # another symbol: its columns tick on a clock of its own
            for col in PRICE_COLUMNS:
                self.values[f"{name}.{col}"] = math.nan
                clocks[f"{name}.{col}"] = frozenset({f"data:{name}"})
        self._aux_ticked: set[str] = set()
        self._aux_changed: set[str] = set()
        for c in self.compiled:
            self.values[c.node_id] = math.nan if graph.types[c.node_id] == "float" else False
            own = frozenset().union(*(clocks[i] for i in c.inputs)) if c.inputs else BASE_CLOCK
            c.clocks = own
            clocks[c.node_id] = frozenset({c.node_id}) if isinstance(c.impl, sn.Resample) else own
        self.evaluations = 0  # how many node updates ran (incrementality is observable)
        self._primed = False
        self._fill_hooks = [
            h for c in self.compiled if (h := getattr(c.impl, "on_fill", None)) is not None
        ]
        # The per-bar plan, resolved once: on_bar runs per event, so no attribute lookups,
        # isinstance checks or clock-set tests are repeated there that compile time can answer.
        self._plan = [
            (
                c.node_id,
                c.impl.update,
                c.inputs,
                c.inputs[0] if len(c.inputs) == 1 else None,  # the one input, read inline
                _getter(c.inputs),
                c.impl.clocked,
                c.clocks,
                c.impl if isinstance(c.impl, sn.Resample) else None,
            )
            for c in self.compiled
        ]
        # when every clocked node is on the base clock (no resample, no node fed only by another
        # symbol's data), every clocked node steps on every bar: no clock test per node
        self._single_clock = all(
            not BASE_CLOCK.isdisjoint(c.clocks) for c in self.compiled if c.impl.clocked
        )
        # only pure nodes look at which columns changed; other columns are just stored
        self._watched = tuple(
            col
            for col in PRICE_COLUMNS
            if any(not c.impl.clocked and col in c.inputs for c in self.compiled)
        )

    def on_bar(self, bar: sn.BarValues) -> list[str]:
        values = self.values
        changed: set[str] = set()
        for col in self._watched:
            value = bar[_COLUMN_INDEX[col]]
            if not _same(values[col], value):
                changed.add(col)
        _, values["open"], values["high"], values["low"], values["close"], values["volume"] = bar
        single_clock = self._single_clock
        ticked = set(BASE_CLOCK)
        if self._aux_ticked:  # other symbols' bars that became visible since the last bar
            ticked |= self._aux_ticked
            changed |= self._aux_changed
            self._aux_ticked, self._aux_changed = set(), set()
        out: list[str] = []
        first = not self._primed  # on the first bar every node runs once: `not false` is true
        self._primed = True
        runs = 0
        for node_id, update, inputs, one, get, clocked, clocks, resample in self._plan:
            if clocked:
                if not single_clock and ticked.isdisjoint(clocks):
                    continue
            elif not first and changed.isdisjoint(inputs):
                continue
            new = update((values[one],) if one is not None else get(values), bar)
            runs += 1
            if resample is not None and resample.ticked:
                ticked.add(node_id)
            old = values[node_id]
            kind = type(new)
            if kind is type(old) and (kind is float or kind is bool):
                # _same() inlined for the two value types: NaN equals NaN, bool never equals float
                if new == old or (new != new and old != old):
                    continue
            elif _same(old, new):
                continue
            values[node_id] = new
            changed.add(node_id)
            out.append(node_id)
        self.evaluations += runs
        return out

    def on_aux(self, name: str, bar: sn.BarValues) -> None:
        """A bar of data input `name` became visible: its columns update on the next `on_bar`."""
        for col, value in zip(PRICE_COLUMNS, bar[1:], strict=True):
            key = f"{name}.{col}"
            if not _same(self.values[key], value):
                self._aux_changed.add(key)
            self.values[key] = value
        self._aux_ticked.add(f"data:{name}")

    def on_items(self, items: Sequence[UnstructuredItem]) -> None:
        """News/posts for sentiment nodes; each node keeps only what it may see at each close."""
        for c in self.compiled:
            series = getattr(c.impl, "series", None)
            if series is not None:
                series.add_items(items)

    def on_fill(self, fill: Mapping[str, Any]) -> None:
        """Nodes with an `on_fill` hook (python nodes) see every fill, in order."""
        for hook in self._fill_hooks:
            hook(dict(fill))

    def snapshot(self) -> dict[str, Any]:
        return {
            "values": dict(self.values),
            "nodes": {c.node_id: c.impl.snapshot() for c in self.compiled},
        }

    def restore(self, state: Mapping[str, Any], only: set[str] | None = None) -> None:
        """Restore node state; `only` limits it to unchanged nodes when hot-swapping a new version."""
        for c in self.compiled:
            if c.node_id in state["nodes"] and (only is None or c.node_id in only):
                c.impl.restore(state["nodes"][c.node_id])
                self.values[c.node_id] = state["values"][c.node_id]


def _no_inputs(values: Mapping[str, sn.Value]) -> tuple[sn.Value, ...]:
    return ()


def _getter(inputs: tuple[str, ...]) -> Callable[[Mapping[str, sn.Value]], tuple[sn.Value, ...]]:
    """The input values of a node with several inputs (or none) as one tuple, in declared order."""
    if not inputs:
        return _no_inputs
    if len(inputs) == 1:  # itemgetter of one key returns the bare value; on_bar reads it inline
        key = inputs[0]
        return lambda values: (values[key],)
    return operator.itemgetter(*inputs)


def unchanged_nodes(old: Artifact, new: Artifact) -> set[str]:
    """Nodes of `new` defined exactly as in `old`, with every upstream node unchanged too:
    their state can carry over a hot-swap (indicator history is not lost)."""
    memo: dict[str, bool] = {}

    def same(node_id: str) -> bool:
        if node_id in PRICE_COLUMNS:
            return True
        if "." in node_id:  # another symbol's column: unchanged while its input is
            name = node_id.split(".", 1)[0]
            return (old.data or {}).get(name) == (new.data or {}).get(name)
        if node_id not in memo:
            memo[node_id] = False  # cycles are impossible in checked graphs; guard anyway
            node = new.nodes[node_id]
            memo[node_id] = old.nodes.get(node_id) == node and all(
                same(r) for _, r, _ in node.refs()
            )
        return memo[node_id]

    return {n for n in new.nodes if same(n)}


def _same(a: sn.Value, b: sn.Value) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)
