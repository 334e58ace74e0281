"""The artifact's signal DAG as a networkx graph, checked: references, edge types, cycles, indicators.

Schema validation (pydantic) says each field is well formed; this module says the fields make a
strategy: every reference resolves, every edge carries the type its consumer expects, there is
no cycle, every indicator exists with valid parameters. The strategy kernel compiles the same
`SignalGraph`, so what is checked here is exactly what runs.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from artifacts.errors import ArtifactGraphError, Problem
from artifacts.schema import (
    PRICE_COLUMNS,
    Artifact,
    Condition,
    IndicatorNode,
    LookbackNode,
    PythonNode,
    RegimeNode,
    ResampleNode,
    RisingNode,
    ValueType,
)
from indicators.errors import IndicatorError
from indicators.registry import get_indicator, validate_params

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class IndicatorBinding:
    """An indicator node resolved against the registry: which columns feed it, which output it shows."""

    fn: str
    inputs: tuple[str, ...]  # node ids or price columns, one per indicator input
    params: Mapping[str, int | float]
    output: str
    output_index: int
    warmup: int


@dataclass
class SignalGraph:
    """The checked DAG: `graph` has node ids and price columns as vertices, edges point downstream."""

    graph: nx.DiGraph
    order: tuple[str, ...]  # node ids in a deterministic topological order (columns excluded)
    types: dict[str, ValueType]
    indicators: dict[str, IndicatorBinding] = field(default_factory=dict)
    warmup: int = 0  # bars before every node has a defined value (longest path of warm-ups)
    columns: tuple[str, ...] = ()

    def downstream(self, node: str) -> set[str]:
        return set(nx.descendants(self.graph, node))


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _rule_refs(artifact: Artifact) -> list[tuple[str, str, ValueType]]:
    """References made by entry/exit rules, as (field path, ref, expected type)."""
    refs: list[tuple[str, str, ValueType]] = []

    def condition(path: str, cond: str | Condition | None) -> None:
        if cond is None:
            return
        if isinstance(cond, str):
            refs.append((path, cond, "bool"))
        else:
            refs.append((f"{path}.node", cond.node, "float"))
            if isinstance(cond.value, str):
                refs.append((f"{path}.value", cond.value, "float"))

    condition("entry.when", artifact.entry.when)
    condition("entry.invalid_if", artifact.entry.invalid_if)
    condition("exit.when", artifact.exit.when)
    for i, add in enumerate(artifact.entry.scale_in or ()):
        condition(f"entry.scale_in[{i}].when", add.when)
    for i, out in enumerate(artifact.exit.scale_out or ()):
        condition(f"exit.scale_out[{i}].when", out.when)
    if artifact.exit.stop_loss is not None and artifact.exit.stop_loss.level is not None:
        refs.append(("exit.stop_loss.level", artifact.exit.stop_loss.level, "float"))
    return refs


def _node_warmup(node_id: str, artifact: Artifact, bindings: Mapping[str, IndicatorBinding]) -> int:
    """Undefined steps a node adds on its own clock (bars of its timeframe)."""
    node = artifact.nodes[node_id]
    if node_id in bindings:
        return bindings[node_id].warmup
    if isinstance(node, LookbackNode | RisingNode):
        return node.bars
    if isinstance(node, PythonNode):
        return node.warmup
    if isinstance(node, RegimeNode):
        return node.warmup()
    return 0


def _timeframe_ns(tf: str) -> int:
    from feeds.schema import timeframe_to_ns

    return timeframe_to_ns(tf)


def python_node_file(node: PythonNode, base_dir: Path) -> Path:
    """Where a python node's code lives; its sha256 must match the pinned hash."""
    return (base_dir / node.path).resolve()


def _check_python_node(node_id: str, node: PythonNode, base_dir: Path) -> str | None:
    path = python_node_file(node, base_dir)
    if not path.is_file():
        return f"python node file {path} not found (path is relative to the artifact file)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != node.sha256:
        return (
            f"{path} has sha256 {digest}, but the artifact pins {node.sha256}: the code changed; "
            "review it and update sha256 (a new artifact version)"
        )
    return None


