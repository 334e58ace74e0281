"""Bar sources behind one interface, and a registry that builds them by name.

A :class:`Source` answers in two modes with the same data:

* pull: ``fetch(start_ns, end_ns) -> pl.DataFrame`` of canonical bars, ``start <= ts < end``;
* push: ``async for bar in source.stream(start_ns, end_ns)`` (``async for bar in source`` =
  everything) yields :class:`~feeds.schema.Bar` messages in time order.

File, synthetic and lake sources push at maximum speed. :class:`ReplaySource` paces another
source against an injected :class:`Clock`: at ``speed=None`` as fast as possible, at
``speed=k`` so that data time passes ``k`` times faster than clock time. A bar is emitted when
it is complete (its close, ``ts_ns + timeframe``), the first one as soon as iteration starts.

Registry names: ``ccxt`` (see :mod:`feeds.exchange`), ``csv``, ``parquet``, ``synthetic``,
``lake``, ``replay``
(:func:`create_source`, :func:`source_names`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol, runtime_checkable

import polars as pl

from feeds.errors import FeedError, SourceError
from feeds.files import CSV_SUFFIXES, PARQUET_SUFFIXES, DuplicatePolicy, read_bars
from feeds.lake import Lake
from feeds.schema import BAR_COLUMNS, Bar, timeframe_to_ns
from feeds.synthetic import DEFAULT_PARAMS, SyntheticParams, generate_bars

__all__ = [
    "SOURCES",
    "Clock",
    "FileSource",
    "LakeSource",
    "MonotonicClock",
    "ReplaySource",
    "Source",
    "SyntheticSource",
    "UtcClock",
    "VirtualClock",
    "create_source",
    "iter_bars",
    "source_names",
]


@runtime_checkable
class Source(Protocol):
    """Anything that serves canonical bars in pull and push mode."""

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Bars with ``start_ns <= ts_ns < end_ns`` (``None`` = unbounded)."""
        ...

    def stream(self, start_ns: int | None = None, end_ns: int | None = None) -> AsyncIterator[Bar]:
        """The same bars as :meth:`fetch`, one message at a time."""
        ...

    def __aiter__(self) -> AsyncIterator[Bar]:
        """``stream()`` over everything."""
        ...


class Clock(Protocol):
    """Injected time: virtual in backtests and tests, monotonic in live replays."""

    def now_ns(self) -> int:
        """Current time in ns (only differences matter to replay)."""
        ...

    async def sleep_until(self, ts_ns: int) -> None:
        """Return once ``now_ns() >= ts_ns``."""
        ...


