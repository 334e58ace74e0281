"""Artifact contract: YAML <-> model <-> hash round trips and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from artifacts import io
from artifacts.errors import ArtifactSchemaError, ArtifactSyntaxError
from artifacts.schema import Artifact

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))


RSI_TEXT = (Path(__file__).resolve().parents[2] / "examples" / "rsi-reversion.yaml").read_text()


@pytest.fixture
def rsi_text() -> str:
    return RSI_TEXT


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip_yaml_model_hash(path: Path) -> None:
    artifact = io.load(path)
    text = io.dumps(artifact)
    again = io.loads(text)
    assert again == artifact
    assert io.content_hash(again) == io.content_hash(artifact)
    assert io.dumps(again) == text  # canonical form is a fixed point


def test_hash_ignores_key_order_comments_and_explicit_defaults(rsi_text: str) -> None:
    base = io.loads(rsi_text)
    data = yaml.safe_load(rsi_text)
    shuffled = dict(reversed(list(data.items())))
    shuffled["exit"] = dict(reversed(list(shuffled["exit"].items())))
    shuffled["instrument"]["kind"] = "perp"  # explicit, same as given
    shuffled["risk"]["cooldown_bars"] = 0  # a default spelled out
    text = "# a comment\n" + yaml.safe_dump(shuffled, sort_keys=False)
    assert io.content_hash(io.loads(text)) == io.content_hash(base)


def test_hash_ignores_provenance_but_not_behaviour(rsi_text: str) -> None:
    base = io.loads(rsi_text)
    other_prov = base.model_copy(
        update={"provenance": base.provenance.model_copy(update={"model": "x"})}
    )
    assert io.content_hash(other_prov) == io.content_hash(base)
    changed = io.loads(rsi_text.replace("value: 30", "value: 25"))
    assert io.content_hash(changed) != io.content_hash(base)


@given(
    period=st.integers(2, 500),
    value=st.floats(1, 99, allow_nan=False),
    version=st.integers(1, 10**6),
)
def test_round_trip_property(period: int, value: float, version: int) -> None:
    data = yaml.safe_load(RSI_TEXT)
    data["nodes"]["rsi"]["params"]["period"] = period
    data["nodes"]["was_oversold"]["value"] = value
    data["version"] = version
    a = io.loads(yaml.safe_dump(data))
    b = io.loads(io.dumps(a))
    assert a == b and io.content_hash(a) == io.content_hash(b)
    assert b.nodes["was_oversold"].value == value  # type: ignore[union-attr]


def _problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises((ArtifactSchemaError, ArtifactSyntaxError)) as info:
        io.loads(text, "bad.yaml")
    return [(p.field, p.line, p.message) for p in info.value.problems]


def test_wrong_param_type_names_field_and_line(rsi_text: str) -> None:
    [(field, line, msg)] = _problems(
        rsi_text.replace("params: {period: 14}}", "params: {period: fourteen}}")
    )
    assert field == "nodes.rsi.params.period"
    assert (
        line
        == rsi_text.splitlines().index(next(x for x in rsi_text.splitlines() if "fn: RSI" in x)) + 1
    )
    assert "fourteen" in msg


def test_unknown_node_kind_lists_known_kinds(rsi_text: str) -> None:
    [(field, _, msg)] = _problems(rsi_text.replace("kind: all", "kind: every"))
    assert field == "nodes.entry_ok"
    assert "unknown node kind 'every'" in msg and "'all'" in msg


def test_unknown_field_is_an_error_not_ignored(rsi_text: str) -> None:
    [(field, _, msg)] = _problems(
        rsi_text.replace("{r: 3.0, size_pct: 50}", "{r: 3.0, size_pct: 50, szie: 1}")
    )
    assert field == "exit.take_profit[1].szie"
    assert "unknown field" in msg


def test_malformed_yaml_names_the_line() -> None:
    [(_, line, msg)] = _problems("schema: stratagem/v1\nnodes: [a,\n  b: c\n")
    assert line is not None and line >= 2
    assert msg.startswith("invalid YAML")


def test_duplicate_keys_are_refused() -> None:
    [(_, line, msg)] = _problems("schema: stratagem/v1\nname: a\nname: b\n")
    assert line == 3 and "duplicate key 'name'" in msg


def test_not_a_mapping() -> None:
    [(_, _, msg)] = _problems("- just\n- a list\n")
    assert "must be a YAML mapping" in msg


def test_unsupported_schema_version_says_how_to_migrate(rsi_text: str) -> None:
    [(field, line, msg)] = _problems(
        rsi_text.replace("schema: stratagem/v1", "schema: stratagem/v9")
    )
    assert field == "schema" and line is not None and "stratagem migrate" in msg


def test_stop_loss_needs_exactly_one_kind(rsi_text: str) -> None:
    [(field, _, msg)] = _problems(
        rsi_text.replace("{atr_mult: 2.0, atr_period: 14}", "{atr_mult: 2.0, pct: 2}")
    )
    assert field == "exit.stop_loss" and "exactly one" in msg


def test_take_profit_sizes_cannot_exceed_100(rsi_text: str) -> None:
    [(field, _, msg)] = _problems(
        rsi_text.replace("{r: 3.0, size_pct: 50}", "{r: 3.0, size_pct: 60}")
    )
    assert field == "exit" and "110" in msg


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactSyntaxError, match="file not found"):
        io.load(tmp_path / "nope.yaml")
    with pytest.raises(ArtifactSyntaxError, match="directory"):
        io.load(tmp_path)


def test_json_schema_validates_examples() -> None:
    schema = io.json_schema()
    assert schema["title"].startswith("stratagem artifact")
    assert "nodes" in schema["properties"] and "schema" in schema["properties"]
    json.dumps(schema)  # serialisable
    # every example validates through the same models the schema was made from
    for path in EXAMPLES:
        assert isinstance(io.load(path), Artifact)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_from_data_equals_the_yaml_round_trip(path: Path) -> None:
    artifact = io.load(path)
    data = io.to_data(artifact)
    assert io.from_data(data) == io.loads(io.dumps(artifact)) == artifact


def test_from_data_names_the_field_like_loads(rsi_text: str) -> None:
    data = yaml.safe_load(rsi_text)
    data["nodes"]["rsi"]["params"]["period"] = "fourteen"
    with pytest.raises(ArtifactSchemaError) as exc:
        io.from_data(data, "<sweep>")
    [problem] = exc.value.problems
    assert problem.field == "nodes.rsi.params.period" and "fourteen" in problem.message
    assert problem.line is None and "<sweep>" in str(exc.value)
