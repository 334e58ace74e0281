"""Errors raised while reading or checking an artifact; each problem names file, line and field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an artifact, located as precisely as we can."""

    field: str  # dotted path, e.g. "nodes.rsi.params.period"; "" for the whole document
    message: str
    line: int | None = None  # 1-based line in the YAML file

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ArtifactError(Exception):
    """Base of every artifact error. `problems` lists each issue; str() renders them all."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render(self.source) for p in self.problems)


class ArtifactSyntaxError(ArtifactError):
    """The file is not readable YAML (or not a mapping)."""


class ArtifactSchemaError(ArtifactError):
    """The YAML does not match the `stratagem/v1` models."""


class ArtifactGraphError(ArtifactError):
    """The signal DAG is wrong: unknown reference, type mismatch, cycle, unknown indicator."""
