"""Live routing: the order kernel's orders go to a real exchange through `CcxtVenue`.

With `[venue] kind = "ccxt"` in kernel.toml the kernel runs in live mode (`OrderKernel(live=True)`):
a risk-approved new order or cancel is not answered by the SimVenue but queued in the kernel's
`outbox`; `LiveRoute.dispatch` sends it with `CcxtVenue` and maps the answer onto the same
transition-table events the SimVenue path uses:

- venue ack -> ACCEPT (`OrderAccepted` with the venue's order id), its fills -> FILL;
- venue rejection -> REJECT (`OrderRejected` with the venue's reason and its own error text);
  a refused cancel -> CANCEL_REJECT (`CancelRejected`);
- ambiguous (timeout, dropped connection, 5xx) -> nothing: the order stays PENDING (or
  PENDING_CANCEL) and `LiveRoute.poll` settles it with `CcxtVenue.resolve`, which queries by
  client order id before any resend (RELIABILITY promise 4). It is never marked failed.

Fills: `poll` queries every open order by client id; the venue's cumulative filled quantity and
cost are compared with ours, and only the difference becomes `OrderFilled` + `PositionUpdate`
(at most two integer-price fills with the exact total cost), with deterministic trade ids
`live:<client_order_id>:<cum_qty>`. A repeated report of the same cumulative fill is a no-op,
so every fill is applied exactly once, and a fill that happened while the server was down is
adopted once by the start-up reconciliation (`SessionVenue.snapshot`) instead.

Every venue answer that changes state is written to the session's log as one inbound record
(`kernel.LIVE_RECORD_PREFIX` + msgpack `VenueReport`) before its events, so
`OrderKernel.recover` replays it like a command. The record's time is the session's own clock
(`kernel.now_ns`, its last input); the loop's injected clock only decides when to poll and when
a request's receive window has passed. No wall clock, no credential reaches a log.

Stops are kernel-held (synthetic): the exchange route takes MARKET and LIMIT only, so STOP,
STOP_LIMIT and trailing orders (bracket stop legs included) are accepted by the kernel, evaluated
on the strategy's bars, and when triggered send `<id>.trig` (MARKET, or LIMIT for a STOP_LIMIT)
through this route like any other order. They have no exchange order, so `SessionVenue.snapshot`
reports them as the kernel holds them (`VenueOrderIds.held`) and reconciliation sees them working.
GTD orders go to the exchange as GTC; the kernel cancels them at the deadline (-> EXPIRED).

Client order ids are per session, the exchange account is shared: the venue sees
`<session_id>:<client_order_id>` (hashed by `venue_client_id` when too long).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal

import ccxt
import msgspec

from order_kernel import credentials as creds
from order_kernel import messages as m
from order_kernel.config import CcxtVenueConfig, KernelConfig
from order_kernel.errors import ConfigError, OrderKernelError, RecoveryError
from order_kernel.kernel import LIVE_RECORD_PREFIX, OrderKernel, VenueOrderIds
from order_kernel.reconcile import (
    VENUE_WORKING,
    VenueOrder,
    VenueOrderStatus,
    VenueSnapshot,
    order_totals,
)
from order_kernel.spec import OrderEvent, OrderState, OrderType, Reason, TimeInForce
from order_kernel.venues.ccxt_venue import (
    CcxtVenue,
    Outcome,
    VenueAdapterError,
    VenueResult,
    make_exchange,
    venue_client_id,
)

E = OrderEvent
S = OrderState
_SECRETISH: Final = re.compile(r"((?:signature|timestamp|apiKey|secret)=)[^&\s\"']+")


class LiveVenueError(OrderKernelError):
    """The live route was misused or got an answer it cannot apply (names session and order)."""


class VenueReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One venue answer about one order, as logged and replayed. `action`: what was asked
    (submit / cancel) or `poll` (a status query)."""

    action: Literal["submit", "cancel", "poll"]
    client_order_id: str
    outcome: Outcome
    order: VenueOrder | None = None
    reason: Reason = Reason.OK
    detail: str = ""


