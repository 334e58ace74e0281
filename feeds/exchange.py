"""Historical and live market data from exchanges through ccxt's REST API.

:class:`CcxtClient` wraps one ccxt exchange and converts its answers to the canonical schemas:

* ``fetch_ohlcv`` -> :data:`BAR_SCHEMA` (closed bars only: the bar still forming at ``now_ns()``
  is never returned, so it can never be stored as if it were final);
* ``fetch_trades`` -> :data:`TRADE_SCHEMA`; ``fetch_funding`` -> :data:`FUNDING_SCHEMA`;
  ``fetch_open_interest`` -> :data:`OPEN_INTEREST_SCHEMA`.

Every call paginates with ``since``/``limit`` loops until the requested half-open range
``[start_ns, end_ns)`` is covered or the exchange has nothing newer. Transient failures
(ccxt ``OperationFailed``: HTTP 429/418 rate limits, 5xx, timeouts, connection resets and
malformed JSON, which ccxt alone would silently turn into an empty page) are retried with
exponential backoff per :class:`RetryPolicy` (at least the ``Retry-After`` a rate-limit answer
asks for), on an injected ``sleep``; after the last attempt an
:class:`~feeds.errors.ExchangeRetryError` names the call, the range position and the last error.
Permanent errors (unknown symbol, unsupported timeframe) fail at once with
:class:`~feeds.errors.ExchangeError`. ccxt's own ``enableRateLimit`` throttle stays on.

:meth:`CcxtClient.download_bars` stores bars in a :class:`~feeds.lake.Lake` page batch by page
batch (each write atomic), resuming from the last stored bar, so an interrupted download keeps
what it fetched and a re-run continues where it stopped.

:class:`CcxtSource` is the registry source (``create_source("ccxt", ...)``): pull mode is the
paginated history, push mode polls for newly closed bars on an injected clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar

import msgspec
import polars as pl

from feeds.errors import (
    ExchangeDataError,
    ExchangeError,
    ExchangeRetryError,
    SourceError,
)

try:
    import ccxt
except ModuleNotFoundError as _missing:  # ccxt is the optional "venues" extra
    raise SourceError(
        "exchange sources need the ccxt package",
        hint="pip install 'stratagem[venues]' (or pip install ccxt)",
    ) from _missing
from feeds.lake import Lake
from feeds.schema import (
    ASK,
    BAR_SCHEMA,
    BID,
    FUNDING_SCHEMA,
    NS_PER_HOUR,
    OPEN_INTEREST_SCHEMA,
    TRADE_SCHEMA,
    Bar,
    Instrument,
    InstrumentKind,
    empty_frame,
    timeframe_to_ns,
)
from feeds.sources import Clock, iter_bars
from feeds.validate import format_ts

__all__ = [
    "CcxtClient",
    "CcxtSource",
    "DownloadReport",
    "RetryEvent",
    "RetryPolicy",
    "create_ccxt_source",
    "make_exchange",
]

NS_PER_MS: Final = 1_000_000
T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounded exponential backoff: wait ``min(max_delay_s, base_delay_s * factor**(n-1))``
    after the n-th failed attempt; give up after ``max_attempts`` attempts in total.

    No jitter: retries are deterministic (one client per process, so no thundering herd).
    """

    max_attempts: int = 6
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if (
            self.max_attempts < 1
            or self.base_delay_s < 0
            or self.factor < 1
            or self.max_delay_s < 0
        ):
            raise SourceError(
                f"bad retry policy {self!r}",
                hint="max_attempts >= 1, base_delay_s >= 0, factor >= 1, max_delay_s >= 0",
            )

    def delay_s(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` consecutive failures (1-based)."""
        return float(
            min(self.max_delay_s, self.base_delay_s * self.factor ** (failed_attempts - 1))
        )


class RetryEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One retried failure, kept by the client for reports and tests."""

    call: str
    attempt: int  # 1-based attempt that failed
    error: str  # ccxt exception class name
    delay_s: float


class DownloadReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What :meth:`CcxtClient.download_bars` did."""

    venue: str
    symbol: str
    timeframe: str
    start_ns: int
    end_ns: int
    resumed_from_ns: int | None  # the stored bar the download continued from, if any
    bars_written: int
    pages: int
    retries: int
    first_ts_ns: int | None
    last_ts_ns: int | None


def _with_base_url(urls: Any, base_url: str) -> Any:
    """Replace scheme+host of every URL in ccxt's ``urls['api']`` tree, keeping the paths."""
    if isinstance(urls, str):
        if "://" not in urls:
            return urls
        rest = urls.split("://", 1)[1]
        path = rest[rest.find("/") :] if "/" in rest else ""
        return base_url.rstrip("/") + path
    if isinstance(urls, dict):
        return {k: _with_base_url(v, base_url) for k, v in urls.items()}
    return urls


def _checked_class(cls: type[ccxt.Exchange]) -> type[ccxt.Exchange]:
    """A subclass that turns an undecodable 2xx body into ``ccxt.BadResponse``.

    Stock ccxt returns the raw text when JSON decoding fails, which parsers then read as an
    empty page: a truncated response would silently end a download early.
    """

    class Checked(cls):  # type: ignore[misc]
        _last_status: int = 0
        last_decoded: Any = None  # the last decoded JSON body, checked when a page is empty

        def on_rest_response(self, code: Any, *args: Any) -> Any:
            self._last_status = int(code)
            return super().on_rest_response(code, *args)

        def parse_json(self, http_response: Any) -> Any:
            result = super().parse_json(http_response)
            if (
                result is None
                and 200 <= self._last_status < 300
                and isinstance(http_response, str)
                and http_response.strip()
            ):
                raise ccxt.BadResponse(
                    f"{self.id} answered with malformed JSON: {http_response[:80]!r}"
                )
            self.last_decoded = result
            return result

    Checked.__name__ = f"Checked{cls.__name__}"
    return Checked


def make_exchange(
    exchange_id: str,
    *,
    api_url: str | None = None,
    timeout_ms: int = 10_000,
    rate_limit_ms: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> ccxt.Exchange:
    """A public-data ccxt exchange with rate limiting on and malformed-JSON detection.

    ``api_url`` (e.g. ``http://127.0.0.1:8080``) replaces the host of every REST endpoint,
    keeping the paths: tests point ccxt at :class:`feeds.fake_exchange.FakeBinance` this way.
    No credentials are ever set here: market data is public.
    """
    cls = getattr(ccxt, exchange_id, None)
    if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
        known = ", ".join(ccxt.exchanges[:8])
        raise ExchangeError(
            f"unknown exchange {exchange_id!r}",
            hint=f"use a ccxt exchange id in lower case, e.g. {known}, ...",
        )
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    opts = dict(options or {})
    if exchange_id == "binance":
        # Spot + USD-M perps only: skips the coin-M market list nobody here asked for.
        opts.setdefault("fetchMarkets", {"types": ["spot", "linear"]})
    config["options"] = opts
    exchange = _checked_class(cls)(config)
    if rate_limit_ms is not None:
        exchange.rateLimit = rate_limit_ms
    if api_url is not None:
        exchange.urls["api"] = _with_base_url(exchange.urls["api"], api_url)
    return exchange


def _num(row: Any, key: Any, what: str, where: str, *, optional: bool = False) -> float | None:
    try:
        value = row[key]
    except (KeyError, IndexError, TypeError):
        value = None
    if value is None:
        if optional:
            return None
        raise ExchangeDataError(f"{where}: {what} is missing in {row!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ExchangeDataError(f"{where}: {what} is not a number in {row!r}") from None
    if not math.isfinite(out):
        raise ExchangeDataError(f"{where}: {what} is not finite in {row!r}")
    return out


def _ts(row: Any, key: Any, where: str) -> int:
    value = _num(row, key, "timestamp", where)
    assert value is not None
    return int(value) * NS_PER_MS


def _has_list(raw: Any) -> bool:
    return isinstance(raw, list) or (
        isinstance(raw, dict) and any(_has_list(v) for v in raw.values())
    )


def _expect_list(result: Any, where: str, exchange: ccxt.Exchange) -> list[Any]:
    """ccxt's parsed page; an empty page must come from a body that holds a list somewhere.

    ccxt parses any JSON object into an empty list, so ``{"error": ...}`` without an HTTP error
    status would otherwise look like "no more data" and end a download silently.
    """
    if not isinstance(result, list):
        raise ExchangeDataError(
            f"{where}: expected a list, got {type(result).__name__}",
            hint="the exchange API may have changed; upgrade ccxt",
        )
    raw = getattr(exchange, "last_decoded", None)
    if not result and raw is not None and not _has_list(raw):
        raise ExchangeDataError(
            f"{where}: unexpected answer {str(raw)[:200]}",
            hint="the exchange API may have changed, or --api-url points at the wrong server",
        )
    return result


class CcxtClient:
    """One exchange's public REST data in canonical schemas, with retries and pagination.

    ``sleep`` (backoff waits) and ``now_ns`` (which bar is still forming) are injected so tests
    run instantly and deterministically; the defaults are ``time.sleep`` and ``time.time_ns``.
    """

    def __init__(
        self,
        exchange: ccxt.Exchange,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now_ns: Callable[[], int] = time.time_ns,
        page_limit: int = 1000,
        trades_window_ns: int = NS_PER_HOUR,
    ) -> None:
        if page_limit < 1 or trades_window_ns < NS_PER_MS:
            raise SourceError(
                f"bad paging: page_limit={page_limit}, trades_window_ns={trades_window_ns}",
                hint="page_limit >= 1 and trades_window_ns >= 1 ms",
            )
        self.exchange = exchange
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.now_ns = now_ns
        self.page_limit = page_limit
        self.trades_window_ns = trades_window_ns
        self.retries: list[RetryEvent] = []
        self._markets_loaded = False

    @property
    def venue(self) -> str:
        """The ccxt exchange id, used as the lake venue."""
        return str(self.exchange.id)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one REST call with bounded exponential backoff on transient errors."""
        last: BaseException | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except ccxt.OperationFailed as exc:  # 429/418, 5xx, timeouts, resets, bad JSON
                last = exc
                if attempt == self.retry.max_attempts:
                    break
                delay = self.retry.delay_s(attempt)
                if isinstance(exc, ccxt.DDoSProtection):
                    delay = max(delay, self._retry_after_s())
                self.retries.append(
                    RetryEvent(call=what, attempt=attempt, error=type(exc).__name__, delay_s=delay)
                )
                self.sleep(delay)
            except ccxt.BaseError as exc:
                hint = "check the symbol and parameters"
                if isinstance(exc, ccxt.BadSymbol):
                    hint = "use ccxt's unified symbol, e.g. BTC/USDT (spot) or BTC/USDT:USDT (perp)"
                elif isinstance(exc, ccxt.AuthenticationError):
                    hint = "market data is public; check --api-url and the exchange id"
                raise ExchangeError(
                    f"{self.venue} {what}: {type(exc).__name__}: {_short(exc)}", hint=hint
                ) from exc
        assert last is not None
        raise ExchangeRetryError(
            f"{self.venue} {what}: gave up after {self.retry.max_attempts} attempts; last error "
            f"{type(last).__name__}: {_short(last)}",
            hint="the exchange is rate-limiting or unavailable; wait and run the same command "
            "again (downloads resume from the last stored bar)",
        ) from last

    def _retry_after_s(self) -> float:
        """The ``Retry-After`` seconds of the last (429/418) answer, capped by the policy."""
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        try:
            value = float(headers.get("Retry-After", 0))
        except (TypeError, ValueError):  # an HTTP date: fall back to the backoff schedule
            return 0.0
        return min(max(value, 0.0), self.retry.max_delay_s)

    def load_markets(self) -> Mapping[str, Any]:
        """The exchange's markets (fetched once, with retries)."""
        if not self._markets_loaded:
            self._call("load_markets", self.exchange.load_markets)
            self._markets_loaded = True
        return self.exchange.markets  # type: ignore[no-any-return]

    def market(self, symbol: str) -> Mapping[str, Any]:
        """ccxt's market dict of a unified symbol; unknown symbols name close alternatives."""
        markets = self.load_markets()
        if symbol not in markets:
            base = symbol.split("/")[0].upper()
            near = sorted(s for s in markets if s.startswith(base + "/"))[:6]
            raise ExchangeError(
                f"{self.venue} has no market {symbol!r}",
                hint=f"use a unified ccxt symbol{', e.g. ' + ', '.join(near) if near else ''}",
            )
        return markets[symbol]  # type: ignore[no-any-return]

    def instrument(self, symbol: str) -> Instrument:
        """Canonical instrument metadata (tick and lot size as decimal strings) of a market."""
        m = self.market(symbol)
        precision = m.get("precision") or {}
        kind: InstrumentKind = "perp" if m.get("swap") else "future" if m.get("future") else "spot"

        def inc(value: Any, field: str) -> str:
            if value is None:
                raise ExchangeDataError(f"{self.venue} {symbol}: market has no {field} precision")
            dec = Decimal(repr(float(value)))
            if self.exchange.precisionMode != ccxt.TICK_SIZE:  # precision given as decimals
                dec = Decimal(1).scaleb(-int(value))
            return format(dec.normalize(), "f")

        return Instrument(
            venue=self.venue,
            symbol=symbol,
            kind=kind,
            price_increment=inc(precision.get("price"), "price"),
            size_increment=inc(precision.get("amount"), "amount"),
            base_currency=str(m.get("base")),
            quote_currency=str(m.get("quote")),
        )

    def _check_timeframe(self, timeframe: str) -> None:
        timeframe_to_ns(timeframe)
        supported = self.exchange.timeframes or {}
        if timeframe not in supported:
            raise ExchangeError(
                f"{self.venue} does not serve {timeframe} candles",
                hint=f"use one of {', '.join(supported)} and resample locally",
            )

    # -- OHLCV ---------------------------------------------------------------------------------
    def iter_ohlcv(
        self, symbol: str, timeframe: str, start_ns: int, end_ns: int
    ) -> Iterator[pl.DataFrame]:
        """Pages of closed bars with ``start_ns <= ts_ns < end_ns``, oldest first."""
        self._check_timeframe(timeframe)
        self.market(symbol)
        tf_ns = timeframe_to_ns(timeframe)
        cursor = start_ns
        while cursor < end_ns:
            where = f"fetch_ohlcv {symbol} {timeframe} since {format_ts(cursor)}"
            rows = _expect_list(
                self._call(
                    where,
                    self.exchange.fetch_ohlcv,
                    symbol,
                    timeframe,
                    since=-(-cursor // NS_PER_MS),
                    limit=self.page_limit,
                ),
                where,
                self.exchange,
            )
            if not rows:
                return
            page = _ohlcv_frame(rows, where)
            closed_before = self.now_ns() - tf_ns  # a bar opened after this is still forming
            reached_present = int(page["ts_ns"][-1]) > closed_before
            page = page.filter(
                (pl.col("ts_ns") >= cursor)
                & (pl.col("ts_ns") < end_ns)
                & (pl.col("ts_ns") <= closed_before)
            )
            if page.height == 0:
                return
            yield page
            cursor = int(page["ts_ns"][-1]) + tf_ns
            if reached_present:
                return

    def fetch_ohlcv(self, symbol: str, timeframe: str, start_ns: int, end_ns: int) -> pl.DataFrame:
        """All closed bars in ``[start_ns, end_ns)`` (an empty frame if there are none)."""
        pages = list(self.iter_ohlcv(symbol, timeframe, start_ns, end_ns))
        return pl.concat(pages) if pages else empty_frame(BAR_SCHEMA)

    def download_bars(
        self,
        lake: Lake,
        symbol: str,
        timeframe: str,
        start_ns: int,
        end_ns: int,
        *,
        resume: bool = True,
        flush_bars: int = 50_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> DownloadReport:
        """Fetch ``[start_ns, end_ns)`` into ``lake`` under venue = exchange id.

        With ``resume`` the download restarts at the last stored bar in the range (re-fetched
        and upserted, in case it was stored from a stale answer), assuming earlier runs of the
        same download fetched oldest first. Pages are buffered and written every ``flush_bars``
        bars, and once more on any error, each write atomic per year file: an interrupted
        download keeps everything fetched and never leaves a torn partition. ``progress(n,
        cursor_ns)`` is called after each page with the bars fetched so far.
        """
        if start_ns >= end_ns:
            raise SourceError(
                f"empty range: {format_ts(start_ns)} is not before {format_ts(end_ns)}",
                hint="pass --from earlier than --to (the end is exclusive)",
            )
        lake.series_dir(self.venue, symbol, timeframe)  # validate the key before any request
        resumed: int | None = None
        begin = start_ns
        if resume:
            last = lake.last_ts_ns(self.venue, symbol, timeframe, end_ns)
            if last is not None and last >= start_ns:
                resumed = begin = last
        retries_before = len(self.retries)
        buffer: list[pl.DataFrame] = []
        buffered = written = pages = 0
        first: int | None = None
        last_ts: int | None = None

        def flush() -> None:
            nonlocal buffer, buffered, written
            if buffer:
                lake.write(self.venue, symbol, timeframe, pl.concat(buffer), mode="upsert")
                written += buffered
                buffer, buffered = [], 0

        try:
            for page in self.iter_ohlcv(symbol, timeframe, begin, end_ns):
                pages += 1
                buffer.append(page)
                buffered += page.height
                first = int(page["ts_ns"][0]) if first is None else first
                last_ts = int(page["ts_ns"][-1])
                if progress is not None:
                    progress(written + buffered, last_ts)
                if buffered >= flush_bars:
                    flush()
        except BaseException:
            flush()  # keep every complete page fetched before the failure
            raise
        flush()
        return DownloadReport(
            venue=self.venue,
            symbol=symbol,
            timeframe=timeframe,
            start_ns=start_ns,
            end_ns=end_ns,
            resumed_from_ns=resumed,
            bars_written=written,
            pages=pages,
            retries=len(self.retries) - retries_before,
            first_ts_ns=first,
            last_ts_ns=last_ts,
        )

    # -- trades, funding, open interest --------------------------------------------------------
    def fetch_trades(self, symbol: str, start_ns: int, end_ns: int) -> pl.DataFrame:
        """Trades in ``[start_ns, end_ns)``, walked in ``trades_window_ns`` windows (Binance
        refuses wider ``startTime``/``endTime`` spans) and paged by time inside each window,
        de-duplicated by trade id."""
        self.market(symbol)
        frames: list[pl.DataFrame] = []
        window_start = start_ns
        while window_start < end_ns:
            window_end = min(window_start + self.trades_window_ns, end_ns)
            since_ms = -(-window_start // NS_PER_MS)
            until_ms = -(-window_end // NS_PER_MS) - 1
            seen: set[str] = set()
            while since_ms <= until_ms:
                where = f"fetch_trades {symbol} since {format_ts(since_ms * NS_PER_MS)}"
                rows = _expect_list(
                    self._call(
                        where,
                        self.exchange.fetch_trades,
                        symbol,
                        since=since_ms,
                        limit=self.page_limit,
                        params={"until": until_ms},
                    ),
                    where,
                    self.exchange,
                )
                page = _trade_frame(rows, where).filter(
                    (pl.col("ts_ns") >= window_start) & (pl.col("ts_ns") < window_end)
                )
                page = page.filter(~pl.col("trade_id").is_in(sorted(seen)))
                if page.height == 0:
                    break
                frames.append(page)
                seen.update(page["trade_id"].to_list())
                if len(rows) < self.page_limit:
                    break
                since_ms = int(page["ts_ns"][-1]) // NS_PER_MS
            window_start = window_end
        if not frames:
            return empty_frame(TRADE_SCHEMA)
        return pl.concat(frames)  # windows and pages are already in exchange order

    def _records(
        self,
        what: str,
        call: Callable[[int], Any],
        start_ns: int,
        end_ns: int,
        convert: Callable[[list[Any], str], pl.DataFrame],
        schema: Mapping[str, pl.DataType],
    ) -> pl.DataFrame:
        frames: list[pl.DataFrame] = []
        cursor = start_ns
        while cursor < end_ns:
            where = f"{what} since {format_ts(cursor)}"
            rows = _expect_list(
                self._call(where, call, -(-cursor // NS_PER_MS)), where, self.exchange
            )
            page = convert(rows, where).filter(
                (pl.col("ts_ns") >= cursor) & (pl.col("ts_ns") < end_ns)
            )
            if page.height == 0:
                break
            frames.append(page)
            cursor = int(page["ts_ns"][-1]) + NS_PER_MS
        return pl.concat(frames) if frames else empty_frame(schema)

    def fetch_funding(
        self, symbol: str, start_ns: int, end_ns: int, *, interval: str = "8h"
    ) -> pl.DataFrame:
        """Funding-rate history in ``[start_ns, end_ns)``; ``interval`` fills ``interval_ns``
        (ccxt does not report it) and ``mark_price`` comes from the raw answer when present."""
        self.market(symbol)
        interval_ns = timeframe_to_ns(interval)

        def call(since_ms: int) -> Any:
            return self.exchange.fetch_funding_rate_history(
                symbol, since=since_ms, limit=self.page_limit
            )

        def convert(rows: list[Any], where: str) -> pl.DataFrame:
            out = []
            for row in rows:
                rate = _num(row, "fundingRate", "fundingRate", where)
                info = row.get("info") if isinstance(row, dict) else None
                mark = _num(info or {}, "markPrice", "markPrice", where, optional=True)
                out.append((_ts(row, "timestamp", where), rate, interval_ns, mark))
            return pl.DataFrame(out, schema=dict(FUNDING_SCHEMA), orient="row")

        return self._records(
            f"fetch_funding_rate_history {symbol}", call, start_ns, end_ns, convert, FUNDING_SCHEMA
        )

    def fetch_open_interest(
        self, symbol: str, timeframe: str, start_ns: int, end_ns: int
    ) -> pl.DataFrame:
        """Open-interest history sampled every ``timeframe`` in ``[start_ns, end_ns)``."""
        self._check_timeframe(timeframe)
        self.market(symbol)
        limit = min(self.page_limit, 500)  # Binance's cap for this endpoint

        def call(since_ms: int) -> Any:
            return self.exchange.fetch_open_interest_history(
                symbol, timeframe, since=since_ms, limit=limit
            )

        def convert(rows: list[Any], where: str) -> pl.DataFrame:
            out = []
            for row in rows:
                amount = _num(row, "openInterestAmount", "openInterestAmount", where, optional=True)
                if amount is None:
                    amount = _num(row, "baseVolume", "openInterestAmount", where)
                value = _num(row, "openInterestValue", "openInterestValue", where, optional=True)
                out.append((_ts(row, "timestamp", where), amount, value))
            return pl.DataFrame(out, schema=dict(OPEN_INTEREST_SCHEMA), orient="row")

        return self._records(
            f"fetch_open_interest_history {symbol} {timeframe}",
            call,
            start_ns,
            end_ns,
            convert,
            OPEN_INTEREST_SCHEMA,
        )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_OHLCV_FIELDS: Final = ("time", "open", "high", "low", "close", "volume")


def _ohlcv_frame(rows: Sequence[Any], where: str) -> pl.DataFrame:
    out = []
    for i, row in enumerate(rows):
        at = f"{where}, row {i}"
        if not isinstance(row, list | tuple) or len(row) < 6:
            raise ExchangeDataError(
                f"{at}: expected [time, open, high, low, close, volume], got {row!r}"
            )
        values = [_num(row, k, name, at) for k, name in enumerate(_OHLCV_FIELDS)]
        out.append((int(values[0] or 0) * NS_PER_MS, *values[1:]))
    df = pl.DataFrame(out, schema=dict(BAR_SCHEMA), orient="row")
    if df.height > 1 and not bool((df["ts_ns"].diff().drop_nulls() > 0).all()):
        raise ExchangeDataError(f"{where}: candle times do not increase", hint="retry later")
    return df


def _trade_frame(rows: Sequence[Any], where: str) -> pl.DataFrame:
    out = []
    for i, row in enumerate(rows):
        at = f"{where}, row {i}"
        if not isinstance(row, dict):
            raise ExchangeDataError(f"{at}: expected a trade object, got {row!r}")
        side = {"buy": BID, "sell": ASK}.get(str(row.get("side")), 0)
        trade_id = row.get("id")
        if trade_id is None:
            raise ExchangeDataError(f"{at}: trade without an id: {row!r}")
        out.append(
            (
                _ts(row, "timestamp", at),
                _num(row, "price", "price", at),
                _num(row, "amount", "amount", at),
                side,
                str(trade_id),
            )
        )
    return pl.DataFrame(out, schema=dict(TRADE_SCHEMA), orient="row")


class CcxtSource:
    """Registry source over :class:`CcxtClient`: pull = paginated history, push = polling.

    ``stream(start_ns, end_ns)`` yields every closed bar from ``start_ns`` (default: the last
    closed bar at the first poll), then sleeps on ``clock`` until the next bar closes plus
    ``poll_delay_ns`` (exchanges publish a bar shortly after its close) and polls again; it ends
    at ``end_ns`` (``None`` = never). A bar the exchange has not published yet is asked for again
    one ``poll_delay_ns`` later, so a bar is never skipped and never emitted twice.
    """

    def __init__(
        self,
        client: CcxtClient,
        *,
        symbol: str,
        timeframe: str,
        clock: Clock,
        poll_delay_ns: int = 2_000_000_000,
    ) -> None:
        client._check_timeframe(timeframe)
        self.client, self.symbol, self.timeframe, self.clock = client, symbol, timeframe, clock
        self.tf_ns = timeframe_to_ns(timeframe)
        if poll_delay_ns <= 0:
            raise SourceError(f"poll_delay_ns must be > 0, got {poll_delay_ns}")
        self.poll_delay_ns = poll_delay_ns

    def fetch(self, start_ns: int | None = None, end_ns: int | None = None) -> pl.DataFrame:
        """Closed bars in ``[start_ns, end_ns)``; ``end_ns=None`` = up to the clock's now."""
        if start_ns is None:
            raise SourceError(
                "an exchange source needs a start time", hint="pass start_ns (exchanges hold years)"
            )
        end = self.clock.now_ns() if end_ns is None else end_ns
        return self.client.fetch_ohlcv(self.symbol, self.timeframe, start_ns, end)

    async def stream(
        self, start_ns: int | None = None, end_ns: int | None = None
    ) -> AsyncIterator[Bar]:
        """Poll for newly closed bars forever (or until ``end_ns``)."""
        tf = self.tf_ns
        next_ts = start_ns
        while end_ns is None or next_ts is None or next_ts < end_ns:
            now = self.clock.now_ns()
            closed_upto = (now // tf) * tf  # bars opened before this have closed
            if next_ts is None:
                next_ts = closed_upto - tf
            if next_ts < closed_upto:
                upto = closed_upto if end_ns is None else min(closed_upto, end_ns)
                df = await asyncio.to_thread(
                    self.client.fetch_ohlcv, self.symbol, self.timeframe, next_ts, upto
                )
                for bar in iter_bars(df):
                    yield bar
                    next_ts = bar.ts_ns + tf
                if end_ns is not None and next_ts >= end_ns:
                    return
                if next_ts < closed_upto:  # not published yet: ask again shortly
                    await self.clock.sleep_until(now + self.poll_delay_ns)
                    continue
            await self.clock.sleep_until(next_ts + tf + self.poll_delay_ns)

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self.stream()


def create_ccxt_source(
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    clock: Clock,
    api_url: str | None = None,
    retry: RetryPolicy | None = None,
    poll_delay_ns: int = 2_000_000_000,
) -> CcxtSource:
    """Registry factory: ``create_source("ccxt", exchange="binance", symbol=..., ...)``."""
    client = CcxtClient(make_exchange(exchange, api_url=api_url), retry=retry, now_ns=clock.now_ns)
    return CcxtSource(
        client, symbol=symbol, timeframe=timeframe, clock=clock, poll_delay_ns=poll_delay_ns
    )
