"""Event-driven backtest: the real strategy kernel and order kernel on a simulated clock, in-process.

Per bar, in this order (the order is what makes it point-in-time):
1. the bar goes to the order kernel as `MarketBar`: orders decided earlier fill inside it;
2. fill/position events go to the strategy kernel;
3. the strategy kernel sees the bar's close, updates the DAG and sends its decisions, stamped
   with the close time; the order kernel acknowledges them, and they can fill from the next bar on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.io import content_hash
from artifacts.schema import Artifact
from feeds.errors import FeedError
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
from strategy_kernel.multidata import DataFeed
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


def log_run_header(log: StrategyLog, artifact: Artifact, first_ts_ns: int, session_id: str) -> None:
    """The first record of every strategy log: what runs, in which session (same for backtest and paper)."""
    log.append(
        "run",
        first_ts_ns,
        artifact=artifact.name,
        version=artifact.version,
        content_hash=content_hash(artifact),
        session=session_id,
        seed=artifact.backtest.seed,
        log_format=1,
    )


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


def check_length(n: int, warmup: int) -> None:
    """Refuse a run that cannot trade: fewer bars than the warm-up plus one."""
    if n < warmup + 1:
        raise BacktestError(
            f"{n} bars is not enough: the strategy needs {warmup} warm-up bars plus at least one "
            "to trade; give more data (--from earlier) or shorten indicator periods"
        )


def warmup_of(artifact: Artifact, graph: SignalGraph, base_dir: Path | None = None) -> int:
    """Bars the strategy needs before its first trade, as its kernel counts them (DAG, ATR stop,
    sizing lookback): for refusing a run up front, before any process starts."""
    tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
    sk = StrategyKernel(artifact, graph, session_id="warmup", timeframe_ns=tf_ns, base_dir=base_dir)
    return sk.warmup


@dataclass(frozen=True)
class FundingSchedule:
    """Historical funding for the simulated venue, and the run's settlements it does not cover."""

    interval_ns: int
    ts_ns: list[int]
    rate_ppb: list[int]
    due: range  # the settlement times inside the run's bars (the venue charges each one)
    missing_ts_ns: list[int]  # of those, the ones with no published rate

    def install(self, venue: SimVenue, symbol: str) -> None:
        """Give the simulated venue these rates: it decides the rate of every settlement."""
        venue.set_funding_schedule(symbol, self.ts_ns, self.rate_ppb)

    def record(self) -> dict[str, object]:
        return {
            "interval_ns": self.interval_ns,
            "settlements": len(self.due),
            "missing": len(self.missing_ts_ns),
            "first_missing_ts_ns": self.missing_ts_ns[:5],
            "rule": "a settlement without a rate pays the newest earlier one (0 before the first)",
        }


