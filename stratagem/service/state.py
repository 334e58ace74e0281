"""The service's shared state: read model connection, journal, event bus, clock.

The API, the dashboard and the Telegram bot all act through this object, so a request made in
one place (approve, kill, webhook) is journaled once, folded into the read model and pushed to
every live view the same way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from feeds.schema import UnstructuredItem
from stratagem.service import ServiceError
from stratagem.service.bus import EventBus
from stratagem.service.journal import Journal
from stratagem.service.readmodel import (
    OPEN_STATUSES,
    apply_journal_record,
    connect,
    discover_runs,
    import_run,
    rebuild,
)
from stratagem.service.settings import ServiceSettings

log = logging.getLogger("stratagem.service")

#: What a kill request does today; shown in the API response, the bot's reply and the docs.
KILL_NOTE = (
    "recorded only: the live service runner that forwards KillSwitch (and pause/resume) to the "
    "kernels is not wired yet, so nothing was cancelled, paused or flattened; act at the venue if "
    "you must stop now"
)


class NotFoundError(ServiceError):
    """An id (run, approval, artifact) that the read model does not know."""


class ConflictError(ServiceError):
    """A request that contradicts the current state (e.g. deciding an approval twice)."""


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(r) for r in cur.fetchall()]


class ServiceState:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        clock: Callable[[], int] = time.time_ns,
        bus: EventBus | None = None,
        conn: sqlite3.Connection | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.bus = bus or EventBus()
        self.conn = conn or connect(settings.db_path)
        self.journal = journal or Journal(settings.journal_path)
        self.lock = threading.RLock()

    # -- reads -----------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.lock:
            return _rows(self.conn.execute(sql, params))

    def run(self, run_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"no run {run_id!r}; GET /api/v1/runs lists the known runs")
        return rows[0]

    def open_orders(self, run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(OPEN_STATUSES))
        where = f"status IN ({marks})" + (" AND run_id = ?" if run_id else "")
        params: tuple[Any, ...] = (*OPEN_STATUSES, run_id) if run_id else OPEN_STATUSES
        return self.query(
            f"SELECT * FROM orders WHERE {where} ORDER BY updated_ts_ns DESC, client_order_id "
            f"LIMIT {int(limit)}",
            params,
        )

    # -- writes (all journaled first) ------------------------------------------------------
    def _record(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            rec = self.journal.append(kind, self.clock(), **fields)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                apply_journal_record(self.conn, rec)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        return rec

    def request_approval(
        self, name: str, version: int | None, summary: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """A proposal (e.g. a nightly-review revision) waiting for a human decision."""
        approval_id = f"{name}-v{version}-{self.journal.count}"
        self._record(
            "approval_requested",
            approval_id=approval_id,
            name=name,
            version=version,
            summary=summary,
            payload=payload,
        )
        row = self.approval(approval_id)
        self.bus.publish("approval", row)
        return row

    def approval(self, approval_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM approvals WHERE approval_id = ?", (approval_id,))
        if not rows:
            raise NotFoundError(f"no approval {approval_id!r}; GET /api/v1/approvals lists them")
        return rows[0]

    def decide(
        self,
        approval_id: str,
        status: Literal["approved", "rejected"],
        by: str,
        note: str = "",
    ) -> dict[str, Any]:
        with self.lock:
            row = self.approval(approval_id)
            if row["status"] != "pending":
                raise ConflictError(
                    f"approval {approval_id!r} was already {row['status']} by {row['decided_by']}"
                )
            self._record(
                "approval_decided", approval_id=approval_id, status=status, by=by, note=note
            )
        row = self.approval(approval_id)
        self.bus.publish("approval", row)
        return row

    def request_control(
        self,
        action: Literal["kill", "pause", "resume"],
        by: str,
        scope: str,
        flatten: bool,
        reason: str,
    ) -> dict[str, Any]:
        """Record a kill / pause / resume request (journaled; not enforced until the runner is wired)."""
        rec = self._record(
            "control_requested", n=self.journal.count, action=action, by=by, scope=scope,
            flatten=flatten, reason=reason,
        )  # fmt: skip
        out = {
            "recorded": True,
            "request_id": rec["n"],
            "action": action,
            "scope": scope,
            "ts_ns": rec["ts_ns"],
            "enforced": False,
            "note": KILL_NOTE,
        }
        log.warning("%s requested by %s (scope %s): %s", action, by, scope, KILL_NOTE)
        self.bus.publish("control", out)
        return out

    def request_kill(self, by: str, scope: str, flatten: bool, reason: str) -> dict[str, Any]:
        return self.request_control("kill", by, scope, flatten, reason)

    def record_webhook(self, item: UnstructuredItem) -> dict[str, Any]:
        """Store a verified TradingView alert as an alert row (the secret is never in `item`)."""
        n = self.journal.count
        symbols = ",".join(item.symbols)
        message = (f"[{symbols}] " if symbols else "") + item.text[:500]
        rec = self._record(
            "webhook_alert",
            alert_id=f"webhook:{n}",
            alert_kind="webhook",
            severity="info",
            message=message,
            source=item.source,
            item_ts_ns=item.ts_ns,
        )
        alert = {
            "alert_id": rec["alert_id"],
            "run_id": "service",
            "ts_ns": rec["ts_ns"],
            "kind": "webhook",
            "severity": "info",
            "message": message,
        }
        self.bus.publish("alert", alert)
        return alert

    def import_run(self, run_dir: Path) -> list[dict[str, Any]]:
        """(Re)import one run directory and push the alerts it produced that were not known yet."""
        with self.lock:
            known = {r["alert_id"] for r in self.query("SELECT alert_id FROM alerts")}
            problem = import_run(self.conn, run_dir, self.settings.alerts)
            fresh = [
                a
                for a in self.query(
                    "SELECT * FROM alerts WHERE run_id = ? ORDER BY ts_ns, alert_id",
                    (run_dir.name,),
                )
                if a["alert_id"] not in known
            ]
        self.bus.publish("run", {"run_id": run_dir.name, "quarantined": problem})
        if problem is not None:
            log.error("run %s quarantined: %s", run_dir.name, problem)
        for a in fresh:
            self.bus.publish("alert", a)
        return fresh

    def rebuild(self, runs_dir: Path | None = None) -> dict[str, Any]:
        """Re-derive the whole read model from run directories and the journal."""
        with self.lock:
            report = rebuild(
                self.conn,
                discover_runs(runs_dir or self.settings.runs_dir),
                journal_records=self.journal.records(),
                thresholds=self.settings.alerts,
            )
        out = {
            "imported": list(report.imported),
            "quarantined": report.quarantined,
            "journal_records": report.journal_records,
        }
        self.bus.publish("run", {"rebuilt": len(report.imported)})
        return out
