"""A local fake of Binance's spot order REST API (enough for ccxt's binance class), with faults.

Endpoints: `GET /api/v3/exchangeInfo`, `POST|GET|DELETE /api/v3/order`, `GET /api/v3/openOrders`,
`POST /api/v3/order/cancelReplace` (ccxt's `edit_order` for binance spot).
It enforces Binance's rule that a client order id is unique only among OPEN orders (a second
create with the id of a working order gets -2010 "Duplicate order sent.", while the id of a
finished order is accepted again: that is how blind retries double orders). Market orders and
marketable limits fill at once at `mark`; others rest. Quantities above `max_qty` are refused
with -2010 "insufficient balance" (a real rejection, recorded as evidence).

Faults (`faults`, chosen by a seeded RNG per create request, or queued by hand in `script`):
`timeout_after` (processed, answer delayed past the client's timeout), `drop_after` (processed,
connection closed without an answer), `5xx_after` (processed, then HTTP 503), `5xx_before`
(503, not processed), `429` (rate limited, not processed, Retry-After 0), `drop_before`.
Queries get `query_faults` the same way (`timeout`, `drop`, `5xx`).

Edits (`edit`): "replace" (default) works like Binance's cancelReplace with STOP_ON_FAILURE:
the working order is cancelled (it keeps its fills) and a new order with a new order id and the
given `newClientOrderId` is placed for the given quantity; a finished order gives -2022, a new
order refused after the cancel gives -2021 (the old order stays cancelled). "in_place": the
order keeps its ids and fills, quantity (the new total) and price change. "none": -1020 "This
operation is not supported.". Edits are create-like requests: `faults`/`script` apply to them.
`fill(client_id, qty, price)` fills a resting order from the test (maker side).
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "fake-key-AK123"
_WORKING = ("NEW", "PARTIALLY_FILLED")


@dataclass
class FakeOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal | None
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)


@dataclass
class FakeOrderExchange:
    mark: Decimal = Decimal("100.00")
    max_qty: Decimal = Decimal("50")
    seed: int = 0
    faults: Mapping[str, float] = field(default_factory=dict)  # kind -> probability
    query_faults: Mapping[str, float] = field(default_factory=dict)
    delay_s: float = 0.25  # for timeouts: longer than the client's timeout
    script: list[str] = field(default_factory=list)  # faults for the next creates, in order
    edit: str = "replace"  # "replace" | "in_place" | "none" (see the module docstring)

    def __post_init__(self) -> None:
        self.orders: list[FakeOrder] = []
        self.rejections: dict[str, list[str]] = {}  # client id -> venue messages (evidence)
        self.faults_done: dict[str, int] = {}
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeOrderExchange:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------ views for tests
    def by_client_id(self, cid: str) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders if o.client_id == cid]

    def open_count(self, cid: str) -> int:
        return sum(o.status in ("NEW", "PARTIALLY_FILLED") for o in self.by_client_id(cid))

    def working(self) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders if o.status in ("NEW", "PARTIALLY_FILLED")]

    def fill(self, cid: str, qty: Decimal, price: Decimal) -> FakeOrder:
        """Fill `qty` more of the working order with this client id at `price` (test hook)."""
        with self._lock:
            (o,) = [o for o in self.orders if o.client_id == cid and o.status in _WORKING]
            if qty <= 0 or o.executed + qty > o.qty:
                raise ValueError(f"fill of {qty} does not fit order {cid}: {o}")
            o.executed += qty
            o.quote += qty * price
            o.status = "FILLED" if o.executed == o.qty else "PARTIALLY_FILLED"
            return o

    # ------------------------------------------------------------ logic
    def _pick(self, table: Mapping[str, float], scripted: bool) -> str | None:
        with self._lock:
            if scripted and self.script:
                kind: str | None = self.script.pop(0)
            else:
                x = self._rng.random()
                kind = None
                for k in sorted(table):
                    x -= table[k]
                    if x < 0:
                        kind = k
                        break
            if kind and kind != "none":
                self.faults_done[kind] = self.faults_done.get(kind, 0) + 1
                return kind
            return None

    def _json(self, o: FakeOrder) -> dict[str, Any]:
        return {
            "symbol": o.symbol,
            "orderId": o.order_id,
            "clientOrderId": o.client_id,
            "transactTime": 1_700_000_000_000,
            "time": 1_700_000_000_000,
            "updateTime": 1_700_000_000_000,
            "price": str(o.price or 0),
            "origQty": str(o.qty),
            "executedQty": str(o.executed),
            "cummulativeQuoteQty": str(o.quote),
            "status": o.status,
            "timeInForce": "GTC",
            "type": o.type,
            "side": o.side,
            "isWorking": True,
        }

    def _create(self, q: Mapping[str, str]) -> tuple[int, Any]:
        cid = q.get("newClientOrderId", "")
        with self._lock:
            if any(
                o.client_id == cid and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders
            ):
                return 400, {"code": -2010, "msg": "Duplicate order sent."}
            qty = Decimal(q["quantity"])
            if qty > self.max_qty:
                msg = "Account has insufficient balance for requested action."
                self.rejections.setdefault(cid, []).append(msg)
                return 400, {"code": -2010, "msg": msg}
            price = Decimal(q["price"]) if "price" in q else None
            o = FakeOrder(len(self.orders) + 1, cid, q["symbol"], q["side"], q["type"], qty, price)
            crosses = price is None or (
                price >= self.mark if o.side == "BUY" else price <= self.mark
            )
            if crosses:
                o.status, o.executed, o.quote = "FILLED", qty, qty * self.mark
            self.orders.append(o)
            return 200, self._json(o)

    def _edit(self, q: Mapping[str, str]) -> tuple[int, Any]:
        if self.edit == "none":
            return 400, {"code": -1020, "msg": "This operation is not supported."}
        failed = {"code": -2022, "msg": "Order cancel-replace failed."}
        with self._lock:
            if "cancelOrigClientOrderId" in q:
                hits = [
                    o
                    for o in self.orders
                    if o.client_id == q["cancelOrigClientOrderId"] and o.symbol == q["symbol"]
                ]
            else:
                hits = [o for o in self.orders if str(o.order_id) == q.get("cancelOrderId")]
            live = [o for o in hits if o.status in _WORKING]
            if not live:
                return 400, failed
            (old,) = live
            qty = Decimal(q["quantity"])
            price = Decimal(q["price"]) if "price" in q else None
            if self.edit == "in_place":
                if qty <= old.executed:
                    return 400, failed
                old.qty, old.price = qty, price
                self._cross(old)
                return 200, {
                    "cancelResult": "SUCCESS",
                    "newOrderResult": "SUCCESS",
                    "cancelResponse": self._json(old),
                    "newOrderResponse": self._json(old),
                }
            old.status = "CANCELED"
            cid = q.get("newClientOrderId", "")
            dup = any(o.client_id == cid and o.status in _WORKING for o in self.orders)
            if dup or qty > self.max_qty:
                return 400, {"code": -2021, "msg": "Order cancel-replace partially failed."}
            o = FakeOrder(len(self.orders) + 1, cid, q["symbol"], q["side"], q["type"], qty, price)
            self._cross(o)
            self.orders.append(o)
            return 200, {
                "cancelResult": "SUCCESS",
                "newOrderResult": "SUCCESS",
                "cancelResponse": self._json(old),
                "newOrderResponse": self._json(o),
            }

    def _cross(self, o: FakeOrder) -> None:
        """Fill the rest of a marketable order at `mark` (caller holds the lock)."""
        crosses = o.price is None or (
            o.price >= self.mark if o.side == "BUY" else o.price <= self.mark
        )
        if crosses:
            o.quote += (o.qty - o.executed) * self.mark
            o.status, o.executed = "FILLED", o.qty

    def _find(self, q: Mapping[str, str]) -> FakeOrder | None:
        cid = q.get("origClientOrderId")
        with self._lock:
            hits = [o for o in self.orders if o.client_id == cid and o.symbol == q.get("symbol")]
        live = [o for o in hits if o.status in ("NEW", "PARTIALLY_FILLED")]
        pick = live or hits
        return pick[-1] if pick else None

    def _route(self, method: str, path: str, q: Mapping[str, str]) -> tuple[int, Any]:
        if path == "/api/v3/exchangeInfo":
            return 200, _exchange_info()
        signed = path in ("/api/v3/order", "/api/v3/openOrders", "/api/v3/order/cancelReplace")
        if signed and ("timestamp" not in q or "signature" not in q):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'timestamp' missing."}
        if path == "/api/v3/order" and method == "POST":
            return self._create(q)
        if path == "/api/v3/order/cancelReplace" and method == "POST":
            return self._edit(q)
        if path == "/api/v3/order" and method in ("GET", "DELETE"):
            o = self._find(q)
            if o is None:
                return 400, {"code": -2013, "msg": "Order does not exist."}
            if method == "DELETE":
                with self._lock:
                    if o.status not in ("NEW", "PARTIALLY_FILLED"):
                        return 400, {"code": -2011, "msg": "Unknown order sent."}
                    o.status = "CANCELED"
            return 200, self._json(o)
        if path == "/api/v3/openOrders":
            with self._lock:
                rows = [
                    self._json(o)
                    for o in self.orders
                    if o.status in ("NEW", "PARTIALLY_FILLED") and o.symbol == q.get("symbol")
                ]
            return 200, rows
        return 404, {"code": -1, "msg": f"no route {method} {path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add 40 ms per request

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _send(self, status: int, body: Any, headers: Mapping[str, str] = {}) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client gave up (timeout)

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client may have gone already
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _handle(self, method: str) -> None:
                split = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(split.query).items()}
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    body = self.rfile.read(n).decode()
                    q |= {k: v[-1] for k, v in parse_qs(body).items()}
                path = split.path
                private = path != "/api/v3/exchangeInfo"
                if private and self.headers.get("X-MBX-APIKEY") != API_KEY:
                    self._send(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions."})
                    return
                creates = method == "POST" and path in (
                    "/api/v3/order",
                    "/api/v3/order/cancelReplace",
                )
                fault = (
                    fake._pick(fake.faults, scripted=True)
                    if creates
                    else fake._pick(fake.query_faults, scripted=False)
                    if private
                    else None
                )
                if fault in ("5xx_before", "5xx"):
                    self._send(503, {"code": -1001, "msg": "Internal error."})
                    return
                if fault == "429":
                    self._send(
                        429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "0"}
                    )
                    return
                if fault == "drop_before" or (fault == "drop" and not creates):
                    self._drop()
                    return
                if fault == "timeout" and not creates:
                    time.sleep(fake.delay_s)
                    self._send(200, {})
                    return
                status, payload = fake._route(method, path, q)
                if fault == "drop_after":
                    self._drop()
                elif fault == "timeout_after":
                    time.sleep(fake.delay_s)
                    self._send(status, payload)
                elif fault == "5xx_after":
                    self._send(503, {"code": -1001, "msg": "Internal error."})
                else:
                    self._send(status, payload)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler


def _exchange_info() -> dict[str, Any]:
    filters = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01",
            "maxPrice": "1000000",
            "tickSize": "0.01",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "9000", "stepSize": "0.001"},
    ]
    return {
        "timezone": "UTC",
        "serverTime": 1_700_000_000_000,
        "rateLimits": [],
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "status": "TRADING",
                "baseAsset": "BTC",
                "quoteAsset": "USDT",
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "filters": filters,
                "orderTypes": ["LIMIT", "MARKET"],
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "permissions": [],
                "permissionSets": [["SPOT"]],
            }
        ],
    }
