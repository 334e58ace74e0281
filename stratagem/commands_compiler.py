"""CLI commands of the strategy compiler: compile, history, diff, checkout, blame, chat, review.

`compile --drawings` and `compile --proposal` are deterministic and offline; `compile --prompt`
and `chat` talk to an OpenAI-compatible endpoint (`--base-url`, `--model`). Every command that
changes the artifact repository (`--repo`) commits with provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratagem.errors import StratagemError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"


def _llm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url",
        default=os.environ.get("STRATAGEM_LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        help="OpenAI-compatible endpoint (env STRATAGEM_LLM_BASE_URL; default a local Ollama)",
    )
    p.add_argument("--model", default=os.environ.get("STRATAGEM_LLM_MODEL", "llama3.1"))
    p.add_argument("--llm-log", default="llm_calls.sqlite", help="SQLite log of every model call")
    p.add_argument("--max-cost-per-call", type=float, default=None, help="USD ceiling per call")
    p.add_argument("--max-cost-per-day", type=float, default=None, help="USD ceiling per UTC day")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per model call")
    p.add_argument("--max-attempts", type=int, default=3, help="compile attempts before giving up")
    p.add_argument("--no-judge", action="store_true", help="skip the judge's review")


def _client(args: argparse.Namespace) -> Any:
    from compiler.llm import LLMClient, LLMConfig

    return LLMClient(
        LLMConfig(
            base_url=args.base_url,
            model=args.model,
            log_path=args.llm_log,
            max_cost_per_call=args.max_cost_per_call,
            max_cost_per_day=args.max_cost_per_day,
            timeout_s=args.timeout,
        )
    )


def _backtest(artifact: Any, data: Path) -> dict[str, Any]:
    """Backtest on the whole of `data`; the summary (with its window) goes into the provenance."""
    from compiler.loop import backtest_summary
    from feeds.files import read_bars

    return backtest_summary(artifact, read_bars(data))


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(artifact: Any, out: str | None) -> None:
    from artifacts.io import dumps

    text = dumps(artifact)
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)


def cmd_compile(args: argparse.Namespace) -> int:
    from compiler.drawings_compile import compile_layout
    from compiler.tradingview import read_layout

    chosen = [x for x in (args.drawings, args.prompt, args.proposal) if x]
    if not chosen or (args.proposal and len(chosen) > 1):
        raise StratagemError(
            "compile needs one of --drawings, --prompt (optionally with --drawings) or --proposal"
        )
    data = Path(args.data) if args.data else DEFAULT_DATA
    provenance: dict[str, Any] = {}
    trace: dict[str, Any] = {}
    node_turns: dict[str, int] = {}
    if args.prompt:
        artifact = _compile_prompt(args, data, provenance, trace, node_turns)
    elif args.proposal:
        from compiler.proposals import parse_proposal, proposal_to_artifact

        try:
            raw = json.loads(Path(args.proposal).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StratagemError(f"{args.proposal}: cannot read the proposal: {exc}") from None
        # the front door owns the clock: a proposal without created_at is made "now"
        artifact = proposal_to_artifact(parse_proposal(raw), now_ns=time.time_ns())
        provenance["compiler"] = artifact.provenance.compiler
        assert artifact.one_shot is not None
        print(f"one-shot: no entry from {_iso(artifact.one_shot.expires_at)} on", file=sys.stderr)
    else:
        layout = read_layout(args.drawings)
        result = compile_layout(
            layout,
            args.symbol,
            args.timeframe,
            source=args.drawings,
            side=args.side,
            tolerance_bps=args.tolerance_bps,
            name=args.name,
            default_stop_pct=args.stop_pct,
            default_rr=args.rr,
        )
        artifact = result.artifact
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        provenance["compiler"] = artifact.provenance.compiler
        trace = {
            "drawings": args.drawings,
            "warnings": result.warnings,
            "nodes": result.node_drawings,
        }
    _write(artifact, args.out)
    if args.backtest:
        metrics = _backtest(artifact, data)
        provenance["backtest"] = metrics
        keys = (
            "trades",
            "total_return_pct",
            "max_drawdown_pct",
            "sharpe",
            "win_rate_pct",
            "profit_factor",
        )
        for k in keys:
            v = metrics.get(k)
            print(f"{k:18} {'n/a' if v is None else (f'{v:,.2f}' if isinstance(v, float) else v)}")
    if args.repo:
        from compiler.versioning import ArtifactRepo

        v = ArtifactRepo(args.repo).commit(
            artifact,
            trace=trace,
            provenance=provenance,
            node_turns=node_turns,
            request=args.prompt or f"compile {args.drawings or args.proposal}",
        )
        print(f"committed {artifact.name} v{v.version} {v.commit[:10]} in {args.repo}")
    return 0


def _compile_prompt(
    args: argparse.Namespace,
    data: Path,
    provenance: dict[str, Any],
    trace: dict[str, Any],
    node_turns: dict[str, int],
) -> Any:
    from compiler.loop import CompileLoop, CompileRequest
    from compiler.tradingview import read_layout
    from compiler.versioning import ArtifactRepo
    from feeds.files import read_bars

    current = None
    if args.repo and args.name:
        current = ArtifactRepo(args.repo).head_artifact(args.name)
    client = _client(args)
    try:
        loop = CompileLoop(client, max_attempts=args.max_attempts, judge=not args.no_judge)
        result = loop.run(
            CompileRequest(
                text=args.prompt,
                symbol=args.symbol,
                timeframe=args.timeframe,
                bars=read_bars(data),
                drawings=read_layout(args.drawings) if args.drawings else None,
                current=current,
            )
        )
    finally:
        client.close()
    for i, err in enumerate(result.attempts, 1):
        print(f"attempt {i} failed (fixed): {err.splitlines()[0]}", file=sys.stderr)
    provenance.update(result.provenance())
    trace.update(result.trace)
    node_turns.update(result.node_turns)
    return result.artifact


def _repo(args: argparse.Namespace) -> Any:
    from compiler.versioning import ArtifactRepo

    return ArtifactRepo(args.repo, create=False)


def cmd_history(args: argparse.Namespace) -> int:
    repo = _repo(args)
    names = [args.name] if args.name else repo.names()
    for name in names:
        for v in repo.history(name):
            print(f"{name} v{v.version}  {v.commit[:10]}  {v.artifact_sha[:12]}  {v.message}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    text = _repo(args).diff(args.name, args.a, args.b)
    sys.stdout.write(text or "(no differences)\n")
    return 0


def cmd_checkout(args: argparse.Namespace) -> int:
    artifact = _repo(args).checkout(args.name, args.ref, args.out)
    print(f"wrote {args.out}: {artifact.name} v{artifact.version}")
    return 0


def cmd_blame(args: argparse.Namespace) -> int:
    e = _repo(args).blame(args.name, args.node)
    commit = e.commit[:10] if e.commit else "?"
    print(f"{args.name}.{e.node}: turn {e.turn}, v{e.version} ({commit}): {e.request}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from compiler.chat import ChatSession, run_terminal
    from compiler.loop import CompileLoop
    from compiler.tradingview import read_layout
    from compiler.versioning import ArtifactRepo
    from feeds.files import read_bars

    client = _client(args)
    repo = ArtifactRepo(args.repo)
    try:
        session = ChatSession(
            loop=CompileLoop(client, max_attempts=args.max_attempts, judge=not args.no_judge),
            repo=repo,
            symbol=args.symbol,
            timeframe=args.timeframe,
            bars=read_bars(Path(args.data) if args.data else DEFAULT_DATA),
            drawings=read_layout(args.drawings) if args.drawings else None,
            current=repo.head_artifact(args.name) if args.name else None,
            conversation_id=f"cli-{time.time_ns()}",
        )
        return run_terminal(session, sys.stdin, sys.stdout)
    finally:
        client.close()


def _approvals(args: argparse.Namespace) -> Any:
    from compiler.approvals import ServiceApprovals

    return ServiceApprovals.open(args.config)


def _print_gates(gates: list[Any]) -> None:
    for g in gates:
        print(f"{g.name:9} {g.status:8} {g.detail}")


def cmd_review(args: argparse.Namespace) -> int:
    """Run the gates for a new revision, or decide / promote / list saved reviews."""
    from compiler.review import decide, pending_reviews, promote
    from compiler.versioning import ArtifactRepo

    actions = [x for x in (args.approve, args.reject, args.promote) if x] + (
        ["list"] if args.list else []
    )
    if len(actions) > 1:
        raise StratagemError("give one of --approve, --reject, --promote, --list")
    repo = ArtifactRepo(args.repo, create=False)
    if args.list:
        for r in pending_reviews(repo):
            print(f"{r['review_id']}  {r['name']} (of v{r['base_version']})  {r['status']}")
        return 0
    if args.on_approve and not args.approve:
        raise StratagemError("--on-approve goes with --approve ID")
    if actions:
        approvals = _approvals(args)
        v: Any
        try:
            if args.approve:
                return _approve(args, repo, approvals)
            if args.promote:
                v = promote(repo, approvals, args.promote)
            else:
                v = decide(repo, approvals, args.reject, approve=False, by=args.by, note=args.note)
        finally:
            approvals.close()
        if v is None:
            print(f"rejected {args.reject}: nothing was committed")
        else:
            print(f"promoted: committed v{v.version} {v.commit[:10]} ({v.message})")
        return 0
    if not args.name or not args.run:
        raise StratagemError(
            "review needs NAME and --run RUN_DIR (or one of --approve/--reject/--promote/--list)"
        )
    return _run_review(args, repo)


def _approve(args: argparse.Namespace, repo: Any, approvals: Any) -> int:
    """`--approve ID`: record, then promote / hot-swap as `--on-approve` (default: the service's
    `[review] on_approve`) says. Exit 0 when every step did what was asked (no runner, or no
    session trading the artifact, is not a failure), 3 when one was refused (printed)."""
    from compiler.review import pending_reviews
    from stratagem.service.review_chain import approve, describe
    from stratagem.service.state import ConflictError, NotFoundError

    known = {r["review_id"]: r["status"] for r in pending_reviews(repo)}
    if args.approve not in known:
        raise StratagemError(
            f"{repo.path}: no review {args.approve!r}; known: {sorted(known) or 'none'} "
            "(`stratagem review --list`)"
        )
    try:
        row = approve(
            approvals.state, args.approve, args.by, args.note, mode=args.on_approve, repo=repo
        )
    except (NotFoundError, ConflictError) as exc:
        raise StratagemError(f"review {args.approve}: {exc}") from None
    steps = row.get("outcome") or {}
    promoted = steps.get("promote") or {}
    if promoted.get("status") == "promoted":
        print(f"promoted: committed v{promoted['version']} {promoted['commit'][:10]}")
    print(describe(row))
    return 0 if all(s.get("ok") for s in steps.values()) else 3


def _run_review(args: argparse.Namespace, repo: Any) -> int:
    from compiler.loop import CompileLoop
    from compiler.review import PaperCriteria, review
    from feeds.files import read_bars

    bars = read_bars(Path(args.data) if args.data else DEFAULT_DATA)
    paper_bars = read_bars(Path(args.paper_data)) if args.paper_data else None
    client = _client(args)
    approvals = _approvals(args)
    try:
        report = review(
            repo,
            args.name,
            args.run,
            CompileLoop(client, max_attempts=args.max_attempts, judge=not args.no_judge),
            bars,
            paper_hours=args.paper_hours,
            paper_bars=paper_bars,
            paper_criteria=PaperCriteria(max_refusals=args.max_refusals),
            approvals=approvals,
        )
    finally:
        client.close()
        approvals.close()
    _print_gates(report.gates)
    for i, err in enumerate(report.compile_errors, 1):
        print(f"  attempt {i}: {err}", file=sys.stderr)
    if report.review_id:
        print(f"review {report.review_id}: waiting for approval (stratagem review --approve ID)")
    if args.out:
        Path(args.out).write_text(json.dumps(report.as_dict(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    failed = any(g.status == "failed" for g in report.gates)
    return 3 if failed else 0


def register(sub: Any) -> None:
    """Add the compiler's commands to the `stratagem` sub-command parser."""
    p = sub.add_parser(
        "compile",
        help="compile TradingView drawings, a trade proposal or a prompt into an artifact",
        description="Compile an artifact. --drawings and --proposal are offline and deterministic; "
        "--prompt uses the model at --base-url with tools, checks, a held-out backtest and a judge.",
    )
    p.add_argument("--drawings", help="TradingView layout / drawings JSON")
    p.add_argument("--proposal", help="one-shot trade proposal JSON")
    p.add_argument("--prompt", help="describe the strategy in words (needs a model)")
    p.add_argument("--symbol", default="BTC/USDT")
    p.add_argument("--timeframe", default="1h")
    p.add_argument(
        "--side", choices=["long", "short"], help="side for drawn levels without a position tool"
    )
    p.add_argument("--tolerance-bps", type=float, default=10.0, help="band around drawn levels")
    p.add_argument(
        "--stop-pct", type=float, default=1.0, help="stop % when no position tool is drawn"
    )
    p.add_argument(
        "--rr", type=float, default=2.0, help="target in R when no position tool is drawn"
    )
    p.add_argument("--name", help="artifact name (default derived from the symbol)")
    p.add_argument("--out", help="write the artifact here (default: stdout)")
    p.add_argument("--backtest", action="store_true", help="backtest on --data and print metrics")
    p.add_argument(
        "--data", help="bars for --backtest / the compile loop (default: bundled sample)"
    )
    p.add_argument("--repo", help="commit the result to this artifact git repository")
    _llm_args(p)
    p.set_defaults(func=cmd_compile)

    for cmd, help_text, fn in (
        ("history", "list versions in an artifact repository", cmd_history),
        ("diff", "diff two versions of a strategy (default: previous -> latest)", cmd_diff),
        ("checkout", "write a past version of a strategy to a file", cmd_checkout),
        ("blame", "which conversation turn created a node", cmd_blame),
    ):
        q = sub.add_parser(cmd, help=help_text, description=help_text)
        q.add_argument("--repo", required=True, help="artifact git repository")
        if cmd == "history":
            q.add_argument("name", nargs="?", help="strategy name (default: all)")
        else:
            q.add_argument("name", help="strategy name")
        if cmd == "diff":
            q.add_argument("a", nargs="?", help="from version/commit")
            q.add_argument("b", nargs="?", help="to version/commit")
        elif cmd == "checkout":
            q.add_argument("ref", help="version number (e.g. 2) or commit")
            q.add_argument("--out", required=True, help="where to write the artifact")
        elif cmd == "blame":
            q.add_argument("node", help="node id")
        q.set_defaults(func=fn)

    q = sub.add_parser(
        "chat",
        help="talk to the compiler in the terminal: propose, diff, backtest, accept/reject",
        description="Line-based chat on stdin/stdout. /accept commits the proposal to --repo.",
    )
    q.add_argument("--repo", required=True)
    q.add_argument("--name", help="continue this strategy from the repository")
    q.add_argument("--symbol", default="BTC/USDT")
    q.add_argument("--timeframe", default="1h")
    q.add_argument("--drawings")
    q.add_argument("--data")
    _llm_args(q)
    q.set_defaults(func=cmd_chat)

    q = sub.add_parser(
        "review",
        help="review a run, propose a revision, take it through the gates; approve/promote",
        description="Gates: schema -> backtest better than the current version on the same "
        "held-out window -> paper trading the last --paper-hours of recorded bars (replayed "
        "over the bar bus, simulated venue) -> approval. A candidate that passed the first three "
        "waits for approval (exit 0); `--approve ID` records the decision, promotes it (a new "
        "head version with every gate in its provenance) and hot-swaps the running sessions of "
        "that artifact (`--on-approve`, `[review] on_approve`); `--promote ID` promotes one "
        "approved elsewhere. Exit 3 when a gate failed or a step after the approval was refused.",
    )
    q.add_argument("name", nargs="?", help="strategy name in --repo")
    q.add_argument("--repo", required=True)
    q.add_argument("--run", help="a directory written by `stratagem run`")
    q.add_argument("--data", help="bars for the gate backtests (default: bundled sample)")
    q.add_argument("--paper-data", help="recorded bars to paper trade (default: --data)")
    q.add_argument("--paper-hours", type=float, default=24.0)
    q.add_argument(
        "--max-refusals", type=int, default=5, help="risk refusals allowed in the paper window"
    )
    q.add_argument("--config", help="service settings TOML (where approvals are kept)")
    q.add_argument(
        "--approve",
        metavar="ID",
        help="approve a pending review, then promote it and hot-swap the running sessions of "
        "that artifact (as --on-approve says)",
    )
    q.add_argument(
        "--on-approve",
        choices=("record", "promote", "promote_and_swap"),
        help="what --approve does after recording: record only, promote (commit the new head "
        "version), or promote_and_swap (then hot-swap every running session of the artifact, "
        "acknowledged); default: the service's [review] on_approve (promote_and_swap)",
    )
    q.add_argument("--reject", metavar="ID", help="reject a pending review")
    q.add_argument("--promote", metavar="ID", help="promote a review approved elsewhere")
    q.add_argument("--list", action="store_true", help="list saved reviews")
    q.add_argument("--by", default=f"cli:{os.environ.get('USER') or 'user'}", help="who decides")
    q.add_argument("--note", default="", help="a note kept with the decision")
    q.add_argument("--out", help="write the review report (JSON) here")
    _llm_args(q)
    q.set_defaults(func=cmd_review)
