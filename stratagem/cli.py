"""The `stratagem` command line: the front door to artifacts, backtests and (later) services.

Exit codes: 0 success, 2 bad input (artifact, data, arguments: the message says where and how to
fix it), 1 an unexpected internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from stratagem.errors import StratagemError, format_user_error, user_error_types

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Command groups living in their own modules; each has `register(subparsers)` and sets `func`.
COMMAND_MODULES: tuple[str, ...] = (
    "stratagem.commands_compiler",
    "stratagem.commands_data",
    "stratagem.commands_hdl",
    "stratagem.commands_order_kernel",
    "stratagem.commands_service",
)
DEFAULT_DATA = REPO_ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"


def _parse_date_ns(text: str) -> int:
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}: use ISO format, e.g. 2024-03-01 or 2024-03-01T12:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def cmd_validate(args: argparse.Namespace) -> int:
    from artifacts.graph import check
    from artifacts.io import content_hash, load_with_lines

    for path in args.artifacts:
        artifact, lines = load_with_lines(path)
        graph = check(artifact, str(path), lines)
        print(
            f"{path}: OK  {artifact.name} v{artifact.version}  {len(artifact.nodes)} nodes, "
            f"warm-up {graph.warmup} bars  sha256 {content_hash(artifact)[:16]}"
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from artifacts.io import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from stratagem.portfolio_cli import parse_bars_options, run_portfolio_cli
    from stratagem.run import run_backtest_cli, run_service_paper_cli

    bars_files = parse_bars_options(args.bars)
    if args.funding and len(args.artifact) > 1:
        raise StratagemError("--funding applies to one artifact's backtest; give one artifact")
    # several artifacts on one account: a backtest, or with --paper a paper session in lockstep
    if len(args.artifact) > 1 and (args.account or not args.paper):
        return run_portfolio_cli(
            artifact_paths=[Path(a) for a in args.artifact],
            data_path=Path(args.data) if args.data else DEFAULT_DATA,
            bars_files=bars_files,
            account_path=Path(args.account) if args.account else None,
            start_ns=args.start,
            end_ns=args.end,
            out_dir=Path(args.out) if args.out else None,
            as_json=args.json,
            plots=not args.no_plots,
            paper=args.paper,
        )
    if args.account:
        raise StratagemError("--account applies to a portfolio run: give two or more artifacts")
    if len(args.artifact) > 1:
        return run_service_paper_cli(
            artifact_paths=[Path(a) for a in args.artifact],
            data_path=Path(args.data) if args.data else DEFAULT_DATA,
            start_ns=args.start,
            end_ns=args.end,
            out_dir=Path(args.out) if args.out else None,
            as_json=args.json,
            bars_files=bars_files,
        )
    return run_backtest_cli(
        artifact_path=Path(args.artifact[0]),
        data_path=Path(args.data) if args.data else DEFAULT_DATA,
        start_ns=args.start,
        end_ns=args.end,
        out_dir=Path(args.out) if args.out else None,
        as_json=args.json,
        plots=not args.no_plots,
        quiet=args.quiet,
        paper=args.paper,
        bars_files=bars_files,
        funding_path=Path(args.funding) if args.funding else None,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from strategy_kernel.replay import replay

    report = replay(Path(args.run_dir), Path(args.data) if args.data else None)
    counts = ", ".join(f"{name}: {n} records" for name, n in report.records.items())
    if report.divergence is None:
        print(f"{args.run_dir}: replay is byte-identical ({counts})")
        return 0
    d = report.divergence
    print(f"{args.run_dir}: replay DIVERGES in {d.log} at record {d.record}", file=sys.stderr)
    print(f"  recorded: {d.expected[:500]}", file=sys.stderr)
    print(f"  replayed: {d.got[:500]}", file=sys.stderr)
    return 3


def cmd_log_verify(args: argparse.Namespace) -> int:
    from order_kernel.log import verify as verify_order_log
    from strategy_kernel.log import verify as verify_strategy_log

    for path in map(Path, args.logs):
        if not path.is_file():
            raise StratagemError(f"{path}: no such log file")
        if path.suffix == ".jsonl":
            s = verify_strategy_log(path)
            print(f"{path}: OK, strategy log, {s.records} records, head {s.head[:16]}")
        else:
            o = verify_order_log(path)
            print(
                f"{path}: OK, order log, {o.records} records, {o.size} bytes, head {o.last_hash.hex()[:16]}"
            )
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from stratagem.run import run_paper_cli

    return run_paper_cli(
        artifact_path=Path(args.artifact),
        feed=args.feed,
        kernel_endpoint=args.kernel,
        out_dir=Path(args.out) if args.out else None,
        max_bars=args.max_bars,
        idle_timeout_ms=int(args.idle_timeout * 1000),
        plots=not args.no_plots,
        data_wait_ms=args.data_wait,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from stratagem.sweep_cli import run_sweep_cli

    return run_sweep_cli(args, DEFAULT_DATA)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratagem",
        description="Compile, validate and run trading strategy artifacts deterministically.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="backtest an artifact on bar data (default: the bundled sample data)",
        description="Backtest ARTIFACT with the real strategy and order kernels on a simulated clock. "
        "Writes logs, trades, metrics and plots to --out and prints a summary.",
    )
    p.add_argument(
        "artifact",
        nargs="+",
        help="path to the artifact YAML, e.g. examples/rsi-reversion.yaml; several: one account "
        "under portfolio limits (--account), or with --paper one service with a session each",
    )
    p.add_argument(
        "--data", help=f"bars as CSV or parquet (default: {DEFAULT_DATA.relative_to(REPO_ROOT)})"
    )
    p.add_argument(
        "--from", dest="start", type=_parse_date_ns, help="first bar time, ISO date (UTC)"
    )
    p.add_argument(
        "--to", dest="end", type=_parse_date_ns, help="last bar time (exclusive), ISO date (UTC)"
    )
    p.add_argument(
        "--out",
        help="output directory (default: runs/<name>-v<version>; several artifacts: "
        "runs/paper-<name>-<name>..., one run directory per artifact inside)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a table"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG and HTML plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--paper",
        action="store_true",
        help="paper mode on the recorded bars: the order kernel runs as its own process over ZeroMQ",
    )
    p.add_argument(
        "--bars",
        action="append",
        metavar="SYMBOL=FILE",
        help="bars for one symbol (repeatable): another instrument of a portfolio run, or a "
        "`data:` input of the artifact (--data holds the first artifact's instrument)",
    )
    p.add_argument(
        "--account",
        metavar="TOML",
        help="account limits ([portfolio] max_exposure_pct, max_concurrent_positions, "
        "max_correlation) for several artifacts backtested on one account (with --paper: "
        "paper-traded in lockstep on one account)",
    )
    p.add_argument(
        "--funding",
        metavar="FILE",
        help="historical funding rates (CSV/parquet: ts_ns or timestamp, funding_rate, "
        "interval_ns; `stratagem data fetch funding` writes them) charged to a perp backtest, "
        "e.g. examples/data/btcusdt-funding-synthetic.csv",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "paper",
        help="paper trade on a live ZeroMQ bar feed (`stratagem data serve`) with the simulated venue",
        description="Subscribe to the market-data bus, run the strategy kernel bar by bar and send its "
        "orders to an order kernel (its own process: started here unless --kernel names a running one). "
        "Stops at end of stream, after --max-bars, or when the feed is silent for --idle-timeout seconds.",
    )
    p.add_argument("artifact", help="artifact YAML")
    p.add_argument(
        "--feed", required=True, help="market-data bus endpoint, e.g. ipc:///tmp/md.sock"
    )
    p.add_argument(
        "--kernel", help="a running `stratagem order-kernel` endpoint (default: start one)"
    )
    p.add_argument("--out", help="output directory (default: runs/<name>-v<version>-paper)")
    p.add_argument("--max-bars", type=int, help="stop after this many bars")
    p.add_argument(
        "--idle-timeout", type=float, default=30.0, help="seconds without a bar before stopping"
    )
    p.add_argument(
        "--data-wait",
        type=int,
        metavar="MS",
        help="how long a bar waits for the bars of the artifact's `data:` inputs before they "
        "count as missing (on_missing: hold logs data_missing, error stops; default 2000)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser(
        "validate",
        help="check artifacts: schema, references, types, cycles, indicators",
        description="Validate one or more artifacts. Problems are printed as FILE:LINE: FIELD: MESSAGE.",
    )
    p.add_argument("artifacts", nargs="+", help="artifact YAML files")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "replay",
        help="re-run a finished run and check its logs reproduce byte for byte",
        description="Re-run RUN_DIR (written by `stratagem run`) from its artifact copy and data, and "
        "compare both logs record by record. Exit 0 if identical, 3 with the first divergence otherwise.",
    )
    p.add_argument(
        "run_dir", help="a directory written by `stratagem run`, e.g. runs/rsi-reversion-v1"
    )
    p.add_argument(
        "--data", help="the data file, if it moved since the run (its digest must match)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("log", help="inspect logs", description="Inspect strategy and order logs.")
    log_sub = p.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    q = log_sub.add_parser(
        "verify",
        help="check a log's hash chain and framing; name the first bad record",
        description="Verify strategy logs (*.jsonl) and order logs (msgpack). A torn tail or an edited "
        "record is reported with its position and the command exits 2.",
    )
    q.add_argument(
        "logs", nargs="+", help="log files, e.g. runs/x/strategy.log.jsonl runs/x/orders.log"
    )
    q.set_defaults(func=cmd_log_verify)

    p = sub.add_parser(
        "sweep",
        help="backtest a grid or random sample of parameter values, optionally walk-forward",
        description="Sweep artifact parameters (dotted paths such as nodes.rsi.params.period). "
        "Grid: PATH=V1,V2 or PATH=LO:HI:STEP. Random search: PATH=LO..HI with --random N. "
        "Runs in parallel local processes (or a Dask cluster with --executor dask --address).",
    )
    p.add_argument("artifact", help="artifact YAML")
    p.add_argument(
        "--param",
        action="append",
        required=True,
        metavar="PATH=VALUES",
        help="a swept parameter (repeatable)",
    )
    p.add_argument(
        "--random",
        type=int,
        metavar="N",
        help="random search: N seeded samples instead of the grid",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    p.add_argument(
        "--objective",
        default="sharpe",
        help="metric to rank by (default sharpe), e.g. total_return_pct",
    )
    p.add_argument(
        "--walk-forward",
        metavar="TRAIN:TEST",
        help="walk-forward with TRAIN and TEST windows in bars",
    )
    p.add_argument(
        "--executor",
        choices=["auto", "process", "serial", "dask"],
        default="auto",
        help="auto (default): worker processes only when the sweep is long enough to pay for "
        "starting them",
    )
    p.add_argument(
        "--engine",
        choices=["auto", "fast", "event"],
        default="auto",
        help="auto (default): the fast path, the event-driven kernels where it cannot run; "
        "event: always the real kernels (records each run's strategy-log head)",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    p.add_argument("--address", help="Dask scheduler address (with --executor dask)")
    p.add_argument(
        "--bars",
        action="append",
        metavar="SYMBOL=FILE",
        help="bars of a `data:` input's symbol (repeatable), as for `stratagem run`",
    )
    p.add_argument(
        "--funding",
        metavar="FILE",
        help="funding rates charged to a perp in every run, as for `stratagem run`",
    )
    p.add_argument("--data", help="bars as CSV or parquet (default: the bundled sample data)")
    p.add_argument(
        "--from", dest="start", type=_parse_date_ns, help="first bar time, ISO date (UTC)"
    )
    p.add_argument(
        "--to", dest="end", type=_parse_date_ns, help="last bar time (exclusive), ISO date (UTC)"
    )
    p.add_argument("--out", help="write every result as CSV to this file")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("schema", help="print the artifact JSON Schema (stratagem/v1)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, user_error_types()):
            print(format_user_error(exc), file=sys.stderr)
            return 2
        raise
    return code


if __name__ == "__main__":
    raise SystemExit(main())
