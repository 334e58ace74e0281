"""Compile a checked signal graph into executable nodes and evaluate it incrementally, bar by bar.

Incremental rule: clocked nodes (indicators, crosses, windows, levels) run on every bar of their
stream because their state advances with time; pure nodes (threshold, all/any/not) run only when
one of their inputs changed value. The topological order is fixed at compile time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from artifacts.graph import SignalGraph
from artifacts.schema import (
    PRICE_COLUMNS,
    AllNode,
    AnyNode,
    Artifact,
    CrossNode,
    DrawingLevelNode,
    IndicatorNode,
    LookbackNode,
    NotNode,
    RisingNode,
    ThresholdNode,
)
from indicators import nodes as sn


@dataclass
class _Compiled:
    node_id: str
    impl: sn.SignalNode
    inputs: tuple[str, ...]  # ids of nodes/columns whose values are passed, in order


def _build(node_id: str, artifact: Artifact, graph: SignalGraph) -> _Compiled:
    node = artifact.nodes[node_id]
    impl: sn.SignalNode
    inputs: tuple[str, ...]
    if isinstance(node, IndicatorNode):
        b = graph.indicators[node_id]
        from indicators.registry import get_indicator

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
        impl, inputs = sn.DrawingLevel(node.price, node.tolerance_bps, node.mode), ()
    else:  # pragma: no cover - the schema's discriminated union makes this unreachable
        raise TypeError(f"no executable node for kind {node.kind!r}")
    return _Compiled(node_id, impl, inputs)


class DagEvaluator:
    """Holds node state and current values; `on_bar` returns the nodes whose value changed."""

    def __init__(self, artifact: Artifact, graph: SignalGraph) -> None:
        self.graph = graph
        self.compiled = [_build(n, artifact, graph) for n in graph.order]
        self.values: dict[str, sn.Value] = {c: math.nan for c in PRICE_COLUMNS}
        for c in self.compiled:
            self.values[c.node_id] = math.nan if graph.types[c.node_id] == "float" else False
        self.evaluations = 0  # how many node updates ran (incrementality is observable)

    def on_bar(self, bar: sn.BarValues) -> list[str]:
        changed: set[str] = set()
        for col, value in zip(PRICE_COLUMNS, bar[1:], strict=True):
            if not _same(self.values[col], value):
                changed.add(col)
            self.values[col] = value
        out: list[str] = []
        for c in self.compiled:
            if not c.impl.clocked and not any(i in changed for i in c.inputs):
                continue
            args = [self.values[i] for i in c.inputs]
            new = c.impl.update(args, bar)
            self.evaluations += 1
            if not _same(self.values[c.node_id], new):
                self.values[c.node_id] = new
                changed.add(c.node_id)
                out.append(c.node_id)
        return out

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


def _same(a: sn.Value, b: sn.Value) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)
