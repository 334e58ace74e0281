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
from stratagem.service.health import health_alerts, live_run_ids, read_health
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

#: What the answer says when no runner acknowledged a control request in time.
NOT_ACKNOWLEDGED = (
    "recorded, not yet acknowledged: no service runner answered on {endpoint} within {timeout:g} s, "
    "so nothing was cancelled, paused or flattened; the request was dropped, not queued (start "
    "`stratagem service run` and repeat it, or act at the venue if you must stop now)"
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
        self._seen: dict[str, tuple[int, bool]] = {}  # strategy -> (snapshots, live) imported
        self._raised = {  # health alert ids already journaled (one alert per episode)
            str(r["alert_id"]) for r in self.journal.records() if r["kind"] == "service_alert"
        }
        self._outcomes: dict[str, dict[str, Any]] = {}  # approval id -> step -> its record
        self._outcomes_size = -1  # journal size when `_outcomes` was read

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
        """The approval row, with `outcome` (promotion / hot-swap after an approval) once known."""
        rows = self.query("SELECT * FROM approvals WHERE approval_id = ?", (approval_id,))
        if not rows:
            raise NotFoundError(f"no approval {approval_id!r}; GET /api/v1/approvals lists them")
        return self.with_outcome(rows[0])

    def with_outcome(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row` plus `outcome`: {step: its latest journaled result} or None (nothing followed)."""
        return {**row, "outcome": self.approval_outcomes().get(str(row["approval_id"]))}

    def approval_outcomes(self) -> dict[str, dict[str, Any]]:
        """approval id -> {"promote": {...}, "swap": {...}} from the journal's `approval_step`
        records (the journal is shared by every process; re-read only when it grew)."""
        with self.lock:
            size = self.journal.path.stat().st_size
            if size != self._outcomes_size:
                outcomes: dict[str, dict[str, Any]] = {}
                for r in self.journal.records():
                    if r["kind"] == "approval_step":
                        step = {k: v for k, v in r.items() if k not in ("prev", "kind")}
                        outcomes.setdefault(str(r["approval_id"]), {})[str(r["step"])] = step
                self._outcomes, self._outcomes_size = outcomes, size
            return self._outcomes

    def record_approval_step(
        self, approval_id: str, step: str, status: str, detail: str, ok: bool, **fields: Any
    ) -> dict[str, Any]:
        """Journal what one step after an approval did (promote, swap) and show it: the
        approval's `outcome`, an alert on the dashboard (a warning when the step did not do
        what was asked), a push to live views. Returns the approval row with its outcome."""
        name = self.approval(approval_id)["name"]
        self._record(
            "approval_step", approval_id=approval_id, step=step, status=status,
            detail=detail, ok=ok, **fields,
        )  # fmt: skip
        alert = {
            "alert_id": f"approval:{approval_id}:{step}",
            "alert_kind": "approval",
            "severity": "info" if ok else "warning",
            "message": f"{name} review {approval_id}: {step} {status}: {detail}"[:500],
        }
        with self.lock:
            self._raised.add(alert["alert_id"])
        rec = self._record("service_alert", **alert)
        self.bus.publish(
            "alert", {**alert, "kind": "approval", "run_id": "service", "ts_ns": rec["ts_ns"]}
        )
        row = self.approval(approval_id)
        self.bus.publish("approval", row)
        return row

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
        action: Literal["kill", "pause", "resume", "swap"],
        by: str,
        scope: str,
        flatten: bool,
        reason: str,
        artifact: str = "",
    ) -> dict[str, Any]:
        """Journal a kill / pause / resume / swap request, forward it to the runner, journal its
        answer. `enforced` is true only when the runner says every targeted session applied it."""
        from stratagem.service.control import ControlRequest, send_request

        fields: dict[str, Any] = {"artifact": artifact} if artifact else {}
        rec = self._record(
            "control_requested", action=action, by=by, scope=scope,
            flatten=flatten, reason=reason, **fields,
        )  # fmt: skip
        rs = self.settings.runner
        endpoint = rs.control()
        request = ControlRequest(
            request_id=int(rec["n"]), action=action, scope=scope, flatten=flatten,
            reason=reason, artifact=artifact, by=by,
        )  # fmt: skip
        reply = send_request(endpoint, request, rs.control_timeout_s)
        out: dict[str, Any] = {
            "recorded": True,
            "request_id": rec["n"],
            "action": action,
            "scope": scope,
            "ts_ns": rec["ts_ns"],
        }
        if reply is None:
            note = NOT_ACKNOWLEDGED.format(endpoint=endpoint, timeout=rs.control_timeout_s)
            out.update(acknowledged=False, enforced=False, note=note)
            log.warning("%s requested by %s (scope %s): %s", action, by, scope, note)
        else:
            state = "enforced" if reply.ok else ("partial" if reply.applied else "refused")
            detail = reply.detail or "; ".join(f"{k}: {v}" for k, v in sorted(reply.errors.items()))
            self._record(
                "control_acknowledged", request_n=rec["n"], state=state,
                applied=reply.applied, errors=reply.errors, detail=detail,
            )  # fmt: skip
            out.update(
                acknowledged=True,
                enforced=reply.ok,
                applied=reply.applied,
                errors=reply.errors,
                note=f"{action} {state} by the service runner" + (f" ({detail})" if detail else ""),
            )
            log.warning("%s requested by %s (scope %s): %s", action, by, scope, out["note"])
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

    def import_run(self, run_dir: Path, *, live: bool = False) -> list[dict[str, Any]]:
        """(Re)import one run directory and push the alerts it produced that were not known yet."""
        with self.lock:
            known = {r["alert_id"] for r in self.query("SELECT alert_id FROM alerts")}
            problem = import_run(self.conn, run_dir, self.settings.alerts, live=live)
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
            health = self.runner_health()
            report = rebuild(
                self.conn,
                discover_runs(runs_dir or self.settings.runs_dir),
                journal_records=self.journal.records(),
                thresholds=self.settings.alerts,
                llm_call_logs=self.settings.llm_call_logs,
                live_runs=live_run_ids(health) if health else (),
            )
        out = {
            "imported": list(report.imported),
            "quarantined": report.quarantined,
            "journal_records": report.journal_records,
        }
        self.bus.publish("run", {"rebuilt": len(report.imported)})
        return out

    # -- the live service runner ---------------------------------------------------------------
    def runner_health(self) -> dict[str, Any] | None:
        """The runner's health.json with its age, or None when no runner wrote one."""
        return read_health(self.settings.runner.health_path())

    def refresh_live(self) -> list[str]:
        """Import the runner's runs whose snapshot moved on (live while running, strict once the
        session ended) and raise health alerts; returns the run ids imported."""
        health = self.runner_health()
        if health is None:
            return []
        imported: list[str] = []
        for name, st in sorted(health.get("strategies", {}).items()):
            run_dir = Path(st["run_dir"])
            live = st["run_id"] in live_run_ids(health)
            key = (st.get("snapshots", 0), live)
            if self._seen.get(name) == key or not (run_dir / "strategy.log.jsonl").is_file():
                continue
            self._seen[name] = key
            self.import_run(run_dir, live=live)
            imported.append(st["run_id"])
        for alert in health_alerts(health):
            if alert["alert_id"] in self._raised:
                continue
            self._raised.add(alert["alert_id"])
            self._record("service_alert", **alert)
            self.bus.publish("alert", {**alert, "kind": alert["alert_kind"], "ts_ns": self.clock()})
        return imported

    def start_live_refresh(self, stop: threading.Event) -> threading.Thread | None:
        """Call `refresh_live` every `live_refresh_s` seconds in a thread until `stop` is set."""
        every = self.settings.live_refresh_s
        if every <= 0:
            return None

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.refresh_live()
                except Exception:  # a view must not die on one bad refresh; logged with trace
                    log.exception("live refresh failed")

        t = threading.Thread(target=loop, name="live-refresh", daemon=True)
        t.start()
        return t
