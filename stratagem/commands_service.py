"""`stratagem serve`, `stratagem bot`, `stratagem readmodel rebuild`, `stratagem service ...`.

The lead adds this module to `stratagem.cli.COMMAND_MODULES`; `register(sub)` adds the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
from pathlib import Path
from typing import Any

from stratagem.errors import StratagemError


def _settings(args: argparse.Namespace) -> Any:
    from stratagem.service.settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    updates: dict[str, Any] = {}
    if getattr(args, "db", None):
        updates["db_path"] = Path(args.db)
    if getattr(args, "runs", None):
        updates["runs_dir"] = Path(args.runs)
        if "journal_path" not in settings.model_fields_set:
            updates["journal_path"] = Path(args.runs) / "service.journal.jsonl"
    return settings.model_copy(update=updates) if updates else settings


def cmd_rebuild(args: argparse.Namespace) -> int:
    from stratagem.service.state import ServiceState

    state = ServiceState(_settings(args))
    try:
        report = state.rebuild()
    finally:
        state.conn.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"imported {len(report['imported'])} runs into {state.settings.db_path}")
        for run_id, problem in sorted(report["quarantined"].items()):
            print(f"  quarantined {run_id}: {problem}")
        print(f"  {report['journal_records']} service journal records")
    return 3 if report["quarantined"] else 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stratagem.service.api import create_app
    from stratagem.service.state import ServiceState

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(args)
    state = ServiceState(settings)
    logging.getLogger("stratagem.service").info(
        "settings: %s", json.dumps(settings.redacted(), sort_keys=True)
    )
    if not args.no_rebuild:
        state.rebuild()
    app = create_app(state)
    import threading

    stop = threading.Event()
    state.start_live_refresh(stop)  # runs of a live `stratagem service run`, as they go
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=2
        )
    finally:
        stop.set()
    return 0


def cmd_service_run(args: argparse.Namespace) -> int:
    from stratagem.service.runner import Runner

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(args)
    live = settings.runner.mode == "live"
    if live != args.live:  # real money needs both the config and the flag
        raise StratagemError(
            "the config says mode = 'live' but --live was not given"
            if live
            else "--live given but the config says mode = 'paper': set runner.mode = 'live'"
        )
    runner = Runner(settings)
    print(
        f"service {settings.runner.name}: {len(settings.runner.strategies)} strategies, "
        f"control on {runner.control_endpoint}, health in {settings.runner.health_path()}",
        flush=True,
    )
    code = runner.run()
    for name, st in sorted(runner.sessions.items()):
        print(
            f"  {name}: {st.state} ({st.stop_reason or st.error}), {st.bars} bars, "
            f"{st.restarts} restarts -> {st.cfg.run_dir}",
            flush=True,
        )
    return code


def _control(args: argparse.Namespace, action: str, scope: str, artifact: str = "") -> int:
    from stratagem.service.state import ServiceState

    state = ServiceState(_settings(args))
    try:
        out = state.request_control(
            action,  # type: ignore[arg-type]
            f"cli:{getpass.getuser()}",
            scope,
            bool(getattr(args, "flatten", False)),
            getattr(args, "reason", "") or "",
            artifact=artifact,
        )
    finally:
        state.conn.close()
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(f"{action} #{out['request_id']} ({scope}): {out['note']}")
    return 0 if out["enforced"] else 4


def cmd_service_swap(args: argparse.Namespace) -> int:
    return _control(args, "swap", args.name, str(Path(args.artifact).resolve()))


def cmd_service_kill(args: argparse.Namespace) -> int:
    return _control(args, "kill", args.scope)


def cmd_service_pause(args: argparse.Namespace) -> int:
    return _control(args, args.service_command, args.scope)


def cmd_service_status(args: argparse.Namespace) -> int:
    from stratagem.service.control import ControlRequest, send_request
    from stratagem.service.health import read_health, summary

    settings = _settings(args)
    reply = send_request(
        settings.runner.control(),
        ControlRequest(request_id=0, action="status", by="cli"),
        settings.runner.control_timeout_s,
    )
    health = summary(read_health(settings.runner.health_path()))
    if args.json:
        print(json.dumps({"control": reply is not None, **health}, indent=2, sort_keys=True))
        return 0 if health["ok"] and reply is not None else 4
    if reply is None:
        print(f"no runner answered on {settings.runner.control()}")
    for name, st in sorted((reply.status if reply else {}).items()):
        print(
            f"  {name}: {st['state']}, {st['bars']} bars, paused={st['paused']}, "
            f"killed={st['killed']}, restarts={st['restarts']}"
        )
    for problem in health.get("problems", []):
        print(f"  problem: {problem}")
    return 0 if health["ok"] and reply is not None else 4


def cmd_bot(args: argparse.Namespace) -> int:
    from stratagem.service.state import ServiceState
    from stratagem.service.telegram import Bot

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state = ServiceState(_settings(args))
    chat = None
    client = None
    if args.chat_repo:
        from compiler.chat import ChatSession
        from compiler.loop import CompileLoop
        from compiler.versioning import ArtifactRepo
        from feeds.files import read_bars
        from stratagem.cli import DEFAULT_DATA
        from stratagem.commands_compiler import _client

        client = _client(args)
        repo = ArtifactRepo(args.chat_repo)
        chat = ChatSession(
            loop=CompileLoop(client, max_attempts=args.max_attempts, judge=not args.no_judge),
            repo=repo,
            symbol=args.symbol,
            timeframe=args.timeframe,
            bars=read_bars(Path(args.data) if args.data else DEFAULT_DATA),
            current=repo.head_artifact(args.name) if args.name else None,
        )
    bot = Bot(state, chat=chat)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await bot.run(stop)

    try:
        asyncio.run(main())
    finally:
        if client is not None:
            client.close()
        state.conn.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve`, `bot` and `readmodel rebuild` to the `stratagem` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="service settings (TOML); STRATAGEM_* variables override")
        p.add_argument(
            "--db", help="read model path (default from settings: runs/readmodel.sqlite)"
        )
        p.add_argument("--runs", help="directory holding run directories (default: runs)")

    p = sub.add_parser(
        "serve",
        help="HTTP API + live dashboard over the read model",
        description="Serve the API (bearer tokens, rate limited, OpenAPI at /docs) and the "
        "dashboard. Binds to 127.0.0.1 by default: the dashboard is read-only and unauthenticated, "
        "put an authenticating proxy in front before exposing it.",
    )
    common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--no-rebuild", action="store_true", help="skip rebuilding the read model at start"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "bot",
        help="Telegram bot: status, approvals, kill switch, pushes, chat with the compiler",
        description="Long-polls the Telegram Bot API; answers only whitelisted chat ids.",
    )
    common(p)
    p.add_argument("--chat-repo", help="artifact repository: enables chatting with the compiler")
    p.add_argument("--name", help="continue this strategy from --chat-repo")
    p.add_argument("--symbol", default="BTC/USDT")
    p.add_argument("--timeframe", default="1h")
    p.add_argument("--data", help="bars for the compiler's backtests (default: bundled sample)")
    from stratagem.commands_compiler import _llm_args

    _llm_args(p)
    p.set_defaults(func=cmd_bot)

    p = sub.add_parser(
        "service",
        help="run and control the trading service (feed, order kernel, strategy kernels)",
        description="`service run` starts the feed, one order-kernel process and a strategy "
        "session per [[runner.strategies]] entry of --config; the other actions talk to a "
        "running service over its control socket (and are journaled).",
    )
    actions = p.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    q = actions.add_parser("run", help="run until SIGINT/SIGTERM or the feed ends")
    common(q)
    q.add_argument(
        "--live",
        action="store_true",
        help="trade for real on [runner.venue] (the config must also say mode = 'live')",
    )
    q.set_defaults(func=cmd_service_run)
    q = actions.add_parser("swap", help="hot-swap one strategy to a new artifact version")
    common(q)
    q.add_argument("name", help="strategy name from the config")
    q.add_argument("artifact", help="the new version's YAML")
    q.add_argument("--reason", default="")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_service_swap)
    q = actions.add_parser("kill", help="kill switch: cancel all, block new orders")
    common(q)
    q.add_argument("--scope", default="all", help="'all' or a strategy name")
    q.add_argument("--flatten", action="store_true", help="also close positions at market")
    q.add_argument("--reason", default="")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_service_kill)
    for action in ("pause", "resume"):
        q = actions.add_parser(action, help=f"{action} new entries (exits stay managed)")
        common(q)
        q.add_argument("--scope", default="all", help="'all' or a strategy name")
        q.add_argument("--reason", default="")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_service_pause)
    q = actions.add_parser("status", help="ask the runner for its sessions; show health")
    common(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_service_status)

    p = sub.add_parser(
        "readmodel", help="the SQLite read model", description="Manage the read model."
    )
    actions = p.add_subparsers(dest="readmodel_command", required=True, metavar="ACTION")
    q = actions.add_parser(
        "rebuild",
        help="re-derive the read model from run directories and the service journal",
        description="Idempotent and deterministic. Runs whose logs do not verify are quarantined "
        "(exit 3), never half-imported.",
    )
    common(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_rebuild)
