"""The signal DAG check: references, edge types, cycles, indicators, warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from artifacts import io
from artifacts.errors import ArtifactGraphError
from artifacts.graph import check

ROOT = Path(__file__).resolve().parents[2]


def _artifact_text(**node_overrides: dict[str, object]) -> str:
    data = yaml.safe_load((ROOT / "examples" / "rsi-reversion.yaml").read_text())
    data["nodes"].update(node_overrides)
    return yaml.safe_dump(data, sort_keys=False)


def _graph_problems(text: str) -> list[str]:
    artifact, lines = io.loads_with_lines(text, "g.yaml")
    with pytest.raises(ArtifactGraphError) as info:
        check(artifact, "g.yaml", lines)
    return [p.render("g.yaml") for p in info.value.problems]


def test_example_graph_order_types_and_warmup() -> None:
    artifact = io.load(ROOT / "examples" / "rsi-reversion.yaml")
    g = check(artifact)
    order = list(g.order)
    assert (
        order.index("rsi")
        < order.index("rsi_prev")
        < order.index("was_oversold")
        < order.index("entry_ok")
    )
    assert order.index("rsi") < order.index("turning_up") < order.index("entry_ok")
    assert (
        g.types["entry_ok"] == "bool"
        and g.types["rsi"] == "float"
        and g.types["rsi_prev"] == "float"
    )
    assert (
        g.warmup == 15
    )  # RSI(14) has 14 undefined bars, the 1-bar lookback adds one: longest path
    assert g.indicators["rsi"].params == {"period": 14}


def test_cycle_is_named() -> None:
    msgs = _graph_problems(
        _artifact_text(
            a={"kind": "indicator", "fn": "SMA", "inputs": ["b"], "params": {"period": 3}},
            b={"kind": "indicator", "fn": "EMA", "inputs": ["a"], "params": {"period": 3}},
        )
    )
    assert any(
        "cycle in the signal graph" in m and ("a -> b -> a" in m or "b -> a -> b" in m)
        for m in msgs
    )


def test_unknown_reference_suggests_a_name() -> None:
    msgs = _graph_problems(
        _artifact_text(was_oversold={"kind": "threshold", "input": "rsii", "op": "<", "value": 30})
    )
    assert any("unknown node or column 'rsii'" in m and "did you mean 'rsi'" in m for m in msgs)
    assert any(m.startswith("g.yaml:") and ": nodes.was_oversold.input:" in m for m in msgs)


def test_type_mismatch_bool_into_float() -> None:
    msgs = _graph_problems(
        _artifact_text(
            was_oversold={"kind": "threshold", "input": "entry_ok", "op": "<", "value": 30}
        )
    )
    assert any("type mismatch" in m and "'entry_ok' gives bool" in m for m in msgs)


def test_unknown_indicator_and_bad_param() -> None:
    msgs = _graph_problems(
        _artifact_text(rsi={"kind": "indicator", "fn": "RSX", "inputs": ["close"]})
    )
    assert any("nodes.rsi.fn" in m and "RSX" in m for m in msgs)
    msgs = _graph_problems(
        _artifact_text(
            rsi={"kind": "indicator", "fn": "RSI", "inputs": ["close"], "params": {"period": 0}}
        )
    )
    assert any("nodes.rsi.fn" in m and "period" in m for m in msgs)


def test_multi_output_indicator_needs_output_choice() -> None:
    msgs = _graph_problems(
        _artifact_text(rsi={"kind": "indicator", "fn": "MACD", "inputs": ["close"]})
    )
    assert any("several outputs" in m for m in msgs)


def test_rule_reference_checked() -> None:
    data = yaml.safe_load(_artifact_text())
    data["entry"]["when"] = "rsi"  # float where bool needed
    msgs = _graph_problems(yaml.safe_dump(data))
    assert any("entry.when" in m and "type mismatch" in m for m in msgs)
