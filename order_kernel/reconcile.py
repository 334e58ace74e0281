"""Reconciliation: after recovery and before new orders, make our books agree with the venue.

Recovery replays our own log; the venue may have moved on while we were down (fills we never
heard about, cancels, expiries). `reconcile(kernel, snapshot)` compares every order of the
session with a `VenueSnapshot` and resolves the differences by rule:

- the venue is the truth for fills: missing fills become synthetic `OrderFilled` events with
  deterministic trade ids `recon:<client_order_id>:<cum_qty>`, applied through the normal
  transition table (so positions, average price, PnL and fees follow the usual accounting);
- a status the venue reports that our table can reach from our state is applied (ACCEPT,
  CANCEL_ACK, EXPIRE, REJECT);
- anything else is a conflict (e.g. ours FILLED / venue OPEN, fewer fills at the venue than
  ours, a working order the venue does not know): it is flagged in the report and changes
  nothing, because guessing would hide a real problem.

The snapshot and the differences are written to the session's order log as one inbound record
(prefix `kernel.RECON_RECORD_PREFIX`), followed by the events it caused, so
`OrderKernel.recover` replays a reconciliation like any command and reproduces the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

import msgspec

from order_kernel import messages as m
from order_kernel.errors import OrderKernelError, RecoveryError
from order_kernel.kernel import RECON_RECORD_PREFIX, OrderKernel, _Order
from order_kernel.machine import F_FEES, F_FILL_COST, F_FILLED, F_QTY
from order_kernel.spec import TERMINAL_STATES, OrderEvent, OrderState, Reason, Side


class ReconcileError(OrderKernelError):
    """A snapshot that cannot be reconciled at all (e.g. it belongs to another session)."""


class VenueOrderStatus(StrEnum):
    """Order status as the venue reports it (normalised by the adapter)."""

    OPEN = "OPEN"  # working, no fill
    PARTIALLY_FILLED = "PARTIALLY_FILLED"  # working, some fills
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


#: Venue statuses of a working order.
VENUE_WORKING: Final = frozenset({VenueOrderStatus.OPEN, VenueOrderStatus.PARTIALLY_FILLED})


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One order as the venue knows it. `fill_cost` = sum of qty*price of its fills (notional
    units), so avg price = fill_cost / filled_qty exactly; `fees` None: not reported."""

    client_order_id: str
    symbol: str
    status: VenueOrderStatus
    filled_qty: int = 0
    fill_cost: int = 0
    fees: int | None = None
    venue_order_id: str = ""


class VenuePosition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    qty: int  # signed lots, > 0 long


class VenueSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the venue says at `ts_ns`: open orders plus recently closed ones (by client id),
    and positions. An order of ours that is absent is 'unknown to the venue'."""

    ts_ns: int
    orders: tuple[VenueOrder, ...] = ()
    positions: tuple[VenuePosition, ...] | None = None  # None: not reported, not compared


class Resolution(StrEnum):
    APPLIED = "APPLIED"  # fixed by rule (venue truth applied through the table)
    FLAGGED = "FLAGGED"  # a conflict: nothing changed, a person or the caller must act


class DiffKind(StrEnum):
    MISSING_FILLS = "MISSING_FILLS"
    STATUS = "STATUS"  # venue status applied (accept, cancel, expire, reject)
    NOT_AT_VENUE = "NOT_AT_VENUE"
    FILLS_CONFLICT = "FILLS_CONFLICT"
    STATUS_CONFLICT = "STATUS_CONFLICT"
    REQUEST_UNANSWERED = "REQUEST_UNANSWERED"  # our cancel/amend never reached the venue
    UNKNOWN_TO_US = "UNKNOWN_TO_US"
    POSITION_MISMATCH = "POSITION_MISMATCH"


class Difference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: DiffKind
    resolution: Resolution
    client_order_id: str | None = None
    symbol: str | None = None
    ours: str = ""
    venue: str = ""
    detail: str = ""


class ReconRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the log keeps of one reconciliation: its input and the differences found."""

    snapshot: VenueSnapshot
    differences: tuple[Difference, ...]