_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(VenueReport)


def _clean(text: str) -> str:
    """Venue error text without signatures, request timestamps or keys (they would put a wall
    clock or a secret into the log)."""
    return _SECRETISH.sub(r"\1<redacted>", text)[:500]


def session_client_id(session_id: str, client_order_id: str) -> str:
    """The client order id a session's order has at the shared exchange account."""
    return venue_client_id(f"{session_id}:{client_order_id}")


# ---------------------------------------------------------------- applying venue answers


def _fill_gap(vo: VenueOrder, qty: int, filled: int, cost: int) -> int:
    """Lots the venue reports beyond ours; 0 when nothing new, -1 when it cannot be applied."""
    missing = vo.filled_qty - filled
    if missing < 0 or (missing == 0 and vo.fill_cost != cost):
        return -1
    if missing and (vo.filled_qty > qty or vo.fill_cost - cost < missing):
        return -1  # overfill, or a price below one tick
    return missing


def _changes(kernel: OrderKernel, rep: VenueReport) -> bool:
    """Would applying `rep` change anything? (unchanged polls are not logged)"""
    o = kernel._orders.get(rep.client_order_id)
    if o is None or o.final_state is not None:
        return False
    st, qty, filled, cost, _ = order_totals(kernel, o)
    if rep.outcome is Outcome.REJECTED:
        return (rep.action != "cancel" and st is S.PENDING) or (
            rep.action == "cancel" and st is S.PENDING_CANCEL
        )
    if rep.outcome is Outcome.NOT_FOUND:
        return st is S.PENDING_CANCEL
    vo = rep.order
    if rep.outcome is not Outcome.ACCEPTED or vo is None:
        return False
    if vo.status is VenueOrderStatus.REJECTED:
        return st is S.PENDING
    return (
        st is S.PENDING
        or _fill_gap(vo, qty, filled, cost) > 0
        or vo.status in (VenueOrderStatus.CANCELLED, VenueOrderStatus.EXPIRED)
    )


def _apply(kernel: OrderKernel, rep: VenueReport) -> None:
    o = kernel._orders[rep.client_order_id]
    cid = o.cmd.client_order_id
    st, qty, filled, cost, fees = order_totals(kernel, o)
    if rep.outcome in (Outcome.REJECTED, Outcome.NOT_FOUND):
        if rep.action == "cancel" or st is S.PENDING_CANCEL:
            reason = rep.reason if rep.outcome is Outcome.REJECTED else Reason.UNKNOWN_ORDER
            detail = rep.detail or "the venue has no working order with this client id"
            kernel._must(o, E.CANCEL_REJECT)
            kernel._emit(m.CancelRejected, client_order_id=cid, reason=reason, detail=detail)
            return
        kernel._must(o, E.REJECT)
        o.response.append(
            kernel._emit(m.OrderRejected, client_order_id=cid, reason=rep.reason, detail=rep.detail)
        )
        kernel._finalize_if_terminal(o)
        return
    vo = rep.order
    assert vo is not None
    if vo.status is VenueOrderStatus.REJECTED:
        kernel._must(o, E.REJECT)
        o.response.append(
            kernel._emit(
                m.OrderRejected,
                client_order_id=cid,
                reason=Reason.VENUE_REJECTED,
                detail=rep.detail or f"the venue reports order {vo.venue_order_id} rejected",
            )
        )
        kernel._finalize_if_terminal(o)
        return
    if vo.venue_order_id:
        o.venue_order_id = vo.venue_order_id
    if st is S.PENDING:  # the venue has the order (whatever became of it since): ack first
        kernel._must(o, E.ACCEPT)
        o.response.append(
            kernel._emit(m.OrderAccepted, client_order_id=cid, venue_order_id=o.venue_order_id)
        )
    missing = _fill_gap(vo, qty, filled, cost)
    if missing > 0:
        inst = kernel.instruments[o.cmd.symbol]
        # resting limit orders found filled by a later query made liquidity; the rest took it
        maker = o.cmd.order_type is OrderType.LIMIT and rep.action == "poll"
        p, r = divmod(vo.fill_cost - cost, missing)
        parts = [(missing - r, p), (r, p + 1)] if r else [(missing, p)]
        fee_gap = None if vo.fees is None else vo.fees - fees
        cum = filled
        for k, (q, px) in enumerate(parts):
            if q == 0:
                continue
            cum += q
            fee = inst.fee(q, px, maker=maker) if fee_gap is None else (fee_gap if k == 0 else 0)
            kernel._fill(o, q, px, maker, fee=fee, trade_id=f"live:{cid}:{cum}")
    if o.final_state is not None:
        return
    if vo.status is VenueOrderStatus.CANCELLED:
        kernel._venue_cancel(o, Reason.OK, "cancelled at the venue", confirmed=True)
    elif vo.status is VenueOrderStatus.EXPIRED:
        kernel._must(o, E.EXPIRE)
        kernel._emit(m.OrderExpired, client_order_id=cid)
        kernel._after_terminal(o)


