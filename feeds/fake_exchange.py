"""A local fake Binance REST server for tests and offline demos (no internet needed).

It speaks the JSON of the public Binance spot (``/api/v3``) and USD-M futures (``/fapi/v1``,
``/futures/data``) market-data endpoints that ccxt's ``binance`` class calls for markets,
klines, aggregate trades, funding-rate history and open-interest history, with Binance's
parameters and page limits. Point ccxt at it with
``feeds.exchange.make_exchange("binance", api_url=fake.url)``, which keeps each endpoint's path
(``/api/v3``, ``/fapi/v1``, ``/futures/data``) and swaps the host.

Faults are injected per path prefix and consumed in order (:meth:`FakeBinance.inject`):
``429`` / ``418`` / ``5xx`` statuses with Binance's error JSON, ``timeout`` (the answer is
delayed past the client's timeout), ``malformed`` (a truncated JSON body with status 200) and
``reset`` (the connection is closed without an answer) and ``body`` (any JSON text, e.g. a
kline row without a close). Every request is recorded in
:attr:`FakeBinance.requests` so tests can assert pagination and retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
import polars as pl

from feeds.http_server import BackgroundHTTPServer
from feeds.schema import timeframe_to_ns

__all__ = ["FakeBinance", "Fault", "FaultKind", "Recorded"]

FaultKind = Literal["status", "timeout", "malformed", "reset", "body"]

_MS: Final = 1_000_000


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One injected failure for the next request whose path starts with the registered prefix."""

    kind: FaultKind
    status: int = 200  # for kind="status": e.g. 429, 418, 500, 503
    delay_s: float = 0.0  # for kind="timeout": how long the answer is held back
    retry_after_s: int | None = None  # Retry-After header of a 429/418
    body: str = ""  # for kind="body": this exact JSON text is served with ``status``


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """A request the fake received."""

    path: str
    params: dict[str, str]
    status: int


def _kline_rows(bars: pl.DataFrame, tf_ms: int) -> list[list[Any]]:
    return [
        [
            ts // _MS,
            f"{o:.8f}",
            f"{h:.8f}",
            f"{lo:.8f}",
            f"{c:.8f}",
            f"{v:.8f}",
            ts // _MS + tf_ms - 1,
            f"{v * c:.8f}",
            100,
            f"{v / 2:.8f}",
            f"{v * c / 2:.8f}",
            "0",
        ]
        for ts, o, h, lo, c, v in bars.iter_rows()
    ]


