"""Read, write and hash artifacts: YAML with line-accurate errors, canonical form, content hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from artifacts.errors import ArtifactSchemaError, ArtifactSyntaxError, Problem
from artifacts.schema import NODE_KINDS, SCHEMA_VERSION, Artifact

Loc = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(
    loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first at line {seen[key]}); remove one of them",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_index(node: yaml.Node, prefix: Loc = ()) -> dict[Loc, int]:
    """Map every key path in the YAML document to its 1-based line number."""
    index: dict[Loc, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (
                key_node.value
                if isinstance(key_node, yaml.ScalarNode)
                else str(key_node.start_mark)
            )
            index[(*prefix, key)] = key_node.start_mark.line + 1
            for loc, line in _line_index(value_node, (*prefix, key)).items():
                index.setdefault(loc, line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, (*prefix, i)))
    return index


def _lookup_line(index: Mapping[Loc, int], loc: Sequence[str | int]) -> int | None:
    """Best line for a pydantic error location; pydantic inserts union tags, so skip unknown parts."""
    path: list[str | int] = []
    best = index.get(())
    for part in loc:
        candidate = (*path, part)
        if candidate in index:
            path.append(part)
            best = index[candidate]
    return best


def _is_union_tag(part: str | int) -> bool:
    """pydantic puts the chosen union member's tag in error locations; users never wrote it."""
    return isinstance(part, str) and (
        part in _UNION_TAGS or part.startswith(("function-", "tagged-union["))
    )


def _field_name(loc: Sequence[str | int], index: Mapping[Loc, int]) -> str:
    """Dotted field path as the user wrote it, e.g. `nodes.rsi.params.period`, `exit.take_profit[1].r`."""
    out = ""
    path: list[str | int] = []
    for part in loc:
        candidate = (*path, part)
        if candidate in index:
            path.append(part)
        elif _is_union_tag(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_TAGS = frozenset({*NODE_KINDS, "str", "float", "int", "bool", "Condition", "PricePoint"})


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = f"{exc.problem or 'invalid YAML'}"
        if exc.context:
            msg = f"{exc.context}: {msg}"
        raise ArtifactSyntaxError(source, [Problem("", f"invalid YAML: {msg}", line)]) from None
    except yaml.YAMLError as exc:
        raise ArtifactSyntaxError(source, [Problem("", f"invalid YAML: {exc}")]) from None
    if node is None or not isinstance(data, dict):
        raise ArtifactSyntaxError(
            source,
            [
                Problem(
                    "",
                    f"an artifact must be a YAML mapping starting with 'schema: {SCHEMA_VERSION}'",
                    1,
                )
            ],
        )
    return data, _line_index(node)


def _message(err: Any, loc: Loc) -> str:
    """A user-facing message for one pydantic error: what is wrong and how to fix it."""
    kind = err["type"]
    ctx = err.get("ctx", {})
    if kind == "union_tag_invalid" and ctx.get("discriminator") == "'kind'":
        return f"unknown node kind {ctx.get('tag')!r}; known kinds: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing 'kind' (e.g. kind: indicator)"
    if kind == "extra_forbidden":
        return (
            f"unknown field {loc[-1]!r}: remove it or check the spelling (see `stratagem schema`)"
        )
    if kind == "literal_error" and loc == ("schema",):
        return (
            f"unsupported schema {err.get('input')!r}: this build reads {SCHEMA_VERSION!r} "
            "(older versions are migrated by `stratagem migrate`)"
        )
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "missing":
        return "required field is missing"
    return f"{err['msg']}, got {err['input']!r}" if "input" in err else str(err["msg"])


def _schema_problems(exc: ValidationError, index: Mapping[Loc, int]) -> list[Problem]:
    """One problem per field: union members that all failed are merged into one message."""
    merged: dict[str, Problem] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field = _field_name(loc, index)
        msg = _message(err, loc)
        if field in merged:
            prev = merged[field]
            if msg not in prev.message:
                merged[field] = Problem(field, f"{prev.message}; or {msg}", prev.line)
            continue
        merged[field] = Problem(field, msg, _lookup_line(index, loc))
    return list(merged.values())


def loads_with_lines(text: str, source: str = "<string>") -> tuple[Artifact, dict[Loc, int]]:
    """Parse and validate YAML text; also return the line of every key (for later graph errors)."""
    data, index = _parse_yaml(text, source)
    try:
        return Artifact.model_validate(data), index
    except ValidationError as exc:
        raise ArtifactSchemaError(source, _schema_problems(exc, index)) from None


def loads(text: str, source: str = "<string>") -> Artifact:
    """Parse and validate artifact YAML text (schema only; `artifacts.graph.check` does the DAG)."""
    return loads_with_lines(text, source)[0]


def load(path: str | Path) -> Artifact:
    """Read and validate an artifact file. Errors name the file, the line and the field."""
    return load_with_lines(path)[0]


def load_with_lines(path: str | Path) -> tuple[Artifact, dict[Loc, int]]:
    """Read and validate an artifact file, keeping the line index for graph errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactSyntaxError(str(p), [Problem("", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ArtifactSyntaxError(
            str(p), [Problem("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except IsADirectoryError:
        raise ArtifactSyntaxError(
            str(p), [Problem("", "is a directory, not an artifact file")]
        ) from None
    return loads_with_lines(text, str(p))


def from_data(data: Mapping[str, Any], source: str = "<data>") -> Artifact:
    """Validate plain artifact data (what `to_data` returns) with the messages `loads` gives.

    No YAML round trip: a sweep builds one artifact per combination, and PyYAML's pure-Python
    parser cost more than the fast-path backtest itself. Fields have no lines here.
    """
    try:
        return Artifact.model_validate(data)
    except ValidationError as exc:
        raise ArtifactSchemaError(source, _schema_problems(exc, {})) from None


def to_data(artifact: Artifact) -> dict[str, Any]:
    """The artifact as plain JSON-compatible data, every default made explicit (canonical)."""
    return artifact.model_dump(mode="json", by_alias=True, exclude_none=True)


def dumps(artifact: Artifact) -> str:
    """Canonical YAML: field order of the schema, defaults explicit, stable across runs."""
    return yaml.safe_dump(to_data(artifact), sort_keys=False, allow_unicode=True, width=100)


def dump(artifact: Artifact, path: str | Path) -> None:
    Path(path).write_text(dumps(artifact), encoding="utf-8")


def content_hash(artifact: Artifact) -> str:
    """sha256 over the canonical JSON of everything that changes behaviour (not provenance).

    Two artifacts with the same hash trade identically: key order, comments and spelling out a
    default do not change it.
    """
    data = to_data(artifact)
    data.pop("provenance", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def json_schema() -> dict[str, Any]:
    """JSON Schema of `stratagem/v1` (for editors, LLM structured output and docs)."""
    schema = Artifact.model_json_schema(by_alias=True)
    schema["$id"] = "https://stratagem.dev/schema/stratagem-v1.json"
    schema["title"] = "stratagem artifact (stratagem/v1)"
    return schema
