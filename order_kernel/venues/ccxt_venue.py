"""CcxtVenue: orders on real exchanges through ccxt's REST API, without ever doubling one.

The rules (RELIABILITY promise 4):

1. **Retry only what cannot have had an effect.** 429/418 (rate limited), a timestamp outside
   the venue's receive window (InvalidNonce) are refusals before processing: they are retried
   with the same client order id after an exponential backoff (at least the `Retry-After` the
   venue asked for). Queries (fetch order / open orders) have no effect and are retried too.
2. **An ambiguous outcome stays in flight.** A timeout, a dropped connection, a 5xx or an
   unreadable body after a create or cancel was sent means "unknown": the result is
   `IN_FLIGHT`, never REJECTED. `resolve(client_order_id)` queries the venue by client order id;
   only when the venue says "no such order" *and* the request's receive window has passed
   (so the request can no longer arrive late) is the order sent again, with the same id.
3. **Rejected means the venue said so.** A REJECTED result carries the venue's own error
   (insufficient funds, invalid order, ...). A duplicate-client-id error is not a rejection:
   an order with this id is working, so the adapter queries it.

4. **Amends are edits, settled like submits.** Where ccxt has `editOrder`, `amend` edits a
   working order. Venues that cancel-replace under the hood (Binance spot: `cancelReplace`)
   give the replacement a new exchange order id and fills of its own: the adapter then names
   the replacement itself (`AmendRequest.new_client_order_id`, a new id per amend), so a query
   by that id tells whether the edit happened. An ambiguous edit stays in flight until
   `resolve_amend` finds the replacement (accepted), finds the old order finished (rejected:
   the venue cancel-replaces only a working order) or, once the receive window has passed with
   the old order still working, sends the same edit again. Without `editOrder` an amend is
   REJECTED at once with the fix (cancel and resubmit); nothing is sent.

Client order ids are mapped to what the venue accepts (`venue_client_id`): ids matching
`[A-Za-z0-9._:/-]{1,36}` are sent unchanged, others as `ok-<32 hex of sha256>`, a pure function,
so a restart maps the same way. Quantities and prices reach ccxt as decimal strings built from
integer lots/ticks, never floats. Credentials come from `order_kernel.credentials` and are
passed to ccxt only inside `make_exchange`; error details are scrubbed of signatures.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import ccxt
import msgspec

from order_kernel.credentials import ApiCredentials
from order_kernel.errors import ConfigError, OrderKernelError
from order_kernel.instruments import InstrumentSpec
from order_kernel.messages import SubmitOrder
from order_kernel.reconcile import VenueOrder, VenueOrderStatus, VenueSnapshot
from order_kernel.spec import OrderType, Reason, Side, TimeInForce

_CID_OK: Final = re.compile(r"^[A-Za-z0-9._:/-]{1,36}$")
_SIGNATURE: Final = re.compile(r"(signature=)[0-9a-fA-F]+")
NS_PER_S: Final = 1_000_000_000
#: ccxt exchanges whose `editOrder` cancels the order and places a replacement (new exchange
#: order id, fills counted from zero); others are assumed to edit in place (same id and fills)
REPLACING_EDIT: Final = frozenset({"binance"})


class VenueAdapterError(OrderKernelError):
    """A venue adapter was misused (unknown symbol, unknown in-flight id, bad config)."""


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"  # the venue has the order; `order` says its status and fills
    REJECTED = "REJECTED"  # the venue refused it, `detail` is its answer
    IN_FLIGHT = "IN_FLIGHT"  # outcome unknown: call resolve() before anything else
    NOT_FOUND = "NOT_FOUND"  # (cancel) the venue has no order with this id


class VenueResult(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    outcome: Outcome
    order: VenueOrder | None = None
    reason: Reason = Reason.OK
    detail: str = ""


class AmendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One edit of a working order as the adapter sends it (ids before `venue_client_id`).
    `qty` is what the venue is told: the order's new total when the venue edits in place, the
    lots still to trade when it cancel-replaces (the replaced order keeps its fills)."""

    client_order_id: str  # the working order's id at the venue
    new_client_order_id: str  # the replacement's id; equal to client_order_id when in place
    venue_order_id: str  # the exchange's id of the working order (ccxt `edit_order(id, ...)`)
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    qty: int
    price: int | None


