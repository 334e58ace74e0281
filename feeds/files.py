"""Read and write OHLCV bar files (CSV, parquet) in the canonical :data:`~feeds.schema.BAR_SCHEMA`.

Input rules (strict; anything else is a :class:`~feeds.errors.FeedError` naming file, row, column
and fix):

* Column names are matched case-insensitively after trimming spaces. Required: ``open``,
  ``high``, ``low``, ``close``, ``volume`` and exactly one time column out of ``ts_ns``,
  ``timestamp``, ``datetime``, ``date``, ``time``. Other columns are ignored.
* The time column is the bar OPEN time. ``ts_ns`` holds integer ns since the epoch. The others
  hold either ISO-8601 strings (``2024-01-01T00:00:00Z``, ``2024-01-01 00:00:00+02:00``,
  ``2024-01-01``; one format per file; no offset means UTC), parquet datetimes/dates (naive means
  UTC), or integer epochs whose unit is detected from the magnitude of the values:
  ``|v| < 1e11`` seconds, ``< 1e14`` milliseconds, ``< 1e17`` microseconds, else nanoseconds
  (all values must fall in one class; pass ``ts_unit=`` to override). Float epochs are refused.
* Timestamps must strictly increase: nothing is ever sorted silently. Duplicates are an error
  unless ``on_duplicates="keep_last"`` keeps the last row of each run of equal timestamps.
* Values follow :mod:`feeds.validate`: finite prices > 0, volume >= 0, high/low bracket
  open/close; missing values are errors.
* An empty file, or an empty selected range, is an error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import polars as pl

from feeds.errors import (
    ColumnError,
    DuplicateTimestampError,
    EmptyDataError,
    FeedError,
    FeedFileError,
    NonMonotonicError,
    OhlcError,
    TimestampError,
)
from feeds.schema import BAR_COLUMNS, BAR_SCHEMA
from feeds.validate import first_bad_ohlc_row, first_bad_value_row, format_ts

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "TIME_COLUMNS",
    "DuplicatePolicy",
    "TimestampFormat",
    "TsUnit",
    "atomic_write",
    "conform_bars",
    "parse_bars",
    "read_bars",
    "write_bars",
]

TsUnit = Literal["s", "ms", "us", "ns"]
DuplicatePolicy = Literal["error", "keep_last"]
TimestampFormat = Literal["ts_ns", "iso"]

TIME_COLUMNS: Final[tuple[str, ...]] = ("ts_ns", "timestamp", "datetime", "date", "time")
CSV_SUFFIXES: Final[tuple[str, ...]] = (".csv",)
PARQUET_SUFFIXES: Final[tuple[str, ...]] = (".parquet", ".pq")
_VALUE_COLUMNS: Final[tuple[str, ...]] = BAR_COLUMNS[1:]
_UNIT_FACTOR: Final[dict[TsUnit, int]] = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_INT64_MAX: Final = 2**63 - 1
_INT_RE: Final = r"^[+-]?[0-9]+$"
_EXPECTED: Final = (
    f"expected columns {','.join(BAR_COLUMNS)} or a {'/'.join(TIME_COLUMNS[1:])} column "
    "instead of ts_ns (names are case-insensitive)"
)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def read_raw(path: Path, what: str = "bar") -> pl.DataFrame:
    """Load a CSV/parquet `what` file without interpretation (CSV: every column as text)."""
    if not path.exists():
        raise FeedFileError(
            "file not found", path=path, hint="check the path (relative paths are from the cwd)"
        )
    if path.is_dir():
        raise FeedFileError(f"is a directory, not a {what} file", path=path, hint="pass a file")
    suffix = _suffix(path)
    try:
        if suffix in CSV_SUFFIXES:
            if path.stat().st_size == 0:
                raise EmptyDataError("file is empty", path=path, hint="write a header and rows")
            return pl.read_csv(path, infer_schema=False)
        if suffix in PARQUET_SUFFIXES:
            return pl.read_parquet(path)
    except FeedError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FeedFileError(
            f"cannot read {suffix.lstrip('.')} file ({type(exc).__name__}: {first})",
            path=path,
            hint="check that the file is complete and really is "
            + ("CSV" if suffix in CSV_SUFFIXES else "parquet")
            + "; re-export or re-download it",
        ) from exc
    raise FeedFileError(
        f"unsupported file type {path.suffix!r}",
        path=path,
        hint=f"use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}",
    )


def _map_columns(df: pl.DataFrame, path: Path | None) -> tuple[str, dict[str, str]]:
    """Find the time column and the value columns: canonical name -> actual name."""
    by_lower: dict[str, str] = {}
    for name in df.columns:
        key = name.strip().lower()
        if key in by_lower:
            raise ColumnError(
                f"columns {by_lower[key]!r} and {name!r} both mean {key!r}",
                path=path,
                hint="rename or drop one of them",
            )
        by_lower[key] = name
    have = ", ".join(df.columns) or "(none)"
    hint = f"rename the columns to {','.join(BAR_COLUMNS)}"
    if len(df.columns) == 1:
        seps = [sep for sep in (";", "\t", "|") if sep in df.columns[0]]
        if seps:
            hint = f"the file seems to be separated by {seps[0]!r}; save it comma-separated"
    for col in _VALUE_COLUMNS:
        if col not in by_lower:
            raise ColumnError(
                f"missing column {col!r} (have: {have}); {_EXPECTED}", path=path, hint=hint
            )
    times = [c for c in TIME_COLUMNS if c in by_lower]
    if not times:
        raise ColumnError(
            f"missing a time column (have: {have}); {_EXPECTED}",
            path=path,
            hint="add a 'timestamp' column with ISO-8601 UTC times or a 'ts_ns' column",
        )
    if len(times) > 1:
        raise ColumnError(
            f"ambiguous time columns {[by_lower[c] for c in times]}; exactly one of "
            f"{', '.join(TIME_COLUMNS)} is allowed",
            path=path,
            hint="keep one (if date and time are split, join them into one 'timestamp' column)",
        )
    mapping = {col: by_lower[col] for col in _VALUE_COLUMNS}
    return times[0], mapping | {"ts_ns": by_lower[times[0]]}


def _first_row(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return None if idx.is_empty() else int(idx[0])


def _epoch_to_ns(ints: pl.Series, unit: TsUnit | None, path: Path | None, column: str) -> pl.Series:
    """Scale integer epochs to ns, detecting the unit from the magnitude if not given."""
    if unit is None:
        mag = ints.abs()
        lo, hi = int(mag.min()), int(mag.max())  # type: ignore[arg-type]
        units: list[TsUnit] = []
        for v in (lo, hi):
            units.append(
                "s" if v < 10**11 else "ms" if v < 10**14 else "us" if v < 10**17 else "ns"
            )
        if units[0] != units[1]:
            row = _first_row(mag == lo)
            raise TimestampError(
                f"integer timestamps mix units: smallest |value| {lo} looks like {units[0]}, "
                f"largest {hi} like {units[1]}",
                path=path,
                row=row,
                column=column,
                hint="convert all values to one unit, or pass ts_unit= to read_bars",
            )
        unit = units[1]
    factor = _UNIT_FACTOR[unit]
    over = ints.abs() > _INT64_MAX // factor
    row = _first_row(over)
    if row is not None:
        raise TimestampError(
            f"timestamp {ints[row]} {unit} does not fit int64 nanoseconds (years 1678-2262)",
            path=path,
            row=row,
            column=column,
            hint="check the epoch unit (ts_unit=) or the value",
        )
    return ints * factor


def _parse_time(
    raw: pl.Series, kind: str, unit: TsUnit | None, path: Path | None, column: str
) -> pl.Series:
    """Turn the raw time column into int64 ns UTC (rules in the module docstring)."""
    dtype = raw.dtype
    missing = _first_row(raw.is_null())
    if missing is not None:
        raise TimestampError(
            "missing value", path=path, row=missing, column=column, hint="fill in or delete the row"
        )
    if kind == "ts_ns" and unit not in (None, "ns"):
        raise TimestampError(
            f"ts_unit={unit!r} contradicts the 'ts_ns' column, which is nanoseconds by definition",
            path=path,
            column=column,
            hint="drop ts_unit or rename the column to 'timestamp'",
        )
    if dtype == pl.String:
        text = raw.str.strip_chars()
        is_int = text.str.contains(_INT_RE)
        if bool(is_int.all()):
            ints = text.cast(pl.Int64, strict=False)
            row = _first_row(ints.is_null())
            if row is not None:
                raise TimestampError(
                    f"timestamp {text[row]} does not fit a 64-bit integer",
                    path=path,
                    row=row,
                    column=column,
                    hint="check the value (ns since 1970 need at most 19 digits)",
                )
            return _epoch_to_ns(ints, "ns" if kind == "ts_ns" else unit, path, column)
        if kind == "ts_ns" or bool(is_int.any()):
            row = _first_row(~is_int) if kind == "ts_ns" else _first_row(is_int)
            assert row is not None
            raise TimestampError(
                f"cannot parse {text[row]!r} as "
                + (
                    "integer nanoseconds"
                    if kind == "ts_ns"
                    else "the same format as the other rows"
                )
                + (" (values mix integer epochs and date strings)" if kind != "ts_ns" else ""),
                path=path,
                row=row,
                column=column,
                hint="use integer ns in 'ts_ns', or ISO-8601 strings in a 'timestamp' column",
            )
        if unit is not None:
            raise TimestampError(
                f"ts_unit={unit!r} given but the values are date strings like {text[0]!r}",
                path=path,
                column=column,
                hint="drop ts_unit (it only applies to integer epochs)",
            )
        parsed = text.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False)
        row = _first_row(parsed.is_null())
        if row is not None:
            raise TimestampError(
                f"cannot parse {text[row]!r} as an ISO-8601 time in the format of row 0 "
                f"({text[0]!r})",
                path=path,
                row=row,
                column=column,
                hint="use one ISO-8601 format for every row, e.g. 2024-01-01T00:00:00Z",
            )
        return parsed.dt.epoch("ns")
    if dtype.is_integer():
        return _epoch_to_ns(raw.cast(pl.Int64), "ns" if kind == "ts_ns" else unit, path, column)
    if isinstance(dtype, pl.Datetime) and kind != "ts_ns":
        dt = raw
        dt = dt.dt.replace_time_zone("UTC") if dtype.time_zone is None else dt
        return dt.dt.convert_time_zone("UTC").dt.cast_time_unit("ns").dt.epoch("ns")
    if dtype == pl.Date and kind != "ts_ns":
        return raw.cast(pl.Datetime("ns")).dt.epoch("ns")
    raise TimestampError(
        f"unsupported time dtype {dtype}"
        + (" (float epochs are ambiguous and lose precision)" if dtype.is_float() else ""),
        path=path,
        column=column,
        hint="store integer ns in 'ts_ns', or datetimes / ISO-8601 strings in 'timestamp'",
    )


def _parse_value(raw: pl.Series, path: Path | None, column: str) -> pl.Series:
    """Cast one value column to Float64, naming the first cell that is not a number."""
    if raw.dtype == pl.String:
        text = raw.str.strip_chars()
        values = text.cast(pl.Float64, strict=False)
        row = _first_row(values.is_null() & text.is_not_null())
        if row is not None:
            raise OhlcError(
                f"{text[row]!r} is not a number",
                path=path,
                row=row,
                column=column,
                hint="use plain decimal numbers (no thousands separators or units)",
            )
        return values
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    raise ColumnError(
        f"unsupported dtype {raw.dtype}",
        path=path,
        column=column,
        hint="store prices and volume as numbers",
    )


def _check_rows(df: pl.DataFrame, path: Path | None, names: dict[str, str]) -> None:
    """Raise on the first missing value, bad value or inconsistent OHLC row."""
    for col in BAR_COLUMNS:
        row = _first_row(df[col].is_null())
        if row is not None:
            cls = TimestampError if col == "ts_ns" else OhlcError
            raise cls(
                "missing value",
                path=path,
                row=row,
                column=names.get(col, col),
                hint="fill in or delete the row",
            )
    bad = first_bad_value_row(df)
    if bad is not None:
        row, col = bad
        rule = (
            "volume must be finite and >= 0" if col == "volume" else "prices must be finite and > 0"
        )
        raise OhlcError(
            f"bad value {df[col][row]!r} at {format_ts(int(df['ts_ns'][row]))}: {rule}",
            path=path,
            row=row,
            column=names.get(col, col),
            hint="fix or delete the row",
        )
    row_ohlc = first_bad_ohlc_row(df)
    if row_ohlc is not None:
        o, h, lo, c = (float(df[x][row_ohlc]) for x in ("open", "high", "low", "close"))
        raise OhlcError(
            f"inconsistent bar at {format_ts(int(df['ts_ns'][row_ohlc]))}: open={o!r} high={h!r} "
            f"low={lo!r} close={c!r}; need high >= max(open, close) and low <= min(open, close)",
            path=path,
            row=row_ohlc,
            hint="fix the bar (high/low columns swapped or shifted?) or delete it",
        )


def _check_order(
    df: pl.DataFrame, path: Path | None, on_duplicates: DuplicatePolicy
) -> pl.DataFrame:
    """Enforce strictly increasing timestamps, applying the duplicate policy."""
    ts = df["ts_ns"]
    diff = ts.diff()
    row = _first_row((diff < 0).fill_null(False))
    if row is not None:
        raise NonMonotonicError(
            f"time goes backwards: {format_ts(int(ts[row]))} comes after "
            f"{format_ts(int(ts[row - 1]))} (row {row - 1}); data is never sorted silently",
            path=path,
            row=row,
            hint="sort the file by time",
        )
    dup = (diff == 0).fill_null(False)
    if on_duplicates == "error":
        row = _first_row(dup)
        if row is not None:
            raise DuplicateTimestampError(
                f"duplicate timestamp {format_ts(int(ts[row]))} (same as row {row - 1})",
                path=path,
                row=row,
                hint="remove the duplicate rows, or pass on_duplicates='keep_last'",
            )
        return df
    if on_duplicates == "keep_last":
        return df.filter(~dup.shift(-1, fill_value=False))
    raise ValueError(f"on_duplicates must be 'error' or 'keep_last', got {on_duplicates!r}")


def conform_bars(
    df: pl.DataFrame,
    *,
    path: str | os.PathLike[str] | None = None,
    on_duplicates: DuplicatePolicy = "error",
    ts_unit: TsUnit | None = None,
) -> pl.DataFrame:
    """Turn any frame following the input rules into validated canonical bars.

    Used by :func:`read_bars` and by every other writer (lake, synthetic) so all bars obey one
    set of rules. ``path`` only labels error messages.
    """
    where = None if path is None else Path(path)
    out, names = _parse_frame(df, where, ts_unit)
    _check_rows(out, where, names)
    return _check_order(out, where, on_duplicates)


def _parse_frame(
    df: pl.DataFrame, where: Path | None, ts_unit: TsUnit | None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Map columns and parse every cell into :data:`BAR_SCHEMA` dtypes (no row/order rules)."""
    kind, names = _map_columns(df, where)
    if df.height == 0:
        raise EmptyDataError(
            "no bars (the file has a header but no rows)" if where else "no bars",
            path=where,
            hint="provide at least one bar",
        )
    out = pl.DataFrame(
        {
            "ts_ns": _parse_time(df[names["ts_ns"]], kind, ts_unit, where, names["ts_ns"]),
            **{c: _parse_value(df[names[c]], where, names[c]) for c in _VALUE_COLUMNS},
        },
        schema=dict(BAR_SCHEMA),
    )
    return out, names


