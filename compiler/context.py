"""What the model sees: sections ranked by priority and trimmed to a token budget, reproducibly.

Order of keeping (lowest number first): the request, the current artifact, its last backtest,
the drawings, the market summary, then the conversation (newest turns first). A section that
does not fit is dropped whole, except the conversation, which loses its oldest turns first. The
same inputs always give the same text; what was dropped is listed so the model (and the trace)
knows it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from artifacts.io import dumps
from artifacts.schema import Artifact
from compiler.llm import estimate_tokens
from compiler.tradingview import ParsedLayout


@dataclass(frozen=True)
class Turn:
    """One conversation message: `role` is "user" or "assistant"."""

    role: str
    text: str


@dataclass(frozen=True)
class Section:
    name: str
    priority: int
    text: str


@dataclass
class Context:
    text: str
    kept: list[str]
    dropped: list[str]
    tokens: int
    conversation_turns_kept: int = 0
    sections: list[Section] = field(default_factory=list)


def drawings_summary(layout: ParsedLayout | None) -> str:
    """One line per drawing, indexed as annotate_drawing expects."""
    if layout is None or not layout.drawings:
        return ""
    lines = []
    for d in layout.drawings:
        pts = ", ".join(f"({p.time_s}, {p.price:g})" for p in d.points)
        extra = ""
        if d.entry is not None:
            extra = f" entry {d.entry:g} stop {d.stop:g} target {d.target:g}"
        if d.levels:
            extra = " levels " + ", ".join(f"{c:g}@{p:g}" for c, p in d.levels)
        label = f' "{d.text}"' if d.text else ""
        lines.append(f"[{d.index}] {d.tool}{label} points {pts}{extra}")
    lines.extend(f"warning: {w}" for w in layout.warnings)
    return "\n".join(lines)


def build_context(
    *,
    request: str,
    budget_tokens: int,
    conversation: Sequence[Turn] = (),
    drawings: ParsedLayout | None = None,
    market_summary: dict[str, Any] | None = None,
    current: Artifact | None = None,
    last_backtest: dict[str, Any] | None = None,
) -> Context:
    """Assemble and trim the context; the request itself is never dropped (it may exceed the budget)."""
    sections = [Section("request", 0, f"## Request\n{request}")]
    if current is not None:
        sections.append(Section("current_artifact", 1, f"## Current artifact\n{dumps(current)}"))
    if last_backtest:
        sections.append(
            Section(
                "last_backtest", 2, "## Last backtest\n" + json.dumps(last_backtest, sort_keys=True)
            )
        )
    summary = drawings_summary(drawings)
    if summary:
        sections.append(Section("drawings", 3, f"## Drawings\n{summary}"))
    if market_summary:
        sections.append(
            Section("market", 4, "## Market summary\n" + json.dumps(market_summary, sort_keys=True))
        )
    used = 0
    kept: list[Section] = []
    dropped: list[str] = []
    for s in sorted(sections, key=lambda s: s.priority):
        cost = estimate_tokens(s.text)
        if s.priority == 0 or used + cost <= budget_tokens:
            kept.append(s)
            used += cost
        else:
            dropped.append(s.name)
    turns_kept: list[Turn] = []
    for t in reversed(conversation):
        line = f"{t.role}: {t.text}"
        cost = estimate_tokens(line) + 1
        if used + cost + 8 > budget_tokens:
            break
        turns_kept.append(t)
        used += cost
    if len(turns_kept) < len(conversation):
        dropped.append(f"conversation ({len(conversation) - len(turns_kept)} oldest turn(s))")
    if turns_kept:
        body = "\n".join(f"{t.role}: {t.text}" for t in reversed(turns_kept))
        kept.append(Section("conversation", 5, f"## Conversation so far\n{body}"))
        used += 8
    ordered = sorted(kept, key=lambda s: (s.priority == 0, s.priority))  # request last
    text = "\n\n".join(s.text for s in ordered)
    if dropped:
        text += "\n\n(omitted to fit the context budget: " + ", ".join(dropped) + ")"
    return Context(
        text=text,
        kept=[s.name for s in ordered],
        dropped=dropped,
        tokens=estimate_tokens(text),
        conversation_turns_kept=len(turns_kept),
        sections=ordered,
    )
