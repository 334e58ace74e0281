"""Paper trading on a live feed: bars from the ZeroMQ market-data bus, the simulated venue in the
order kernel (in-process or its own process), the same bar loop as the backtest.

Fed the same bars, a paper run writes the same strategy log as the backtest, byte for byte. Feed
problems are never hidden: a sequence gap on the bus and an out-of-order bar are logged records
(the bar loop only ever sees bars in time order), and the run stops on end-of-stream, after
`max_bars`, or when the feed stays silent for `idle_timeout_ms`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifacts.graph import SignalGraph
from artifacts.schema import Artifact
from feeds.bus import BarEvent, EndOfStream, Gap, Subscriber, bar_topic
from feeds.schema import timeframe_to_ns
from indicators.nodes import BarValues
from strategy_kernel.backtest import BacktestResult, BarLoop, instrument_spec, log_run_header
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.errors import BacktestError
from strategy_kernel.log import StrategyLog
from strategy_kernel.transport import KernelPort


@dataclass(frozen=True)
class PaperStop:
    reason: str  # "end_of_stream" | "max_bars" | "idle"
    bars: int
    feed_gaps: int
    out_of_order: int


def run_paper(
    artifact: Artifact,
    graph: SignalGraph,
    subscriber: Subscriber,
    kernel: KernelPort,
    *,
    out_dir: Path | None,
    session_id: str = "paper",
    max_bars: int | None = None,
    idle_timeout_ms: int = 30_000,
    base_dir: Path | None = None,
    on_bar: Callable[[int], None] | None = None,
) -> tuple[BacktestResult | None, PaperStop]:
    """Run until the feed ends; returns the run's result (None if no bar came) and why it stopped."""
    if artifact.data:
        raise BacktestError(
            f"paper mode does not subscribe to the data inputs ({', '.join(sorted(artifact.data))}) "
            "yet: backtest this artifact (run_backtest with data_bars) instead"
        )
    inst = artifact.instrument
    tf_ns = timeframe_to_ns(inst.timeframe)
    topic = bar_topic(inst.symbol, inst.timeframe)
    sk = StrategyKernel(
        artifact, graph, session_id=session_id, timeframe_ns=tf_ns, base_dir=base_dir
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    sk.log = StrategyLog(out_dir / "strategy.log.jsonl" if out_dir else None)
    loop = BarLoop(sk, kernel, artifact, instrument_spec(artifact), tf_ns)
    gaps = disorder = 0
    last_ts: int | None = None
    reason = "idle"
    try:
        while max_bars is None or len(loop.ts) < max_bars:
            ev = subscriber.recv(idle_timeout_ms)
            if ev is None:
                reason = "idle"
                break
            if isinstance(ev, EndOfStream):
                reason = "end_of_stream"
                break
            if isinstance(ev, Gap):
                gaps += 1
                if last_ts is not None:
                    sk.log.append("feed_gap", last_ts, topic=ev.topic, missing=ev.count)
                continue
            if not isinstance(ev, BarEvent) or ev.topic != topic:
                continue
            b = ev.bar
            if last_ts is not None and b.ts_ns <= last_ts:
                disorder += 1
                sk.log.append("feed_out_of_order", last_ts, bar_ts_ns=b.ts_ns, rule="bar ignored")
                continue
            if last_ts is None:
                log_run_header(sk.log, artifact, b.ts_ns, session_id)
            last_ts = b.ts_ns
            loop.step_prices(BarValues(b.ts_ns, b.open, b.high, b.low, b.close, b.volume))
            if on_bar is not None:
                on_bar(len(loop.ts))
        else:
            reason = "max_bars"
        stop = PaperStop(reason, len(loop.ts), gaps, disorder)
        return (loop.result() if loop.ts else None), stop
    finally:
        sk.log.close()
