"""Review -> recompile: read a run's logs and metrics, ask for a revision, push it through gates.

Gates, in order, each recorded with its outcome:

1. **schema**: the compile loop's own checks (schema, DAG types, direction sanity, held-out
   backtest gate, judge).
2. **backtest**: the candidate scores better than the current version on the same held-out
   window (Sharpe when defined, else total return).
3. **paper**: both versions paper trade the last `paper_hours` hours of recorded bars, replayed
   over the ZeroMQ market-data bus into `strategy_kernel.paper.run_paper` with the simulated
   venue (the runner is injected, so tests and other feeds can stand in). It passes when the
   feed was clean for both (every bar delivered, no gap, nothing out of order), the candidate
   made at most `PaperCriteria.max_refusals` risk refusals in the window (no refusal storm), and
   its PnL over the window is not worse than the current version's (`min_pnl_edge`, default 0).
4. **approval**: a person approves in the `ApprovalStore` (the service's approvals: API, bot or
   `stratagem review --approve <id>`).

A candidate that passed 1-3 waits as a pending review (`<repo>/.reviews/<approval id>/`, not in
git); `promote` commits it as the new head version only when the store says approved and the
head is still the version it was reviewed against. The committed provenance carries all four
gates; the trace file carries the evidence, the paper runs and the decision.
"""

from __future__ import annotations

import csv
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from artifacts.errors import ArtifactError
from artifacts.graph import check
from artifacts.io import content_hash, dumps, loads
from artifacts.schema import Artifact
from compiler.approvals import ApprovalError, ApprovalStore
from compiler.errors import CompileFailedError, CompilerError
from compiler.loop import CompileLoop, CompileRequest, backtest_summary, split_holdout
from compiler.versioning import ArtifactRepo, Version
from feeds.schema import timeframe_to_ns

GateStatus = Literal["passed", "failed", "pending", "skipped"]
REVIEWS_DIR = ".reviews"


class ReviewError(CompilerError):
    """A review that cannot go on: unknown id, not approved, stale against the head, bad data."""


@dataclass(frozen=True)
class GateResult:
    name: str
    status: GateStatus
    detail: str


@dataclass(frozen=True)
class PaperRun:
    """What one paper run over the replayed window showed (money in the quote currency)."""

    bars: int  # bars the strategy received (warm-up prefix + window)
    window_bars: int
    pnl: float  # equity change over the window
    trades: int  # trades entered inside the window
    refusals: int  # risk refusals inside the window
    feed_gaps: int
    out_of_order: int
    stop_reason: str  # "end_of_stream" when the whole recording was delivered


#: (artifact, bars to feed, index of the first bar of the window) -> what the paper run showed.
PaperRunner = Callable[[Artifact, pl.DataFrame, int], PaperRun]


@dataclass(frozen=True)
class PaperCriteria:
    """When the paper gate passes (see the module docstring)."""

    max_refusals: int = 5
    min_pnl_edge: float = 0.0  # candidate PnL - current PnL must be >= this


