"""`stratagem run A.yaml B.yaml [--account account.toml]`: several artifacts backtested on one
account under portfolio limits (total exposure, concurrent positions, correlation guard).

Each strategy keeps its own logs and reports in `<out>/<name>/`; the account view (equity,
gross exposure, open positions per timestamp) goes to `<out>/account.csv` and the portfolio's
decisions to `<out>/portfolio.log.jsonl`. Written into a temporary directory and moved into
place at the end, like a single run.

With `--paper` (`--paper --account`), the same account runs as a paper session in lockstep
(`strategy_kernel.paper.run_portfolio_paper`): every instrument's and `data:` input's bars are
published on a market-data bus and the orders go to order-kernel processes (one per group of
artifacts sharing the simulated venue's settings, a session per artifact). Fed the same bars it
writes the backtest's strategy logs and `portfolio.log.jsonl`, byte for byte; each strategy's
`orders.log` is the kernel process's session log.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from artifacts.graph import check
from artifacts.io import load_with_lines
from artifacts.schema import Artifact
from feeds.files import read_bars
from stratagem.errors import StratagemError
from stratagem.staging import staged_dir
from strategy_kernel.metrics import drawdown
from strategy_kernel.portfolio import (
    AccountLimits,
    PortfolioResult,
    load_account_limits,
    run_portfolio_backtest,
)
from strategy_kernel.report import summary, write_reports
from strategy_kernel.transport import kernel_config


def _fmt(x: object) -> str:
    return "n/a" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def parse_bars_options(items: list[str] | None) -> dict[str, Path]:
    """`--bars SYMBOL=FILE` (repeatable) → {symbol: path}; a symbol given twice is an error."""
    out: dict[str, Path] = {}
    for item in items or []:
        symbol, sep, path = item.partition("=")
        if not sep or not symbol or not path:
            raise StratagemError(f"--bars {item!r}: expected SYMBOL=FILE, e.g. ETH/USDT=eth.csv")
        if symbol in out:
            raise StratagemError(f"--bars gives {symbol} twice; give each symbol one file")
        out[symbol] = Path(path)
    return out


def bars_for_symbols(
    symbols: list[str],
    bars_files: dict[str, Path],
    default: tuple[str, Path],
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, tuple[Path, pl.DataFrame]]:
    """Read each symbol's bars from its `--bars` file; `default` = (symbol, --data file) is the
    main instrument's. Any other symbol without a file is an error, never another symbol's bars."""
    files = {default[0]: default[1], **bars_files}
    missing = sorted(set(symbols) - set(files))
    if missing:
        raise StratagemError(
            f"no bars for {', '.join(missing)}: --data holds {default[0]}; add "
            + " ".join(f"--bars {s}=FILE" for s in missing)
        )
    return {
        s: (files[s], read_bars(files[s], start_ns=start_ns, end_ns=end_ns))
        for s in sorted(set(symbols))
    }


def _account_rows(res: PortfolioResult) -> list[dict[str, Any]]:
    return [
        {"ts_ns": int(t), "equity": float(e), "exposure": float(x), "open_positions": int(n)}
        for t, e, x, n in zip(
            res.ts_ns.tolist(),
            res.equity.tolist(),
            res.exposure.tolist(),
            res.open_positions.tolist(),
            strict=True,
        )
    ]


def portfolio_summary(res: PortfolioResult, limits: AccountLimits) -> dict[str, Any]:
    """Account totals plus each strategy's `summary`; JSON-ready and deterministic."""
    eq = res.equity
    max_dd = float(-drawdown(eq).min() * 100.0)
    return {
        "account": {
            "start_equity": float(eq[0]),
            "end_equity": float(eq[-1]),
            "max_drawdown_pct": max_dd,
            "max_exposure": float(res.exposure.max()),
            "max_open_positions": int(res.open_positions.max()),
            "refusals": len(res.refusals),
            "limits": {
                "max_exposure_pct": limits.max_exposure_pct,
                "max_concurrent_positions": limits.max_concurrent_positions,
                "max_correlation": limits.max_correlation,
            },
            "portfolio_log_head": res.portfolio_log_head,
        },
        "strategies": {name: summary(r) for name, r in sorted(res.results.items())},
    }