class VirtualClock:
    """A clock that jumps straight to the requested time: deterministic, instant tests."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        """The current virtual time."""
        return self._now

    async def sleep_until(self, ts_ns: int) -> None:
        """Advance virtual time (never backwards) and let other tasks run."""
        self._now = max(self._now, ts_ns)
        await asyncio.sleep(0)


class UtcClock:
    """Wall-clock UTC ns (``time.time_ns``) for live exchange polling, where bar times are epoch
    times; only the edges (live feeds) use it, never a backtest or a kernel."""

    def now_ns(self) -> int:
        """Current UTC time in ns since the epoch."""
        return time.time_ns()

    async def sleep_until(self, ts_ns: int) -> None:
        """Sleep until the wall clock reaches ``ts_ns``."""
        while (remaining := ts_ns - time.time_ns()) > 0:
            await asyncio.sleep(remaining / 1e9)


class MonotonicClock:
    """Real elapsed time from ``time.monotonic_ns`` (not wall-clock: immune to NTP steps)."""

    def now_ns(self) -> int:
        """Monotonic ns since an arbitrary origin."""
        return time.monotonic_ns()

    async def sleep_until(self, ts_ns: int) -> None:
        """Sleep until the monotonic clock reaches ``ts_ns``."""
        while (remaining := ts_ns - time.monotonic_ns()) > 0:
            await asyncio.sleep(remaining / 1e9)


def iter_bars(df: pl.DataFrame) -> Iterator[Bar]:
    """Rows of a canonical bar frame as :class:`Bar` messages."""
    for ts_ns, o, h, low, c, v in df.select(BAR_COLUMNS).iter_rows():
        yield Bar(ts_ns=ts_ns, open=o, high=h, low=low, close=c, volume=v)


def _window(df: pl.DataFrame, start_ns: int | None, end_ns: int | None) -> pl.DataFrame:
    expr = pl.lit(True)
    if start_ns is not None:
        expr = expr & (pl.col("ts_ns") >= start_ns)
    if end_ns is not None:
        expr = expr & (pl.col("ts_ns") < end_ns)
    return df.filter(expr)


class _FrameSource(ABC):
    """Push mode for sources whose pull mode returns a whole frame: emit it at max speed."""

    @abstractmethod
    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """The bars in [start_ns, end_ns)."""

    async def stream(
        self, start_ns: int | None = None, end_ns: int | None = None
    ) -> AsyncIterator[Bar]:
        for bar in iter_bars(self.fetch(start_ns, end_ns)):
            yield bar
            await asyncio.sleep(0)  # cooperative: consumers and other feeds get a turn

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self.stream()


class FileSource(_FrameSource):
    """A CSV or parquet bar file read with :func:`feeds.files.read_bars` (strict rules).

    Unlike ``read_bars``, an empty selected range is an empty frame, not an error: a source
    asked about a window with no data answers "nothing".
    """

    def __init__(
        self, path: str | os.PathLike[str], *, on_duplicates: DuplicatePolicy = "error"
    ) -> None:
        self.path = Path(path)
        self.on_duplicates: DuplicatePolicy = on_duplicates
        self._bars: pl.DataFrame | None = None

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Bars of the file in ``[start_ns, end_ns)``; the file is read and validated once."""
        if self._bars is None:
            self._bars = read_bars(self.path, on_duplicates=self.on_duplicates)
        return _window(self._bars, start_ns, end_ns)


class SyntheticSource(_FrameSource):
    """Seeded synthetic bars (:mod:`feeds.synthetic`), generated once on first use."""

    def __init__(
        self,
        *,
        seed: int,
        start_ns: int,
        n: int,
        timeframe: str,
        params: SyntheticParams | None = None,
    ) -> None:
        self.seed, self.start_ns, self.n, self.timeframe = seed, start_ns, n, timeframe
        self.params = DEFAULT_PARAMS if params is None else params
        timeframe_to_ns(timeframe)
        self._bars: pl.DataFrame | None = None

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Generated bars in ``[start_ns, end_ns)``."""
        if self._bars is None:
            self._bars = generate_bars(
                seed=self.seed,
                start_ns=self.start_ns,
                n=self.n,
                timeframe=self.timeframe,
                params=self.params,
            )
        return _window(self._bars, start_ns, end_ns)


class LakeSource(_FrameSource):
    """One series of a :class:`feeds.lake.Lake`; reads only the year files it needs."""

    def __init__(
        self, *, root: str | os.PathLike[str], venue: str, symbol: str, timeframe: str
    ) -> None:
        self.lake = Lake(root)
        self.venue, self.symbol, self.timeframe = venue, symbol, timeframe
        self.lake.series_dir(venue, symbol, timeframe)  # validate the key now, not on first use

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Stored bars in ``[start_ns, end_ns)``."""
        return self.lake.read(self.venue, self.symbol, self.timeframe, start_ns, end_ns)


