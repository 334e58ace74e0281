"""Other symbols' bars as DAG inputs (`data:` in the artifact), aligned point-in-time.

Rule: at the decision of instrument bar *t* (its close, `ts + timeframe`), an input bar is
visible when its own close (`its ts + its timeframe`) is at or before that moment; the newest
such bar is delivered, once. Nothing of a bar that has not closed is ever seen.

Missing bars: when the decision time is on the input's grid (its first bar's close plus a whole
number of its timeframes) and no input bar closes exactly then, the bar is missing. Rule
`hold` keeps the last visible values (nodes on the input's clock do not step) and logs a
`data_missing` record; rule `error` stops the run naming the bar. Before the input's first bar
its columns are undefined (NaN), which makes every comparison on them false.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.schema import Artifact, DataInput
from feeds.schema import timeframe_to_ns
from indicators.nodes import BarValues
from strategy_kernel.errors import BacktestError


def _missing(name: str, spec: DataInput, decision: int, tf_ns: int) -> BacktestError:
    """Rule `error`: the run stops naming the bar that did not come."""
    return BacktestError(
        f"data.{name}: no {spec.symbol} {spec.timeframe} bar closes at ts {decision} (open ts "
        f"{decision - tf_ns}); fill the gap in the data or set data.{name}.on_missing: hold"
    )


@dataclass
class _Stream:
    name: str
    spec: DataInput
    tf_ns: int
    ts: npt.NDArray[np.int64]
    rows: list[tuple[float, float, float, float, float]]
    next: int = 0


def checked_inputs(
    artifact: Artifact, frames: Mapping[str, pl.DataFrame]
) -> list[tuple[str, DataInput, pl.DataFrame, npt.NDArray[np.int64], int]]:
    """(name, spec, bars, ts, timeframe ns) of every `data:` input in delivery (name) order,
    after the checks every engine applies (bars given, usable, on the declared timeframe)."""
    from feeds.validate import check_bars

    inputs = artifact.data or {}
    missing = sorted({i.symbol for i in inputs.values()} - set(frames))
    if missing:
        raise BacktestError(
            f"the artifact reads {', '.join(missing)} (data:) but no bars were given for it: "
            "pass them as data_bars={symbol: frame}"
        )
    out = []
    for name in sorted(inputs):  # deterministic delivery order
        spec = inputs[name]
        frame = frames[spec.symbol]
        report = check_bars(frame, spec.timeframe)
        if not report.ok:
            raise BacktestError(
                f"data.{name} ({spec.symbol}) bars are not usable:\n{report.summary()}"
            )
        ts = np.asarray(frame["ts_ns"].to_numpy(), dtype=np.int64)
        tf_ns = timeframe_to_ns(spec.timeframe)
        if ts.shape[0] > 1 and int(np.median(np.diff(ts))) != tf_ns:
            raise BacktestError(
                f"data.{name} ({spec.symbol}): the bars are "
                f"{int(np.median(np.diff(ts))) / 1e9:g} s apart but data.{name}.timeframe is "
                f"{spec.timeframe}; resample the data or fix the timeframe"
            )
        out.append((name, spec, frame, ts, tf_ns))
    return out


class DataFeed:
    """Delivers the data inputs' bars to a strategy kernel before each instrument bar's decision."""

    def __init__(
        self, artifact: Artifact, frames: Mapping[str, pl.DataFrame], main_tf_ns: int
    ) -> None:
        self.main_tf_ns = main_tf_ns
        self.streams: list[_Stream] = []
        for name, spec, frame, ts, tf_ns in checked_inputs(artifact, frames):
            cols = [
                frame[c].to_numpy().tolist() for c in ("open", "high", "low", "close", "volume")
            ]
            self.streams.append(_Stream(name, spec, tf_ns, ts, list(zip(*cols, strict=True))))

    def due(self, main_ts_ns: int) -> list[tuple[str, BarValues | None, int]]:
        """(input, newly visible bar or None if missing, decision ts) for instrument bar `main_ts_ns`.

        Raises BacktestError for a missing bar of an input with `on_missing: error`.
        """
        decision = main_ts_ns + self.main_tf_ns
        out: list[tuple[str, BarValues | None, int]] = []
        for s in self.streams:
            newest = -1
            n = s.ts.shape[0]
            while s.next < n and int(s.ts[s.next]) + s.tf_ns <= decision:
                newest = s.next
                s.next += 1
            on_grid = n > 0 and (decision - int(s.ts[0])) % s.tf_ns == 0
            if newest >= 0 and int(s.ts[newest]) + s.tf_ns == decision:
                out.append((s.name, BarValues(int(s.ts[newest]), *s.rows[newest]), decision))
                continue
            if newest >= 0:  # a late bar (a gap before this one): still the newest closed bar
                out.append((s.name, BarValues(int(s.ts[newest]), *s.rows[newest]), decision))
            if on_grid and s.next > 0 and (newest < 0 or int(s.ts[newest]) + s.tf_ns < decision):
                if s.spec.on_missing == "error":
                    raise _missing(s.name, s.spec, decision, s.tf_ns)
                out.append((s.name, None, decision))
        return out


@dataclass
class _LiveStream:
    name: str
    spec: DataInput
    tf_ns: int
    topic: str
    first_ts: int | None = None  # the input's grid: its first bar's open, once one arrived
    last_ts: int | None = None  # newest bar received (per-topic order: nothing older follows)
    pending: deque[BarValues] = field(default_factory=deque)  # received, not yet visible
    delivered: bool = False  # any bar delivered yet (`DataFeed`'s `next > 0`)
    ended: bool = False  # end of stream on its topic: nothing more will come


class LiveDataFeed:
    """`DataFeed` for bars that arrive one by one (paper mode on the market-data bus).

    `push` files each input bar as it arrives; `due` then answers exactly what `DataFeed.due`
    answers for the same bars (same point-in-time rule, same `hold`/`error` handling). On a live
    bus an input bar can arrive after the instrument bar that should see it, so `awaited(t)`
    names the inputs the decision of instrument bar `t` must still wait for: an input whose grid
    has a bar closing exactly at the decision and which has not yet delivered a bar closing at or
    after it (per-topic order: once one has, nothing earlier can follow) nor ended. Until an
    input's first bar arrives its grid is taken as epoch-aligned (bars opening at whole
    multiples of its timeframe since 1970-01-01 UTC).
    """

    def __init__(self, artifact: Artifact, main_tf_ns: int) -> None:
        from feeds.bus import bar_topic

        self.main_tf_ns = main_tf_ns
        self.streams: list[_LiveStream] = []
        inputs = artifact.data or {}
        for name in sorted(inputs):  # the same delivery order as DataFeed
            spec = inputs[name]
            self.streams.append(
                _LiveStream(
                    name,
                    spec,
                    timeframe_to_ns(spec.timeframe),
                    bar_topic(spec.symbol, spec.timeframe),
                )
            )

    @property
    def topics(self) -> list[str]:
        """The bus topics of the inputs, sorted, without repeats."""
        return sorted({s.topic for s in self.streams})

    def push(self, topic: str, bar: BarValues) -> list[str]:
        """File a bar of `topic`; returns the inputs that refused it as out of order (a bar at
        or before one already received is ignored: per topic, time only moves forward)."""
        refused: list[str] = []
        for s in self.streams:
            if s.topic != topic:
                continue
            if s.last_ts is not None and bar.ts_ns <= s.last_ts:
                refused.append(s.name)
                continue
            if s.first_ts is None:
                s.first_ts = bar.ts_ns
            s.last_ts = bar.ts_ns
            s.pending.append(bar)
        return refused

    def end(self, topic: str) -> None:
        """The topic's publisher announced the end: its inputs are never waited for again."""
        for s in self.streams:
            if s.topic == topic:
                s.ended = True

    def awaited(self, main_ts_ns: int) -> list[str]:
        """Inputs the decision of instrument bar `main_ts_ns` still waits for (see the class)."""
        decision = main_ts_ns + self.main_tf_ns
        out: list[str] = []
        for s in self.streams:
            if s.ended:
                continue
            anchor = s.first_ts if s.first_ts is not None else 0
            if (decision - anchor) % s.tf_ns:
                continue  # no bar of this input closes at the decision
            if s.last_ts is None or s.last_ts + s.tf_ns < decision:
                out.append(s.name)
        return out

    def due(self, main_ts_ns: int) -> list[tuple[str, BarValues | None, int]]:
        """As `DataFeed.due`, over the bars pushed so far (call once `awaited` is empty or the
        wait budget is spent: an input bar not yet here is then treated as missing)."""
        decision = main_ts_ns + self.main_tf_ns
        out: list[tuple[str, BarValues | None, int]] = []
        for s in self.streams:
            newest: BarValues | None = None
            while s.pending and s.pending[0].ts_ns + s.tf_ns <= decision:
                newest = s.pending.popleft()
                s.delivered = True
            on_grid = s.first_ts is not None and (decision - s.first_ts) % s.tf_ns == 0
            if newest is not None and newest.ts_ns + s.tf_ns == decision:
                out.append((s.name, newest, decision))
                continue
            if newest is not None:  # a late bar (a gap before this one): the newest closed one
                out.append((s.name, newest, decision))
            if on_grid and s.delivered and (newest is None or newest.ts_ns + s.tf_ns < decision):
                if s.spec.on_missing == "error":
                    raise _missing(s.name, s.spec, decision, s.tf_ns)
                out.append((s.name, None, decision))
        return out
