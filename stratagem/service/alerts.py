"""Alerts from logs: drawdown past a threshold, risk refusals, stale data, kernel disconnect.

Each rule is a pure function of a run's records, so the read model derives the same alerts on
every rebuild; alert ids are `<run_id>:<kind>:<position>` (deterministic, deduplicating). The
live side calls the same rules on fresh data and pushes new alerts through the `EventBus`.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    run_id: str
    ts_ns: int
    kind: str  # drawdown | risk_refusal | stale_data | kernel_disconnect | webhook
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def drawdown_alerts(
    run_id: str, equity: Sequence[tuple[int, float]], threshold_pct: float
) -> list[Alert]:
    """One alert per drawdown episode deeper than `threshold_pct` (episode ends at a new high)."""
    out: list[Alert] = []
    armed = True
    for i, (ts, dd) in enumerate(equity):
        if armed and dd <= -threshold_pct:
            out.append(
                Alert(
                    f"{run_id}:drawdown:{i}",
                    run_id,
                    ts,
                    "drawdown",
                    "critical",
                    f"drawdown {dd:.2f} % exceeds the {threshold_pct:g} % threshold",
                )
            )
            armed = False
        elif dd >= 0.0:
            armed = True
    return out


def refusal_alerts(run_id: str, refusals: Iterable[tuple[int, int, str, str]]) -> list[Alert]:
    """(log record n, ts_ns, rule, detail) -> one warning each."""
    return [
        Alert(
            f"{run_id}:risk_refusal:{n}", run_id, ts, "risk_refusal", "warning", f"{rule}: {detail}"
        )
        for n, ts, rule, detail in refusals
    ]


def stale_data_alerts(run_id: str, bar_ts: Sequence[int], factor: float) -> list[Alert]:
    """A gap between bars longer than `factor` x the median bar interval means the feed stalled."""
    if len(bar_ts) < 3:
        return []
    gaps = [b - a for a, b in itertools.pairwise(bar_ts)]
    typical = statistics.median(gaps)
    out: list[Alert] = []
    for i, gap in enumerate(gaps):
        if typical > 0 and gap > factor * typical:
            out.append(
                Alert(
                    f"{run_id}:stale_data:{i + 1}",
                    run_id,
                    bar_ts[i + 1],
                    "stale_data",
                    "warning",
                    f"no bar for {gap / 1e9:,.0f} s ({gap / typical:.1f}x the usual interval)",
                )
            )
    return out


def disconnect_alerts(
    run_id: str, heartbeat_ts: Sequence[int], timeout_ns: int, end_ts_ns: int | None = None
) -> list[Alert]:
    """Heartbeat gaps longer than `timeout_ns` (and silence until `end_ts_ns`) = kernel disconnect."""
    out: list[Alert] = []
    stamps = list(heartbeat_ts)
    if end_ts_ns is not None and stamps:
        stamps.append(end_ts_ns)
    for i in range(1, len(stamps)):
        gap = stamps[i] - stamps[i - 1]
        if gap > timeout_ns:
            out.append(
                Alert(
                    f"{run_id}:kernel_disconnect:{i}",
                    run_id,
                    stamps[i - 1] + timeout_ns,
                    "kernel_disconnect",
                    "critical",
                    f"no heartbeat from the order kernel for {gap / 1e9:,.1f} s "
                    f"(timeout {timeout_ns / 1e9:g} s)",
                )
            )
    return out