class ReconReport(msgspec.Struct, frozen=True, kw_only=True):
    differences: tuple[Difference, ...]
    events: tuple[m.Event, ...]

    @property
    def conflicts(self) -> tuple[Difference, ...]:
        """Differences that were flagged, not fixed: trading should wait for a decision."""
        return tuple(d for d in self.differences if d.resolution is Resolution.FLAGGED)

    @property
    def clean(self) -> bool:
        return not self.conflicts


# A planned step: (order, kind, payload). Fills carry (qty, price, fee, trade_id).
_Fill = tuple[int, int, int, str]
_Step = tuple[_Order, str, tuple[_Fill, ...]]

_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(ReconRecord)


def order_totals(kernel: OrderKernel, o: _Order) -> tuple[OrderState, int, int, int, int]:
    """(state, qty, filled, fill_cost, fees) of one of our orders, open or finished."""
    if o.final_state is not None:
        return o.final_state, o.final_qty, o.filled, o.fill_cost, o.final_fees
    a = kernel.machine.orders
    return (
        kernel.machine.state(o.slot),
        int(a[F_QTY, o.slot]),
        int(a[F_FILLED, o.slot]),
        int(a[F_FILL_COST, o.slot]),
        int(a[F_FEES, o.slot]),
    )


def _split_fills(
    kernel: OrderKernel, o: _Order, filled: int, qty: int, cost: int, fee: int | None
) -> tuple[_Fill, ...]:
    """Missing `qty` lots costing `cost` as at most two integer-price fills with exact total
    cost (r lots at p+1, the rest at p); ids `recon:<cid>:<cum_qty>`."""
    p, r = divmod(cost, qty)
    parts = [(qty - r, p), (r, p + 1)] if r else [(qty, p)]
    out: list[_Fill] = []
    cum = filled
    inst = kernel.instruments[o.cmd.symbol]
    for k, (q, px) in enumerate(parts):
        if q == 0:
            continue
        cum += q
        f = inst.fee(q, px, maker=False) if fee is None else (fee if k == 0 else 0)
        out.append((q, px, f, f"recon:{o.cmd.client_order_id}:{cum}"))
    return tuple(out)


