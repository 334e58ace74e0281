"""Paper trading on a live feed: bars from the ZeroMQ market-data bus, the simulated venue in the
order kernel (in-process or its own process), the same bar loop as the backtest.

Fed the same bars, a paper run writes the same strategy log as the backtest, byte for byte:
`run_paper` as `run_backtest` (also with `data:` inputs on their own topics), and
`run_portfolio_paper` as `run_portfolio_backtest` (every strategy log and the portfolio log).
Feed problems are never hidden: a sequence gap on the bus and an out-of-order bar are logged
records (the bar loop only ever sees bars in time order), and the run stops on end-of-stream,
after `max_bars`, or when the feed stays silent for `idle_timeout_ms`.

**Waiting on a live bus.** Bars of different topics come from different publishers, so one can
arrive after the bar that should be stepped with it. The session therefore steps a timestamp
only once what it needs is in, or a wait budget (wall time, counted from the moment the
timestamp became the next one to step) is spent:

* data inputs (`LiveDataFeed.awaited`): every input with a bar due to close exactly at the
  decision has delivered a bar closing at or after it (per-topic order: nothing earlier can
  follow), or ended; budget `data_wait_ms`. Then the backtest's rules apply unchanged: the bar
  not in by then is missing, `hold` logs `data_missing`, `error` stops the run;
* the instruments of a portfolio: every instrument topic has delivered a bar at or after the
  timestamp, or ended; budget `bar_wait_ms`. A strategy whose bar is not in by then does not
  step at that timestamp (as in the backtest when its data has no bar there).

A bar that arrives after its moment was stepped is out of order: logged (`feed_out_of_order`)
and ignored, like a bar that goes back in time on its own topic. Fed the bars a recorded run
saw, with every bar in by its budget, the logs are the backtest's byte for byte; the waits
themselves never reach a log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.schema import Artifact
from feeds.bus import BarEvent, BusEvent, EndOfStream, Gap, Subscriber, bar_topic
from feeds.schema import Bar, timeframe_to_ns
from indicators.nodes import BarValues
from strategy_kernel.backtest import BacktestResult, BarLoop, instrument_spec, log_run_header
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.errors import BacktestError
from strategy_kernel.log import StrategyLog
from strategy_kernel.multidata import LiveDataFeed
from strategy_kernel.portfolio import (
    AccountLimits,
    Lane,
    Portfolio,
    PortfolioError,
    PortfolioResult,
    check_lineup,
    log_portfolio_run,
    step_account,
)
from strategy_kernel.transport import KernelPort

#: Default wait budgets (ms) for a late data-input bar and a late instrument bar of a portfolio.
DATA_WAIT_MS = 2_000
BAR_WAIT_MS = 2_000


@dataclass(frozen=True)
class PaperStop:
    reason: str  # "end_of_stream" | "max_bars" | "idle"
    bars: int
    feed_gaps: int
    out_of_order: int


# One queued item of an instrument topic, in arrival order: a bar, a gap, or a bar refused as
# out of order. Feed records are logged when they reach the head, so they sit in the strategy
# log exactly where they sat on the topic.
_Entry = tuple[str, Bar | Gap]


@dataclass
class _Topic:
    queue: deque[_Entry] = field(default_factory=deque)
    last_ts: int | None = None  # newest bar queued (or stepped): older ones are out of order
    ended: bool = False


class BusSource(Protocol):
    """What the stepper reads bus events from: a `Subscriber`, or a wrapper of one (the service
    session's serves control requests while it waits)."""

    @property
    def topics(self) -> tuple[str, ...]: ...

    def recv(self, timeout_ms: int) -> BusEvent | None: ...


class Inbox:
    """Files bus events by topic: instrument bars queue until stepped, input bars go to their
    `LiveDataFeed`s, feed problems become records for the strategies they concern."""

    def __init__(
        self,
        subscriber: BusSource,
        instrument_topics: Sequence[str],
        feeds: Sequence[LiveDataFeed],
    ) -> None:
        missing = [
            t
            for t in [*instrument_topics, *(t for f in feeds for t in f.topics)]
            if not t.startswith(subscriber.topics)
        ]
        if missing:
            raise BacktestError(
                f"the subscriber does not receive {', '.join(sorted(set(missing)))}: subscribe "
                f"to every instrument and data-input topic (it has {', '.join(subscriber.topics)})"
            )
        self.sub = subscriber
        self.topics = {t: _Topic() for t in instrument_topics}
        self.feeds = list(feeds)
        #: per feed: records about its inputs' topics, logged before that strategy's next bar
        self.notes: list[list[tuple[str, dict[str, object]]]] = [[] for _ in self.feeds]
        self.gaps = 0
        self.disorder = 0

    def pump(self, timeout_ms: int) -> bool:
        """Receive and file one event; False if none came within `timeout_ms`."""
        ev = self.sub.recv(max(timeout_ms, 0))
        if ev is None:
            return False
        if isinstance(ev, Gap):
            self.gaps += 1
            if ev.topic in self.topics:
                self.topics[ev.topic].queue.append(("gap", ev))
            self._note(ev.topic, "feed_gap", {"topic": ev.topic, "missing": ev.count})
        elif isinstance(ev, EndOfStream):
            if ev.topic in self.topics:
                self.topics[ev.topic].ended = True
            for f in self.feeds:
                f.end(ev.topic)
        elif isinstance(ev, BarEvent):
            self._bar(ev.topic, ev.bar)
        return True

    def _bar(self, topic: str, b: Bar) -> None:
        q = self.topics.get(topic)
        if q is not None:
            if q.last_ts is not None and b.ts_ns <= q.last_ts:
                self.disorder += 1
                q.queue.append(("out_of_order", b))
            else:
                q.last_ts = b.ts_ns
                q.queue.append(("bar", b))
        values = BarValues(b.ts_ns, b.open, b.high, b.low, b.close, b.volume)
        for i, f in enumerate(self.feeds):
            for name in f.push(topic, values):
                self.disorder += 1
                self.notes[i].append(
                    (
                        "feed_out_of_order",
                        {"input": name, "bar_ts_ns": b.ts_ns, "rule": "bar ignored"},
                    )
                )

    def _note(self, topic: str, kind: str, fields: dict[str, object]) -> None:
        for i, f in enumerate(self.feeds):
            if topic in f.topics:
                self.notes[i].append((kind, fields))

    def stepped(self, topic: str, ts_ns: int) -> None:
        """The account stepped `ts_ns`: a later bar of `topic` at or before it is out of order."""
        q = self.topics[topic]
        if q.last_ts is None or q.last_ts < ts_ns:
            q.last_ts = ts_ns


def _require_ok(name: str, kernels: Mapping[str, KernelPort]) -> KernelPort:
    try:
        return kernels[name]
    except KeyError:
        raise PortfolioError(
            f"no order kernel for {name!r}: pass kernels={{name: port}} for every artifact "
            f"(have {', '.join(sorted(kernels)) or 'none'})"
        ) from None


def _ticks(loop: BarLoop, b: Bar) -> tuple[int, int, int, int, int]:
    """(open, high, low, close) in ticks and the volume in lots, rounded as the backtest does."""
    p, q = loop.price_inc, loop.size_inc
    return (
        round(b.open / p),
        round(b.high / p),
        round(b.low / p),
        round(b.close / p),
        round(b.volume / q),
    )


class Stepper:
    """Chooses the next timestamp to step from the inbox, honouring the wait budgets."""

    def __init__(
        self,
        inbox: Inbox,
        feeds_by_topic: Mapping[str, Sequence[LiveDataFeed]],
        *,
        bar_wait_ms: int,
        data_wait_ms: int,
        idle_timeout_ms: int,
        clock: Callable[[], int],
        on_record: Callable[[str, str, dict[str, object]], None],
    ) -> None:
        self.inbox = inbox
        self.feeds_by_topic = feeds_by_topic
        self.bar_wait_ns = bar_wait_ms * 1_000_000
        self.data_wait_ns = data_wait_ms * 1_000_000
        self.idle_timeout_ms = idle_timeout_ms
        self.clock = clock
        self.on_record = on_record  # (topic, kind, fields): a feed record reached its queue head

    def _drain_records(self) -> None:
        for topic, q in self.inbox.topics.items():
            while q.queue and q.queue[0][0] != "bar":
                _kind, item = q.queue.popleft()
                if isinstance(item, Gap):
                    self.on_record(topic, "feed_gap", {"topic": topic, "missing": item.count})
                else:
                    self.on_record(
                        topic,
                        "feed_out_of_order",
                        {"bar_ts_ns": item.ts_ns, "rule": "bar ignored"},
                    )

    def next(self) -> tuple[int, dict[str, Bar]] | str:
        """(timestamp, {topic: its bar}) to step now, or why the run stops ("end_of_stream",
        "idle"). The bars returned are taken off their queues."""
        inbox = self.inbox
        since: int | None = None  # when this timestamp became the next one
        while True:
            self._drain_records()
            heads = {
                t: item.ts_ns
                for t, q in inbox.topics.items()
                if q.queue and isinstance(item := q.queue[0][1], Bar)
            }
            if not heads:
                if all(q.ended for q in inbox.topics.values()):
                    return "end_of_stream"
                if not inbox.pump(self.idle_timeout_ms):
                    return "idle"
                continue
            ts = min(heads.values())
            late_bars = any(not q.queue and not q.ended for q in inbox.topics.values())
            late_data = any(
                f.awaited(ts)
                for t, head in heads.items()
                if head == ts
                for f in self.feeds_by_topic.get(t, ())
            )
            if late_bars or late_data:  # the clock is read only when something is late
                now = self.clock()
                if since is None:
                    since = now
                waited = now - since
                left = [
                    budget - waited
                    for pending, budget in (
                        (late_bars, self.bar_wait_ns),
                        (late_data, self.data_wait_ns),
                    )
                    if pending and waited < budget
                ]
                if left:
                    inbox.pump(-(-max(left) // 1_000_000))  # ceil to ms
                    continue
            out: dict[str, Bar] = {}
            for t, head in sorted(heads.items()):
                if head == ts:
                    item = inbox.topics[t].queue.popleft()[1]
                    assert isinstance(item, Bar)
                    out[t] = item
            for t in inbox.topics:
                inbox.stepped(t, ts)
            return ts, out


def deliver_data(sk: StrategyKernel, inbox: Inbox, index: int, feed: LiveDataFeed, ts: int) -> None:
    """The data part of stepping instrument bar `ts`, before the bar itself: the feed records
    about the inputs' topics (`inbox.notes[index]`), then the inputs due at its decision.

    Raises BacktestError for a missing bar of an input with `on_missing: error`."""
    for kind, fields in inbox.notes[index]:
        sk.log.append(kind, ts, **fields)
    inbox.notes[index].clear()
    for name, aux, at in feed.due(ts):
        sk.on_data(name, aux, at)


def _monotonic_ns() -> int:
    return time.monotonic_ns()


class RecordedFeed(threading.Thread):
    """Publishes recorded bars of several topics on the bus, merged the way a live feed carries
    them: by close time (`ts + timeframe`), data-only topics before instrument topics at the same
    close, then by topic; each topic's end-of-stream right after its last bar.

    In that order a session never has to wait for a data input, whatever the timeframes. Nothing
    is ever dropped: the sockets' queues are unbounded and the publisher stays at most `window`
    instrument timestamps ahead of the steps the session acknowledged (`ack`, e.g. as `on_bar`
    or `on_step`). A series that starts more than `window` timestamps after another is still
    stepped right, only slowly: the session waits its `bar_wait_ms` on each timestamp until the
    series' first bar is let out.
    """

    def __init__(
        self,
        endpoint: str,
        series: Mapping[str, tuple[pl.DataFrame, int]],
        instrument_topics: Sequence[str],
        *,
        window: int = 100_000,
        subscribers: int = 1,
        join_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(name="recorded-feed", daemon=True)
        from feeds.bus import Publisher

        self.series = dict(series)
        self.instruments = set(instrument_topics)
        self.window = window
        self.subscribers = subscribers
        self.join_timeout_s = join_timeout_s
        self.publisher = Publisher(endpoint, session_id=0, sndhwm=0, linger_ms=2000)
        self.endpoint = self.publisher.endpoint
        self.published = 0
        self.error = ""
        self._acked = 0
        self._sent_steps = 0  # instrument timestamps published
        self._cond = threading.Condition()
        self._halted = False

    def ack(self, steps: int) -> None:
        """The session has stepped `steps` timestamps: the publisher may run further ahead."""
        with self._cond:
            self._acked = steps
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._halted = True
            self._cond.notify_all()

    def _order(self) -> list[tuple[int, int, str, int]]:
        """(close ts, rank, topic, row) of every bar, in publishing order."""
        keys: list[tuple[int, int, str, int]] = []
        for topic, (bars, tf_ns) in sorted(self.series.items()):
            rank = 1 if topic in self.instruments else 0
            ts = bars["ts_ns"].to_list()
            keys.extend((t + tf_ns, rank, topic, i) for i, t in enumerate(ts))
        keys.sort()
        return keys

    def run(self) -> None:
        try:
            self.publisher.wait_for_subscribers(self.subscribers, timeout_s=self.join_timeout_s)
            rows = {
                topic: bars.select("ts_ns", "open", "high", "low", "close", "volume").rows()
                for topic, (bars, _) in self.series.items()
            }
            left = {topic: len(r) for topic, r in rows.items()}
            for topic in sorted(t for t, n in left.items() if n == 0):
                self.publisher.end(topic)
            last_close: int | None = None
            for close, rank, topic, i in self._order():
                if rank and close != last_close:  # the first instrument bar of a new timestamp
                    with self._cond:
                        while not self._halted and self._sent_steps - self._acked >= self.window:
                            self._cond.wait(0.5)
                        if self._halted:
                            return
                    self._sent_steps += 1
                    last_close = close
                t, o, h, lo, c, v = rows[topic][i]
                self.publisher.publish(
                    topic, Bar(ts_ns=t, open=o, high=h, low=lo, close=c, volume=v)
                )
                self.published += 1
                if self.published % 1000 == 0:
                    self.publisher.heartbeat()
                left[topic] -= 1
                if left[topic] == 0:
                    self.publisher.heartbeat()
                    self.publisher.end(topic)
        except Exception as exc:  # reported by the caller (`error`); the session then goes idle
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.stop()
        if self.ident is not None:
            self.join(timeout=10)
        self.publisher.close()


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
    record_nodes: tuple[str, ...] = (),
    data_wait_ms: int = DATA_WAIT_MS,
    data_gaps: dict[str, object] | None = None,
    clock: Callable[[], int] = _monotonic_ns,
    funding: dict[str, object] | None = None,
) -> tuple[BacktestResult | None, PaperStop]:
    """Run until the feed ends; returns the run's result (None if no bar came) and why it stopped.

    The `subscriber` must receive the instrument's topic and those of the `data:` inputs
    (`LiveDataFeed.topics`). `data_gaps` (from `backtest.check_data` on bars known in advance,
    e.g. a recorded file being replayed) is logged after the header, as the backtest does;
    so is `funding` (`FundingSchedule.record()` of the rates the kernel process was given).
    `clock` (monotonic ns) measures the wait budget; it never reaches a log.
    """
    inst = artifact.instrument
    tf_ns = timeframe_to_ns(inst.timeframe)
    topic = bar_topic(inst.symbol, inst.timeframe)
    feed = LiveDataFeed(artifact, tf_ns) if artifact.data else None
    inbox = Inbox(subscriber, [topic], [feed] if feed is not None else [])
    sk = StrategyKernel(
        artifact, graph, session_id=session_id, timeframe_ns=tf_ns, base_dir=base_dir
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    sk.log = StrategyLog(out_dir / "strategy.log.jsonl" if out_dir else None)
    loop = BarLoop(sk, kernel, artifact, instrument_spec(artifact), tf_ns, record_nodes)
    last_ts: int | None = None

    def on_record(_topic: str, kind: str, fields: dict[str, object]) -> None:
        if last_ts is not None:  # before the first bar there is no run to log it in
            sk.log.append(kind, last_ts, **fields)

    stepper = Stepper(
        inbox,
        {topic: [feed]} if feed is not None else {},
        bar_wait_ms=0,
        data_wait_ms=data_wait_ms,
        idle_timeout_ms=idle_timeout_ms,
        clock=clock,
        on_record=on_record,
    )
    reason = "idle"
    try:
        while max_bars is None or len(loop.ts) < max_bars:
            nxt = stepper.next()
            if isinstance(nxt, str):
                reason = nxt
                break
            ts, bars = nxt
            b = bars[topic]
            if last_ts is None:
                log_run_header(sk.log, artifact, ts, session_id)
                if data_gaps is not None:
                    sk.log.append("data_gaps", ts, **data_gaps)
                if funding is not None:  # the kernel process was given these rates
                    sk.log.append("funding", ts, **funding)
            if feed is not None:
                deliver_data(sk, inbox, 0, feed, ts)
            last_ts = ts
            loop.step_prices(BarValues(ts, b.open, b.high, b.low, b.close, b.volume))
            if on_bar is not None:
                on_bar(len(loop.ts))
        else:
            reason = "max_bars"
        stop = PaperStop(reason, len(loop.ts), inbox.gaps, inbox.disorder)
        result = loop.result() if loop.ts else None
        if result is not None:
            result.data_gaps = data_gaps
        return result, stop
    finally:
        sk.log.close()


def run_portfolio_paper(
    artifacts: Sequence[Artifact],
    subscriber: Subscriber,
    kernels: Mapping[str, KernelPort],
    *,
    account: AccountLimits | None = None,
    graphs: Sequence[SignalGraph] | None = None,
    out_dir: Path | None = None,
    base_dir: Path | None = None,
    max_steps: int | None = None,
    idle_timeout_ms: int = 30_000,
    bar_wait_ms: int = BAR_WAIT_MS,
    data_wait_ms: int = DATA_WAIT_MS,
    on_step: Callable[[int], None] | None = None,
    clock: Callable[[], int] = _monotonic_ns,
) -> tuple[PortfolioResult | None, PaperStop]:
    """Paper-trade several artifacts on one account under `Portfolio` limits, in lockstep.

    One thread steps every strategy per timestamp exactly as `run_portfolio_backtest` does
    (`portfolio.step_account`): the portfolio's decisions depend on the bars only, never on
    thread timing. `kernels` maps each artifact name to its order kernel port (session id = the
    artifact name, as in the backtest). The subscriber must receive every instrument topic and
    every data-input topic. Logs go to `out_dir/<name>/strategy.log.jsonl` and
    `out_dir/portfolio.log.jsonl`. Stops at end of stream (every instrument topic ended), after
    `max_steps` timestamps, or after `idle_timeout_ms` without a bar.
    """
    tf_ns = check_lineup(artifacts)
    graphs = list(graphs) if graphs is not None else [check(a) for a in artifacts]
    oks = [_require_ok(a.name, kernels) for a in artifacts]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    plog = StrategyLog(out_dir / "portfolio.log.jsonl" if out_dir else None)
    portfolio = Portfolio(account or AccountLimits(), plog)
    lanes: list[Lane] = []
    feeds: list[LiveDataFeed] = []
    lane_topic: list[str] = []
    lane_feed: list[int] = []  # index of the lane's feed in `feeds` (-1: no data inputs)
    feeds_by_topic: dict[str, list[LiveDataFeed]] = {}
    try:
        for a, g, ok in zip(artifacts, graphs, oks, strict=True):
            sk = StrategyKernel(a, g, session_id=a.name, timeframe_ns=tf_ns, base_dir=base_dir)
            sk.log = StrategyLog(out_dir / a.name / "strategy.log.jsonl" if out_dir else None)
            portfolio.attach(a.name, sk)
            feed = LiveDataFeed(a, tf_ns) if a.data else None
            topic = bar_topic(a.instrument.symbol, a.instrument.timeframe)
            lanes.append(Lane(BarLoop(sk, ok, a, instrument_spec(a), tf_ns), feed))
            lane_topic.append(topic)
            lane_feed.append(len(feeds) if feed is not None else -1)
            if feed is not None:
                feeds.append(feed)
                feeds_by_topic.setdefault(topic, []).append(feed)
        inbox = Inbox(subscriber, sorted(set(lane_topic)), feeds)
    except BaseException:
        plog.close()
        for lane in lanes:
            lane.loop.sk.log.close()
        raise
    started = [False] * len(lanes)

    def on_record(topic: str, kind: str, fields: dict[str, object]) -> None:
        for lane, t, on in zip(lanes, lane_topic, started, strict=True):
            if t == topic and on:
                lane.loop.sk.log.append(kind, lane.loop.ts[-1], **fields)

    stepper = Stepper(
        inbox,
        feeds_by_topic,
        bar_wait_ms=bar_wait_ms,
        data_wait_ms=data_wait_ms,
        idle_timeout_ms=idle_timeout_ms,
        clock=clock,
        on_record=on_record,
    )
    ts_out: list[int] = []
    eq_out: list[float] = []
    ex_out: list[float] = []
    open_out: list[int] = []
    reason = "idle"
    try:
        while max_steps is None or len(ts_out) < max_steps:
            nxt = stepper.next()
            if isinstance(nxt, str):
                reason = nxt
                break
            ts, bars = nxt
            if not ts_out:
                log_portfolio_run(plog, ts, portfolio)
            stepping: list[tuple[Lane, BarValues, Sequence[int]]] = []
            for k, (lane, topic) in enumerate(zip(lanes, lane_topic, strict=True)):
                b = bars.get(topic)
                if b is None:
                    continue
                sk = lane.loop.sk
                if not started[k]:
                    log_run_header(sk.log, sk.artifact, ts, sk.artifact.name)
                    started[k] = True
                i = lane_feed[k]
                if i >= 0:
                    for kind, fields in inbox.notes[i]:
                        sk.log.append(kind, ts, **fields)
                    inbox.notes[i].clear()
                values = BarValues(ts, b.open, b.high, b.low, b.close, b.volume)
                stepping.append((lane, values, _ticks(lane.loop, b)))
            step_account(portfolio, ts, stepping, tf_ns)
            ts_out.append(ts)
            eq_out.append(portfolio.equity())
            ex_out.append(portfolio.exposure())
            open_out.append(portfolio.open_positions())
            if on_step is not None:
                on_step(len(ts_out))
        else:
            reason = "max_bars"
        stop = PaperStop(reason, len(ts_out), inbox.gaps, inbox.disorder)
        if not ts_out:
            return None, stop
        results = {lane.loop.sk.artifact.name: lane.loop.result() for lane in lanes if lane.loop.ts}
        return (
            PortfolioResult(
                results=results,
                ts_ns=np.array(ts_out, dtype=np.int64),
                equity=np.array(eq_out, dtype=np.float64),
                exposure=np.array(ex_out, dtype=np.float64),
                open_positions=np.array(open_out, dtype=np.int64),
                refusals=portfolio.refusals,
                portfolio_log_head=plog.head,
            ),
            stop,
        )
    finally:
        plog.close()
        for lane in lanes:
            lane.loop.sk.log.close()