def _run(kernel: OrderKernel, rep: VenueReport, *, logged: bool) -> list[m.Event]:
    if not logged and kernel.log is not None:
        kernel.log.append_inbound(LIVE_RECORD_PREFIX + _enc.encode(rep), seq=-1)
    kernel._out = []
    _apply(kernel, rep)
    return kernel._finish()


def apply_report(kernel: OrderKernel, rep: VenueReport) -> list[m.Event]:
    """Apply one venue answer through the transition table; log it first when it changes
    anything. Returns the events (empty when the answer changes nothing)."""
    if not _changes(kernel, rep):
        return []
    return _run(kernel, rep, logged=False)


def replay_report(kernel: OrderKernel, raw: bytes) -> list[m.Event]:
    """Re-apply a logged venue answer during `OrderKernel.recover` (same events)."""
    try:
        rep = _dec.decode(raw[len(LIVE_RECORD_PREFIX) :])
    except msgspec.MsgspecError as exc:
        raise RecoveryError(f"undecodable live venue record in the log: {exc}") from exc
    if not _changes(kernel, rep):
        raise RecoveryError(
            f"logged venue answer for order {rep.client_order_id!r} does not apply on replay; "
            "the log and the kernel configuration do not belong together"
        )
    return _run(kernel, rep, logged=True)


# ---------------------------------------------------------------- the route


class SessionVenue:
    """One session's view of the shared account, as the server's `snapshot_source`: ids are
    mapped to the session's venue ids and back; other sessions' orders are left out."""

    def __init__(self, venue: CcxtVenue, session_id: str) -> None:
        self.venue = venue
        self.session_id = session_id

    def snapshot(self, ts_ns: int, client_order_ids: Mapping[str, str]) -> VenueSnapshot:
        """The venue's open orders of this session plus the given ones (they may have
        finished), under the session's own client order ids."""
        prefix = f"{self.session_id}:"
        mapped = {prefix + cid: sym for cid, sym in client_order_ids.items()}
        try:
            snap = self.venue.snapshot(ts_ns, mapped)
        except ccxt.BaseError as exc:
            raise LiveVenueError(
                f"session {self.session_id!r}: the start-up snapshot from the exchange failed "
                f"({_clean(f'{type(exc).__name__}: {exc}')}); check connectivity and "
                "credentials, then start again (reconciliation must run before trading)"
            ) from exc
        orders: list[VenueOrder] = []
        for vo in snap.orders:
            if not vo.client_order_id.startswith(prefix):
                continue  # another session's (or a hashed foreign) order
            cid = vo.client_order_id[len(prefix) :]
            orders.append(msgspec.structs.replace(vo, client_order_id=cid))
        # kernel-held stops have no exchange order: the kernel is their venue, so they are
        # reported as it holds them (a triggered stop's `.trig` order is queried above)
        held = client_order_ids.held if isinstance(client_order_ids, VenueOrderIds) else {}
        for cid, (sym, filled, cost, fees) in held.items():
            status = VenueOrderStatus.PARTIALLY_FILLED if filled else VenueOrderStatus.OPEN
            orders.append(
                VenueOrder(
                    client_order_id=cid,
                    symbol=sym,
                    status=status,
                    filled_qty=filled,
                    fill_cost=cost,
                    fees=fees,
                )
            )
        orders.sort(key=lambda o: o.client_order_id)
        return VenueSnapshot(ts_ns=ts_ns, orders=tuple(orders), positions=None)