@dataclass
class ReviewReport:
    name: str
    current_version: int
    evidence: dict[str, Any]
    gates: list[GateResult]
    candidate: Artifact | None = None
    compile_errors: list[str] = field(default_factory=list)
    paper: dict[str, Any] = field(default_factory=dict)
    review_id: str | None = None  # the approval id, once the candidate waits for a person

    @property
    def promotable(self) -> bool:
        """True only when every gate passed (paper and approval included)."""
        return len(self.gates) == 4 and all(g.status == "passed" for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current_version": self.current_version,
            "evidence": self.evidence,
            "gates": [asdict(g) for g in self.gates],
            "candidate": dumps(self.candidate) if self.candidate else None,
            "compile_errors": self.compile_errors,
            "paper": self.paper,
            "review_id": self.review_id,
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


# ----------------------------------------------------------------------------- paper gate


def warmup_bars(artifact: Artifact) -> int:
    """Bars the strategy kernel needs before it may trade (indicators, ATR stop, sizing)."""
    from strategy_kernel.engine import StrategyKernel

    tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
    sk = StrategyKernel(artifact, check(artifact), session_id="warmup", timeframe_ns=tf_ns)
    return int(sk.warmup)


def replay_paper(
    artifact: Artifact,
    bars: pl.DataFrame,
    window_start: int,
    *,
    out_dir: Path | None = None,
    session_id: str = "paper-gate",
    idle_timeout_ms: int = 10_000,
) -> PaperRun:
    """Paper trade `artifact` on recorded bars replayed over the ZeroMQ bar bus (in-process).

    A publisher thread replays the bars on an `inproc://` endpoint; `run_paper` consumes them
    exactly as from a live feed, with the simulated venue in an in-process order kernel.
    """
    import zmq

    from feeds.bus import Publisher, Subscriber, bar_topic
    from feeds.schema import Bar
    from order_kernel.kernel import OrderKernel
    from order_kernel.venues.sim import SimVenue
    from strategy_kernel.backtest import instrument_spec
    from strategy_kernel.paper import run_paper

    if not 0 <= window_start < bars.height:
        raise ReviewError(
            f"paper window starts at bar {window_start} of {bars.height}: nothing to paper trade"
        )
    inst = artifact.instrument
    topic = bar_topic(inst.symbol, inst.timeframe)
    spec = instrument_spec(artifact)
    kernel = OrderKernel(
        session_id,
        {spec.symbol: spec},
        SimVenue(slippage_ticks=artifact.backtest.slippage_ticks, seed=artifact.backtest.seed),
    )
    hwm = bars.height + 100  # above the whole recording: the bus never drops a bar here
    endpoint = f"inproc://paper-gate-{id(kernel)}"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    bound, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            with Publisher(endpoint, context=context, sndhwm=hwm, session_id=0) as pub:
                bound.set()
                pub.wait_for_subscribers(1, timeout_s=10.0)
                for row in bars.iter_rows(named=True):
                    pub.publish(topic, Bar(**row))
                pub.end(topic)
                done.wait(timeout=idle_timeout_ms / 1000)  # keep the socket until consumed
        except BaseException as exc:  # reported by the caller, never swallowed
            errors.append(exc)
            bound.set()

    thread = threading.Thread(target=publish, name="paper-gate-replay", daemon=True)
    thread.start()
    try:
        bound.wait(timeout=10.0)
        if errors:
            raise ReviewError(f"paper gate: the replay publisher failed: {errors[0]}")
        with Subscriber(endpoint, [topic], context=context, rcvhwm=hwm) as sub:
            result, stop = run_paper(
                artifact,
                check(artifact, "paper"),
                sub,
                kernel,
                out_dir=out_dir,
                session_id=session_id,
                idle_timeout_ms=idle_timeout_ms,
            )
    finally:
        done.set()
        thread.join(timeout=10.0)
        context.term()
    if errors:
        raise ReviewError(f"paper gate: the replay publisher failed: {errors[0]}")
    window_ts = int(bars["ts_ns"][window_start])
    if result is None:
        return PaperRun(
            0, bars.height - window_start, 0.0, 0, 0, stop.feed_gaps, stop.out_of_order, stop.reason
        )
    ts = result.ts_ns.tolist()
    first = next((i for i, t in enumerate(ts) if t >= window_ts), len(ts))
    before = (
        float(result.equity[first - 1]) if first > 0 else float(artifact.backtest.initial_equity)
    )
    pnl = float(result.equity[-1]) - before if len(ts) else 0.0
    return PaperRun(
        bars=stop.bars,
        window_bars=bars.height - window_start,
        pnl=round(pnl, 8),
        trades=sum(1 for t in result.trades if t.entry_ts_ns >= window_ts),
        refusals=sum(1 for r in result.refusals if _ts(r) > window_ts),
        feed_gaps=stop.feed_gaps,
        out_of_order=stop.out_of_order,
        stop_reason=stop.reason,
    )


def _ts(record: dict[str, object]) -> int:
    ts = record.get("ts_ns")
    return int(ts) if isinstance(ts, int) else 0


def paper_gate(
    candidate: Artifact,
    current: Artifact,
    bars: pl.DataFrame,
    hours: float,
    runner: PaperRunner = replay_paper,
    criteria: PaperCriteria | None = None,
) -> tuple[GateResult, dict[str, Any]]:
    """Paper trade both versions over the last `hours` of `bars` (plus warm-up) and compare."""
    crit = criteria or PaperCriteria()
    tf_ns = timeframe_to_ns(current.instrument.timeframe)
    n_window = math.ceil(hours * 3_600_000_000_000 / tf_ns)
    if n_window < 1 or bars.height < n_window:
        return GateResult(
            "paper",
            "failed",
            f"{bars.height} recorded bar(s) cannot cover {hours:g} h of {current.instrument.timeframe} "
            f"bars ({n_window} needed): record more data or lower --paper-hours",
        ), {}
    warm = max(warmup_bars(candidate), warmup_bars(current))
    start = max(0, bars.height - n_window - warm)
    fed = bars.slice(start)
    window_start = fed.height - n_window
    cand, cur = runner(candidate, fed, window_start), runner(current, fed, window_start)
    info = {
        "hours": hours,
        "window_bars": n_window,
        "window_from_ns": int(fed["ts_ns"][window_start]),
        "window_to_ns": int(fed["ts_ns"][-1]),
        "warmup_bars": window_start,
        "criteria": asdict(crit),
        "candidate": asdict(cand),
        "current": asdict(cur),
    }
    problems: list[str] = []
    for who, run in (("candidate", cand), ("current", cur)):
        if run.stop_reason != "end_of_stream" or run.bars != fed.height:
            problems.append(
                f"{who}: the feed stopped ({run.stop_reason}) after {run.bars} of {fed.height} bars"
            )
        if run.feed_gaps or run.out_of_order:
            problems.append(
                f"{who}: the feed had {run.feed_gaps} gap(s) and {run.out_of_order} bar(s) out of order"
            )
    if cand.refusals > crit.max_refusals:
        problems.append(
            f"candidate: {cand.refusals} risk refusals in the window > {crit.max_refusals} allowed "
            "(a refusal storm)"
        )
    if cand.pnl - cur.pnl < crit.min_pnl_edge:
        problems.append(
            f"candidate PnL {cand.pnl:+.2f} is worse than the current version's {cur.pnl:+.2f}"
            + (f" by more than {crit.min_pnl_edge:g}" if crit.min_pnl_edge else "")
        )
    detail = (
        f"{n_window} bars ({hours:g} h) replayed: candidate PnL {cand.pnl:+.2f}, {cand.trades} "
        f"trade(s), {cand.refusals} refusal(s) vs current PnL {cur.pnl:+.2f}, {cur.trades} trade(s)"
    )
    if problems:
        return GateResult("paper", "failed", detail + "; " + "; ".join(problems)), info
    return GateResult("paper", "passed", detail), info


# ----------------------------------------------------------------------------- review


def review(
    repo: ArtifactRepo,
    name: str,
    run_dir: str | Path,
    loop: CompileLoop,
    bars: pl.DataFrame,
    *,
    paper_hours: float = 24,
    paper_bars: pl.DataFrame | None = None,
    paper_runner: PaperRunner = replay_paper,
    paper_criteria: PaperCriteria | None = None,
    approvals: ApprovalStore | None = None,
) -> ReviewReport:
    """Propose a revision of `name` from a run's evidence and take it through the gates.

    `bars` serve the held-out backtest; `paper_bars` (default: the same) are the recorded feed
    whose last `paper_hours` hours are paper traded. With an `approvals` store a candidate that
    passed the automated gates is saved as a pending review and asked for approval; without
    one the approval gate stays pending and nothing can be promoted.
    """
    current = repo.head_artifact(name)
    if current is None:
        raise CompilerError(f"{repo.path}: no strategy named {name!r} to review")
    evidence = summarize_run(run_dir)
    loop.client.run_id = str(run_dir)  # the review's model calls are logged against the run
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

    def skip(*names: str, why: str) -> ReviewReport:
        report.gates.extend(GateResult(n, "skipped", why) for n in names)
        return report

    try:
        result = loop.run(req)
    except CompileFailedError as exc:
        report.compile_errors = exc.attempts
        report.gates.append(GateResult("schema", "failed", str(exc).splitlines()[0]))
        return skip("backtest", "paper", "approval", why="the schema gate failed")
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
    if not better:
        return skip("paper", "approval", why="the backtest gate failed")
    gate, report.paper = paper_gate(
        result.artifact,
        current,
        paper_bars if paper_bars is not None else bars,
        paper_hours,
        paper_runner,
        paper_criteria,
    )
    report.gates.append(gate)
    if gate.status != "passed":
        return skip("approval", why="the paper gate failed")
    if approvals is None:
        report.gates.append(
            GateResult(
                "approval", "pending", "no approvals store: the candidate cannot be promoted"
            )
        )
        return report
    summary = (
        f"{name} v{result.artifact.version} (review of v{current.version}): held-out sharpe "
        f"{cand.get('sharpe')} vs {base.get('sharpe')}; {gate.detail}"
    )
    approval = approvals.request(
        name,
        result.artifact.version,
        summary,
        {
            "repo": str(Path(repo.path).resolve()),  # absolute: any process may promote it
            "artifact_sha": content_hash(result.artifact),
            "base_version": current.version,
            "gates": [asdict(g) for g in report.gates],
        },
    )
    report.review_id = approval.approval_id
    report.gates.append(
        GateResult(
            "approval",
            "pending",
            f"waiting for a person: approve with `stratagem review --approve {approval.approval_id}`"
            " (or the dashboard / Telegram), then it is promoted",
        )
    )
    _save_pending(repo, report, result.provenance(), result.trace, result.node_turns, request)
    return report


def _review_dir(repo: ArtifactRepo, review_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", review_id)
    return repo.path / REVIEWS_DIR / safe


def _exclude_reviews(repo: ArtifactRepo) -> None:
    """Pending reviews are working files, not history: keep them out of `git status`."""
    exclude = Path(repo.repo.git_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text(encoding="utf-8") if exclude.is_file() else ""
    if f"/{REVIEWS_DIR}/" not in text.splitlines():
        sep = "" if text.endswith("\n") or not text else "\n"
        exclude.write_text(f"{text}{sep}/{REVIEWS_DIR}/\n", encoding="utf-8")


def _save_pending(
    repo: ArtifactRepo,
    report: ReviewReport,
    provenance: dict[str, Any],
    trace: dict[str, Any],
    node_turns: dict[str, int],
    request: str,
) -> None:
    assert report.candidate is not None and report.review_id is not None
    _exclude_reviews(repo)
    d = _review_dir(repo, report.review_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "candidate.yaml").write_text(dumps(report.candidate), encoding="utf-8")
    state = {
        "review_id": report.review_id,
        "name": report.name,
        "base_version": report.current_version,
        "status": "pending",
        "gates": [asdict(g) for g in report.gates],
        "evidence": report.evidence,
        "paper": report.paper,
        "provenance": provenance,
        "trace": trace,
        "node_turns": node_turns,
        "request": request,
    }
    _write_state(d, state)


def _write_state(d: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, sort_keys=True, indent=1, default=str) + "\n"
    (d / "review.json").write_text(text, encoding="utf-8")


def pending_reviews(repo: ArtifactRepo) -> list[dict[str, Any]]:
    """Every saved review (id, name, base version, status, gates), oldest id first."""
    root = repo.path / REVIEWS_DIR
    out = []
    for f in sorted(root.glob("*/review.json")) if root.is_dir() else []:
        s = json.loads(f.read_text(encoding="utf-8"))
        out.append({k: s[k] for k in ("review_id", "name", "base_version", "status", "gates")})
    return out


def _load_pending(repo: ArtifactRepo, review_id: str) -> tuple[Path, dict[str, Any], Artifact]:
    d = _review_dir(repo, review_id)
    if not (d / "review.json").is_file():
        known = [r["review_id"] for r in pending_reviews(repo)]
        raise ReviewError(
            f"{repo.path}: no review {review_id!r}; known: {known or 'none'} "
            "(`stratagem review --list`)"
        )
    state = json.loads((d / "review.json").read_text(encoding="utf-8"))
    try:
        candidate = loads(
            (d / "candidate.yaml").read_text(encoding="utf-8"), str(d / "candidate.yaml")
        )
        check(candidate, str(d / "candidate.yaml"))
    except ArtifactError as exc:
        raise ReviewError(
            f"review {review_id}: the saved candidate no longer validates: {exc}"
        ) from None
    return d, state, candidate


def decide(
    repo: ArtifactRepo,
    approvals: ApprovalStore,
    review_id: str,
    *,
    approve: bool,
    by: str,
    note: str = "",
) -> Version | None:
    """Record a person's decision; an approval promotes the candidate at once (returns its version)."""
    d, state, _ = _load_pending(repo, review_id)
    if state["status"] != "pending":
        raise ReviewError(f"review {review_id} is already {state['status']}")
    try:
        approvals.decide(review_id, "approved" if approve else "rejected", by, note)
    except ApprovalError as exc:
        raise ReviewError(f"review {review_id}: {exc}") from None
    if approve:
        return promote(repo, approvals, review_id)
    state["status"] = "rejected"
    state["gates"][-1] = {
        "name": "approval",
        "status": "failed",
        "detail": f"rejected by {by}: {note}",
    }
    _write_state(d, state)
    return None


def promote(repo: ArtifactRepo, approvals: ApprovalStore, review_id: str) -> Version:
    """Commit an approved candidate as the new head version, with every gate in its provenance.

    Refused unless schema, backtest and paper passed, the store says approved, and the head is
    still the version the candidate was reviewed against (otherwise review again).
    """
    d, state, candidate = _load_pending(repo, review_id)
    if state["status"] == "promoted":
        raise ReviewError(f"review {review_id} was already promoted")
    automated = state["gates"][:3]
    if [g["name"] for g in automated] != ["schema", "backtest", "paper"] or any(
        g["status"] != "passed" for g in automated
    ):
        raise ReviewError(f"review {review_id}: not every automated gate passed: {automated}")
    try:
        approval = approvals.get(review_id)
    except ApprovalError as exc:
        raise ReviewError(f"review {review_id}: {exc}") from None
    if approval.status != "approved":
        raise ReviewError(
            f"review {review_id} is {approval.status}, not approved: only an approved revision may "
            "replace the running version"
        )
    head = repo.head_artifact(state["name"])
    if head is None or head.version != state["base_version"]:
        raise ReviewError(
            f"review {review_id} was made against {state['name']} v{state['base_version']}, but the "
            f"head is now v{head.version if head else '?'}: run the review again"
        )
    approved = f"approved by {approval.decided_by}" + (
        f": {approval.note}" if approval.note else ""
    )
    gates = [*automated, {"name": "approval", "status": "passed", "detail": approved}]
    trace = dict(state["trace"])
    trace["review"] = {
        "review_id": review_id,
        "evidence": state["evidence"],
        "paper": state["paper"],
        "gates": gates,
        "approval": asdict(approval),
    }
    provenance = {**state["provenance"], "gates": gates}
    version = repo.commit(
        candidate,
        trace=trace,
        provenance=provenance,
        node_turns={k: int(v) for k, v in state["node_turns"].items()},
        request=state["request"],
        message=f"{state['name']} v{candidate.version}: review {review_id} promoted "
        f"(schema, backtest, paper, approval passed)",
    )
    state["status"] = "promoted"
    state["gates"] = gates
    state["commit"] = version.commit
    _write_state(d, state)
    return version
