"""`stratagem run`: load and check an artifact, read the bars, backtest, write and print results."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.io import load_with_lines
from artifacts.schema import Artifact
from feeds.files import read_bars
from stratagem.errors import StratagemError
from stratagem.portfolio_cli import bars_for_symbols
from stratagem.staging import staged_dir
from strategy_kernel.backtest import BacktestResult, run_backtest
from strategy_kernel.replay import write_run_file
from strategy_kernel.report import summary, trade_rows, write_reports
from strategy_kernel.transport import KernelPort, RemoteKernel, order_kernel_process

if TYPE_CHECKING:
    from strategy_kernel.paper import RecordedFeed


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:,.2f}"
    return str(x)


def print_table(result: BacktestResult, out_dir: Path, files: dict[str, Path]) -> None:
    a = result.artifact
    m = result.metrics
    print(
        f"\n{a.name} v{a.version} ({result.artifact_hash[:12]}) on {a.instrument.symbol} {a.instrument.timeframe}"
    )
    s = summary(result)
    print(f"bars {s['bars']:,}  from {s['from']}  to {s['to']}\n")
    if result.data_gaps:
        g = result.data_gaps
        print(
            f"  warning: {g['gaps']} gap(s) in the data, {g['missing_bars']} bar(s) missing; "
            "they were not filled (see `stratagem data gaps`)\n"
        )
    rows = [
        ("equity", f"{m.start_equity:,.2f} -> {m.end_equity:,.2f}"),
        ("total return %", _fmt(m.total_return_pct)),
        ("CAGR %", _fmt(m.cagr_pct)),
        ("Sharpe / Sortino", f"{_fmt(m.sharpe)} / {_fmt(m.sortino)}"),
        ("max drawdown %", f"{_fmt(m.max_drawdown_pct)} ({m.max_drawdown_bars} bars)"),
        ("trades / win rate %", f"{m.trades} / {_fmt(m.win_rate_pct)}"),
        ("profit factor", _fmt(m.profit_factor)),
        ("expectancy / avg R", f"{_fmt(m.expectancy)} / {_fmt(m.avg_r)}"),
        ("exposure %", _fmt(m.exposure_pct)),
        ("fees / funding paid", f"{_fmt(m.fees_paid)} / {_fmt(m.funding_paid)}"),
        ("risk refusals", str(len(result.refusals))),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    trades = trade_rows(result)
    if trades:
        print(f"\nlast {min(5, len(trades))} of {len(trades)} trades:")
        print(f"  {'entry (UTC)':<20} {'side':<5} {'entry':>11} {'exit':>11} {'pnl':>10}  reason")
        for t in trades[-5:]:
            print(
                f"  {t['entry_time']:<20} {t['side']:<5} {t['entry_price']:>11,.2f} "
                f"{(t['exit_price'] or 0):>11,.2f} {t['pnl']:>10,.2f}  {t['exit_reason']}"
            )
    print(f"\nlogs and reports in {out_dir}/:")
    for name in ("strategy.log.jsonl", "orders.log"):
        print(f"  {name}")
    for p in files.values():
        print(f"  {p.name}")


def adopt_kernel_log(run_dir: Path, session: str) -> None:
    """The order-kernel process we started kept the session's log: make it the run's order log."""
    shutil.move(run_dir / "order-kernel" / "logs" / f"{session}.log", run_dir / "orders.log")
    shutil.rmtree(run_dir / "order-kernel")


def plotted_nodes(graph: SignalGraph, limit: int = 4) -> tuple[str, ...]:
    """Float nodes worth a line on the report (indicators first), in graph order."""
    floats = [
        n
        for n in graph.order
        if graph.types[n] == "float" and graph.graph.nodes[n].get("kind") != "lookback"
    ]
    ranked = [n for n in floats if n in graph.indicators] + [
        n for n in floats if n not in graph.indicators
    ]
    return tuple(ranked[:limit])


def data_inputs(
    artifact: Artifact,
    bars_files: dict[str, Path],
    data_path: Path,
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, tuple[Path, pl.DataFrame]]:
    """Bars for the artifact's `data:` symbols, each from its --bars file."""
    unused = sorted(set(bars_files) - {d.symbol for d in (artifact.data or {}).values()})
    if unused:
        raise StratagemError(
            f"--bars for {', '.join(unused)}: {artifact.name} has no `data:` input on that symbol"
        )
    symbols = [d.symbol for d in (artifact.data or {}).values()]
    default = (artifact.instrument.symbol, data_path)
    return bars_for_symbols(symbols, bars_files, default, start_ns, end_ns)


