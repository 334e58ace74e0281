"""Review -> recompile: read a run's logs and metrics, ask for a revision, push it through gates.

Gates, in order: schema (the compile loop's own checks) -> backtest better than the current
version on the same held-out window -> paper trading for N hours -> human approval. The first
two run here; paper and approval are reported as pending with what must happen next, because a
revision may replace the running version only after all four pass. Nothing is committed here.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from artifacts.io import dumps
from artifacts.schema import Artifact
from compiler.errors import CompileFailedError, CompilerError
from compiler.loop import CompileLoop, CompileRequest, backtest_summary, split_holdout
from compiler.versioning import ArtifactRepo

GateStatus = Literal["passed", "failed", "pending", "skipped"]


@dataclass(frozen=True)
class GateResult:
    name: str
    status: GateStatus
    detail: str


@dataclass
class ReviewReport:
    name: str
    current_version: int
    evidence: dict[str, Any]
    gates: list[GateResult]
    candidate: Artifact | None = None
    compile_errors: list[str] = field(default_factory=list)

    @property
    def promotable(self) -> bool:
        """True only when every gate passed (paper and approval included)."""
        return all(g.status == "passed" for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current_version": self.current_version,
            "evidence": self.evidence,
            "gates": [g.__dict__ for g in self.gates],
            "candidate": dumps(self.candidate) if self.candidate else None,
            "compile_errors": self.compile_errors,
        }


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """The evidence a reviewer needs from a `stratagem run` directory: metrics, exits, streaks."""
    d = Path(run_dir)
    try:
        metrics_doc = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompilerError(
            f"{d}: no metrics.json; give a directory written by `stratagem run`"
        ) from None
    except json.JSONDecodeError as exc:
        raise CompilerError(f"{d / 'metrics.json'}: not JSON ({exc.msg})") from None
    reasons: Counter[str] = Counter()
    streak = worst = 0
    trades_path = d / "trades.csv"
    if trades_path.is_file():
        with trades_path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                reasons[row.get("exit_reason") or "open"] += 1
                pnl = float(row.get("pnl") or 0.0)
                streak = streak + 1 if pnl < 0 else 0
                worst = max(worst, streak)
    kinds: Counter[str] = Counter()
    log = d / "strategy.log.jsonl"
    if log.is_file():
        with log.open(encoding="utf-8") as fh:
            for line in fh:
                kinds[str(json.loads(line).get("kind"))] += 1
    m = metrics_doc.get("metrics", {})
    keep = (
        "total_return_pct",
        "max_drawdown_pct",
        "sharpe",
        "win_rate_pct",
        "profit_factor",
        "trades",
        "avg_r",
    )
    return {
        "artifact": metrics_doc.get("artifact", {}),
        "bars": metrics_doc.get("bars"),
        "metrics": {k: m.get(k) for k in keep},
        "exit_reasons": dict(sorted(reasons.items())),
        "longest_losing_streak": worst,
        "log_records": dict(sorted(kinds.items())),
    }


def _score(summary: dict[str, Any]) -> float:
    """Sharpe when defined, else total return: the number 'better' is judged on."""
    s = summary.get("sharpe")
    if isinstance(s, float) and math.isfinite(s):
        return s
    r = summary.get("total_return_pct")
    return float(r) if isinstance(r, int | float) else -math.inf


def review(
    repo: ArtifactRepo,
    name: str,
    run_dir: str | Path,
    loop: CompileLoop,
    bars: pl.DataFrame,
    *,
    paper_hours: int = 24,
) -> ReviewReport:
    """Propose a revision of `name` from a run's evidence and evaluate the automated gates."""
    current = repo.head_artifact(name)
    if current is None:
        raise CompilerError(f"{repo.path}: no strategy named {name!r} to review")
    evidence = summarize_run(run_dir)
    request = (
        "Review the running strategy using the evidence below and propose a revised version that "
        "addresses its weaknesses (keep what works; change as little as needed).\n"
        + json.dumps(evidence, sort_keys=True)
    )
    report = ReviewReport(name=name, current_version=current.version, evidence=evidence, gates=[])
    req = CompileRequest(
        text=request,
        symbol=current.instrument.symbol,
        timeframe=current.instrument.timeframe,
        bars=bars,
        current=current,
        last_backtest=evidence["metrics"],
        venue=current.instrument.venue,
    )
    try:
        result = loop.run(req)
    except CompileFailedError as exc:
        report.compile_errors = exc.attempts
        report.gates.append(GateResult("schema", "failed", str(exc).splitlines()[0]))
        return report
    report.candidate = result.artifact
    report.gates.append(
        GateResult("schema", "passed", "schema, DAG, direction sanity and judge passed")
    )
    _, held_out = split_holdout(bars, loop.gates.holdout_fraction)
    base = backtest_summary(current, held_out)
    cand = result.backtest
    better = _score(cand) > _score(base)
    report.gates.append(
        GateResult(
            "backtest",
            "passed" if better else "failed",
            f"held-out window ({cand['bars']} bars): candidate sharpe {cand.get('sharpe')}, return "
            f"{cand.get('total_return_pct')}% vs current sharpe {base.get('sharpe')}, return "
            f"{base.get('total_return_pct')}%",
        )
    )
    if better:
        report.gates.append(
            GateResult(
                "paper", "pending", f"paper trade the candidate for {paper_hours} h before approval"
            )
        )
        report.gates.append(GateResult("approval", "pending", "a person must approve the hot-swap"))
    else:
        report.gates.append(GateResult("paper", "skipped", "the backtest gate failed"))
        report.gates.append(GateResult("approval", "skipped", "the backtest gate failed"))
    return report