def kernel_groups(artifacts: list[Artifact]) -> list[tuple[str, list[Artifact]]]:
    """kernel.toml texts and their artifacts: one order-kernel process serves the artifacts whose
    simulated venue is configured alike (slippage, seed) and whose instruments agree, so each
    session simulates exactly what its backtest does; the others get a process of their own."""
    groups: list[tuple[str, dict[str, str], list[Artifact]]] = []
    for a in artifacts:
        head, sep, rest = kernel_config(a).partition("[[instruments]]")
        block = sep + rest
        for g_head, blocks, members in groups:
            if g_head == head and blocks.get(a.instrument.symbol, block) == block:
                blocks[a.instrument.symbol] = block
                members.append(a)
                break
        else:
            groups.append((head, {a.instrument.symbol: block}, [a]))
    return [(h + "".join(b[s] for s in sorted(b)), members) for h, b, members in groups]


def run_portfolio_paper_cli(
    artifacts: list[Artifact],
    frames: dict[str, pl.DataFrame],
    limits: AccountLimits,
    out_dir: Path,
    base_dir: Path,
) -> PortfolioResult:
    """The portfolio as a paper session in lockstep, on the recorded bars over the bus; returns
    the same result as `run_portfolio_backtest` would."""
    from feeds.bus import Subscriber, bar_topic
    from feeds.endpoints import ipc_endpoint
    from feeds.schema import timeframe_to_ns
    from stratagem.service.runner import OrderKernelProcess
    from strategy_kernel.backtest import check_data
    from strategy_kernel.multidata import DataFeed
    from strategy_kernel.paper import RecordedFeed, run_portfolio_paper
    from strategy_kernel.portfolio import check_lineup
    from strategy_kernel.transport import KernelPort, RemoteKernel

    tf_ns = check_lineup(artifacts)  # refuse bad input before any process starts
    for a in artifacts:
        check_data(a, frames[a.instrument.symbol])
        if a.data:
            DataFeed(a, frames, tf_ns)

    series: dict[str, tuple[pl.DataFrame, int]] = {}
    instruments = []
    for a in artifacts:
        topic = bar_topic(a.instrument.symbol, a.instrument.timeframe)
        series[topic] = (frames[a.instrument.symbol], timeframe_to_ns(a.instrument.timeframe))
        instruments.append(topic)
    for a in artifacts:
        for d in (a.data or {}).values():
            topic = bar_topic(d.symbol, d.timeframe)
            series.setdefault(topic, (frames[d.symbol], timeframe_to_ns(d.timeframe)))
    steps = len(set().union(*(frames[a.instrument.symbol]["ts_ns"].to_list() for a in artifacts)))
    endpoint = ipc_endpoint(out_dir / "md.sock")
    procs: list[tuple[OrderKernelProcess, list[Artifact]]] = []
    with contextlib.ExitStack() as stack:
        for k, (config, members) in enumerate(kernel_groups(artifacts)):
            proc = OrderKernelProcess(out_dir / f"order-kernel-{k}", config)
            stack.callback(proc.stop)
            proc.start()
            procs.append((proc, members))
        kernels: dict[str, KernelPort] = {}
        for proc, members in procs:
            for a in members:
                remote = RemoteKernel(proc.endpoint, a.name)
                stack.callback(remote.close)
                kernels[a.name] = remote
        feed = RecordedFeed(endpoint, series, instruments)
        stack.callback(Path(endpoint.removeprefix("ipc://")).unlink, missing_ok=True)
        stack.callback(feed.close)
        sub = stack.enter_context(Subscriber(endpoint, sorted(series), rcvhwm=0))
        feed.start()
        res, stop = run_portfolio_paper(
            artifacts,
            sub,
            kernels,
            account=limits,
            out_dir=out_dir,
            base_dir=base_dir,
            on_step=feed.ack,
            idle_timeout_ms=60_000,
        )
    if feed.error or res is None or stop.reason != "end_of_stream" or stop.bars != steps:
        raise StratagemError(
            f"the portfolio paper run stopped early ({stop.reason} after {stop.bars} of {steps} "
            f"timestamps, feed gaps {stop.feed_gaps}, out of order {stop.out_of_order})"
            f"{': ' + feed.error if feed.error else ''}; rerun it, or backtest without --paper"
        )
    for proc, members in procs:  # the kernels kept the sessions' logs: the runs' order logs
        for a in members:
            shutil.move(proc.log_path(a.name), out_dir / a.name / "orders.log")
        shutil.rmtree(proc.workdir)
    return res