def funding_schedule(
    artifact: Artifact, bars: pl.DataFrame, funding: pl.DataFrame
) -> FundingSchedule:
    """Check funding rows against the artifact and its bars; the venue's schedule in ppb."""
    from feeds.funding import check_funding, rate_to_ppb

    inst = artifact.instrument
    if inst.kind != "perp":
        raise BacktestError(
            f"funding rates apply to perpetuals, and {inst.symbol} is instrument.kind "
            f"{inst.kind!r}: drop the funding file or set instrument.kind: perp"
        )
    try:
        check_funding(funding)
    except FeedError as exc:
        raise BacktestError(f"the funding rates are not usable: {exc}") from None
    interval = int(funding["interval_ns"][0])
    ts = [int(t) for t in funding["ts_ns"].to_list()]
    tf_ns = timeframe_to_ns(inst.timeframe)
    first, end = int(bars["ts_ns"][0]), int(bars["ts_ns"][-1]) + tf_ns
    due = range(-(-first // interval) * interval, end, interval)
    published = set(ts)
    return FundingSchedule(
        interval_ns=interval,
        ts_ns=ts,
        rate_ppb=[rate_to_ppb(r) for r in funding["funding_rate"].to_list()],
        due=due,
        missing_ts_ns=[t for t in due if t not in published],
    )


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
    data_bars: Mapping[str, pl.DataFrame] | None = None,
    funding: pl.DataFrame | None = None,
) -> BacktestResult:
    """Run the artifact over `bars` (BAR_SCHEMA). Writes logs into out_dir when given.

    `base_dir` resolves python nodes' files (the artifact's directory). `swaps` hot-swaps a new
    artifact version in after the given bar index closes (re-parameterisation without teardown).
    `kernel` replaces the in-process order kernel, e.g. a `RemoteKernel` in its own process over
    ZeroMQ (paper mode); that kernel keeps its own order log. `data_bars` maps the symbols of
    the artifact's `data:` inputs to their bars (see `strategy_kernel.multidata`). `funding`
    (FUNDING_SCHEMA rows, `feeds.funding.read_funding`) is charged to a perp position by the
    simulated venue at each settlement; without it a perp backtest pays no funding.
    """
    tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
    n = bars.height
    inst = instrument_spec(artifact)
    data_gaps = check_data(artifact, bars)
    feed = DataFeed(artifact, data_bars or {}, tf_ns) if artifact.data else None
    sk = StrategyKernel(
        artifact, graph, session_id=session_id, timeframe_ns=tf_ns, base_dir=base_dir
    )
    if items:  # sentiment nodes see each item only from the first bar close at or after it
        sk.dag.on_items(items)
    check_length(n, sk.warmup)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    ok: KernelPort
    olog: OrderLog | None = None
    schedule = funding_schedule(artifact, bars, funding) if funding is not None else None
    if kernel is None:
        venue = SimVenue(
            slippage_ticks=artifact.backtest.slippage_ticks,
            seed=artifact.backtest.seed,
            **({"funding_interval_ns": schedule.interval_ns} if schedule else {}),
        )
        if schedule is not None:
            schedule.install(venue, inst.symbol)
        local = OrderKernel(session_id, {inst.symbol: inst}, venue)
        # A backtest can be rerun at will, so its order log is not fsynced record by record.
        olog = OrderLog(out_dir / "orders.log", fsync="never") if out_dir else None
        local.log = olog
        ok = local
    else:
        if schedule is not None:
            raise BacktestError(
                "funding rates with an external order kernel: configure that kernel's venue "
                "(its process owns the simulated venue), or backtest in-process"
            )
        ok = kernel
    slog = StrategyLog(out_dir / "strategy.log.jsonl" if out_dir else None)
    sk.log = slog
    log_run_header(slog, artifact, int(bars["ts_ns"][0]), session_id)
    if data_gaps is not None:  # explicit and logged: bars are processed as they come, no filling
        slog.append("data_gaps", int(bars["ts_ns"][0]), **data_gaps)
    if schedule is not None:  # what the venue will charge, and any settlement without a rate
        slog.append("funding", int(bars["ts_ns"][0]), **schedule.record())
    try:
        result = _simulate(
            sk, ok, bars, artifact, inst, tf_ns, progress, record_nodes, dict(swaps), feed
        )
        result.data_gaps = data_gaps
        return result
    finally:
        slog.close()
        if olog is not None:
            olog.close()


class BarLoop:
    """Drives bars through both kernels in the point-in-time order and keeps what reports need.

    Per bar: the bar goes to the order kernel first (orders decided earlier fill inside it), the
    events go to the strategy kernel, then the strategy sees the close and decides. The backtest
    feeds it from a frame; paper mode feeds it bar by bar from the ZeroMQ market-data bus.
    """

    def __init__(
        self,
        sk: StrategyKernel,
        ok: KernelPort,
        artifact: Artifact,
        inst: InstrumentSpec,
        tf_ns: int,
        record_nodes: tuple[str, ...] = (),
        swaps: dict[int, Artifact] | None = None,
    ) -> None:
        self.sk, self.ok, self.artifact, self.inst, self.tf_ns = sk, ok, artifact, inst, tf_ns
        self.swaps = swaps or {}
        self.price_inc = float(inst.price_increment)
        self.size_inc = float(inst.size_increment)
        self.ts: list[int] = []
        self.close: list[float] = []
        self.equity: list[float] = []
        self.position: list[int] = []
        self.nodes: dict[str, list[float]] = {k: [] for k in record_nodes}
        self.traded_units = 0

    def deliver(self, cmds: list[m.Message]) -> None:
        """Commands to the order kernel, first in first out; events' follow-ups join the queue."""
        if not cmds:  # most closes decide nothing
            return
        queue = deque(cmds)
        handle = self.ok.handle
        while queue:
            self._events(handle(queue.popleft()), queue)  # type: ignore[arg-type]

    def _events(self, events: list[m.Event], queue: deque[m.Message]) -> None:
        on_event = self.sk.on_event
        for ev in events:
            if isinstance(ev, m.OrderFilled):
                self.traded_units += ev.qty * ev.price
            queue.extend(on_event(ev))

    def step(self, bar: BarValues, ticks: tuple[int, int, int, int], lots: int) -> None:
        """One bar; `ticks` are its (open, high, low, close) in ticks, `lots` its volume."""
        i = len(self.ts)
        sk = self.sk
        bar_ts = bar.ts_ns
        t_open, t_high, t_low, t_close = ticks
        events = self.ok.handle(
            m.MarketBar(  # market data is its own stream: not in the session's seq
                session_id=sk.session_id,
                seq=0,
                ts_ns=bar_ts,
                symbol=self.inst.symbol,
                open=t_open,
                high=t_high,
                low=t_low,
                close=t_close,
                volume=lots,
                interval_ns=self.tf_ns,
            )
        )
        if events:  # fills and position updates: same order as deliver([bar])
            queue: deque[m.Message] = deque()
            self._events(events, queue)
            self.deliver(list(queue))
        cmds = sk.on_bar(bar)
        if cmds:
            self.deliver(cmds)
        self.ts.append(bar_ts)
        self.close.append(bar.close)
        self.equity.append(sk.equity())
        self.position.append(sk.position)
        if self.nodes:
            for k, series in self.nodes.items():
                series.append(float(sk.dag.values[k]))
        if self.swaps and i in self.swaps:  # the new version takes over at this bar's close
            new = self.swaps[i]
            self.deliver(sk.reparameterize(new, check(new), bar.ts_ns + self.tf_ns))

    def step_prices(self, bar: BarValues) -> None:
        """One bar given in prices (live feeds): converted at the edge exactly like the backtest."""
        p, q = self.price_inc, self.size_inc
        ticks = (round(bar.open / p), round(bar.high / p), round(bar.low / p), round(bar.close / p))
        self.step(bar, ticks, round(bar.volume / q))

    def result(self, *, final: bool = True) -> BacktestResult:
        """The run's result; `final=False` is a snapshot of a run still going (log left open,
        reported under the artifact version running now)."""
        sk = self.sk
        if final:
            sk.log.close()
        artifact = self.artifact if final else sk.artifact
        unit = sk.unit_value
        ts = np.array(self.ts, dtype=np.int64)
        equity = np.array(self.equity, dtype=np.float64)
        position = np.array(self.position, dtype=np.int64)
        metrics = compute(
            equity=equity,
            ts_ns=ts,
            timeframe_ns=self.tf_ns,
            in_position=position != 0,
            trades=trade_stats(sk.trades, unit),
            traded_notional=self.traded_units * unit,
            fees_paid=sk.fees_paid * unit,
            funding_paid=sk.funding_paid * unit,
        )
        ok = self.ok
        return BacktestResult(
            artifact=artifact,
            artifact_hash=content_hash(artifact),
            ts_ns=ts,
            close=np.array(self.close, dtype=np.float64),
            equity=equity,
            position=position,
            trades=sk.trades if final else list(sk.trades),
            metrics=metrics,
            unit_value=unit,
            price_increment=self.price_inc,
            strategy_log_head=sk.log.head,
            order_state_digest=ok.state_digest().hex() if isinstance(ok, OrderKernel) else "remote",
            refusals=sk.refusals if final else list(sk.refusals),
            node_series={k: np.array(v, dtype=np.float64) for k, v in self.nodes.items()},
        )


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
    feed: DataFeed | None = None,
) -> BacktestResult:
    loop = BarLoop(sk, ok, artifact, inst, tf_ns, record_nodes, swaps)
    ts = bars["ts_ns"].to_numpy()
    cols = {c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    ticks = zip(  # (open, high, low, close) in ticks, one tuple per bar
        *(
            np.rint(cols[c] / loop.price_inc).astype(np.int64).tolist()
            for c in ("open", "high", "low", "close")
        ),
        strict=True,
    )
    lots = np.rint(cols["volume"] / loop.size_inc).astype(np.int64).tolist()
    rows = zip(
        ts.tolist(),
        *(cols[c].tolist() for c in ("open", "high", "low", "close", "volume")),
        strict=True,
    )
    make_bar = BarValues._make  # the NamedTuple without its per-call __new__ wrapper
    step = loop.step
    for i, (row, tk, lot) in enumerate(zip(rows, ticks, lots, strict=True)):
        if feed is not None:  # other symbols' bars closed by this bar's close, first
            for name, aux, at in feed.due(row[0]):
                sk.on_data(name, aux, at)
        step(make_bar(row), tk, lot)
        if progress is not None:
            progress(i)
    return loop.result()