def _plan(
    kernel: OrderKernel, snap: VenueSnapshot
) -> tuple[list[Difference], list[_Step], dict[str, int]]:
    """Pure comparison: the differences, the steps that fix the fixable ones, and the
    position each symbol will have after them."""
    diffs: list[Difference] = []
    steps: list[_Step] = []
    venue: dict[str, VenueOrder] = {}
    for entry in snap.orders:
        if entry.client_order_id in venue:
            raise ReconcileError(
                f"snapshot lists client_order_id {entry.client_order_id!r} twice; the adapter "
                "must report one entry per order"
            )
        if entry.filled_qty < 0 or entry.fill_cost < 0:
            raise ReconcileError(
                f"snapshot order {entry.client_order_id!r}: filled_qty={entry.filled_qty}, "
                f"fill_cost={entry.fill_cost} must be >= 0"
            )
        venue[entry.client_order_id] = entry
    positions = {s: kernel.position(s).qty for s in kernel.instruments}

    def note(
        res: Resolution, kind: DiffKind, o: _Order, st: OrderState, vdesc: str, detail: str
    ) -> None:
        diffs.append(
            Difference(
                kind=kind,
                resolution=res,
                client_order_id=o.cmd.client_order_id,
                symbol=o.cmd.symbol,
                ours=st.name,
                venue=vdesc,
                detail=detail,
            )
        )

    def flag(kind: DiffKind, o: _Order, st: OrderState, vdesc: str, detail: str) -> None:
        note(Resolution.FLAGGED, kind, o, st, vdesc, detail)

    def apply(kind: DiffKind, o: _Order, st: OrderState, vdesc: str, detail: str) -> None:
        note(Resolution.APPLIED, kind, o, st, vdesc, detail)

    for cid, o in kernel._orders.items():  # submission order: deterministic
        if o.cmd.schedule is not None:
            continue  # a TWAP parent lives in the kernel only; its slices are the venue's orders
        st, qty, filled, cost, fees = order_totals(kernel, o)
        vo = venue.get(cid)
        if vo is None:
            if st is OrderState.PENDING and kernel.live and cid.endswith(".trig"):
                # A kernel-held stop triggered and its order never reached the venue (crash or
                # lost request): rejecting it would leave the position unprotected. The
                # snapshot is the query by client id; the same id is sent again.
                apply(
                    DiffKind.NOT_AT_VENUE,
                    o,
                    st,
                    "UNKNOWN",
                    "a triggered stop's order never arrived at the venue; sent again, same id",
                )
                steps.append((o, "resend", ()))
            elif st is OrderState.PENDING:
                apply(
                    DiffKind.NOT_AT_VENUE,
                    o,
                    st,
                    "UNKNOWN",
                    "the venue has no order with this client id: it never arrived; rejected",
                )
                steps.append((o, "reject", ()))
            elif st not in TERMINAL_STATES:
                flag(
                    DiffKind.STATUS_CONFLICT,
                    o,
                    st,
                    "UNKNOWN",
                    "a working order is missing from the snapshot; query it by client id",
                )
            continue
        vdesc = f"{vo.status.value} filled={vo.filled_qty} cost={vo.fill_cost}"
        if vo.symbol != o.cmd.symbol:
            flag(DiffKind.STATUS_CONFLICT, o, st, vdesc, f"venue symbol {vo.symbol!r}")
            continue
        if st is OrderState.DENIED:
            flag(DiffKind.STATUS_CONFLICT, o, st, vdesc, "we denied this order; it never was sent")
            continue
        if vo.filled_qty < filled or (vo.filled_qty == filled and vo.fill_cost != cost):
            flag(
                DiffKind.FILLS_CONFLICT,
                o,
                st,
                vdesc,
                f"ours filled={filled} cost={cost}; the venue reports fewer or different fills",
            )
            continue
        missing = vo.filled_qty - filled
        terminal = st in TERMINAL_STATES
        if missing and (terminal or vo.filled_qty > qty or vo.fill_cost - cost < missing):
            flag(
                DiffKind.FILLS_CONFLICT,
                o,
                st,
                vdesc,
                f"ours filled={filled} of qty={qty}; the missing fills cannot be applied "
                "(finished order, overfill or price below one tick)",
            )
            continue
        if terminal:
            same = (
                (st is OrderState.FILLED and vo.status is VenueOrderStatus.FILLED)
                or (st is OrderState.CANCELLED and vo.status is VenueOrderStatus.CANCELLED)
                or (st is OrderState.EXPIRED and vo.status is VenueOrderStatus.EXPIRED)
                or (st is OrderState.REJECTED and vo.status is VenueOrderStatus.REJECTED)
            )
            if not same:
                flag(DiffKind.STATUS_CONFLICT, o, st, vdesc, "finished here, not so at the venue")
            continue
        # --- our order is open: fills first (venue truth), then the venue's status
        after = vo.filled_qty
        full = after == qty
        status = vo.status
        consistent = (
            (status is VenueOrderStatus.FILLED and full)
            or (status in VENUE_WORKING and not full)
            or (status in (VenueOrderStatus.CANCELLED, VenueOrderStatus.EXPIRED) and not full)
            or (status is VenueOrderStatus.REJECTED and after == 0 and st is OrderState.PENDING)
        )
        if not consistent:
            flag(
                DiffKind.STATUS_CONFLICT,
                o,
                st,
                vdesc,
                f"venue status {status.value} does not fit filled={after} of qty={qty} "
                f"from our state {st.name}",
            )
            continue
        if missing:
            fee_gap = None if vo.fees is None else vo.fees - fees
            fills = _split_fills(kernel, o, filled, missing, vo.fill_cost - cost, fee_gap)
            apply(
                DiffKind.MISSING_FILLS,
                o,
                st,
                vdesc,
                f"{missing} lots in {len(fills)} synthetic fill(s): "
                + ", ".join(f[3] for f in fills),
            )
            steps.append((o, "fill", fills))
            sign = 1 if o.cmd.side is Side.BUY else -1
            positions[o.cmd.symbol] += sign * missing
        if status in VENUE_WORKING:
            if st is OrderState.PENDING and not missing:
                apply(DiffKind.STATUS, o, st, vdesc, "acknowledged by the venue")
                steps.append((o, "accept", ()))
            elif st in (OrderState.PENDING_CANCEL, OrderState.PENDING_AMEND):
                flag(
                    DiffKind.REQUEST_UNANSWERED,
                    o,
                    st,
                    vdesc,
                    "the venue still shows the order working; send the request again",
                )
        elif status is VenueOrderStatus.CANCELLED:
            apply(DiffKind.STATUS, o, st, vdesc, "cancelled at the venue")
            steps.append((o, "cancel", ()))
        elif status is VenueOrderStatus.EXPIRED:
            apply(DiffKind.STATUS, o, st, vdesc, "expired at the venue")
            steps.append((o, "expire", ()))
        elif status is VenueOrderStatus.REJECTED:
            apply(DiffKind.STATUS, o, st, vdesc, "rejected by the venue")
            steps.append((o, "reject", ()))
    for cid in sorted(venue):
        vo = venue[cid]
        if cid not in kernel._orders and (vo.status in VENUE_WORKING or vo.filled_qty):
            diffs.append(
                Difference(
                    kind=DiffKind.UNKNOWN_TO_US,
                    resolution=Resolution.FLAGGED,
                    client_order_id=cid,
                    symbol=vo.symbol,
                    ours="UNKNOWN",
                    venue=f"{vo.status.value} filled={vo.filled_qty} cost={vo.fill_cost}",
                    detail="the venue has an order of this account we do not know; cancel or adopt it",
                )
            )
    if snap.positions is None:
        return diffs, steps, positions
    vpos: dict[str, int] = {}
    for vp in snap.positions:
        vpos[vp.symbol] = vpos.get(vp.symbol, 0) + vp.qty
    for sym in sorted(set(vpos) | {s for s, q in positions.items() if q}):
        ours_q = positions.get(sym)
        if ours_q != vpos.get(sym, 0) and not (ours_q is None and vpos[sym] == 0):
            diffs.append(
                Difference(
                    kind=DiffKind.POSITION_MISMATCH,
                    resolution=Resolution.FLAGGED,
                    symbol=sym,
                    ours=str(ours_q),
                    venue=str(vpos.get(sym, 0)),
                    detail="position after applying the venue's fills still differs",
                )
            )
    return diffs, steps, positions