class LiveRoute:
    """Sends every session's queued requests to one exchange account and polls open orders.
    Single-threaded (the server's loop); `clock_ns` is the loop's injected clock."""

    def __init__(self, venue: CcxtVenue, *, poll_interval_ns: int) -> None:
        if poll_interval_ns <= 0:
            raise ConfigError(f"LiveRoute(poll_interval_ns={poll_interval_ns}): must be > 0")
        self.venue = venue
        self.poll_interval_ns = poll_interval_ns
        self._unsent: dict[str, list[tuple[str, str]]] = {}  # sid -> requests to send again
        #: venue failures a poll skipped (scrubbed text); the server reports and clears them
        self.problems: list[str] = []

    def session(self, session_id: str) -> SessionVenue:
        return SessionVenue(self.venue, session_id)

    def _vid(self, sid: str, cid: str) -> str:
        return f"{sid}:{cid}"

    def _result(
        self, action: Literal["submit", "cancel", "poll"], cid: str, res: VenueResult
    ) -> VenueReport:
        order = res.order
        if order is not None:
            order = msgspec.structs.replace(order, client_order_id=cid)
        return VenueReport(
            action=action,
            client_order_id=cid,
            outcome=res.outcome,
            order=order,
            reason=res.reason,
            detail=_clean(res.detail),
        )

    def _send(self, sid: str, kernel: OrderKernel, action: str, cid: str) -> VenueReport | None:
        """One request; None when it could not be sent at all (retried at the next poll)."""
        o = kernel._orders[cid]
        vid = self._vid(sid, cid)
        try:
            if action == "submit":
                cmd = msgspec.structs.replace(o.cmd, client_order_id=vid)
                if cmd.tif is TimeInForce.GTD:  # the kernel enforces the deadline (a cancel)
                    cmd = msgspec.structs.replace(cmd, tif=TimeInForce.GTC, expire_ts_ns=None)
                return self._result("submit", cid, self.venue.submit(cmd))
            return self._result("cancel", cid, self.venue.cancel(vid, o.cmd.symbol))
        except VenueAdapterError as exc:  # e.g. a STOP order: the adapter sends MARKET/LIMIT only
            return VenueReport(
                action="submit" if action == "submit" else "cancel",
                client_order_id=cid,
                outcome=Outcome.REJECTED,
                reason=Reason.VENUE_REJECTED,
                detail=_clean(str(exc)),
            )
        except ccxt.NetworkError:  # nothing was sent (markets did not load): try again later
            self._unsent.setdefault(sid, []).append((action, cid))
            return None
        except ccxt.BaseError as exc:  # authentication, permissions: the venue refused us
            return VenueReport(
                action="submit" if action == "submit" else "cancel",
                client_order_id=cid,
                outcome=Outcome.REJECTED,
                reason=Reason.VENUE_ERROR,
                detail=_clean(f"{type(exc).__name__}: {exc}"),
            )

    def dispatch(self, sid: str, kernel: OrderKernel) -> list[m.Event]:
        """Send the kernel's queued requests in order and apply the answers."""
        events: list[m.Event] = []
        while kernel.outbox:
            action, cid = kernel.outbox.pop(0)
            rep = self._send(sid, kernel, action, cid)
            if rep is not None:
                events.extend(apply_report(kernel, rep))
        return events

    def poll(self, sid: str, kernel: OrderKernel) -> list[m.Event]:
        """Settle in-flight orders (query by client id, resend only when safe) and adopt the
        fills and cancels the venue reports for the session's open orders."""
        kernel.outbox[:0] = self._unsent.pop(sid, [])
        events = self.dispatch(sid, kernel)
        in_flight = set(self.venue.in_flight())
        for cid, sym in kernel.venue_order_ids().items():  # submission order: deterministic
            o = kernel._orders[cid]
            if o.final_state is not None:
                continue  # finished by an earlier answer in this poll (OCO, reduce-only)
            vid = self._vid(sid, cid)
            try:
                if vid in in_flight:
                    rep = self._result("submit", cid, self.venue.resolve(vid))
                else:
                    vo = self.venue.query(vid, sym)
                    if vo is None:
                        continue  # unknown at the venue: the next start-up reconciliation flags it
                    rep = self._result(
                        "poll",
                        cid,
                        VenueResult(client_order_id=vid, outcome=Outcome.ACCEPTED, order=vo),
                    )
            except ccxt.NetworkError:
                continue  # the venue did not answer: ask again at the next poll
            except ccxt.BaseError as exc:  # e.g. revoked key: report, keep the order as it is
                self.problems.append(
                    _clean(f"session {sid!r} order {cid!r}: {type(exc).__name__}: {exc}")
                )
                continue
            events.extend(apply_report(kernel, rep))
            st = kernel._state(o)
            vo_now = rep.order
            if vo_now is not None and o.final_state is None:
                _, qty, filled, cost, _ = order_totals(kernel, o)
                if _fill_gap(vo_now, qty, filled, cost) < 0:
                    self.problems.append(
                        f"session {sid!r} order {cid!r}: the venue reports filled="
                        f"{vo_now.filled_qty} cost={vo_now.fill_cost}, ours filled={filled} "
                        f"cost={cost} of qty={qty}; not applied (fewer fills, overfill or a "
                        "price below one tick): check the order at the venue"
                    )
            if st is S.PENDING_CANCEL and vo_now is not None and vo_now.status in VENUE_WORKING:
                kernel.outbox.append(("cancel", cid))  # the cancel was lost: ask again
        events.extend(self.dispatch(sid, kernel))
        return events


