"""Approve -> promote -> hot-swap: what approving a reviewed revision does, in one place.

DESIGN's review pipeline ends "... -> human approval -> hot-swap". The API, the Telegram bot and
`stratagem review --approve ID` all call `approve`, which

1. records the decision in the service's approvals (journal + read model), as before;
2. when `[review] on_approve` is `promote` or `promote_and_swap` and the approval is a review
   (its payload names the artifact repository), promotes it with `compiler.review.promote`,
   which still refuses unless schema, backtest and paper passed and the head did not move;
3. with `promote_and_swap`, asks the running service runner (control socket, `status`) which
   sessions run that artifact (by name) and hot-swaps each to the promoted version with an
   acknowledged `swap` request (journaled like `stratagem service swap`).

Each step's result is journaled (`approval_step`) and shown as the approval's `outcome`, as a
dashboard alert and in the bot's reply. A later step never undoes an earlier one (a refused
swap leaves the promotion in place) and a step that did not do what was asked is a warning,
never silent. A reject records the decision and nothing else. This module is part of the
composition root: it imports the compiler lazily (runtime packages never do).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from stratagem.service import ServiceError
from stratagem.service.settings import OnApprove

if TYPE_CHECKING:
    from compiler.versioning import ArtifactRepo
    from stratagem.service.state import ServiceState

log = logging.getLogger("stratagem.service.review_chain")
ON_APPROVE: tuple[str, ...] = get_args(OnApprove)
#: sessions in these states take control requests (the runner refuses the others)
LIVE_STATES = ("running", "starting", "restarting")


@dataclass(frozen=True)
class Promoted:
    """A version `promote` committed: its name, number, content hash and canonical YAML."""

    name: str
    version: int
    artifact_sha: str
    text: str


class ReviewChainError(ServiceError):
    """A step after an approval that could not even be attempted (bad mode, unreadable repo)."""


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(row.get("payload") or "{}")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_review(row: dict[str, Any]) -> bool:
    """True when the approval is a review made by `stratagem review` (it names its repo); other
    approvals (chat proposals, API submissions) are only recorded."""
    payload = _payload(row)
    return bool(payload.get("repo")) and "base_version" in payload


def approve(
    state: ServiceState,
    approval_id: str,
    by: str,
    note: str = "",
    *,
    mode: OnApprove | None = None,
    repo: ArtifactRepo | None = None,
) -> dict[str, Any]:
    """Record the approval, then promote and hot-swap as `mode` (default: the setting) says.

    Returns the approval row with its `outcome` ({"promote": ..., "swap": ...}; None for an
    approval that is not a review). `repo` overrides the repository named in the review's
    payload (the CLI's `--repo`). Raises only what recording the decision raises (unknown id,
    already decided); every later problem is recorded in the outcome instead.
    """
    chosen = mode or state.settings.review.on_approve
    if chosen not in ON_APPROVE:
        raise ReviewChainError(f"on_approve {chosen!r}: expected one of {list(ON_APPROVE)}")
    row = state.decide(approval_id, "approved", by, note)
    if not is_review(row):
        return row
    if chosen == "record":
        return state.record_approval_step(
            approval_id, "promote", "skipped",
            f"on_approve = record: promote with `stratagem review --promote {approval_id}`",
            ok=True, mode=chosen,
        )  # fmt: skip
    version, row = _promote(state, approval_id, row, chosen, repo)
    if chosen == "promote":
        return row
    if version is None:
        return state.record_approval_step(
            approval_id, "swap", "skipped", "nothing was promoted, so nothing to swap in",
            ok=False, mode=chosen,
        )  # fmt: skip
    return swap_to(state, approval_id, version, by, chosen)


def _promote(
    state: ServiceState,
    approval_id: str,
    row: dict[str, Any],
    mode: str,
    repo: ArtifactRepo | None,
) -> tuple[Promoted | None, dict[str, Any]]:
    """Promote the review; returns (the promoted version, or None when refused; the row)."""
    from artifacts.io import dumps
    from compiler.approvals import ServiceApprovals
    from compiler.errors import CompilerError
    from compiler.review import promote
    from compiler.versioning import ArtifactRepo

    payload = _payload(row)
    name = str(row["name"])
    owned = repo is None
    try:
        try:
            r = repo if repo is not None else ArtifactRepo(str(payload["repo"]), create=False)
        except CompilerError as exc:
            raise ReviewChainError(
                f"the review's artifact repository {payload['repo']!r} cannot be opened from "
                f"{Path.cwd()}: {exc}"
            ) from None
        try:
            v = promote(r, ServiceApprovals(state), approval_id)
            # exactly the committed version, whatever the head does next
            text = dumps(r.artifact_at(name, v.commit))
        finally:
            if owned:
                r.close()
    except (CompilerError, ReviewChainError, OSError) as exc:
        out = state.record_approval_step(
            approval_id, "promote", "refused", str(exc), ok=False, mode=mode
        )
        return None, out
    except Exception as exc:  # e.g. git failing: recorded and reported, never lost in a 500
        log.exception("review %s: promotion failed", approval_id)
        out = state.record_approval_step(
            approval_id, "promote", "failed", f"{type(exc).__name__}: {exc}", ok=False, mode=mode
        )
        return None, out
    out = state.record_approval_step(
        approval_id, "promote", "promoted", f"committed {name} v{v.version} ({v.commit[:10]})",
        ok=True, mode=mode, version=v.version, commit=v.commit, artifact_sha=v.artifact_sha,
    )  # fmt: skip
    return Promoted(name, v.version, v.artifact_sha, text), out


def _version_file(state: ServiceState, p: Promoted) -> Path:
    """The promoted version as a file the runner reads, under the runner's state directory."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", p.name)
    out = (state.settings.runner.state_dir / "promoted").resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{safe}-v{p.version}-{p.artifact_sha[:12]}.yaml"
    path.write_text(p.text, encoding="utf-8")
    return path