def _apply(kernel: OrderKernel, steps: Iterable[_Step]) -> None:
    for o, what, fills in steps:
        cid = o.cmd.client_order_id
        if what == "fill":
            for q, px, fee, tid in fills:
                kernel._fill(o, q, px, maker=False, fee=fee, trade_id=tid)
        elif what == "accept":
            kernel._must(o, OrderEvent.ACCEPT)
            kernel._emit(m.OrderAccepted, client_order_id=cid, venue_order_id=o.venue_order_id)
        elif what == "cancel":
            kernel._venue_cancel(o, Reason.OK, "reconciliation: cancelled at the venue")
        elif what == "resend":
            kernel.outbox.append(("submit", cid))
        elif what == "expire":
            kernel._must(o, OrderEvent.EXPIRE)
            kernel._emit(m.OrderExpired, client_order_id=cid)
            kernel._after_terminal(o)
        else:  # reject
            kernel._must(o, OrderEvent.REJECT)
            kernel._emit(
                m.OrderRejected,
                client_order_id=cid,
                reason=Reason.VENUE_REJECTED,
                detail="reconciliation: rejected by or unknown to the venue",
            )
            kernel._finalize_if_terminal(o)


def _run(kernel: OrderKernel, record: ReconRecord | None, snap: VenueSnapshot) -> ReconReport:
    diffs, steps, positions = _plan(kernel, snap)
    if record is not None and tuple(diffs) != record.differences:
        raise RecoveryError(
            "replaying a logged reconciliation found different differences than the log "
            "records; the log and the kernel configuration do not belong together"
        )
    if record is None and kernel.log is not None:
        rec = ReconRecord(snapshot=snap, differences=tuple(diffs))
        kernel.log.append_inbound(RECON_RECORD_PREFIX + _enc.encode(rec), seq=-1)
    kernel._out = []
    kernel._now = max(kernel._now, snap.ts_ns)
    _apply(kernel, steps)
    for sym, q in positions.items():
        if kernel.position(sym).qty != q:
            raise OrderKernelError(
                f"internal: reconciliation left {sym} at {kernel.position(sym).qty}, planned {q}; "
                "please report with the order log"
            )
    events = kernel._finish()
    return ReconReport(differences=tuple(diffs), events=tuple(events))


