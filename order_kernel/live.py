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

Amends (`AmendOrder`) of an order at the exchange go through the table like the SimVenue's:
AMEND -> PENDING_AMEND, queued as ("amend", id); `LiveRoute` first queries the order (fills
that happened meanwhile are applied; a fill past the new quantity, or the order finishing,
makes the amend lose), then edits it with `CcxtVenue.amend` (ccxt `edit_order`):

- edited -> AMEND_ACK (`AmendAccepted`), then any fills the answer shows;
- refused, or the order finished before the edit arrived -> AMEND_REJECT (`AmendRejected`
  with the venue's reason), then what became of the order;
- ambiguous -> nothing: the order stays PENDING_AMEND until `poll` settles the edit with
  `CcxtVenue.resolve_amend` (a query by client id; never a blind second edit);
- an exchange without `editOrder` -> `AmendRejected` naming the venue and the fix (cancel the
  order and submit a new one); nothing is sent.

Venues that cancel-replace on edit (Binance spot) give the replacement a new exchange order id
and its own fills. The replacement gets its own client id, `venue_order_name(session, id,
generation)` (`<session>:<id>.a<n>` after the n-th such amend, `_Order.venue_gen` counts them),
so the kernel's `client_order_id` keeps mapping to the live order, and the fills of the replaced
orders (re-queried, never cached in the log) are added to the replacement's: the kernel always
sees one order with cumulative fills. The replacement is sent for the lots still to trade.

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
from order_kernel.kernel import LIVE_RECORD_PREFIX, OrderKernel, VenueOrderIds, _Order
from order_kernel.machine import F_AMEND_PRICE, F_AMEND_QTY, F_FILLED, F_PRICE, F_QTY, F_TRIGGER
from order_kernel.reconcile import (
    VENUE_WORKING,
    VenueOrder,
    VenueOrderStatus,
    VenueSnapshot,
    order_totals,
)
from order_kernel.spec import OrderEvent, OrderState, OrderType, Reason, TimeInForce
from order_kernel.venues.ccxt_venue import (
    AmendRequest,
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
    (submit / cancel / amend) or `poll` (a status query). `order` carries the fills of the
    whole order (replaced generations included); `venue_gen`: the generation an accepted
    cancel-replace amend created (None: the venue's order keeps its id)."""

    action: Literal["submit", "cancel", "amend", "poll"]
    client_order_id: str
    outcome: Outcome
    order: VenueOrder | None = None
    reason: Reason = Reason.OK
    detail: str = ""
    venue_gen: int | None = None


_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(VenueReport)


def _clean(text: str) -> str:
    """Venue error text without signatures, request timestamps or keys (they would put a wall
    clock or a secret into the log)."""
    return _SECRETISH.sub(r"\1<redacted>", text)[:500]


def session_client_id(session_id: str, client_order_id: str, gen: int = 0) -> str:
    """The client order id a session's order has at the shared exchange account (`gen`: the
    replacement created by the gen-th cancel-replace amend)."""
    return venue_client_id(venue_order_name(session_id, client_order_id, gen))


def venue_order_name(session_id: str, client_order_id: str, gen: int = 0) -> str:
    """The name `CcxtVenue` gets for generation `gen` of a session's order (it maps it with
    `venue_client_id`)."""
    base = f"{session_id}:{client_order_id}"
    return base if gen == 0 else f"{base}.a{gen}"


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
    if rep.action == "amend" and st is S.PENDING_AMEND:
        return rep.outcome in (Outcome.ACCEPTED, Outcome.REJECTED)
    if rep.action == "amend":  # the amend was settled already: only the order's news count
        rep = msgspec.structs.replace(rep, action="poll", outcome=Outcome.ACCEPTED)
        if rep.order is None:
            return False
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


def _apply_amend(kernel: OrderKernel, o: _Order, rep: VenueReport) -> None:
    """The venue's answer to an edit: AMEND_ACK or AMEND_REJECT through the table."""
    cid = o.cmd.client_order_id
    a = kernel.machine.orders
    if rep.outcome is Outcome.ACCEPTED and int(a[F_AMEND_QTY, o.slot]) > int(a[F_FILLED, o.slot]):
        kernel._must(o, E.AMEND_ACK)
        if rep.venue_gen is not None:
            o.venue_gen = rep.venue_gen
        kernel._emit(
            m.AmendAccepted,
            client_order_id=cid,
            qty=int(a[F_QTY, o.slot]),
            price=int(a[F_PRICE, o.slot]) or None,
            trigger_price=int(a[F_TRIGGER, o.slot]) or None,
        )
        return
    reason, detail = rep.reason, rep.detail
    if rep.outcome is Outcome.ACCEPTED:  # cannot happen with the pre-edit query; kept honest
        reason = Reason.INVALID_QTY
        detail = "fills reached the new quantity before the edit was applied"
    kernel._must(o, E.AMEND_REJECT)
    kernel._emit(
        m.AmendRejected,
        client_order_id=cid,
        reason=reason if reason is not Reason.OK else Reason.VENUE_REJECTED,
        detail=detail,
    )


def _apply(kernel: OrderKernel, rep: VenueReport) -> None:
    o = kernel._orders[rep.client_order_id]
    cid = o.cmd.client_order_id
    st, qty, filled, cost, fees = order_totals(kernel, o)
    if rep.action == "amend":
        if st is S.PENDING_AMEND:
            _apply_amend(kernel, o, rep)
            if o.final_state is not None or rep.order is None:
                return
            st, qty, filled, cost, fees = order_totals(kernel, o)
        rep = msgspec.structs.replace(rep, outcome=Outcome.ACCEPTED)
        if rep.order is None:
            return
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
    if vo.status is VenueOrderStatus.REJECTED and rep.action != "amend":
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


Carry = tuple[int, int, int | None]  # (filled lots, fill cost, fees or None) of replaced orders
_NO_CARRY: Final[Carry] = (0, 0, 0)


def with_carry(vo: VenueOrder, carry: Carry) -> VenueOrder:
    """The venue order with the fills of the orders it replaced added: the whole order."""
    filled, cost, fees = carry
    if carry == _NO_CARRY:
        return vo
    total_fees = None if fees is None or vo.fees is None else vo.fees + fees
    return msgspec.structs.replace(
        vo, filled_qty=vo.filled_qty + filled, fill_cost=vo.fill_cost + cost, fees=total_fees
    )


def replaced_fills(venue: CcxtVenue, session_id: str, cid: str, symbol: str, gen: int) -> Carry:
    """Fills of generations 0..gen-1 of an order (finished at the venue: safe to cache)."""
    filled = cost = 0
    fees: int | None = 0
    for g in range(gen):
        vo = venue.query(venue_order_name(session_id, cid, g), symbol)
        if vo is None:
            continue
        filled += vo.filled_qty
        cost += vo.fill_cost
        fees = None if fees is None or vo.fees is None else fees + vo.fees
    return filled, cost, fees


class SessionVenue:
    """One session's view of the shared account, as the server's `snapshot_source`: ids are
    mapped to the session's venue ids and back; other sessions' orders are left out."""

    def __init__(self, venue: CcxtVenue, session_id: str) -> None:
        self.venue = venue
        self.session_id = session_id

    def snapshot(self, ts_ns: int, client_order_ids: Mapping[str, str]) -> VenueSnapshot:
        """The venue's open orders of this session plus the given ones (they may have
        finished), under the session's own client order ids; an amended order is its live
        generation plus the fills of the ones it replaced."""
        sid = self.session_id
        prefix = f"{sid}:"
        gens = client_order_ids.amended if isinstance(client_order_ids, VenueOrderIds) else {}
        names = {venue_order_name(sid, cid, gens.get(cid, 0)): cid for cid in client_order_ids}
        mapped = {name: client_order_ids[cid] for name, cid in names.items()}
        try:
            snap = self.venue.snapshot(ts_ns, mapped)
            by_name = {vo.client_order_id: vo for vo in snap.orders}
            orders: list[VenueOrder] = []
            for name, vo in by_name.items():
                if not name.startswith(prefix):
                    continue  # another session's (or a hashed foreign) order
                cid = names.get(name)
                if cid is None:
                    if any(  # a replacement generation of one of ours: shown as that order
                        venue_order_name(sid, c, gens.get(c, 0) + 1) == name for c in names.values()
                    ):
                        continue
                    orders.append(msgspec.structs.replace(vo, client_order_id=name[len(prefix) :]))
                    continue
                gen = gens.get(cid, 0)
                nxt = by_name.get(venue_order_name(sid, cid, gen + 1))
                if vo.status is VenueOrderStatus.CANCELLED and nxt is not None:
                    # an edit the log did not record replaced it: report the replacement
                    # (working), the poll settles the amend by client id
                    gen, vo = gen + 1, nxt
                carry = replaced_fills(self.venue, sid, cid, vo.symbol, gen) if gen else _NO_CARRY
                orders.append(msgspec.structs.replace(with_carry(vo, carry), client_order_id=cid))
        except ccxt.BaseError as exc:
            raise LiveVenueError(
                f"session {sid!r}: the start-up snapshot from the exchange failed "
                f"({_clean(f'{type(exc).__name__}: {exc}')}); check connectivity and "
                "credentials, then start again (reconciliation must run before trading)"
            ) from exc
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
        # (sid, cid, gen) -> fills of the generations an amended order replaced (finished)
        self._carry: dict[tuple[str, str, int], Carry] = {}
        #: venue failures a poll skipped (scrubbed text); the server reports and clears them
        self.problems: list[str] = []

    def session(self, session_id: str) -> SessionVenue:
        return SessionVenue(self.venue, session_id)

    def _vid(self, sid: str, kernel: OrderKernel, cid: str) -> str:
        return venue_order_name(sid, cid, kernel._orders[cid].venue_gen)

    def _carry_of(self, sid: str, o: _Order) -> Carry:
        gen = o.venue_gen
        if gen == 0:
            return _NO_CARRY
        key = (sid, o.cmd.client_order_id, gen)
        if key not in self._carry:
            self._carry[key] = replaced_fills(
                self.venue, sid, o.cmd.client_order_id, o.cmd.symbol, gen
            )
        return self._carry[key]

    def _result(
        self,
        action: Literal["submit", "cancel", "amend", "poll"],
        cid: str,
        res: VenueResult,
        carry: Carry = _NO_CARRY,
        venue_gen: int | None = None,
    ) -> VenueReport:
        order = res.order
        if order is not None:
            order = msgspec.structs.replace(with_carry(order, carry), client_order_id=cid)
        return VenueReport(
            action=action,
            client_order_id=cid,
            outcome=res.outcome,
            order=order,
            reason=res.reason,
            detail=_clean(res.detail),
            venue_gen=venue_gen,
        )

    def _send(self, sid: str, kernel: OrderKernel, action: str, cid: str) -> VenueReport | None:
        """One request; None when it could not be sent at all (retried at the next poll)."""
        o = kernel._orders[cid]
        vid = self._vid(sid, kernel, cid)
        try:
            if action == "submit":
                cmd = msgspec.structs.replace(o.cmd, client_order_id=vid)
                if cmd.tif is TimeInForce.GTD:  # the kernel enforces the deadline (a cancel)
                    cmd = msgspec.structs.replace(cmd, tif=TimeInForce.GTC, expire_ts_ns=None)
                return self._result("submit", cid, self.venue.submit(cmd))
            return self._result(
                "cancel", cid, self.venue.cancel(vid, o.cmd.symbol), self._carry_of(sid, o)
            )
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

    # ------------------------------------------------------------ amends

    def _amend_request(self, sid: str, kernel: OrderKernel, o: _Order) -> AmendRequest:
        """The edit that brings the venue's order to the kernel's pending amend."""
        a = kernel.machine.orders
        cid = o.cmd.client_order_id
        target = int(a[F_AMEND_QTY, o.slot])
        filled = int(a[F_FILLED, o.slot])
        vid = venue_order_name(sid, cid, o.venue_gen)
        replaces = self.venue.edit_replaces
        return AmendRequest(
            client_order_id=vid,
            new_client_order_id=venue_order_name(sid, cid, o.venue_gen + 1) if replaces else vid,
            venue_order_id=o.venue_order_id,
            symbol=o.cmd.symbol,
            side=o.cmd.side,
            order_type=o.cmd.order_type,
            tif=TimeInForce.GTC if o.cmd.tif is TimeInForce.GTD else o.cmd.tif,
            qty=target - filled if replaces else target,
            price=int(a[F_AMEND_PRICE, o.slot]) or None,
        )

    def _amend_answer(
        self, sid: str, kernel: OrderKernel, o: _Order, req: AmendRequest, res: VenueResult
    ) -> list[m.Event]:
        """Apply the venue's answer to an edit (nothing while its outcome is unknown)."""
        cid = o.cmd.client_order_id
        if res.outcome is Outcome.IN_FLIGHT:
            return []
        carry = self._carry_of(sid, o)
        gen: int | None = None
        if res.outcome is Outcome.ACCEPTED and req.new_client_order_id != req.client_order_id:
            gen = o.venue_gen + 1
            try:  # the replaced order is finished: its fills join the carry for good
                old = self.venue.query(req.client_order_id, o.cmd.symbol)
            except ccxt.BaseError:  # unknown for now: ack only, the next poll adds the fills
                return apply_report(
                    kernel,
                    VenueReport(
                        action="amend", client_order_id=cid, outcome=res.outcome, venue_gen=gen
                    ),
                )
            if old is not None:
                filled, cost, fees = carry
                fee = None if fees is None or old.fees is None else fees + old.fees
                carry = (filled + old.filled_qty, cost + old.fill_cost, fee)
            self._carry[(sid, cid, gen)] = carry
        return apply_report(kernel, self._result("amend", cid, res, carry, gen))

    def _amend(self, sid: str, kernel: OrderKernel, cid: str, *, probe: bool) -> list[m.Event]:
        """Route the kernel's pending amend of `cid`. `probe`: it may have been sent already
        (restart, lost answer): settle it by client id before any edit is sent."""
        o = kernel._orders[cid]
        if o.final_state is not None or kernel._state(o) is not S.PENDING_AMEND:
            return []
        if not self.venue.supports_amend:
            return apply_report(kernel, self._result("amend", cid, self.venue._no_edit(cid)))
        events: list[m.Event] = []
        try:
            if not probe:  # fills that happened meanwhile come first: they may beat the edit
                vo = self.venue.query(self._vid(sid, kernel, cid), o.cmd.symbol)
                if vo is not None:
                    fresh = VenueResult(client_order_id=cid, outcome=Outcome.ACCEPTED, order=vo)
                    events.extend(
                        apply_report(
                            kernel, self._result("poll", cid, fresh, self._carry_of(sid, o))
                        )
                    )
                if o.final_state is not None or kernel._state(o) is not S.PENDING_AMEND:
                    return events  # the order finished first: the amend lost the race
            a = kernel.machine.orders
            target, filled = int(a[F_AMEND_QTY, o.slot]), int(a[F_FILLED, o.slot])
            if target <= filled:
                rej = VenueResult(
                    client_order_id=cid,
                    outcome=Outcome.REJECTED,
                    reason=Reason.INVALID_QTY,
                    detail=f"{filled} lots were filled before the edit was sent; the new qty "
                    f"{target} must exceed them",
                )
                return events + apply_report(kernel, self._result("amend", cid, rej))
            req = self._amend_request(sid, kernel, o)
            res = self.venue.amend(req, probe=probe)
        except VenueAdapterError as exc:
            rej = VenueResult(
                client_order_id=cid,
                outcome=Outcome.REJECTED,
                reason=Reason.VENUE_REJECTED,
                detail=str(exc),
            )
            return events + apply_report(kernel, self._result("amend", cid, rej))
        except ccxt.NetworkError:  # nothing (or only a query) was sent: try again later
            self._unsent.setdefault(sid, []).append(("amend", cid))
            return events
        except ccxt.BaseError as exc:  # authentication, permissions: the venue refused us
            rej = VenueResult(
                client_order_id=cid,
                outcome=Outcome.REJECTED,
                reason=Reason.VENUE_ERROR,
                detail=f"{type(exc).__name__}: {exc}",
            )
            return events + apply_report(kernel, self._result("amend", cid, rej))
        return events + self._amend_answer(sid, kernel, o, req, res)

    # ------------------------------------------------------------ loop

    def dispatch(self, sid: str, kernel: OrderKernel) -> list[m.Event]:
        """Send the kernel's queued requests in order and apply the answers."""
        events: list[m.Event] = []
        while kernel.outbox:
            action, cid = kernel.outbox.pop(0)
            if action == "amend":
                events.extend(self._amend(sid, kernel, cid, probe=False))
                continue
            rep = self._send(sid, kernel, action, cid)
            if rep is not None:
                events.extend(apply_report(kernel, rep))
        return events

    def poll(self, sid: str, kernel: OrderKernel) -> list[m.Event]:
        """Settle in-flight orders and edits (query by client id, resend only when safe) and
        adopt the fills and cancels the venue reports for the session's open orders."""
        kernel.outbox[:0] = self._unsent.pop(sid, [])
        events = self.dispatch(sid, kernel)
        in_flight = set(self.venue.in_flight())
        amending = set(self.venue.amend_in_flight())
        for cid, sym in kernel.venue_order_ids().items():  # submission order: deterministic
            o = kernel._orders[cid]
            if o.final_state is not None:
                continue  # finished by an earlier answer in this poll (OCO, reduce-only)
            vid = self._vid(sid, kernel, cid)
            st = kernel._state(o)
            if st is S.PENDING_AMEND:
                # the old order's status means nothing while an edit may have replaced it:
                # settle the edit first (its answer carries the order's fills)
                if vid in amending:
                    req = self._amend_request(sid, kernel, o)
                    try:
                        res = self.venue.resolve_amend(vid)
                    except ccxt.NetworkError:
                        continue
                    except ccxt.BaseError as exc:
                        self.problems.append(
                            _clean(f"session {sid!r} order {cid!r}: {type(exc).__name__}: {exc}")
                        )
                        continue
                    events.extend(self._amend_answer(sid, kernel, o, req, res))
                else:
                    events.extend(self._amend(sid, kernel, cid, probe=True))
                continue
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
                        self._carry_of(sid, o),
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
