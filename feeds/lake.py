"""Parquet data lake of canonical bars: ``<root>/<venue>/<symbol>/<timeframe>/<yyyy>.parquet``.

* One file per UTC calendar year, bars sorted by ``ts_ns``, exactly :data:`BAR_SCHEMA`.
* Writes touch only the years present in the incoming bars. Each year file is replaced
  atomically (temp file in the same directory + ``os.replace``), so a crash leaves every
  partition either old or new, never torn; re-running the same upsert is idempotent.
* ``upsert`` replaces stored bars with equal ``ts_ns`` and inserts the rest; ``append`` refuses
  bars at or before the last stored bar (a guard for feeds that should only move forward).
* Symbols are made path-safe by :func:`symbol_key`: ``/`` -> ``-`` and ``:`` -> ``_``
  (``BTC/USDT`` -> ``BTC-USDT``, ``BTC/USDT:USDT`` -> ``BTC-USDT_USDT``); other characters
  outside ``[A-Za-z0-9._-]`` are refused. The catalog reports these keys.
* Bars of timeframes that divide a day must sit on the epoch-aligned grid (``1h`` bars on the
  hour); a misaligned bar is refused rather than stored.
* Tiering (:meth:`Lake.tier`): fine bars older than N days are resampled into a coarse series
  and removed from the fine one, coarse first, so a crash never loses data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Literal

import msgspec
import polars as pl

from feeds.errors import FeedError, LakeError
from feeds.files import atomic_write, conform_bars
from feeds.resample import resample_bars
from feeds.schema import BAR_SCHEMA, NS_PER_DAY, empty_frame, timeframe_to_ns
from feeds.validate import format_ts

__all__ = ["CatalogEntry", "Lake", "LakeWrite", "TierReport", "WriteMode", "symbol_key"]

WriteMode = Literal["upsert", "append"]

_KEY_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_YEAR_FILE_RE: Final = re.compile(r"(\d{4})\.parquet")


def _safe(kind: str, value: str) -> str:
    if not _KEY_RE.fullmatch(value) or value in (".", ".."):
        raise LakeError(
            f"{kind} {value!r} is not path-safe",
            hint=f"use only letters, digits, '.', '_' and '-' in the {kind}",
        )
    return value


def symbol_key(symbol: str) -> str:
    """Path-safe directory name of a symbol (``BTC/USDT`` -> ``BTC-USDT``)."""
    return _safe("symbol", symbol.replace("/", "-").replace(":", "_"))


class LakeWrite(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a write did: the year partitions rewritten and the rows inserted/replaced."""

    years: tuple[int, ...]
    inserted: int
    replaced: int


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stored series."""

    venue: str
    symbol: str  # the path-safe key, e.g. "BTC-USDT"
    timeframe: str
    first_ts_ns: int
    last_ts_ns: int
    n_bars: int
    years: tuple[int, ...]
    size_bytes: int


class TierReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What :meth:`Lake.tier` did: the cutoff, the coarse bars written and the fine bars removed."""

    cutoff_ns: int  # fine bars before this were moved to the coarse series
    coarse: LakeWrite | None  # None when nothing was old enough
    fine_removed: int
    years_deleted: tuple[int, ...]
    years_rewritten: tuple[int, ...]


def _year_of(ts_ns: pl.Expr) -> pl.Expr:
    return pl.from_epoch(ts_ns, time_unit="ns").dt.year()


def _year_bounds(year: int) -> tuple[int, int]:
    start = pl.datetime(year, 1, 1, time_unit="ns")
    end = pl.datetime(year + 1, 1, 1, time_unit="ns")
    row = pl.select(start.dt.epoch("ns"), end.dt.epoch("ns").alias("end")).row(0)
    return int(row[0]), int(row[1])


def _parquet_writer(df: pl.DataFrame) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        df.write_parquet(tmp, compression="zstd", statistics=True)

    return write


