"""Time zones and trading sessions for UTC bar data.

Bars stay in UTC ns (``ts_ns``) everywhere; these helpers only *look* at them in a named IANA
zone (``zoneinfo``, so daylight-saving changes are handled by the zone database):

* :func:`local_time` adds a zone-aware datetime column of each bar's open time;
* :func:`session_mask` / :func:`filter_session` keep bars whose local open time falls in a
  trading session, e.g. NYSE ``09:30``-``16:00`` Monday to Friday in ``America/New_York``.
  A session whose end is before its start (``18:00``-``17:00``, futures) wraps past midnight;
  its weekdays are those of the local calendar day each bar opens on. Exchange holidays are not
  known here: pass them as ``holidays`` (local dates) to drop those days.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import date, time
from typing import Final

import polars as pl

from feeds.errors import GapError

__all__ = ["WEEKDAYS", "filter_session", "local_time", "parse_hhmm", "session_mask", "zone"]

WEEKDAYS: Final[tuple[int, ...]] = (0, 1, 2, 3, 4)
"""Monday..Friday as ``datetime.weekday()`` numbers (Monday = 0)."""
_HHMM: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def zone(tz: str) -> zoneinfo.ZoneInfo:
    """A named IANA zone; unknown names are an error with an example."""
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise GapError(
            f"unknown time zone {tz!r}",
            hint="use an IANA name such as 'UTC', 'America/New_York' or 'Europe/London'",
        ) from exc


def parse_hhmm(text: str) -> time:
    """``"09:30"`` -> ``time(9, 30)``; 24-hour clock."""
    match = _HHMM.fullmatch(text)
    if match is None:
        raise GapError(
            f"bad session time {text!r}", hint="use HH:MM on a 24-hour clock, e.g. 09:30"
        )
    return time(int(match.group(1)), int(match.group(2)))


def local_time(df: pl.DataFrame, tz: str, *, column: str = "local_time") -> pl.DataFrame:
    """``df`` plus ``column``: each bar's open time as a datetime in zone ``tz``."""
    zone(tz)
    return df.with_columns(
        pl.from_epoch("ts_ns", time_unit="ns")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(tz)
        .alias(column)
    )


def session_mask(
    df: pl.DataFrame,
    *,
    tz: str,
    start: str,
    end: str,
    weekdays: Sequence[int] = WEEKDAYS,
    holidays: Iterable[date] = (),
) -> pl.Series:
    """True for bars whose local open time is in ``[start, end)`` on ``weekdays``."""
    t0, t1 = parse_hhmm(start), parse_hhmm(end)
    if t0 == t1:
        raise GapError(f"empty session {start}-{end}", hint="start and end must differ")
    days = sorted(set(weekdays))
    if not days or any(d not in range(7) for d in days):
        raise GapError(f"bad weekdays {list(weekdays)}", hint="use 0 (Monday) .. 6 (Sunday)")
    local = local_time(df.select("ts_ns"), tz)["local_time"]
    clock = local.dt.time()
    in_hours = (clock >= t0) & (clock < t1) if t0 < t1 else (clock >= t0) | (clock < t1)
    on_day = (local.dt.weekday() - 1).is_in(days)  # polars: Monday = 1
    mask = in_hours & on_day
    off = sorted(set(holidays))
    if off:
        mask = mask & ~local.dt.date().is_in(off)
    return mask.alias("in_session")


def filter_session(
    df: pl.DataFrame,
    *,
    tz: str,
    start: str,
    end: str,
    weekdays: Sequence[int] = WEEKDAYS,
    holidays: Iterable[date] = (),
) -> pl.DataFrame:
    """Only the bars inside the session (see :func:`session_mask`)."""
    return df.filter(
        session_mask(df, tz=tz, start=start, end=end, weekdays=weekdays, holidays=holidays)
    )