def venue_client_id(client_order_id: str) -> str:
    """The id the venue sees: unchanged when the venue accepts it, else a stable hash."""
    if _CID_OK.match(client_order_id):
        return client_order_id
    return "ok-" + hashlib.sha256(client_order_id.encode()).hexdigest()[:32]


def _scrub(exc: BaseException) -> str:
    """An exception's text without request signatures (ccxt quotes URLs in messages)."""
    return _SIGNATURE.sub(r"\1<redacted>", f"{type(exc).__name__}: {exc}")[:500]


def make_exchange(
    exchange_id: str,
    credentials: ApiCredentials | None,
    *,
    api_url: str | None = None,
    timeout_ms: int = 10_000,
    rate_limit_ms: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> ccxt.Exchange:
    """A ccxt exchange with rate limiting on, every 5xx mapped to ExchangeNotAvailable
    (ambiguous, never a rejection), and `api_url` replacing the host of every REST endpoint
    (tests point it at a local fake)."""
    cls = getattr(ccxt, exchange_id, None)
    if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
        raise ConfigError(f"unknown ccxt exchange id {exchange_id!r}; e.g. 'binance', 'okx'")

    class Checked(cls):  # type: ignore[misc, valid-type]
        def handle_errors(
            self,
            code: int,
            reason: str,
            url: str,
            method: str,
            headers: Any,
            body: Any,
            response: Any,
            request_headers: Any,
            request_body: Any,
        ) -> Any:
            if code >= 500:
                raise ccxt.ExchangeNotAvailable(f"{self.id} HTTP {code} {reason}")
            return super().handle_errors(
                code, reason, url, method, headers, body, response, request_headers, request_body
            )

    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    opts = dict(options or {})
    if exchange_id == "binance":
        opts.setdefault("fetchMarkets", {"types": ["spot"]})
        opts.setdefault("warnOnFetchOpenOrdersWithoutSymbol", False)
        opts.setdefault("fetchCurrencies", False)  # orders need markets only
        opts.setdefault("fetchMargins", False)
    config["options"] = opts
    if credentials is not None:
        config.update(credentials.ccxt_config())
    exchange = Checked(config)
    if rate_limit_ms is not None:
        exchange.rateLimit = rate_limit_ms
    if api_url is not None:
        exchange.urls["api"] = _with_host(exchange.urls["api"], api_url)
    return exchange


def _with_host(urls: Any, base_url: str) -> Any:
    if isinstance(urls, str):
        if "://" not in urls:
            return urls
        rest = urls.split("://", 1)[1]
        path = rest[rest.find("/") :] if "/" in rest else ""
        return base_url.rstrip("/") + path
    if isinstance(urls, dict):
        return {k: _with_host(v, base_url) for k, v in urls.items()}
    return urls


_NOT_PROCESSED: Final = (ccxt.DDoSProtection, ccxt.InvalidNonce)  # 429/418, stale timestamp
_AMBIGUOUS: Final = (ccxt.NetworkError, ccxt.BadResponse, ccxt.OperationFailed)
_CCXT_STATUS: Final = {
    "closed": VenueOrderStatus.FILLED,
    "canceled": VenueOrderStatus.CANCELLED,
    "cancelled": VenueOrderStatus.CANCELLED,
    "expired": VenueOrderStatus.EXPIRED,
    "rejected": VenueOrderStatus.REJECTED,
}


class CcxtVenue:
    """REST order adapter. Not thread-safe; the clock and sleep are injected (tests, replay)."""

    def __init__(
        self,
        exchange: ccxt.Exchange,
        instruments: Mapping[str, InstrumentSpec],
        *,
        clock_ns: Callable[[], int],
        sleep: Callable[[float], None],
        max_attempts: int = 5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        recv_window_ns: int | None = None,
        edit_replaces: bool | None = None,
    ) -> None:
        """`edit_replaces`: does the venue's edit cancel-replace the order (None: decided by
        the exchange id, `REPLACING_EDIT`)?"""
        if recv_window_ns is None:
            # the venue refuses a request older than its receive window (ccxt option, ms)
            window_ms = (getattr(exchange, "options", None) or {}).get("recvWindow", 10_000)
            recv_window_ns = int(window_ms) * 1_000_000 + NS_PER_S  # + 1 s of clock skew
        if max_attempts < 1 or backoff_s < 0 or max_backoff_s < backoff_s or recv_window_ns < 0:
            raise ConfigError(
                f"CcxtVenue(max_attempts={max_attempts}, backoff_s={backoff_s}, "
                f"max_backoff_s={max_backoff_s}, recv_window_ns={recv_window_ns}): need "
                "max_attempts >= 1, 0 <= backoff_s <= max_backoff_s, recv_window_ns >= 0"
            )
        self.exchange = exchange
        self.instruments = dict(sorted(instruments.items()))
        self._clock = clock_ns
        self._sleep = sleep
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.recv_window_ns = recv_window_ns
        # client_order_id -> (command, ts of the last send): orders whose outcome is unknown
        self._in_flight: dict[str, tuple[SubmitOrder, int]] = {}
        # working order's client id -> (edit, ts of the last send): edits whose outcome is unknown
        self._amends_in_flight: dict[str, tuple[AmendRequest, int]] = {}
        self.edit_replaces = (
            exchange.id in REPLACING_EDIT if edit_replaces is None else edit_replaces
        )
        self._markets_loaded = False
        self.retries = 0  # requests repeated after a refusal-before-processing (for tests/metrics)

    # ------------------------------------------------------------------ helpers

    def _inst(self, symbol: str) -> InstrumentSpec:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise VenueAdapterError(
                f"symbol {symbol!r} is not configured for this venue ({sorted(self.instruments)})"
            )
        return inst

    def _rate_limited(self, cid: str, what: str) -> VenueResult:
        """Every attempt was refused before processing (nothing happened): a clean rejection."""
        return VenueResult(
            client_order_id=cid,
            outcome=Outcome.REJECTED,
            reason=Reason.VENUE_ERROR,
            detail=f"rate limited {self.max_attempts} times; the venue refused each {what} "
            "before processing it",
        )

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
        if retry_after is not None:
            # an HTTP-date Retry-After is not parsed: the exponential backoff applies
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
        self.retries += 1
        self._sleep(delay)

    def _load_markets(self) -> None:
        if not self._markets_loaded:
            self._query(self.exchange.load_markets)
            self._markets_loaded = True

    def _query(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a request without side effects, retrying transient failures with backoff."""
        for attempt in range(self.max_attempts):
            try:
                return fn(*args, **kw)
            except (ccxt.OrderNotFound, ccxt.AuthenticationError, ccxt.PermissionDenied):
                raise
            except _AMBIGUOUS:
                if attempt == self.max_attempts - 1:
                    raise
                self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _report(self, raw: Mapping[str, Any], client_order_id: str, symbol: str) -> VenueOrder:
        """ccxt's unified order -> VenueOrder in lots and tick-lots (exact via decimal strings)."""
        inst = self._inst(symbol)
        filled = Decimal(str(raw.get("filled") or 0))
        cost = raw.get("cost")
        if cost is None:
            avg = raw.get("average") or raw.get("price") or 0
            cost_dec = filled * Decimal(str(avg))
        else:
            cost_dec = Decimal(str(cost))
        lots = int((filled / inst.size_increment).to_integral_value())
        fill_cost = int((cost_dec / inst.notional_unit).to_integral_value())
        status = _CCXT_STATUS.get(str(raw.get("status")))
        if status is None:  # "open" or unknown wording: working
            status = VenueOrderStatus.PARTIALLY_FILLED if lots else VenueOrderStatus.OPEN
        fee = raw.get("fee") or {}
        fee_units = None
        if isinstance(fee, Mapping) and fee.get("cost") is not None:
            fee_units = int((Decimal(str(fee["cost"])) / inst.notional_unit).to_integral_value())
        return VenueOrder(
            client_order_id=client_order_id,
            symbol=symbol,
            status=status,
            filled_qty=lots,
            fill_cost=fill_cost,
            fees=fee_units,
            venue_order_id=str(raw.get("id") or ""),
        )

    def _create_args(self, cmd: SubmitOrder) -> tuple[str, str, str, str | None, dict[str, Any]]:
        inst = self._inst(cmd.symbol)
        if cmd.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise VenueAdapterError(
                f"order {cmd.client_order_id!r}: CcxtVenue sends MARKET and LIMIT orders; "
                f"{cmd.order_type.name} stays in the kernel (stops are triggered locally)"
            )
        params: dict[str, Any] = {"clientOrderId": venue_client_id(cmd.client_order_id)}
        if cmd.order_type is OrderType.LIMIT:
            tif = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}
            if cmd.tif not in tif:
                raise VenueAdapterError(
                    f"order {cmd.client_order_id!r}: {cmd.tif.name} is enforced by the kernel; "
                    "send it as GTC and let the kernel's timer cancel it"
                )
            params["timeInForce"] = tif[cmd.tif]
            if cmd.post_only:
                params["postOnly"] = True
        if cmd.reduce_only:
            params["reduceOnly"] = True
        price = None if cmd.price is None else str(inst.price_of(cmd.price))
        return (
            cmd.symbol,
            "market" if cmd.order_type is OrderType.MARKET else "limit",
            "buy" if cmd.side is Side.BUY else "sell",
            str(inst.qty_of(cmd.qty)),
            {"price": price, "params": params},
        )

    # ------------------------------------------------------------------ orders

    def submit(self, cmd: SubmitOrder) -> VenueResult:
        """Send a new order. IN_FLIGHT results must be settled with `resolve` before a resend."""
        cid = cmd.client_order_id
        if cid in self._in_flight:
            return self.resolve(cid)
        self._load_markets()
        symbol, otype, side, amount, extra = self._create_args(cmd)
        for attempt in range(self.max_attempts):
            sent_at = self._clock()
            try:
                raw = self.exchange.create_order(
                    symbol, otype, side, amount, extra["price"], extra["params"]
                )
            except ccxt.DuplicateOrderId as exc:
                # an order with this id is working: not a rejection, find out which
                self._in_flight[cid] = (cmd, sent_at)
                return self._in_flight_result(cid, exc)
            except _NOT_PROCESSED:
                if attempt == self.max_attempts - 1:
                    return self._rate_limited(cid, "request")
                self._backoff(attempt)
                continue
            except ccxt.InsufficientFunds as exc:
                return self._rejected(cid, Reason.INSUFFICIENT_FUNDS, exc)
            except ccxt.InvalidOrder as exc:
                if "uplicate" in str(exc):  # binance: -2010 "Duplicate order sent."
                    self._in_flight[cid] = (cmd, sent_at)
                    return self._in_flight_result(cid, exc)
                return self._rejected(cid, Reason.VENUE_REJECTED, exc)
            except ccxt.ExchangeError as exc:  # 4xx with the venue's own error: a refusal
                return self._rejected(cid, Reason.VENUE_REJECTED, exc)
            except _AMBIGUOUS as exc:  # timeout, reset, 5xx, unreadable body: unknown
                self._in_flight[cid] = (cmd, sent_at)
                return self._in_flight_result(cid, exc)
            self._in_flight.pop(cid, None)
            return VenueResult(
                client_order_id=cid,
                outcome=Outcome.ACCEPTED,
                order=self._report(raw, cid, cmd.symbol),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _rejected(self, cid: str, reason: Reason, exc: BaseException) -> VenueResult:
        self._in_flight.pop(cid, None)
        return VenueResult(
            client_order_id=cid, outcome=Outcome.REJECTED, reason=reason, detail=_scrub(exc)
        )

    @staticmethod
    def _in_flight_result(cid: str, exc: BaseException) -> VenueResult:
        return VenueResult(
            client_order_id=cid,
            outcome=Outcome.IN_FLIGHT,
            reason=Reason.VENUE_TIMEOUT,
            detail=f"outcome unknown ({_scrub(exc)}); resolve() queries the venue by client id",
        )

    def in_flight(self) -> list[str]:
        """Client order ids whose outcome is unknown, oldest send first."""
        return [cid for cid, _ in sorted(self._in_flight.items(), key=lambda kv: kv[1][1])]

    def resolve(self, client_order_id: str) -> VenueResult:
        """Settle an in-flight order: query it by client id; resend (same id) only when the
        venue does not know it and the original request can no longer arrive."""
        entry = self._in_flight.get(client_order_id)
        if entry is None:
            raise VenueAdapterError(
                f"order {client_order_id!r} is not in flight; resolve() follows an IN_FLIGHT result"
            )
        cmd, sent_at = entry
        try:
            found = self.query(client_order_id, cmd.symbol)
        except _AMBIGUOUS as exc:
            return self._in_flight_result(client_order_id, exc)
        if found is not None:
            del self._in_flight[client_order_id]
            return VenueResult(
                client_order_id=client_order_id, outcome=Outcome.ACCEPTED, order=found
            )
        if self._clock() - sent_at < self.recv_window_ns:
            return VenueResult(
                client_order_id=client_order_id,
                outcome=Outcome.IN_FLIGHT,
                reason=Reason.VENUE_TIMEOUT,
                detail="unknown to the venue, but the request may still arrive inside its "
                "receive window; resolve again later",
            )
        del self._in_flight[client_order_id]
        return self.submit(cmd)

    def query(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        """The venue's view of one order by client id; None when the venue does not know it."""
        self._load_markets()
        self._inst(symbol)
        try:
            raw = self._query(
                self.exchange.fetch_order,
                "",
                symbol,
                {"origClientOrderId": venue_client_id(client_order_id)},
            )
        except ccxt.OrderNotFound:
            return None
        return self._report(raw, client_order_id, symbol)

    def cancel(self, client_order_id: str, symbol: str) -> VenueResult:
        """Cancel by client id; an ambiguous answer is settled by a query, a venue that does not
        know the order gives NOT_FOUND (the query tells whether it filled meanwhile)."""
        self._load_markets()
        self._inst(symbol)
        params = {"origClientOrderId": venue_client_id(client_order_id)}
        for attempt in range(self.max_attempts):
            try:
                raw = self.exchange.cancel_order("", symbol, params)
            except _NOT_PROCESSED:
                if attempt == self.max_attempts - 1:
                    break
                self._backoff(attempt)
                continue
            except ccxt.OrderNotFound:
                break
            except ccxt.ExchangeError as exc:
                return self._rejected(client_order_id, Reason.VENUE_REJECTED, exc)
            except _AMBIGUOUS:
                break
            return VenueResult(
                client_order_id=client_order_id,
                outcome=Outcome.ACCEPTED,
                order=self._report(raw, client_order_id, symbol),
            )
        try:
            found = self.query(client_order_id, symbol)
        except _AMBIGUOUS as exc:
            return self._in_flight_result(client_order_id, exc)
        if found is None:
            return VenueResult(client_order_id=client_order_id, outcome=Outcome.NOT_FOUND)
        return VenueResult(client_order_id=client_order_id, outcome=Outcome.ACCEPTED, order=found)

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        """Working orders of one symbol, by client id (ids we did not map are kept as sent)."""
        self._load_markets()
        self._inst(symbol)
        rows = self._query(self.exchange.fetch_open_orders, symbol)
        out = [self._report(r, str(r.get("clientOrderId") or ""), symbol) for r in rows]
        return sorted(out, key=lambda o: o.client_order_id)

    def snapshot(self, ts_ns: int, client_order_ids: Mapping[str, str]) -> VenueSnapshot:
        """Open orders of every instrument plus the orders `client_order_ids` (id -> symbol)
        the kernel still holds open, queried one by one (they may have finished). Positions are
        not reported (spot balances are not positions): reconcile skips that comparison."""
        orders: dict[str, VenueOrder] = {}
        reverse = {venue_client_id(c): c for c in client_order_ids}
        for symbol in self.instruments:
            for o in self.open_orders(symbol):
                cid = reverse.get(o.client_order_id, o.client_order_id)
                orders[cid] = msgspec.structs.replace(o, client_order_id=cid)
        for cid in sorted(client_order_ids):
            if cid not in orders:
                found = self.query(cid, client_order_ids[cid])
                if found is not None:
                    orders[cid] = found
        return VenueSnapshot(
            ts_ns=ts_ns, orders=tuple(orders[c] for c in sorted(orders)), positions=None
        )

    # ------------------------------------------------------------------ amends

    @property
    def supports_amend(self) -> bool:
        """Does ccxt's class for this exchange implement `editOrder`?"""
        return bool((getattr(self.exchange, "has", None) or {}).get("editOrder"))

    def _no_edit(self, cid: str, exc: BaseException | None = None) -> VenueResult:
        said = "" if exc is None else f" (the venue answered {_scrub(exc)})"
        return VenueResult(
            client_order_id=cid,
            outcome=Outcome.REJECTED,
            reason=Reason.VENUE_REJECTED,
            detail=f"order {cid!r}: ccxt's {self.exchange.id!r} has no editOrder, so amends "
            f"cannot reach this venue{said}; cancel the order and submit a new one",
        )

    def amend_in_flight(self) -> list[str]:
        """Client ids of working orders whose edit has an unknown outcome, oldest send first."""
        rows = sorted(self._amends_in_flight.items(), key=lambda kv: kv[1][1])
        return [cid for cid, _ in rows]

    def amend(self, req: AmendRequest, *, probe: bool = False) -> VenueResult:
        """Edit a working order. ACCEPTED: `order` is the venue's order after the edit (the
        replacement when the venue cancel-replaces); REJECTED: the venue refused, nothing
        changed there; IN_FLIGHT: unknown, settle it with `resolve_amend` before anything else.
        `probe`: the edit may have been sent before (a restart): it is treated as in flight
        from now, so it is looked for first and sent only after the receive window."""
        cid = req.client_order_id
        if not self.supports_amend:
            return self._no_edit(cid)
        if probe and cid not in self._amends_in_flight:
            self._amends_in_flight[cid] = (req, self._clock())
        if cid in self._amends_in_flight:
            return self.resolve_amend(cid)
        self._load_markets()
        inst = self._inst(req.symbol)
        if req.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise VenueAdapterError(
                f"order {cid!r}: CcxtVenue edits MARKET and LIMIT orders; "
                f"{req.order_type.name} is held by the kernel"
            )
        params: dict[str, Any] = {}
        if self.edit_replaces:  # Binance cancelReplace: name both orders by client id
            params["cancelOrigClientOrderId"] = venue_client_id(cid)
            params["newClientOrderId"] = venue_client_id(req.new_client_order_id)
        if req.order_type is OrderType.LIMIT and req.tif in (TimeInForce.IOC, TimeInForce.FOK):
            params["timeInForce"] = req.tif.name
        elif req.order_type is OrderType.LIMIT:
            params["timeInForce"] = "GTC"
        price = None if req.price is None else str(inst.price_of(req.price))
        for attempt in range(self.max_attempts):
            sent_at = self._clock()
            try:
                raw = self.exchange.edit_order(
                    req.venue_order_id,
                    req.symbol,
                    "market" if req.order_type is OrderType.MARKET else "limit",
                    "buy" if req.side is Side.BUY else "sell",
                    str(inst.qty_of(req.qty)),
                    price,
                    params,
                )
            except ccxt.NotSupported as exc:
                return self._no_edit(cid, exc)
            except _NOT_PROCESSED:
                if attempt == self.max_attempts - 1:
                    return self._rate_limited(cid, "edit")
                self._backoff(attempt)
                continue
            except ccxt.InsufficientFunds as exc:
                return self._amend_rejected(cid, Reason.INSUFFICIENT_FUNDS, exc)
            except ccxt.ExchangeError as exc:  # 4xx: unknown order, invalid price, ...
                if "not supported" in str(exc).lower():  # binance -1020 and the like
                    self._amends_in_flight.pop(cid, None)
                    return self._no_edit(cid, exc)
                return self._amend_rejected(cid, Reason.VENUE_REJECTED, exc)
            except ccxt.BadResponse as exc:
                if "-2022" in str(exc):  # cancelReplace: cancel and new order both failed
                    return self._amend_rejected(cid, Reason.VENUE_REJECTED, exc)
                self._amends_in_flight[cid] = (req, sent_at)
                return self._in_flight_result(cid, exc)
            except _AMBIGUOUS as exc:  # timeout, reset, 5xx: the edit may have happened
                self._amends_in_flight[cid] = (req, sent_at)
                return self._in_flight_result(cid, exc)
            self._amends_in_flight.pop(cid, None)
            return VenueResult(
                client_order_id=cid,
                outcome=Outcome.ACCEPTED,
                order=self._report(raw, req.new_client_order_id, req.symbol),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _amend_rejected(self, cid: str, reason: Reason, exc: BaseException) -> VenueResult:
        self._amends_in_flight.pop(cid, None)
        return VenueResult(
            client_order_id=cid, outcome=Outcome.REJECTED, reason=reason, detail=_scrub(exc)
        )

    def _terms(self, client_order_id: str, symbol: str) -> tuple[VenueOrder, int, int] | None:
        """The venue's order with its quantity (lots) and limit price (ticks, 0 for none)."""
        self._load_markets()
        inst = self._inst(symbol)
        try:
            raw = self._query(
                self.exchange.fetch_order,
                "",
                symbol,
                {"origClientOrderId": venue_client_id(client_order_id)},
            )
        except ccxt.OrderNotFound:
            return None
        amount = Decimal(str(raw.get("amount") or 0))
        px = Decimal(str(raw.get("price") or 0))
        return (
            self._report(raw, client_order_id, symbol),
            int((amount / inst.size_increment).to_integral_value()),
            int((px / inst.price_increment).to_integral_value()),
        )

    def resolve_amend(self, client_order_id: str) -> VenueResult:
        """Settle an edit with an unknown outcome by querying the venue: the replacement (or
        the edited terms) found -> ACCEPTED; the old order finished -> REJECTED (`order` is its
        final state); still working with the old terms -> IN_FLIGHT inside the receive window,
        after it the same edit is sent again (it cannot arrive twice)."""
        entry = self._amends_in_flight.get(client_order_id)
        if entry is None:
            raise VenueAdapterError(
                f"order {client_order_id!r} has no edit in flight; resolve_amend() follows an "
                "IN_FLIGHT amend result"
            )
        req, sent_at = entry
        try:
            if self.edit_replaces:
                new = self.query(req.new_client_order_id, req.symbol)
                if new is not None:
                    del self._amends_in_flight[client_order_id]
                    return VenueResult(
                        client_order_id=client_order_id, outcome=Outcome.ACCEPTED, order=new
                    )
            old = self._terms(client_order_id, req.symbol)
        except _AMBIGUOUS as exc:
            return self._in_flight_result(client_order_id, exc)
        if old is not None and not self.edit_replaces:
            vo, qty, price = old
            if qty == req.qty and (req.price is None or price == req.price):
                del self._amends_in_flight[client_order_id]
                return VenueResult(
                    client_order_id=client_order_id, outcome=Outcome.ACCEPTED, order=vo
                )
        if old is None or old[0].status not in (
            VenueOrderStatus.OPEN,
            VenueOrderStatus.PARTIALLY_FILLED,
        ):
            del self._amends_in_flight[client_order_id]
            return VenueResult(
                client_order_id=client_order_id,
                outcome=Outcome.REJECTED,
                order=None if old is None else old[0],
                reason=Reason.VENUE_REJECTED,
                detail="the order was no longer working at the venue when the edit arrived "
                f"({'unknown' if old is None else old[0].status.name}); the edit was not applied",
            )
        if self._clock() - sent_at < self.recv_window_ns:
            return VenueResult(
                client_order_id=client_order_id,
                outcome=Outcome.IN_FLIGHT,
                reason=Reason.VENUE_TIMEOUT,
                detail="the edit is not visible at the venue yet, but may still arrive inside "
                "its receive window; resolve again later",
            )
        del self._amends_in_flight[client_order_id]
        return self.amend(req)