class Lake:
    """A bar lake rooted at a directory (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def series_dir(self, venue: str, symbol: str, timeframe: str) -> Path:
        """Directory of one series; validates every path component."""
        timeframe_to_ns(timeframe)
        return (
            self.root / _safe("venue", venue) / symbol_key(symbol) / _safe("timeframe", timeframe)
        )

    def partition_path(self, venue: str, symbol: str, timeframe: str, year: int) -> Path:
        """File of one year of one series."""
        return self.series_dir(venue, symbol, timeframe) / f"{year:04d}.parquet"

    def _read_partition(self, path: Path) -> pl.DataFrame:
        try:
            df = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise LakeError(
                f"corrupt or unreadable partition ({type(exc).__name__})",
                path=path,
                hint="delete this year file and re-import or re-fetch the year",
            ) from exc
        if dict(df.schema) != dict(BAR_SCHEMA):
            raise LakeError(
                f"partition schema {dict(df.schema)} is not BAR_SCHEMA",
                path=path,
                hint="the file was not written by feeds.lake; delete it and re-import",
            )
        return df

    def _years(self, series: Path) -> list[tuple[int, Path]]:
        if not series.is_dir():
            return []
        found = []
        for entry in series.iterdir():
            match = _YEAR_FILE_RE.fullmatch(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def write(
        self,
        venue: str,
        symbol: str,
        timeframe: str,
        bars: pl.DataFrame,
        *,
        mode: WriteMode = "upsert",
    ) -> LakeWrite:
        """Store canonical bars, rewriting only the year partitions they fall in."""
        if mode not in ("upsert", "append"):
            raise LakeError(f"unknown write mode {mode!r}", hint="use 'upsert' or 'append'")
        series = self.series_dir(venue, symbol, timeframe)
        try:
            new = conform_bars(bars)
        except FeedError as exc:
            raise LakeError(
                f"refusing to store invalid bars in {series}: {exc}",
                row=exc.row,
                column=exc.column,
                hint=exc.hint,
            ) from exc
        tf_ns = timeframe_to_ns(timeframe)
        if NS_PER_DAY % tf_ns == 0:
            off = (new["ts_ns"] % tf_ns != 0).arg_true()
            if not off.is_empty():
                row = int(off[0])
                raise LakeError(
                    f"bar at {format_ts(int(new['ts_ns'][row]))} is not on the {timeframe} grid",
                    row=row,
                    hint=f"check the timeframe; {timeframe} bars open at multiples of {timeframe}",
                )
        if mode == "append":
            stored = self._years(series)
            if stored:
                last = int(self._read_partition(stored[-1][1])["ts_ns"][-1])
                first_new = int(new["ts_ns"][0])
                if first_new <= last:
                    raise LakeError(
                        f"append would overlap: first new bar {format_ts(first_new)} is not after "
                        f"the last stored bar {format_ts(last)}",
                        path=series,
                        row=0,
                        hint="use mode='upsert' to replace overlapping bars",
                    )
        inserted = replaced = 0
        years: list[int] = []
        with_year = new.with_columns(_year_of(pl.col("ts_ns")).alias("_year"))
        for year in with_year["_year"].unique(maintain_order=True).to_list():
            chunk = with_year.filter(pl.col("_year") == year).drop("_year")
            path = series / f"{int(year):04d}.parquet"
            if path.exists():
                old = self._read_partition(path)
                overlap = old.join(chunk.select("ts_ns"), on="ts_ns", how="semi").height
                kept = old.join(chunk.select("ts_ns"), on="ts_ns", how="anti")
                merged = pl.concat([kept, chunk]).sort("ts_ns")
            else:
                overlap = 0
                merged = chunk
            replaced += overlap
            inserted += chunk.height - overlap
            atomic_write(path, _parquet_writer(merged))
            years.append(int(year))
        return LakeWrite(years=tuple(years), inserted=inserted, replaced=replaced)

    def read(
        self,
        venue: str,
        symbol: str,
        timeframe: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> pl.DataFrame:
        """Bars with ``start_ns <= ts_ns < end_ns`` (``None`` = unbounded); empty if none stored."""
        series = self.series_dir(venue, symbol, timeframe)
        files = [
            path
            for year, path in self._years(series)
            if (start_ns is None or _year_bounds(year)[1] > start_ns)
            and (end_ns is None or _year_bounds(year)[0] < end_ns)
        ]
        if not files:
            return empty_frame(BAR_SCHEMA)
        parts = [self._read_partition(p) for p in files]
        df = pl.concat(parts)
        if start_ns is not None or end_ns is not None:
            expr = pl.lit(True)
            if start_ns is not None:
                expr = expr & (pl.col("ts_ns") >= start_ns)
            if end_ns is not None:
                expr = expr & (pl.col("ts_ns") < end_ns)
            df = df.filter(expr)
        bad = (df["ts_ns"].diff() <= 0).fill_null(False).arg_true()
        if not bad.is_empty():
            raise LakeError(
                f"stored bars are out of order at {format_ts(int(df['ts_ns'][int(bad[0])]))}",
                path=series,
                hint="a partition was edited outside feeds.lake; delete and re-import it",
            )
        return df

    def last_ts_ns(
        self, venue: str, symbol: str, timeframe: str, end_ns: int | None = None
    ) -> int | None:
        """Open time of the last stored bar before ``end_ns`` (``None``: none stored).

        Reads year files from the newest backwards and stops at the first hit, so resuming a
        download costs one partition read, not the whole series.
        """
        series = self.series_dir(venue, symbol, timeframe)
        for year, path in reversed(self._years(series)):
            if end_ns is not None and _year_bounds(year)[0] >= end_ns:
                continue
            ts = self._read_partition(path)["ts_ns"]
            if end_ns is not None:
                ts = ts.filter(ts < end_ns)
            if ts.len():
                return int(ts.max())  # type: ignore[arg-type]
        return None

    def tier(
        self,
        venue: str,
        symbol: str,
        timeframe: str,
        *,
        now_ns: int,
        keep_fine_days: int = 90,
        coarse_tf: str = "1h",
    ) -> TierReport:
        """Move fine bars older than ``keep_fine_days`` to the ``coarse_tf`` series.

        The cutoff is ``now_ns - keep_fine_days`` rounded down to a ``coarse_tf`` boundary, so
        every coarse bar built is final. Old fine bars are resampled (partial buckets from gaps
        are kept, with the bars they have; see :func:`feeds.resample.resample_bars`) and upserted
        into the coarse series first (resampled bars replace stored coarse bars of the same
        time); only then are the fine year files rewritten without them (or deleted when wholly
        old), each atomically. A crash in between leaves the data in both tiers, never in none,
        and running ``tier`` again finishes the job. ``now_ns`` is passed in: no wall clock here.
        """
        if keep_fine_days < 0:
            raise LakeError(f"keep_fine_days must be >= 0, got {keep_fine_days}")
        coarse_ns = timeframe_to_ns(coarse_tf)
        if coarse_ns <= timeframe_to_ns(timeframe):
            raise LakeError(
                f"coarse timeframe {coarse_tf} is not coarser than {timeframe}",
                hint="tier fine data into a coarser series, e.g. 1m -> 1h",
            )
        cutoff = ((now_ns - keep_fine_days * NS_PER_DAY) // coarse_ns) * coarse_ns
        old = self.read(venue, symbol, timeframe, None, cutoff)
        if old.height == 0:
            return TierReport(
                cutoff_ns=cutoff, coarse=None, fine_removed=0, years_deleted=(), years_rewritten=()
            )
        coarse = resample_bars(old, timeframe, coarse_tf, incomplete="flag").select(
            list(BAR_SCHEMA)
        )
        written = self.write(venue, symbol, coarse_tf, coarse, mode="upsert")
        deleted: list[int] = []
        rewritten: list[int] = []
        for year, path in self._years(self.series_dir(venue, symbol, timeframe)):
            year_start, year_end = _year_bounds(year)
            if year_start >= cutoff:
                continue
            if year_end <= cutoff:
                path.unlink()
                deleted.append(year)
                continue
            kept = self._read_partition(path).filter(pl.col("ts_ns") >= cutoff)
            if kept.height == 0:
                path.unlink()
                deleted.append(year)
            else:
                atomic_write(path, _parquet_writer(kept))
                rewritten.append(year)
        return TierReport(
            cutoff_ns=cutoff,
            coarse=written,
            fine_removed=old.height,
            years_deleted=tuple(deleted),
            years_rewritten=tuple(rewritten),
        )

    def _series(self) -> Iterator[tuple[str, str, str, Path]]:
        if not self.root.is_dir():
            return
        for venue in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for sym in sorted(p for p in venue.iterdir() if p.is_dir()):
                for tf in sorted(p for p in sym.iterdir() if p.is_dir()):
                    yield venue.name, sym.name, tf.name, tf

    def catalog(self) -> list[CatalogEntry]:
        """Every stored series with its time range, bar count and year files, sorted by path."""
        entries = []
        for venue, sym, tf, series in self._series():
            years = self._years(series)
            if not years:
                continue
            n = 0
            first: int | None = None
            last = 0
            for _, path in years:
                df = self._read_partition(path).select(
                    pl.col("ts_ns").min().alias("lo"),
                    pl.col("ts_ns").max().alias("hi"),
                    pl.len().alias("n"),
                )
                lo, hi, count = df.row(0)
                if count:
                    first = int(lo) if first is None else first
                    last = int(hi)
                    n += int(count)
            if first is None:
                continue
            entries.append(
                CatalogEntry(
                    venue=venue,
                    symbol=sym,
                    timeframe=tf,
                    first_ts_ns=first,
                    last_ts_ns=last,
                    n_bars=n,
                    years=tuple(y for y, _ in years),
                    size_bytes=sum(p.stat().st_size for _, p in years),
                )
            )
        return entries