def run_portfolio_cli(
    *,
    artifact_paths: list[Path],
    data_path: Path,
    bars_files: dict[str, Path],
    account_path: Path | None,
    start_ns: int | None,
    end_ns: int | None,
    out_dir: Path | None,
    as_json: bool,
    plots: bool,
    paper: bool = False,
) -> int:
    artifacts: list[Artifact] = []
    for p in artifact_paths:
        a, lines = load_with_lines(p)
        check(a, str(p), lines)
        artifacts.append(a)
    bases = {p.parent.resolve() for p in artifact_paths}
    if len(bases) > 1 and any(
        n.kind == "python" for a in artifacts for n in a.nodes.values()
    ):  # python node files resolve against one directory
        raise StratagemError(
            "artifacts with python nodes must sit in one directory for a portfolio run"
        )
    limits = load_account_limits(account_path) if account_path else AccountLimits()
    symbols = [a.instrument.symbol for a in artifacts] + [
        d.symbol for a in artifacts for d in (a.data or {}).values()
    ]
    main_symbol = artifacts[0].instrument.symbol
    loaded = bars_for_symbols(symbols, bars_files, (main_symbol, data_path), start_ns, end_ns)
    final = out_dir or Path("runs") / ("portfolio-" + "-".join(a.name for a in artifacts))
    frames = {s: df for s, (_, df) in loaded.items()}
    with staged_dir(final) as tmp:
        if paper:
            res = run_portfolio_paper_cli(artifacts, frames, limits, tmp, artifact_paths[0].parent)
        else:
            res = run_portfolio_backtest(
                artifacts, frames, account=limits, out_dir=tmp, base_dir=artifact_paths[0].parent
            )
        for name, r in res.results.items():
            write_reports(r, tmp / name, png=plots, html=plots)
        with (tmp / "account.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["ts_ns", "equity", "exposure", "open_positions"])
            w.writeheader()
            w.writerows(_account_rows(res))
        data = portfolio_summary(res, limits)
        data["inputs"] = {
            "artifacts": [str(p) for p in artifact_paths],
            "bars": {s: str(p.resolve()) for s, (p, _) in loaded.items()},
            "account": str(account_path) if account_path else None,
        }
        if paper:
            data["inputs"]["mode"] = "paper"
        (tmp / "portfolio.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    data["out_dir"] = str(final)
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    acc = data["account"]
    mode = " (paper: lockstep over the market-data bus, order-kernel processes)" if paper else ""
    print(f"\nportfolio of {len(artifacts)} strategies, one account{mode}")
    print(
        f"  equity {acc['start_equity']:,.2f} -> {acc['end_equity']:,.2f}   "
        f"max drawdown {acc['max_drawdown_pct']:.2f} %   max open positions "
        f"{acc['max_open_positions']}   portfolio refusals {acc['refusals']}"
    )
    print(f"\n  {'strategy':<24} {'return %':>9} {'trades':>7} {'win %':>7} {'refusals':>9}")
    for name, s in data["strategies"].items():
        m = s["metrics"]
        ret, win = (_fmt(m[k]) for k in ("total_return_pct", "win_rate_pct"))
        print(f"  {name:<24} {ret:>9} {m['trades']:>7} {win:>7} {s['refusals']:>9}")
    print(f"\nlogs and reports in {final}/ (one directory per strategy, account.csv)")
    return 0
