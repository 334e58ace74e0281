"""Generate docs/artifact-schema.md from the pydantic models, so the reference never drifts."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from artifacts import schema as s

_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Artifact (top level)", s.Artifact),
    ("instrument", s.Instrument),
    ("entry", s.Entry),
    ("entry.order (order template)", s.OrderTemplate),
    ("entry.scale_in[]", s.ScaleIn),
    ("exit", s.Exit),
    ("exit.stop_loss", s.StopLoss),
    ("exit.take_profit[]", s.TakeProfit),
    ("exit.break_even", s.BreakEven),
    ("exit.trailing", s.TrailingStop),
    ("exit.scale_out[]", s.ScaleOut),
    ("condition (inline, for entry.when / exit.when)", s.Condition),
    ("price point (trend line anchor)", s.PricePoint),
    ("risk", s.Risk),
    ("risk.sizing", s.Sizing),
    ("risk.portfolio", s.PortfolioLimits),
    ("data.<name> (other symbols as inputs)", s.DataInput),
    ("backtest", s.Backtest),
    ("one_shot (one-shot expiry)", s.OneShot),
    ("provenance", s.Provenance),
    ("provenance.backtest", s.ProvenanceBacktest),
    ("provenance.gates[]", s.ProvenanceGate),
]
_NODES: list[type[BaseModel]] = [
    s.IndicatorNode,
    s.ThresholdNode,
    s.CrossNode,
    s.AllNode,
    s.AnyNode,
    s.NotNode,
    s.RisingNode,
    s.LookbackNode,
    s.DrawingLevelNode,
    s.TrendLineNode,
    s.ZoneNode,
    s.FibLevelNode,
    s.TimeWindowNode,
    s.ResampleNode,
    s.ConvictionNode,
    s.ConfluenceNode,
    s.PythonNode,
    s.SentimentNode,
    s.RegimeNode,
]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return "node"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return f"`{tp.__name__}`"
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "`{}`" if value == {} else "`[]`" if value == [] else "see section"
    if field.default is PydanticUndefined or field.default is None:
        return "—"
    return f"`{field.default!r}`" if field.default == "" else f"`{field.default}`"


def _constraints(field: Any) -> str:
    out = []
    for meta in field.metadata:
        for attr, sym in (
            ("gt", ">"),
            ("ge", "≥"),
            ("lt", "<"),
            ("le", "≤"),
            ("min_length", "min len"),
            ("pattern", "pattern"),
        ):
            v = getattr(meta, attr, None)
            if v is not None:
                out.append(f"{sym} `{v}`")
    return ", ".join(out).replace("|", "\\|")


def _table(model: type[BaseModel]) -> list[str]:
    lines = ["| field | type | default | constraints |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        shown = field.alias or name
        lines.append(
            f"| `{shown}` | {_type_name(field.annotation)} | {_default(field)} | {_constraints(field)} |"
        )
    return lines


def _doc(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "").replace("\n", " ")


def render() -> str:
    out = [
        "# Artifact schema `stratagem/v1`",
        "",
        "Generated from `artifacts/schema.py` by `python -m artifacts.docs`; do not edit by hand.",
        "Unknown fields are errors. The machine-readable form is `stratagem schema` (JSON Schema).",
        "",
        "References (`inputs`, `input`, `a`, `b`, `value` when a string, `when`) name a node id or a",
        f"price column ({', '.join(s.PRICE_COLUMNS)}). Every edge is type-checked: nodes output `float`",
        "(NaN while undefined) or `bool`; a comparison with an undefined side is false.",
        "",
        'Durations are written `"3 bars"`, `"90m"`, `"4h"` or `"2d"`.',
        "",
    ]
    for title, model in _SECTIONS:
        out += [f"## {title}", "", _doc(model), "", *_table(model), ""]
    out += [
        "## Node kinds",
        "",
        "Each entry of `nodes:` is `id: {kind: ..., ...}`; ids are lower_snake_case.",
        "",
    ]
    for model in _NODES:
        kinds = typing.get_args(model.model_fields["kind"].annotation)
        out += [f"### `{' / '.join(kinds)}`", "", _doc(model), "", *_table(model), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
