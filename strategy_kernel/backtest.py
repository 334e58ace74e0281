"""Event-driven backtest: the real strategy kernel and order kernel on a simulated clock, in-process.

Per bar, in this order (the order is what makes it point-in-time):
1. the bar goes to the order kernel as `MarketBar`: orders decided earlier fill inside it;
2. fill/position events go to the strategy kernel;
3. the strategy kernel sees the bar's close, updates the DAG and sends its decisions, stamped
   with the close time; the order kernel acknowledges them, and they can fill from the next bar on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.io import content_hash
from artifacts.schema import Artifact
from feeds.schema import UnstructuredItem, timeframe_to_ns
from indicators.nodes import BarValues
from order_kernel import messages as m
from order_kernel.instruments import InstrumentSpec
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.venues.sim import SimVenue
from strategy_kernel.engine import StrategyKernel, Trade
from strategy_kernel.errors import BacktestError
from strategy_kernel.log import StrategyLog
from strategy_kernel.metrics import Metrics, TradeStats, compute
from strategy_kernel.transport import KernelPort


@dataclass
class BacktestResult:
    artifact: Artifact
    artifact_hash: str
    ts_ns: npt.NDArray[np.int64]
    close: npt.NDArray[np.float64]
    equity: npt.NDArray[np.float64]
    position: npt.NDArray[np.int64]
    trades: list[Trade]
    metrics: Metrics
    unit_value: float  # quote value of one notional unit
    price_increment: float
    strategy_log_head: str
    order_state_digest: str  # the order kernel's state at the end (orders, positions)
    refusals: list[dict[str, object]] = field(default_factory=list)
    node_series: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    data_gaps: dict[str, object] | None = None  # gaps in the bars, reported (never silently filled)


def trade_stats(trades: Sequence[Trade], unit_value: float) -> list[TradeStats]:
    """Trades in quote currency for the metrics; R is scaled to the filled part of the plan."""
    return [
        TradeStats(
            pnl=t.pnl * unit_value,
            r_multiple=(t.pnl / t.risk_units * (t.planned_qty / t.entry_qty))
            if t.risk_units and t.entry_qty
            else math.nan,
            bars_held=t.exit_bar - t.entry_bar,
            fees=t.fees * unit_value,
        )
        for t in trades
    ]


def check_data(artifact: Artifact, bars: pl.DataFrame) -> dict[str, object] | None:
    """Refuse bars of another timeframe; describe gaps (returned, logged) instead of hiding them."""
    from feeds.validate import check_bars

    tf = artifact.instrument.timeframe
    report = check_bars(bars, tf)
    if not report.ok:
        raise BacktestError(f"the bars are not usable:\n{report.summary()}")
    ts = bars["ts_ns"].to_numpy()
    if len(ts) > 1:
        step = int(np.median(np.diff(ts)))
        if step != timeframe_to_ns(tf) or report.off_grid.count > len(ts) // 2:
            raise BacktestError(
                f"data timeframe mismatch: the bars are {step / 1e9:g} s apart but the artifact trades "
                f"{tf} bars; resample the data (`stratagem data resample FILE --to {tf}`) or change "
                "instrument.timeframe"
            )
    if report.gaps.count:
        return {
            "gaps": report.gaps.count,
            "missing_bars": report.missing_bars,
            "first_missing_ts_ns": list(report.gaps.first_ts_ns),
            "rule": "no filling: indicators step over the gap as if the bars were adjacent",
        }
    return None


def instrument_spec(artifact: Artifact) -> InstrumentSpec:
    inst = artifact.instrument
    bt = artifact.backtest
    from decimal import Decimal

    return InstrumentSpec(
        symbol=inst.symbol,
        price_increment=inst.price_increment,
        size_increment=inst.size_increment,
        maker_fee_bps=Decimal(str(bt.maker_fee_bps)),
        taker_fee_bps=Decimal(str(bt.taker_fee_bps)),
        kind="perp" if inst.kind == "perp" else "spot",
    )


def run_backtest(
    artifact: Artifact,
    graph: SignalGraph,
    bars: pl.DataFrame,
    *,
    out_dir: Path | None = None,
    session_id: str = "bt",
    progress: Callable[[int], None] | None = None,
    record_nodes: tuple[str, ...] = (),
    base_dir: Path | None = None,
    swaps: Sequence[tuple[int, Artifact]] = (),
    items: Sequence[UnstructuredItem] = (),
    kernel: KernelPort | None = None,
) -> BacktestResult:
    """Run the artifact over `bars` (BAR_SCHEMA). Writes logs into out_dir when given.

    `base_dir` resolves python nodes' files (the artifact's directory). `swaps` hot-swaps a new
    artifact version in after the given bar index closes (re-parameterisation without teardown).
    `kernel` replaces the in-process order kernel, e.g. a `RemoteKernel` in its own process over
    ZeroMQ (paper mode); that kernel keeps its own order log.
    """
    tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
    n = bars.height
    inst = instrument_spec(artifact)
    data_gaps = check_data(artifact, bars)
    sk = StrategyKernel(
        artifact, graph, session_id=session_id, timeframe_ns=tf_ns, base_dir=base_dir
    )
    if n < sk.warmup + 1:
        raise BacktestError(
            f"{n} bars is not enough: the strategy needs {sk.warmup} warm-up bars plus at least one to trade; "
            "give more data (--from earlier) or shorten indicator periods"
        )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    ok: KernelPort
    olog: OrderLog | None = None
    if kernel is None:
        venue = SimVenue(
            slippage_ticks=artifact.backtest.slippage_ticks, seed=artifact.backtest.seed
        )
        local = OrderKernel(session_id, {inst.symbol: inst}, venue)
        # A backtest can be rerun at will, so its order log is not fsynced record by record.
        olog = OrderLog(out_dir / "orders.log", fsync="never") if out_dir else None
        local.log = olog
        ok = local
    else:
        ok = kernel
    slog = StrategyLog(out_dir / "strategy.log.jsonl" if out_dir else None)
    sk.log = slog
    slog.append(
        "run",
        int(bars["ts_ns"][0]),
        artifact=artifact.name,
        version=artifact.version,
        content_hash=content_hash(artifact),
        session=session_id,
        seed=artifact.backtest.seed,
        log_format=1,
    )
    if data_gaps is not None:  # explicit and logged: bars are processed as they come, no filling
        slog.append("data_gaps", int(bars["ts_ns"][0]), **data_gaps)
    try:
        result = _simulate(sk, ok, bars, artifact, inst, tf_ns, progress, record_nodes, dict(swaps))
        result.data_gaps = data_gaps
        return result
    finally:
        slog.close()
        if olog is not None:
            olog.close()


def _simulate(
    sk: StrategyKernel,
    ok: KernelPort,
    bars: pl.DataFrame,
    artifact: Artifact,
    inst: InstrumentSpec,
    tf_ns: int,
    progress: Callable[[int], None] | None,
    record_nodes: tuple[str, ...],
    swaps: dict[int, Artifact],
) -> BacktestResult:
    n = bars.height
    session_id = sk.session_id
    price_inc = float(inst.price_increment)
    size_inc = float(inst.size_increment)

    ts = bars["ts_ns"].to_numpy()
    cols = {c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    ticks = {
        c: np.rint(cols[c] / price_inc).astype(np.int64) for c in ("open", "high", "low", "close")
    }
    lots = np.rint(cols["volume"] / size_inc).astype(np.int64)
    equity = np.empty(n, dtype=np.float64)
    position = np.empty(n, dtype=np.int64)
    node_series = {k: np.full(n, math.nan) for k in record_nodes}
    traded_units = 0

    def deliver(cmds: list[m.Message]) -> None:
        nonlocal traded_units
        queue = list(cmds)
        while queue:
            cmd = queue.pop(0)
            for ev in ok.handle(cmd):  # type: ignore[arg-type]
                if isinstance(ev, m.OrderFilled):
                    traded_units += ev.qty * ev.price
                queue.extend(sk.on_event(ev))

    for i in range(n):
        bar_msg = m.MarketBar(  # market data is its own stream: not in the session's seq
            session_id=session_id,
            seq=0,
            ts_ns=int(ts[i]),
            symbol=inst.symbol,
            open=int(ticks["open"][i]),
            high=int(ticks["high"][i]),
            low=int(ticks["low"][i]),
            close=int(ticks["close"][i]),
            volume=int(lots[i]),
            interval_ns=tf_ns,
        )
        deliver([bar_msg])
        bv = BarValues(
            int(ts[i]),
            float(cols["open"][i]),
            float(cols["high"][i]),
            float(cols["low"][i]),
            float(cols["close"][i]),
            float(cols["volume"][i]),
        )
        deliver(sk.on_bar(bv))
        equity[i] = sk.equity()
        position[i] = sk.position
        for k in record_nodes:
            node_series[k][i] = float(sk.dag.values[k])
        if i in swaps:  # the new version takes over at this bar's close
            new = swaps[i]
            deliver(sk.reparameterize(new, check(new), int(ts[i]) + tf_ns))
        if progress is not None:
            progress(i)
    sk.log.close()
    unit = sk.unit_value
    stats = trade_stats(sk.trades, unit)
    metrics = compute(
        equity=equity,
        ts_ns=ts,
        timeframe_ns=tf_ns,
        in_position=position != 0,
        trades=stats,
        traded_notional=traded_units * unit,
        fees_paid=sk.fees_paid * unit,
        funding_paid=sk.funding_paid * unit,
    )
    return BacktestResult(
        artifact=artifact,
        artifact_hash=content_hash(artifact),
        ts_ns=ts,
        close=cols["close"],
        equity=equity,
        position=position,
        trades=sk.trades,
        metrics=metrics,
        unit_value=unit,
        price_increment=price_inc,
        strategy_log_head=sk.log.head,
        order_state_digest=ok.state_digest().hex() if isinstance(ok, OrderKernel) else "remote",
        refusals=sk.refusals,
        node_series=node_series,
    )
