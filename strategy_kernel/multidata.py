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

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.schema import Artifact, DataInput
from feeds.schema import timeframe_to_ns
from indicators.nodes import BarValues
from strategy_kernel.errors import BacktestError


@dataclass
class _Stream:
    name: str
    spec: DataInput
    tf_ns: int
    ts: npt.NDArray[np.int64]
    rows: list[tuple[float, float, float, float, float]]
    next: int = 0


class DataFeed:
    """Delivers the data inputs' bars to a strategy kernel before each instrument bar's decision."""

    def __init__(
        self, artifact: Artifact, frames: Mapping[str, pl.DataFrame], main_tf_ns: int
    ) -> None:
        from feeds.validate import check_bars

        inputs = artifact.data or {}
        missing = sorted({i.symbol for i in inputs.values()} - set(frames))
        if missing:
            raise BacktestError(
                f"the artifact reads {', '.join(missing)} (data:) but no bars were given for it: "
                "pass them as data_bars={symbol: frame}"
            )
        self.main_tf_ns = main_tf_ns
        self.streams: list[_Stream] = []
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
            cols = [
                frame[c].to_numpy().tolist() for c in ("open", "high", "low", "close", "volume")
            ]
            self.streams.append(
                _Stream(
                    name,
                    spec,
                    tf_ns,
                    ts,
                    list(zip(*cols, strict=True)),
                )
            )

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
                    raise BacktestError(
                        f"data.{s.name}: no {s.spec.symbol} {s.spec.timeframe} bar closes at ts "
                        f"{decision} (open ts {decision - s.tf_ns}); fill the gap in the data or "
                        f"set data.{s.name}.on_missing: hold"
                    )
                out.append((s.name, None, decision))
        return out