def sessions_running(state: ServiceState, name: str) -> tuple[str, bool, list[str], str]:
    """Ask the running service runner which sessions trade artifact `name`.

    Returns (status, ok, sessions, detail): status "ready" with the live sessions to swap, or
    "no runner" / "not running" with why (ok False only when a runner looks alive but did not
    answer: that needs a person)."""
    from stratagem.service.control import ControlRequest, send_request

    rs = state.settings.runner
    health = state.runner_health()
    if health is None:
        return "no runner", True, [], f"no service runner ({rs.health_path()} does not exist)"
    if not health.get("runner_alive"):
        why = f"state {health.get('state')!r}, health written {health.get('age_s')} s ago"
        return "no runner", True, [], f"no service runner alive ({why})"
    reply = send_request(
        rs.control(), ControlRequest(request_id=0, action="status"), rs.control_timeout_s
    )
    if reply is None or not reply.ok:
        why = "no answer" if reply is None else f"refused: {reply.detail}"
        detail = (
            f"the service runner did not answer on {rs.control()} within "
            f"{rs.control_timeout_s:g} s ({why}); swap with `stratagem service swap`"
        )
        return "no runner", False, [], detail
    runs = {
        s: (str(h.get("artifact", "")).rsplit(" v", 1)[0], str(h.get("state", "")))
        for s, h in sorted(reply.status.items())
    }
    what = ", ".join(f"{s}: {a} ({st})" for s, (a, st) in runs.items()) or "none"
    live = [s for s, (a, st) in runs.items() if a == name and st in LIVE_STATES]
    if not live:
        return "not running", True, [], f"no running session trades {name} (sessions: {what})"
    return "ready", True, live, what


def swap_to(
    state: ServiceState,
    approval_id: str,
    promoted: Promoted,
    by: str,
    mode: str = "promote_and_swap",
) -> dict[str, Any]:
    """Hot-swap every running session of the promoted artifact to it; record the result."""
    try:
        return _swap(state, approval_id, promoted, by, mode)
    except Exception as exc:  # the promotion stands; the failure is recorded, not lost in a 500
        log.exception("review %s: hot-swap failed", approval_id)
        return state.record_approval_step(
            approval_id, "swap", "failed",
            f"{type(exc).__name__}: {exc}; v{promoted.version} is the head, swap it with "
            "`stratagem service swap`",
            ok=False, mode=mode, enforced=False,
        )  # fmt: skip


def _swap(
    state: ServiceState, approval_id: str, promoted: Promoted, by: str, mode: str
) -> dict[str, Any]:
    name, number = promoted.name, promoted.version
    status, ok, sessions, detail = sessions_running(state, name)
    if status != "ready":
        return state.record_approval_step(
            approval_id, "swap", status, f"{detail}; v{number} is the head for the next start",
            ok=ok, mode=mode, enforced=False,
        )  # fmt: skip
    path = _version_file(state, promoted)
    replies: dict[str, dict[str, Any]] = {}
    for session in sessions:
        out = state.request_control(
            "swap", by, session, False, f"review {approval_id} approved: {name} v{number}",
            artifact=str(path),
        )  # fmt: skip
        replies[session] = {
            "enforced": bool(out.get("enforced")),
            "acknowledged": bool(out.get("acknowledged")),
            "request_id": out["request_id"],
            "note": str(out.get("note", "")),
        }
    enforced = [s for s, r in replies.items() if r["enforced"]]
    if len(enforced) == len(replies):
        status = "enforced"
    elif enforced:
        status = "partial"
    elif not any(r["acknowledged"] for r in replies.values()):
        status = "not acknowledged"
    else:
        status = "refused"
    text = "; ".join(f"{s}: {r['note']}" for s, r in replies.items())
    return state.record_approval_step(
        approval_id, "swap", status, text, ok=status == "enforced", mode=mode,
        enforced=status == "enforced", sessions=sessions, version=number,
        request_ids=[r["request_id"] for r in replies.values()],
    )  # fmt: skip


def describe(row: dict[str, Any]) -> str:
    """One line per step for a chat reply or a terminal: what the approval led to."""
    lines = [f"{row['approval_id']}: {row['status']}"]
    for step in ("promote", "swap"):
        s = (row.get("outcome") or {}).get(step)
        if s:
            lines.append(f"{step}: {s['status']} - {s['detail']}")
    return "\n".join(lines)
