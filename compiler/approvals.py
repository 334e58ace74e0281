"""Human approval of a reviewed revision: one store shared by the CLI, the HTTP API and the bot.

`ApprovalStore` is what `compiler.review` needs: ask for a decision, read it, record one.
`ServiceApprovals` keeps approvals where the service keeps them (its hash-chained journal folded
into the read model's `approvals` table through `ServiceState`), so a revision approved on the
dashboard, by Telegram `/approve <id>` or by `stratagem review --approve <id>` is the same
record, and `stratagem review --promote <id>` finds it whoever decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from compiler.errors import CompilerError

if TYPE_CHECKING:
    from stratagem.service.state import ServiceState

ApprovalStatus = Literal["pending", "approved", "rejected"]


class ApprovalError(CompilerError):
    """An approval that does not exist, was already decided, or cannot be stored."""


@dataclass(frozen=True)
class Approval:
    approval_id: str
    name: str
    version: int | None
    status: ApprovalStatus
    decided_by: str | None = None
    note: str = ""


class ApprovalStore(Protocol):
    """Where approval requests and decisions live (persistent: they outlive the process)."""

    def request(
        self, name: str, version: int, summary: str, payload: dict[str, Any]
    ) -> Approval: ...

    def get(self, approval_id: str) -> Approval: ...

    def decide(
        self,
        approval_id: str,
        status: Literal["approved", "rejected"],
        by: str,
        note: str = "",
    ) -> Approval: ...


def _approval(row: dict[str, Any]) -> Approval:
    status = str(row["status"])
    if status not in ("pending", "approved", "rejected"):
        raise ApprovalError(f"approval {row['approval_id']!r} has unknown status {status!r}")
    return Approval(
        approval_id=str(row["approval_id"]),
        name=str(row["name"]),
        version=None if row.get("version") is None else int(row["version"]),
        status=status,  # type: ignore[arg-type]
        decided_by=row.get("decided_by"),
        note=str(row.get("note") or ""),
    )


class ServiceApprovals:
    """The service's approvals (journal + SQLite read model) behind the `ApprovalStore` protocol."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @classmethod
    def open(cls, config: str | Path | None = None) -> ServiceApprovals:
        """The store of the service configured by `config` (TOML) and `STRATAGEM_*` variables."""
        from stratagem.service.settings import load_settings
        from stratagem.service.state import ServiceState

        return cls(ServiceState(load_settings(Path(config) if config else None)))

    def close(self) -> None:
        self.state.conn.close()

    def request(self, name: str, version: int, summary: str, payload: dict[str, Any]) -> Approval:
        # the payload must be JSON (it is journaled); round-trip it to fail here, not in the service
        data = json.loads(json.dumps(payload, sort_keys=True, default=str))
        return _approval(self.state.request_approval(name, version, summary, data))

    def get(self, approval_id: str) -> Approval:
        from stratagem.service.state import NotFoundError

        try:
            return _approval(self.state.approval(approval_id))
        except NotFoundError as exc:
            raise ApprovalError(str(exc)) from None

    def decide(
        self,
        approval_id: str,
        status: Literal["approved", "rejected"],
        by: str,
        note: str = "",
    ) -> Approval:
        from stratagem.service.state import ConflictError, NotFoundError

        try:
            return _approval(self.state.decide(approval_id, status, by, note))
        except (NotFoundError, ConflictError) as exc:
            raise ApprovalError(str(exc)) from None
