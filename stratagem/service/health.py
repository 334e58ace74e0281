"""Reading the runner's `health.json`: liveness per component, live runs, health alerts.

The runner rewrites the file (atomically) every `interval_s`; a file older than three intervals
means the runner itself is gone. Alerts derived here have ids that name the episode (the order
kernel's restart count, the last bar seen), so one outage gives one alert however often the
service polls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Session states in which a run directory is still being written.
LIVE_STATES = ("starting", "running", "restarting", "stopping")


def read_health(path: Path, now_unix_ns: int | None = None) -> dict[str, Any] | None:
    """The file's content plus `age_s` and `runner_alive`; None if there is no (readable) file."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    now = time.time_ns() if now_unix_ns is None else now_unix_ns
    age = max(0.0, (now - int(data.get("updated_unix_ns", 0))) / 1e9)
    data["age_s"] = round(age, 3)
    fresh = age <= 3 * float(data.get("interval_s", 1.0)) + 1.0
    data["runner_alive"] = fresh and data.get("state") in ("starting", "running", "stopping")
    return data


def live_run_ids(health: dict[str, Any]) -> set[str]:
    """Runs a live runner is still writing (imported leniently, as status 'live')."""
    if not health.get("runner_alive"):
        return set()
    return {
        s["run_id"] for s in health.get("strategies", {}).values() if s.get("state") in LIVE_STATES
    }


def summary(health: dict[str, Any] | None) -> dict[str, Any]:
    """What `GET /health` shows: ok only when the runner and every component it runs are alive."""
    if health is None:
        return {"ok": True, "runner": None}
    kernel = health.get("order_kernel", {})
    strategies = health.get("strategies", {})
    running = health.get("runner_alive", False)
    problems: list[str] = []
    if health.get("state") != "stopped" and not running:
        problems.append(f"runner silent for {health['age_s']:g} s")
    if running and not kernel.get("alive"):
        problems.append("order kernel down")
    stale = float(health.get("stale_after_s", 10.0))
    for name, s in sorted(strategies.items()):
        if s.get("state") == "failed":
            problems.append(f"strategy {name} failed: {s.get('error', '')}")
        elif (
            running
            and s.get("state") == "running"
            and (s.get("last_bar_age_s") or 0) > float(s.get("stale_after_s", stale))
        ):
            problems.append(f"strategy {name}: no bar for {s['last_bar_age_s']:g} s")
    return {"ok": not problems, "problems": problems, "runner": health}


def health_alerts(health: dict[str, Any]) -> list[dict[str, Any]]:
    """Kernel disconnect, stale data, crashed and failed strategies, a silent runner."""
    out: list[dict[str, Any]] = []
    svc = str(health.get("service", "svc"))
    kernel = health.get("order_kernel", {})
    running = health.get("runner_alive", False)
    if health.get("state") in ("starting", "running") and not running:
        out.append(
            _alert(
                f"{svc}:runner_down:{health.get('pid')}",
                svc,
                "kernel_disconnect",
                "critical",
                f"service runner {svc} (pid {health.get('pid')}) silent for "
                f"{health['age_s']:g} s: kernels may be down",
            )
        )
    if running and not kernel.get("alive"):
        out.append(
            _alert(
                f"{svc}:order_kernel:{kernel.get('restarts', 0)}",
                svc,
                "kernel_disconnect",
                "critical",
                f"order kernel (pid {kernel.get('pid')}) is down; the runner "
                "restarts it and it recovers from its logs",
            )
        )
    stale = float(health.get("stale_after_s", 10.0))
    for name, s in sorted(health.get("strategies", {}).items()):
        run_id = str(s.get("run_id", name))
        if s.get("restarts", 0):
            out.append(
                _alert(
                    f"{run_id}:restart:{s['restarts']}",
                    run_id,
                    "strategy_restart",
                    "warning",
                    f"strategy {name} crashed and was restarted ({s['restarts']}x): "
                    f"{s.get('error') or 'recovered'}",
                )
            )
        if s.get("state") == "failed":
            out.append(
                _alert(
                    f"{run_id}:failed",
                    run_id,
                    "strategy_failed",
                    "critical",
                    f"strategy {name} stopped after repeated crashes: {s.get('error', '')}",
                )
            )
        age = s.get("last_bar_age_s")
        limit = float(s.get("stale_after_s", stale))
        if running and s.get("state") == "running" and age is not None and age > limit:
            out.append(
                _alert(
                    f"{run_id}:stale:{s.get('last_bar_ts_ns')}",
                    run_id,
                    "stale_data",
                    "warning",
                    f"strategy {name}: no bar for {age:g} s (last bar {s.get('last_bar_ts_ns')})",
                )
            )
    return out


def _alert(key: str, run_id: str, kind: str, severity: str, message: str) -> dict[str, Any]:
    return {
        "alert_id": f"health:{key}",
        "run_id": run_id,
        "alert_kind": kind,
        "severity": severity,
        "message": message,
    }