class FakeBinance:
    """A threaded HTTP server on ``127.0.0.1`` (random port) serving canned market data.

    ``klines[(symbol_id, interval)]`` are canonical bar frames (``BAR_SCHEMA``); bars whose open
    time is after ``now_ms`` are hidden (the future), and the bar containing ``now_ms`` is
    served as the forming bar, like the real exchange. ``trades``/``funding``/``open_interest``
    hold the raw Binance JSON rows per symbol id, sorted by time. Use as a context manager.
    """

    def __init__(
        self,
        *,
        klines: Mapping[tuple[str, str], pl.DataFrame] | None = None,
        futures_klines: Mapping[tuple[str, str], pl.DataFrame] | None = None,
        trades: Mapping[str, list[dict[str, Any]]] | None = None,
        funding: Mapping[str, list[dict[str, Any]]] | None = None,
        open_interest: Mapping[str, list[dict[str, Any]]] | None = None,
        now_ms: int = 2**62 // _MS,
    ) -> None:
        self.klines = dict(klines or {})
        self.futures_klines = dict(futures_klines or {})
        self.trades = dict(trades or {})
        self.funding = dict(funding or {})
        self.open_interest = dict(open_interest or {})
        self.now_ms = now_ms
        self.requests: list[Recorded] = []
        self._faults: list[tuple[str, Fault]] = []
        self._lock = threading.Lock()
        self._http = BackgroundHTTPServer("127.0.0.1", 0, self._handler_class())

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self._http.base_url

    def start(self) -> FakeBinance:
        """Serve in a background thread."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._http.stop()

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------
    def inject(self, path_prefix: str, *faults: Fault) -> None:
        """Queue faults for the next requests whose path starts with ``path_prefix``."""
        with self._lock:
            self._faults.extend((path_prefix, f) for f in faults)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, (prefix, fault) in enumerate(self._faults):
                if path.startswith(prefix):
                    del self._faults[i]
                    return fault
        return None

    def calls(self, path: str) -> list[Recorded]:
        """Recorded requests to exactly ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, path: str, params: dict[str, str], status: int) -> None:
        with self._lock:
            self.requests.append(Recorded(path=path, params=params, status=status))

    # -- endpoints -------------------------------------------------------------------------
    def _exchange_info(self, futures: bool) -> dict[str, Any]:
        ids = sorted(
            {s for s, _ in (self.futures_klines if futures else self.klines)}
            | (set(self.funding) | set(self.open_interest) if futures else set(self.trades))
        )
        filters = [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "1000000",
                "tickSize": "0.01",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001",
                "maxQty": "9000",
                "stepSize": "0.00001",
            },
        ]
        symbols = []
        for sid in ids:
            base, quote = sid[:-4], sid[-4:]  # fake ids are <BASE>USDT
            entry: dict[str, Any] = {
                "symbol": sid,
                "status": "TRADING",
                "baseAsset": base,
                "quoteAsset": quote,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "filters": filters,
            }
            if futures:
                entry |= {
                    "pair": sid,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "marginAsset": quote,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "underlyingType": "COIN",
                }
            else:
                entry |= {
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                }
            symbols.append(entry)
        return {"timezone": "UTC", "serverTime": self.now_ms, "rateLimits": [], "symbols": symbols}

    def _klines(self, futures: bool, q: dict[str, str]) -> tuple[int, Any]:
        table = self.futures_klines if futures else self.klines
        key = (q.get("symbol", ""), q.get("interval", ""))
        if key not in table:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        tf_ms = timeframe_to_ns(key[1]) // _MS
        limit = min(int(q.get("limit", "500")), 1500 if futures else 1000)
        bars = table[key].filter(pl.col("ts_ns") <= self.now_ms * _MS)
        if "startTime" in q:
            bars = bars.filter(pl.col("ts_ns") >= int(q["startTime"]) * _MS)
        if "endTime" in q:
            bars = bars.filter(pl.col("ts_ns") <= int(q["endTime"]) * _MS)
        bars = bars.head(limit) if "startTime" in q else bars.tail(limit)
        return 200, _kline_rows(bars, tf_ms)

    @staticmethod
    def _window(
        rows: list[dict[str, Any]], field: str, q: dict[str, str], default: int, cap: int
    ) -> list[dict[str, Any]]:
        lo = int(q["startTime"]) if "startTime" in q else None
        hi = int(q["endTime"]) if "endTime" in q else None
        out = [r for r in rows if (lo is None or r[field] >= lo) and (hi is None or r[field] <= hi)]
        limit = min(int(q.get("limit", str(default))), cap)
        return out[:limit] if lo is not None else out[-limit:]

    def _route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v3/exchangeInfo":
            return 200, self._exchange_info(futures=False)
        if path == "/fapi/v1/exchangeInfo":
            return 200, self._exchange_info(futures=True)
        if path == "/api/v3/klines":
            return self._klines(False, q)
        if path == "/fapi/v1/klines":
            return self._klines(True, q)
        if path == "/api/v3/aggTrades":
            rows = self.trades.get(q.get("symbol", ""))
            if rows is None:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            if (
                "startTime" in q
                and "endTime" in q
                and int(q["endTime"]) - int(q["startTime"]) > 3_600_000
            ):
                return 400, {
                    "code": -1127,
                    "msg": "More than 1 hours between startTime and endTime.",
                }
            visible = [r for r in rows if r["T"] <= self.now_ms]
            return 200, self._window(visible, "T", q, 500, 1000)
        if path == "/fapi/v1/fundingRate":
            rows = self.funding.get(q.get("symbol", ""))
            if rows is None:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            return 200, self._window(rows, "fundingTime", q, 100, 1000)
        if path == "/futures/data/openInterestHist":
            rows = self.open_interest.get(q.get("symbol", ""))
            if rows is None:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            return 200, self._window(rows, "timestamp", q, 30, 500)
        return 404, {"code": -1, "msg": f"fake binance has no endpoint {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet tests
                return

            def _send(self, status: int, body: bytes, headers: Mapping[str, str] = {}) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(split.query).items()}
                fault = fake._take_fault(split.path)
                if fault is not None:
                    self._fault(split.path, q, fault)
                    return
                status, payload = fake._route(split.path, q)
                fake._record(split.path, q, status)
                self._send(status, json.dumps(payload).encode())

            def _fault(self, path: str, q: dict[str, str], fault: Fault) -> None:
                if fault.kind == "status":
                    fake._record(path, q, fault.status)
                    headers = (
                        {"Retry-After": str(fault.retry_after_s)}
                        if fault.retry_after_s is not None
                        else {}
                    )
                    msg = {
                        "code": -1003,
                        "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
                    }
                    body = json.dumps(
                        msg
                        if fault.status in (418, 429)
                        else {
                            "code": -1001,
                            "msg": "Internal error; unable to process your request. Please try again.",
                        }
                    )
                    self._send(fault.status, body.encode(), headers)
                elif fault.kind == "timeout":
                    fake._record(path, q, 0)
                    time.sleep(fault.delay_s)
                    self.close_connection = True
                elif fault.kind == "body":
                    fake._record(path, q, fault.status)
                    self._send(fault.status, fault.body.encode())
                elif fault.kind == "malformed":
                    fake._record(path, q, 200)
                    self._send(200, b'[[1704067200000,"42000.0","42100.0",')
                else:  # reset
                    fake._record(path, q, 0)
                    self.close_connection = True

        return Handler