def route_from_config(
    config: KernelConfig,
    *,
    clock_ns: Callable[[], int],
    sleep: Callable[[float], None],
    environ: Mapping[str, str],
) -> LiveRoute | None:
    """The live route kernel.toml asks for (None for the simulated venue). Credentials come
    from `order_kernel.credentials` and are handed to ccxt only."""
    v = config.venue
    if not isinstance(v, CcxtVenueConfig):
        return None
    name = v.credentials_name or v.exchange
    path: Path | None = v.credentials_path(config.base_dir)
    api = creds.load(name, environ, file=path)
    if v.sandbox and v.api_url is not None:
        raise ConfigError(
            "[venue] sandbox = true and api_url are exclusive: api_url already names the host"
        )
    exchange = make_exchange(v.exchange, api, api_url=v.api_url, timeout_ms=v.timeout_ms)
    if v.sandbox:
        try:
            exchange.set_sandbox_mode(True)
        except ccxt.NotSupported as exc:
            raise ConfigError(
                f"[venue] sandbox = true, but ccxt's {v.exchange!r} has no test network; "
                "set sandbox = false or pick another exchange"
            ) from exc
    venue = CcxtVenue(exchange, config.instrument_specs(), clock_ns=clock_ns, sleep=sleep)
    return LiveRoute(venue, poll_interval_ns=v.poll_interval_ms * 1_000_000)