def check(
    artifact: Artifact,
    source: str = "<artifact>",
    lines: Mapping[Loc, int] | None = None,
    base_dir: Path | None = None,
) -> SignalGraph:
    """Build and check the signal DAG; raise ArtifactGraphError listing every problem found.

    `base_dir` resolves python nodes' files (default: the directory of `source`).
    """
    lines = lines or {}
    problems: list[Problem] = []
    if base_dir is None:
        base_dir = Path(source).parent if source != "<artifact>" else Path.cwd()
    base_tf = _timeframe_ns(artifact.instrument.timeframe)

    def line(*loc: str | int) -> int | None:
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in lines:
                return lines[loc[:cut]]
        return None

    g: nx.DiGraph = nx.DiGraph()
    types: dict[str, ValueType] = {c: "float" for c in PRICE_COLUMNS}
    aux_ratio: dict[str, int] = {}  # `<input>.<column>` -> instrument bars per bar of the input
    for name, inp in (artifact.data or {}).items():
        from feeds.errors import FeedError

        try:
            tf = _timeframe_ns(inp.timeframe)
        except FeedError as exc:
            problems.append(Problem(f"data.{name}.timeframe", str(exc), line("data", name)))
            continue
        if tf < base_tf or tf % base_tf:
            problems.append(
                Problem(
                    f"data.{name}.timeframe",
                    f"{inp.timeframe} must be the instrument timeframe {artifact.instrument.timeframe} "
                    "or a whole multiple of it; resample the data or change the timeframe",
                    line("data", name, "timeframe"),
                )
            )
            continue
        for c in PRICE_COLUMNS:
            types[f"{name}.{c}"] = "float"
            aux_ratio[f"{name}.{c}"] = tf // base_tf
    for node_id, node in artifact.nodes.items():
        g.add_node(node_id, kind=node.kind)
        types[node_id] = node.output_type()

    bindings: dict[str, IndicatorBinding] = {}
    for node_id, node in artifact.nodes.items():
        if isinstance(node, IndicatorNode):
            try:
                spec = get_indicator(node.fn)
                params = validate_params(node.fn, node.params)
            except IndicatorError as exc:
                problems.append(Problem(f"nodes.{node_id}.fn", str(exc), line("nodes", node_id)))
                continue
            inputs = tuple(node.inputs) if node.inputs else tuple(spec.inputs)
            if len(inputs) != len(spec.inputs):
                problems.append(
                    Problem(
                        f"nodes.{node_id}.inputs",
                        f"{spec.name} takes {len(spec.inputs)} input(s) ({', '.join(spec.inputs)}), "
                        f"got {len(inputs)}: list them in that order or omit inputs to use the price columns",
                        line("nodes", node_id, "inputs"),
                    )
                )
                continue
            if node.output is None and len(spec.outputs) > 1:
                problems.append(
                    Problem(
                        f"nodes.{node_id}.output",
                        f"{spec.name} has several outputs ({', '.join(spec.outputs)}): choose one with output:",
                        line("nodes", node_id),
                    )
                )
                continue
            output = node.output or spec.outputs[0]
            if output not in spec.outputs:
                problems.append(
                    Problem(
                        f"nodes.{node_id}.output",
                        f"{spec.name} has no output {output!r}; outputs: {', '.join(spec.outputs)}",
                        line("nodes", node_id, "output"),
                    )
                )
                continue
            bindings[node_id] = IndicatorBinding(
                fn=spec.name,
                inputs=inputs,
                params=params,
                output=output,
                output_index=spec.outputs.index(output),
                warmup=spec.warmup(params),
            )

    for node_id, node in artifact.nodes.items():
        if isinstance(node, ResampleNode):
            from feeds.errors import FeedError

            try:
                coarse = _timeframe_ns(node.timeframe)
            except FeedError as exc:
                problems.append(
                    Problem(f"nodes.{node_id}.timeframe", str(exc), line("nodes", node_id))
                )
                continue
            if coarse <= base_tf or coarse % base_tf:
                problems.append(
                    Problem(
                        f"nodes.{node_id}.timeframe",
                        f"{node.timeframe} must be a whole multiple (> 1) of the instrument timeframe "
                        f"{artifact.instrument.timeframe}",
                        line("nodes", node_id, "timeframe"),
                    )
                )
        elif isinstance(node, PythonNode):
            msg = _check_python_node(node_id, node, base_dir)
            if msg:
                problems.append(
                    Problem(f"nodes.{node_id}.path", msg, line("nodes", node_id, "path"))
                )

    edges: list[tuple[str, str, str, ValueType]] = []  # (ref, consumer, field path, expected type)
    for node_id, node in artifact.nodes.items():
        node_refs: list[tuple[str, str, ValueType]]
        if isinstance(node, IndicatorNode):
            if node_id not in bindings:
                continue  # already reported above
            node_refs = [
                (f"inputs[{i}]", r, "float") for i, r in enumerate(bindings[node_id].inputs)
            ]
        else:
            node_refs = node.refs()
        for fld, ref, expected in node_refs:
            edges.append((ref, node_id, f"nodes.{node_id}.{fld}", expected))
    rule_refs = _rule_refs(artifact)

    known = sorted(types)
    used_columns: set[str] = set()
    for ref, dst, path, expected in edges:
        if ref not in types:
            problems.append(
                Problem(
                    path,
                    f"unknown node or column {ref!r}{_suggest(ref, known)}",
                    line("nodes", dst),
                )
            )
            continue
        if types[ref] != expected:
            problems.append(
                Problem(
                    path,
                    f"type mismatch: {ref!r} gives {types[ref]} but {dst!r} needs {expected} here",
                    line("nodes", dst),
                )
            )
        if ref in PRICE_COLUMNS:
            used_columns.add(ref)
        g.add_edge(ref, dst, field=path, type=types[ref])
    for path, ref, expected in rule_refs:
        root = [
            int(x) if x.isdigit() else x for x in path.replace("[", ".").replace("]", "").split(".")
        ]
        if ref not in types:
            problems.append(
                Problem(path, f"unknown node or column {ref!r}{_suggest(ref, known)}", line(*root))
            )
        elif types[ref] != expected:
            problems.append(
                Problem(
                    path,
                    f"type mismatch: {ref!r} gives {types[ref]} but {path} needs {expected}",
                    line(*root),
                )
            )
        elif ref in PRICE_COLUMNS:
            used_columns.add(ref)

    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        cycle = []
    if cycle:
        names = [u for u, _ in cycle] + [cycle[0][0]]
        problems.append(
            Problem(
                f"nodes.{cycle[0][0]}",
                f"cycle in the signal graph: {' -> '.join(names)}; a node cannot depend on itself",
                line("nodes", cycle[0][0]),
            )
        )
    if problems:
        raise ArtifactGraphError(source, problems)

    order = tuple(n for n in nx.lexicographical_topological_sort(g) if n in artifact.nodes)
    # Warm-up in base bars: a node on a coarser clock (downstream of a resample) waits
    # `ratio` base bars per undefined step, and a resample waits for its first complete bucket.
    depth: dict[str, int] = {c: 0 for c in PRICE_COLUMNS} | {c: 0 for c in aux_ratio}
    ratio: dict[str, int] = {c: 1 for c in PRICE_COLUMNS} | aux_ratio
    for n in order:
        node = artifact.nodes[n]
        preds = list(g.predecessors(n))
        start = max((depth[p] for p in preds), default=0)
        if isinstance(node, ResampleNode):
            ratio[n] = _timeframe_ns(node.timeframe) // base_tf
            depth[n] = start + ratio[n]
        else:
            ratio[n] = min((ratio[p] for p in preds), default=1)
            depth[n] = start + _node_warmup(n, artifact, bindings) * ratio[n]
    warmup = max((depth[n] for n in order), default=0)
    return SignalGraph(
        graph=g,
        order=order,
        types={n: types[n] for n in order},
        indicators=bindings,
        warmup=warmup,
        columns=tuple(c for c in PRICE_COLUMNS if c in used_columns or g.has_node(c)),
    )
