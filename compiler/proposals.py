"""One-shot trade proposals (side, % risk, entry, SL, TP ladder, horizon, confidence, invalid_if,
rationale) compiled into a one-shot artifact.

The artifact's `one_shot` block carries `created_at` (the proposal's own `created_at`, else the
caller's clock) and `expires_at = created_at + horizon` in int ns UTC, with `max_entries: 1`:
the runtime takes no entry from `expires_at` on. The horizon also bounds the holding time
(`exit.time_exit`). invalid_if levels block the entry on any bar where they hold (no latch).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from artifacts.graph import check
from artifacts.schema import Artifact, Duration, OneShot
from compiler.errors import CompilerError
from feeds.schema import timeframe_to_ns

_UNIT_NS = {
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}


class ProposalError(CompilerError):
    """A proposal that cannot become an artifact (direction, ladder, missing fields)."""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    price: float = Field(gt=0)
    size_pct: float = Field(gt=0, le=100)


class InvalidIf(BaseModel):
    """The idea is void while the close is beyond `price` (op '<': below it, '>': above it)."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["<", ">"]
    price: float = Field(gt=0)


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    timeframe: str = "1h"
    side: Literal["long", "short"]
    risk_pct: float = Field(gt=0, le=5, description="equity % lost if the stop is hit")
    entry: float = Field(gt=0)
    stop_loss: float = Field(gt=0)
    take_profit: list[Target] = Field(min_length=1)
    horizon: str = Field(description="how long the idea lives, e.g. '24h', '3d', '12 bars'")
    confidence: float = Field(ge=0, le=1)
    invalid_if: list[InvalidIf] = Field(default_factory=list)
    rationale: str = Field(min_length=1)
    created_at: int | str | None = Field(
        default=None, description="when the idea was made: int ns UTC or ISO 8601 with a zone"
    )

    @model_validator(mode="after")
    def _direction(self) -> Proposal:
        long = self.side == "long"
        if long and not self.stop_loss < self.entry:
            raise ValueError(
                f"a long needs stop_loss < entry, got {self.stop_loss:g} >= {self.entry:g}"
            )
        if not long and not self.stop_loss > self.entry:
            raise ValueError(
                f"a short needs stop_loss > entry, got {self.stop_loss:g} <= {self.entry:g}"
            )
        for i, t in enumerate(self.take_profit):
            if (long and t.price <= self.entry) or (not long and t.price >= self.entry):
                raise ValueError(
                    f"take_profit[{i}] at {t.price:g} is on the wrong side of entry {self.entry:g} for a {self.side}"
                )
        total = sum(t.size_pct for t in self.take_profit)
        if total > 100 + 1e-9:
            raise ValueError(f"take_profit size_pct adds up to {total:g} > 100")
        Duration.model_validate(self.horizon)
        return self


def parse_proposal(data: dict[str, Any]) -> Proposal:
    try:
        return Proposal.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ProposalError(f"invalid proposal: {problems}") from None


def horizon_ns(horizon: str, timeframe: str) -> int:
    """The horizon as nanoseconds (bars count as whole bars of `timeframe`)."""
    d = Duration.model_validate(horizon)
    if d.unit == "bars":
        return d.count * timeframe_to_ns(timeframe)
    return d.count * _UNIT_NS[d.unit]


def _created_ns(value: int | str) -> int:
    """created_at as int ns UTC; an ISO string must name its zone (no guessing of local time)."""
    if isinstance(value, int):
        return value
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ProposalError(
            f"created_at: {value!r} is not ISO 8601; write e.g. 2026-01-02T03:04:05Z"
        ) from None
    if dt.tzinfo is None:
        raise ProposalError(f"created_at: {value!r} has no time zone; add one, e.g. a trailing Z")
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1_000


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def proposal_to_artifact(p: Proposal, *, now_ns: int | None = None, venue: str = "sim") -> Artifact:
    """A one-shot artifact: enter on a touch of the entry price unless invalidated or expired.

    `created_at` is the proposal's own, else `now_ns` (the caller's clock: the compiler never
    reads one); the expiry is `created_at + horizon`.
    """
    raw = p.created_at if p.created_at is not None else now_ns
    if raw is None:
        raise ProposalError(
            "the proposal has no created_at and no clock was given: set created_at "
            "(e.g. 2026-01-02T03:04:05Z) so the one-shot artifact can expire"
        )
    created = _created_ns(raw)
    try:
        one_shot = OneShot(
            created_at=created,
            expires_at=created + horizon_ns(p.horizon, p.timeframe),
            max_entries=1,
        )
    except ValidationError as exc:
        raise ProposalError(
            f"invalid proposal: {exc.errors(include_url=False)[0]['msg']}"
        ) from None
    risk = abs(p.entry - p.stop_loss)
    nodes: dict[str, Any] = {
        "entry_touch": {
            "kind": "drawing_level",
            "price": p.entry,
            "tolerance_bps": 10.0,
            "source": "proposal",
        }
    }
    when = "entry_touch"
    if p.invalid_if:
        inv = []
        for k, cond in enumerate(p.invalid_if):
            nodes[f"invalid_{k}"] = {
                "kind": "drawing_level",
                "price": cond.price,
                "tolerance_bps": 0.0,
                "mode": "below" if cond.op == "<" else "above",
                "source": "proposal",
            }
            inv.append(f"invalid_{k}")
        nodes["invalidated"] = {"kind": "any", "inputs": inv}
        nodes["still_valid"] = {"kind": "not", "input": "invalidated"}
        nodes["entry_ok"] = {"kind": "all", "inputs": ["entry_touch", "still_valid"]}
        when = "entry_ok"
    slug = re.sub(r"[^a-z0-9]+", "-", p.symbol.lower()).strip("-")
    data = {
        "schema": "stratagem/v1",
        "name": f"oneshot-{slug}-{p.side}",
        "version": 1,
        "description": (
            f"One-shot {p.side} {p.symbol} @ {p.entry:g}, SL {p.stop_loss:g}, expires {_iso(one_shot.expires_at)} "
            f"({p.horizon} after {_iso(created)}) "
            f"(confidence {p.confidence:.2f}). {p.rationale}"
        ),
        "instrument": {"venue": venue, "symbol": p.symbol, "timeframe": p.timeframe},
        "nodes": nodes,
        "entry": {"when": when, "side": p.side, "order": {"type": "market"}},
        "exit": {
            "stop_loss": {"pct": round(risk / p.entry * 100, 10)},
            "take_profit": [
                {"r": round(abs(t.price - p.entry) / risk, 10), "size_pct": t.size_pct}
                for t in p.take_profit
            ],
            "time_exit": p.horizon,
        },
        "risk": {"risk_per_trade_pct": p.risk_pct, "max_consecutive_losses": 1},
        "one_shot": one_shot.model_dump(),
        "provenance": {
            "compiler": "stratagem.compiler.proposal/1",
            "created": _iso(created),
            "notes": p.rationale,
            "base_url_class": "none",
        },
    }
    try:
        artifact = Artifact.model_validate(data)
    except ValidationError as exc:
        raise ProposalError(
            f"proposal gives an invalid artifact: {exc.errors(include_url=False)[0]['msg']}"
        ) from None
    check(artifact, "proposal")
    return artifact