def paper_on_recorded_bars(
    artifact: Artifact,
    graph: SignalGraph,
    bars: pl.DataFrame,
    frames: dict[str, pl.DataFrame],
    *,
    kernel: KernelPort,
    out_dir: Path,
    session_id: str,
    base_dir: Path | None,
    record_nodes: tuple[str, ...],
    progress: Callable[[int], None] | None = None,
    funding: dict[str, object] | None = None,
) -> BacktestResult:
    """Paper mode on recorded bars: the instrument's and the `data:` inputs' bars are published
    on a market-data bus (`RecordedFeed`, merged by close time) and `run_paper` takes them from
    there, exactly as it would from a live feed. The strategy log equals the backtest's."""
    from feeds.bus import Subscriber, bar_topic
    from feeds.endpoints import ipc_endpoint
    from feeds.schema import timeframe_to_ns
    from strategy_kernel.backtest import check_data
    from strategy_kernel.paper import RecordedFeed, run_paper

    inst = artifact.instrument
    main = bar_topic(inst.symbol, inst.timeframe)
    series = {main: (bars, timeframe_to_ns(inst.timeframe))}
    for spec in (artifact.data or {}).values():
        topic = bar_topic(spec.symbol, spec.timeframe)
        series.setdefault(topic, (frames[spec.symbol], timeframe_to_ns(spec.timeframe)))
    data_gaps = check_data(artifact, bars)  # logged after the header, as the backtest does
    endpoint = ipc_endpoint(out_dir / "md.sock")
    feed = RecordedFeed(endpoint, series, [main])
    try:
        with Subscriber(endpoint, sorted(series), rcvhwm=0) as sub:
            feed.start()

            def on_bar(n: int) -> None:
                feed.ack(n)
                if progress is not None:
                    progress(n)

            result, stop = run_paper(
                artifact,
                graph,
                sub,
                kernel,
                out_dir=out_dir,
                session_id=session_id,
                idle_timeout_ms=60_000,
                base_dir=base_dir,
                on_bar=on_bar,
                record_nodes=record_nodes,
                data_gaps=data_gaps,
                funding=funding,
            )
    finally:
        feed.close()
        Path(endpoint.removeprefix("ipc://")).unlink(missing_ok=True)
    if feed.error or result is None or stop.reason != "end_of_stream" or stop.bars != bars.height:
        raise StratagemError(
            f"the paper run on the recorded bars stopped early ({stop.reason} after {stop.bars} "
            f"of {bars.height} bars, feed gaps {stop.feed_gaps}, out of order "
            f"{stop.out_of_order}){': ' + feed.error if feed.error else ''}; rerun it, or "
            "backtest without --paper"
        )
    return result