def parse_bars(path: str | os.PathLike[str], *, ts_unit: TsUnit | None = None) -> pl.DataFrame:
    """Read a bar file applying only the column and cell-parsing rules, for inspection.

    Rows that break the bar rules (order, duplicates, bad or missing values, OHLC) are kept as
    they are so :func:`feeds.validate.check_bars` can report all of them at once (this is what
    ``stratagem data check`` runs); use :func:`read_bars` for data you compute on.
    """
    p = Path(path)
    return _parse_frame(read_raw(p), p, ts_unit)[0]


def read_bars(
    path: str | os.PathLike[str],
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    on_duplicates: DuplicatePolicy = "error",
    ts_unit: TsUnit | None = None,
) -> pl.DataFrame:
    """Read a CSV or parquet bar file into validated :data:`~feeds.schema.BAR_SCHEMA` bars.

    The whole file is validated, then bars with ``start_ns <= ts_ns < end_ns`` are returned
    (half-open; ``None`` = unbounded). An empty selection is an error naming the file's range.
    """
    p = Path(path)
    if start_ns is not None and end_ns is not None and start_ns >= end_ns:
        raise FeedError(
            f"empty time range: start {format_ts(start_ns)} is not before end {format_ts(end_ns)}",
            path=p,
            hint="pass start < end (end is exclusive)",
        )
    bars = conform_bars(read_raw(p), path=p, on_duplicates=on_duplicates, ts_unit=ts_unit)
    if start_ns is None and end_ns is None:
        return bars
    expr = pl.lit(True)
    if start_ns is not None:
        expr = expr & (pl.col("ts_ns") >= start_ns)
    if end_ns is not None:
        expr = expr & (pl.col("ts_ns") < end_ns)
    selected = bars.filter(expr)
    if selected.height == 0:
        lo = "-inf" if start_ns is None else format_ts(start_ns)
        hi = "+inf" if end_ns is None else format_ts(end_ns)
        raise EmptyDataError(
            f"no bars in [{lo}, {hi}); the file covers {format_ts(int(bars['ts_ns'][0]))} .. "
            f"{format_ts(int(bars['ts_ns'][-1]))}",
            path=p,
            hint="choose a range inside the file's coverage",
        )
    return selected


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temp file in the same directory and ``os.replace`` it: never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; keep the old file's mode, else the usual 0644.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _iso_column(ts: pl.Series) -> pl.Series:
    fmt = "%Y-%m-%dT%H:%M:%SZ" if bool((ts % 10**9 == 0).all()) else "%Y-%m-%dT%H:%M:%S%.9fZ"
    return pl.from_epoch(ts, time_unit="ns").dt.strftime(fmt).alias("timestamp")


def write_bars(
    df: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    timestamp_format: TimestampFormat = "ts_ns",
) -> None:
    """Validate canonical bars and write them atomically as CSV or parquet (by suffix).

    ``timestamp_format="iso"`` writes a ``timestamp`` column of ISO-8601 UTC strings instead of
    ``ts_ns`` (CSV only; parquet always stores ``ts_ns``). Whatever is written reads back equal.
    """
    p = Path(path)
    bars = conform_bars(df)
    suffix = _suffix(p)
    if suffix in CSV_SUFFIXES:
        out = bars
        if timestamp_format == "iso":
            out = bars.with_columns(_iso_column(bars["ts_ns"])).select("timestamp", *_VALUE_COLUMNS)
        atomic_write(p, lambda tmp: out.write_csv(tmp))
    elif suffix in PARQUET_SUFFIXES:
        atomic_write(p, lambda tmp: bars.write_parquet(tmp, statistics=True))
    else:
        raise FeedFileError(
            f"unsupported file type {p.suffix!r}",
            path=p,
            hint=f"use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}",
        )