def reconcile(kernel: OrderKernel, snapshot: VenueSnapshot) -> ReconReport:
    """Compare the kernel with the venue, apply what the rules fix, flag the rest, log it.

    Run it after `OrderKernel.recover` and before the session accepts new orders; trade only
    when `report.clean` (or after a person resolved the conflicts)."""
    if snapshot.ts_ns < 0:
        raise ReconcileError(f"VenueSnapshot.ts_ns={snapshot.ts_ns}: must be >= 0 (ns UTC)")
    return _run(kernel, None, snapshot)


def replay_record(kernel: OrderKernel, raw: bytes) -> list[m.Event]:
    """Re-apply a logged reconciliation during `OrderKernel.recover` (same events)."""
    try:
        rec = _dec.decode(raw[len(RECON_RECORD_PREFIX) :])
    except msgspec.MsgspecError as exc:
        raise RecoveryError(f"undecodable reconciliation record in the log: {exc}") from exc
    return list(_run(kernel, rec, rec.snapshot).events)


def snapshot_from_kernel(kernel: OrderKernel, ts_ns: int) -> VenueSnapshot:
    """What a venue would report if its books were `kernel`'s (a kernel driven by the SimVenue
    plays the venue in tests and paper mode)."""
    status_of = {
        OrderState.PENDING: None,
        OrderState.SUBMITTED: VenueOrderStatus.OPEN,
        OrderState.TRIGGERED: VenueOrderStatus.OPEN,
        OrderState.PARTIALLY_FILLED: VenueOrderStatus.PARTIALLY_FILLED,
        OrderState.PENDING_CANCEL: VenueOrderStatus.OPEN,
        OrderState.PENDING_AMEND: VenueOrderStatus.OPEN,
        OrderState.FILLED: VenueOrderStatus.FILLED,
        OrderState.CANCELLED: VenueOrderStatus.CANCELLED,
        OrderState.EXPIRED: VenueOrderStatus.EXPIRED,
        OrderState.REJECTED: VenueOrderStatus.REJECTED,
        OrderState.DENIED: None,
        OrderState.INITIALIZED: None,
    }
    orders: list[VenueOrder] = []
    for o in kernel._orders.values():
        if o.cmd.schedule is not None:
            continue  # kernel-side TWAP parent: a venue only sees its slices
        st, _qty, filled, cost, fees = order_totals(kernel, o)
        vs = status_of[st]
        if vs is VenueOrderStatus.OPEN and filled:
            vs = VenueOrderStatus.PARTIALLY_FILLED
        if vs is None:
            continue
        orders.append(
            VenueOrder(
                client_order_id=o.cmd.client_order_id,
                symbol=o.cmd.symbol,
                status=vs,
                filled_qty=filled,
                fill_cost=cost,
                fees=fees,
                venue_order_id=o.venue_order_id,
            )
        )
    positions = tuple(
        VenuePosition(symbol=s, qty=kernel.position(s).qty) for s in kernel.instruments
    )
    return VenueSnapshot(ts_ns=ts_ns, orders=tuple(orders), positions=positions)