def _recorded_feed(
    artifacts: list[Artifact],
    data_path: Path,
    bars_files: dict[str, Path],
    start_ns: int | None,
    end_ns: int | None,
    state_dir: Path,
) -> RecordedFeed | None:
    """A `RecordedFeed` of the instrument's and every `data:` input's bars for a paper service,
    or None when no artifact has `data:` inputs (then the runner's own replay feed is enough)."""
    from feeds.bus import bar_topic
    from feeds.endpoints import ipc_endpoint
    from feeds.schema import timeframe_to_ns
    from strategy_kernel.paper import RecordedFeed

    read = {d.symbol for a in artifacts for d in (a.data or {}).values()}
    unused = sorted(set(bars_files) - read)
    if unused:
        raise StratagemError(
            f"--bars for {', '.join(unused)}: no artifact has a `data:` input on that symbol"
        )
    if not read:
        return None
    inst = artifacts[0].instrument
    main = bar_topic(inst.symbol, inst.timeframe)
    others = sorted(
        {bar_topic(a.instrument.symbol, a.instrument.timeframe) for a in artifacts} - {main}
    )
    if others:
        raise StratagemError(
            f"--data holds {main} but other artifacts trade {', '.join(others)}: a paper service "
            "on recorded bars runs artifacts of one instrument"
        )
    series = {main: (read_bars(data_path, start_ns=start_ns, end_ns=end_ns),
                     timeframe_to_ns(inst.timeframe))}  # fmt: skip
    for a in artifacts:
        own = {d.symbol for d in (a.data or {}).values()}
        files = {s: p for s, p in bars_files.items() if s in own}
        frames = data_inputs(a, files, data_path, start_ns, end_ns)
        for spec in (a.data or {}).values():
            series.setdefault(
                bar_topic(spec.symbol, spec.timeframe),
                (frames[spec.symbol][1], timeframe_to_ns(spec.timeframe)),
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    return RecordedFeed(
        ipc_endpoint(state_dir / "md.sock"),
        series,
        [main],
        window=1 << 62,  # no acks from the sessions: the bus queues are unbounded
        subscribers=len(artifacts),
    )


def run_backtest_cli(
    *,
    artifact_path: Path,
    data_path: Path,
    start_ns: int | None,
    end_ns: int | None,
    out_dir: Path | None,
    as_json: bool,
    plots: bool,
    quiet: bool,
    paper: bool = False,
    bars_files: dict[str, Path] | None = None,
    funding_path: Path | None = None,
) -> int:
    """One artifact: backtest, or with `paper` a paper run with the order kernel in its own
    process and the bars (instrument and `data:` inputs) over the market-data bus. A funding
    file charges historical funding to a perp (in paper mode the kernel process is given it)."""
    artifact, lines = load_with_lines(artifact_path)
    graph = check(artifact, str(artifact_path), lines)
    bars = read_bars(data_path, start_ns=start_ns, end_ns=end_ns)
    funding = schedule = None
    if funding_path is not None:
        from feeds.funding import read_funding
        from strategy_kernel.backtest import funding_schedule

        funding = read_funding(funding_path)
        schedule = funding_schedule(artifact, bars, funding)  # refuses a spot artifact
    extra = data_inputs(artifact, bars_files or {}, data_path, start_ns, end_ns)
    frames = {s: df for s, (_, df) in extra.items()}
    if paper:  # refuse bad bars before any process starts, with the backtest's own checks
        from feeds.schema import timeframe_to_ns
        from strategy_kernel.backtest import check_data, check_length, warmup_of
        from strategy_kernel.multidata import DataFeed

        check_data(artifact, bars)
        check_length(bars.height, warmup_of(artifact, graph, artifact_path.parent))
        if artifact.data:
            DataFeed(artifact, frames, timeframe_to_ns(artifact.instrument.timeframe))
    final_dir = out_dir or Path("runs") / f"{artifact.name}-v{artifact.version}"
    with staged_dir(final_dir) as tmp:  # nothing half-written if the run fails
        from tqdm import tqdm

        show = not quiet and not as_json and sys.stderr.isatty()
        with contextlib.ExitStack() as stack:
            progress = stack.enter_context(
                tqdm(
                    total=bars.height,
                    unit="bar",
                    desc="paper" if paper else "backtest",
                    file=sys.stderr,
                    mininterval=0.2,
                    disable=not show,
                )
            )
            if paper:  # the order kernel in its own process, over ZeroMQ
                endpoint = stack.enter_context(
                    order_kernel_process(artifact, tmp / "order-kernel", funding=schedule)
                )
                kernel = RemoteKernel(endpoint, "bt")
                stack.callback(kernel.close)
                result = paper_on_recorded_bars(
                    artifact,
                    graph,
                    bars,
                    frames,
                    kernel=kernel,
                    out_dir=tmp,
                    session_id="bt",
                    base_dir=artifact_path.parent,
                    record_nodes=plotted_nodes(graph),
                    progress=lambda i: progress.update(1),
                    funding=schedule.record() if schedule else None,
                )
            else:
                result = run_backtest(
                    artifact,
                    graph,
                    bars,
                    out_dir=tmp,
                    progress=lambda i: progress.update(1),
                    base_dir=artifact_path.parent,
                    record_nodes=plotted_nodes(graph),
                    data_bars=frames,
                    funding=funding,
                )
        if paper:  # keep the kernel's own log as the run's order log; drop the process scratch
            adopt_kernel_log(tmp, "bt")
        files = write_reports(result, tmp, png=plots, html=plots)
        write_run_file(
            tmp,
            artifact=artifact,
            artifact_path=artifact_path,
            data_path=data_path,
            bars=bars,
            start_ns=start_ns,
            end_ns=end_ns,
            extra=extra,
            funding=(funding_path, funding) if funding_path and funding is not None else None,
        )
    files = {k: final_dir / p.name for k, p in files.items()}
    if as_json:
        data = summary(result)
        data["out_dir"] = str(final_dir)
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        if paper:
            print(
                "\npaper: order kernel in its own process over ZeroMQ, the recorded bars over the "
                "market-data bus"
            )
        print_table(result, final_dir, files)
        if artifact.instrument.kind == "perp" and funding is None:
            print(
                "\nnote: a perpetual without funding rates was charged no funding; give "
                "--funding FILE (`stratagem data fetch funding` downloads them)"
            )
    return 0


def run_paper_cli(
    *,
    artifact_path: Path,
    feed: str,
    kernel_endpoint: str | None,
    out_dir: Path | None,
    max_bars: int | None,
    idle_timeout_ms: int,
    plots: bool,
    data_wait_ms: int | None = None,
) -> int:
    """`stratagem paper`: `data_wait_ms` is how long a bar waits for its `data:` inputs' bars
    (None: `paper.DATA_WAIT_MS`)."""
    from feeds.bus import Subscriber, bar_topic
    from strategy_kernel.paper import DATA_WAIT_MS, run_paper

    if data_wait_ms is not None and data_wait_ms < 0:
        raise StratagemError(f"--data-wait must be 0 or more milliseconds, got {data_wait_ms}")

    artifact, lines = load_with_lines(artifact_path)
    graph = check(artifact, str(artifact_path), lines)
    final_dir = out_dir or Path("runs") / f"{artifact.name}-v{artifact.version}-paper"
    final_dir.mkdir(parents=True, exist_ok=True)
    topic = bar_topic(artifact.instrument.symbol, artifact.instrument.timeframe)
    inputs = sorted(  # the `data:` inputs' own topics
        {bar_topic(d.symbol, d.timeframe) for d in (artifact.data or {}).values()} - {topic}
    )
    with contextlib.ExitStack() as stack:
        endpoint = kernel_endpoint or stack.enter_context(
            order_kernel_process(artifact, final_dir / "order-kernel")
        )
        kernel = RemoteKernel(endpoint, "paper")
        stack.callback(kernel.close)
        sub = stack.enter_context(Subscriber(feed, [topic, *inputs]))
        print(
            f"paper: {artifact.name} v{artifact.version} on {topic} from {feed}; order kernel {endpoint}"
            + (f"; data inputs {', '.join(inputs)}" if inputs else "")
        )
        result, stop = run_paper(
            artifact,
            graph,
            sub,
            kernel,
            out_dir=final_dir,
            max_bars=max_bars,
            idle_timeout_ms=idle_timeout_ms,
            base_dir=artifact_path.parent,
            data_wait_ms=DATA_WAIT_MS if data_wait_ms is None else data_wait_ms,
        )
    if (
        kernel_endpoint is None
    ):  # the kernel we started kept its log: it becomes the run's order log
        adopt_kernel_log(final_dir, "paper")
    print(
        f"paper stopped ({stop.reason}) after {stop.bars} bars; feed gaps {stop.feed_gaps}, "
        f"out-of-order bars {stop.out_of_order}"
    )
    if result is None:
        print("no bar arrived: nothing to report")
        return 0
    files = write_reports(result, final_dir, png=plots, html=plots)
    print_table(result, final_dir, files)
    return 0


def run_service_paper_cli(
    *,
    artifact_paths: list[Path],
    data_path: Path,
    start_ns: int | None,
    end_ns: int | None,
    out_dir: Path | None,
    as_json: bool,
    bars_files: dict[str, Path] | None = None,
) -> int:
    """`stratagem run a.yaml b.yaml --paper`: the service runner on the recorded bars, as fast
    as the sessions take them: one order-kernel process, a strategy session per artifact.

    Artifacts with `data:` inputs read those symbols' bars from `bars_files` (--bars SYMBOL=FILE);
    then every series is published on a market-data bus merged by close time (`RecordedFeed`)
    and the sessions subscribe to it, as they would to a live feed."""
    from stratagem.service.runner import Runner
    from stratagem.service.settings import (
        FeedSettings,
        RunnerSettings,
        ServiceSettings,
        StrategyEntry,
    )

    names = [p.stem for p in artifact_paths]
    if len(set(names)) != len(names):
        raise StratagemError(f"artifact file names must differ (they name the runs): {names}")
    root = out_dir or Path("runs") / ("paper-" + "-".join(names))
    state_dir = root / ".service"
    artifacts = [load_with_lines(p)[0] for p in artifact_paths]
    recorded = _recorded_feed(artifacts, data_path, bars_files or {}, start_ns, end_ns, state_dir)
    feed = (
        FeedSettings(data=data_path, bars_per_second=0, start_ns=start_ns, end_ns=end_ns,
                     idle_timeout_s=30)
        if recorded is None
        else FeedSettings(mode="bus", endpoint=recorded.endpoint, idle_timeout_s=30)
    )  # fmt: skip
    runner = Runner(
        ServiceSettings(
            runs_dir=root,
            runner=RunnerSettings(
                name="paper",
                state_dir=state_dir,
                strategies=[
                    StrategyEntry(name=n, artifact=p)
                    for n, p in zip(names, artifact_paths, strict=True)
                ],
                feed=feed,
                snapshot_every_bars=1_000,
                snapshot_interval_s=5.0,
            ),
        )
    )
    if recorded is None:
        code = runner.run()
    else:
        try:
            recorded.start()  # publishes once every session subscribed
            code = runner.run()
        finally:
            recorded.close()
            Path(recorded.endpoint.removeprefix("ipc://")).unlink(missing_ok=True)
        if recorded.error:
            raise StratagemError(f"the recorded feed failed: {recorded.error}")
    out: dict[str, dict[str, Any]] = {}
    for name, session in sorted(runner.sessions.items()):
        metrics_path = session.cfg.run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text())["metrics"] if metrics_path.is_file() else {}
        out[name] = {
            "run_dir": str(session.cfg.run_dir),
            "state": session.state,
            "bars": session.bars,
            "error": session.error,
            "metrics": metrics,
        }
    if as_json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(f"paper service on {data_path.name}: one order-kernel process, {len(names)} sessions")
        for name, row in out.items():
            mt = row["metrics"]
            print(
                f"  {name}: {row['state']} ({row['bars']} bars) return "
                f"{_fmt(mt.get('total_return_pct'))} %  trades {mt.get('trades')}  "
                f"Sharpe {_fmt(mt.get('sharpe'))}  -> {row['run_dir']}"
            )
    return code