class ReplaySource:
    """Replays another source's bars at max speed or at ``speed`` x clock time."""

    def __init__(
        self,
        source: Source,
        *,
        timeframe: str,
        speed: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if speed is not None and not speed > 0:
            raise SourceError(
                f"replay speed must be > 0, got {speed!r}",
                hint="use speed=None for max speed, 1.0 for real time, 60.0 for 1 min per second",
            )
        if speed is not None and clock is None:
            raise SourceError(
                "a paced replay needs a clock",
                hint="pass clock=MonotonicClock() (live) or VirtualClock() (tests)",
            )
        self.source = source
        self.timeframe = timeframe
        self.tf_ns = timeframe_to_ns(timeframe)
        self.speed = speed
        self.clock = clock

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Pull mode is not paced: the inner source's bars."""
        return self.source.fetch(start_ns, end_ns)

    async def stream(
        self, start_ns: int | None = None, end_ns: int | None = None
    ) -> AsyncIterator[Bar]:
        """Yield each bar once its close time, scaled by ``speed``, has passed on the clock."""
        bars = self.fetch(start_ns, end_ns)
        if self.speed is None or self.clock is None or bars.height == 0:
            for bar in iter_bars(bars):
                yield bar
                await asyncio.sleep(0)
            return
        first_close = int(bars["ts_ns"][0]) + self.tf_ns
        anchor = self.clock.now_ns()
        for bar in iter_bars(bars):
            due = anchor + round((bar.ts_ns + self.tf_ns - first_close) / self.speed)
            await self.clock.sleep_until(due)
            yield bar

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self.stream()


def _file_factory(kind: str, suffixes: tuple[str, ...]) -> Callable[..., Source]:
    def make(*, path: str | os.PathLike[str], on_duplicates: DuplicatePolicy = "error") -> Source:
        if Path(path).suffix.lower() not in suffixes:
            raise SourceError(
                f"source {kind!r} needs a {'/'.join(suffixes)} file, got {os.fspath(path)!r}",
                hint="use the source named after the file type ('csv' or 'parquet')",
            )
        return FileSource(path, on_duplicates=on_duplicates)

    return make


def _replay_factory(
    *,
    timeframe: str,
    source: Source | None = None,
    path: str | os.PathLike[str] | None = None,
    speed: float | None = None,
    clock: Clock | None = None,
) -> Source:
    if (source is None) == (path is None):
        raise SourceError(
            "replay needs exactly one of source= (a Source) or path= (a bar file)",
            hint="e.g. create_source('replay', path='bars.csv', timeframe='1h', speed=60.0, "
            "clock=MonotonicClock())",
        )
    if path is not None:
        source = FileSource(path)
    assert source is not None  # exactly one of the two, checked above
    return ReplaySource(source, timeframe=timeframe, speed=speed, clock=clock)


def _ccxt_factory(
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    clock: Clock | None = None,
    api_url: str | None = None,
    poll_delay_ns: int = 2_000_000_000,
) -> Source:
    """``ccxt`` source (imported lazily: ccxt takes about a second to import)."""
    from feeds.exchange import create_ccxt_source

    return create_ccxt_source(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        clock=UtcClock() if clock is None else clock,
        api_url=api_url,
        poll_delay_ns=poll_delay_ns,
    )


SOURCES: Final[Mapping[str, Callable[..., Source]]] = MappingProxyType(
    {
        "ccxt": _ccxt_factory,
        "csv": _file_factory("csv", CSV_SUFFIXES),
        "parquet": _file_factory("parquet", PARQUET_SUFFIXES),
        "synthetic": SyntheticSource,
        "lake": LakeSource,
        "replay": _replay_factory,
    }
)
"""Source factories by registry name; all take keyword parameters only."""


def source_names() -> tuple[str, ...]:
    """Registered source names, sorted."""
    return tuple(sorted(SOURCES))


def create_source(name: str, **params: object) -> Source:
    """Build a registered source, checking the parameters against its signature first."""
    factory = SOURCES.get(name)
    if factory is None:
        raise SourceError(
            f"unknown source {name!r}", hint=f"use one of {', '.join(source_names())}"
        )
    signature = inspect.signature(factory)
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise SourceError(
            f"bad parameters for source {name!r}: {exc}",
            hint=f"parameters are {signature}",
        ) from exc
    try:
        return factory(**params)
    except FeedError:
        raise
    except (TypeError, ValueError) as exc:
        raise SourceError(
            f"bad parameters for source {name!r}: {exc}", hint=f"parameters are {signature}"
        ) from exc
