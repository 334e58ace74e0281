"""Reconciliation with a venue snapshot: the (our status x venue status) matrix, synthetic
fills with deterministic ids, logging + recovery, and positions/PnL agreeing afterwards."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ok_helpers import SESSION, Driver, instruments, of

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.errors import RecoveryError
from order_kernel.kernel import RECON_RECORD_PREFIX, OrderKernel
from order_kernel.log import OrderLog
from order_kernel.reconcile import (
    DiffKind,
    ReconcileError,
    ReconRecord,
    Resolution,
    VenueOrder,
    VenueOrderStatus,
    VenuePosition,
    VenueSnapshot,
    reconcile,
    snapshot_from_kernel,
)
from order_kernel.spec import OrderEvent, OrderState, OrderType, Side, TimeInForce
from order_kernel.venues.sim import SimVenue

S = OrderState
V = VenueOrderStatus
PX = 900  # every fill of the matrix is at this price
QTY = 10


# ---------------------------------------------------------------- building our order in a state


def _pending(d: Driver, cid: str = "a", order_type: OrderType = OrderType.LIMIT) -> None:
    """Submit an order and stop before the venue's ACCEPT (a live venue would answer later)."""
    k = d.k
    real = k._must

    def no_accept(o: object, event: OrderEvent, **kw: int) -> None:
        if event is not OrderEvent.ACCEPT:
            real(o, event, **kw)  # type: ignore[arg-type]

    k._must = no_accept  # type: ignore[method-assign]
    try:
        if order_type is OrderType.STOP:
            d.submit(cid, Side.BUY, OrderType.STOP, QTY, trigger_price=1100)
        else:
            d.submit(cid, Side.BUY, OrderType.LIMIT, QTY, price=PX)
    finally:
        del k._must
    assert k.order(cid).state is S.PENDING


def _make(state: OrderState) -> Driver:
    d = Driver()
    k = d.k
    if state is S.DENIED:
        d.submit("a", Side.BUY, OrderType.LIMIT, 0, price=PX)
    elif state is S.PENDING:
        _pending(d)
    elif state is S.REJECTED:
        _pending(d)
        o = k._orders["a"]
        k._must(o, OrderEvent.REJECT)
        k._finalize_if_terminal(o)
    elif state is S.TRIGGERED:
        d.submit("a", Side.BUY, OrderType.STOP, QTY, trigger_price=1100)
        k._must(k._orders["a"], OrderEvent.TRIGGER)
    else:
        d.submit("a", Side.BUY, OrderType.LIMIT, QTY, price=PX)
        o = k._orders["a"]
        if state is S.PARTIALLY_FILLED:
            k._fill(o, 4, PX, maker=True)
        elif state is S.FILLED:
            k._fill(o, QTY, PX, maker=True)
        elif state is S.PENDING_CANCEL:
            k._must(o, OrderEvent.CANCEL)
        elif state is S.PENDING_AMEND:
            k._must(o, OrderEvent.AMEND, qty=QTY, price=PX - 1)
        elif state is S.CANCELLED:
            d.cmd(m.CancelOrder, client_order_id="a")
        elif state is S.EXPIRED:
            k._must(o, OrderEvent.EXPIRE)
            k._after_terminal(o)
    assert k.order("a").state is state
    return d


VENUE_FILLED = {
    V.OPEN: 0,
    V.PARTIALLY_FILLED: 6,
    V.FILLED: 10,
    V.CANCELLED: 6,
    V.EXPIRED: 0,
    V.REJECTED: 0,
}

# Expected result of every row: (state after, conflict flagged?). None = "unknown to the venue".
# Read a row as "ours X, venue says Y -> we end in Z".
_CONFLICT = "conflict"
_OPENISH: dict[V | None, object] = {
    V.OPEN: "same",
    V.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
    V.FILLED: S.FILLED,
    V.CANCELLED: S.CANCELLED,
    V.EXPIRED: S.EXPIRED,
    V.REJECTED: _CONFLICT,  # the venue accepted nothing, but we saw it working
    None: _CONFLICT,  # a working order missing from the snapshot: query, do not guess
}
_PENDING_REQ: dict[V | None, object] = {
    **_OPENISH,
    V.OPEN: ("same", _CONFLICT),  # our cancel/amend never arrived: flagged, resend it
    V.PARTIALLY_FILLED: ("same", _CONFLICT),  # fills applied, the request still unanswered
}


def _terminal(own: V | None) -> dict[V | None, object]:
    row: dict[V | None, object] = {v: _CONFLICT for v in V}
    row[None] = "same"  # an old finished order the venue no longer lists
    if own is not None:
        row[own] = "same"
    return row


EXPECTED: dict[S, dict[V | None, object]] = {
    S.PENDING: {
        V.OPEN: S.SUBMITTED,
        V.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        V.FILLED: S.FILLED,
        V.CANCELLED: S.CANCELLED,
        V.EXPIRED: S.EXPIRED,
        V.REJECTED: S.REJECTED,
        None: S.REJECTED,  # never arrived at the venue
    },
    S.SUBMITTED: _OPENISH,
    S.TRIGGERED: _OPENISH,
    S.PARTIALLY_FILLED: {
        **_OPENISH,
        V.OPEN: _CONFLICT,  # the venue has fewer fills than we do
        V.EXPIRED: _CONFLICT,  # ditto (0 < 4)
        V.PARTIALLY_FILLED: "same",
    },
    S.PENDING_CANCEL: _PENDING_REQ,
    S.PENDING_AMEND: _PENDING_REQ,
    S.FILLED: _terminal(V.FILLED),
    S.CANCELLED: _terminal(V.CANCELLED) | {V.CANCELLED: _CONFLICT},  # venue has 6 fills, we 0
    S.REJECTED: _terminal(V.REJECTED),
    S.EXPIRED: _terminal(V.EXPIRED),
    S.DENIED: _terminal(None),
}

ROWS = [(ours, venue) for ours in EXPECTED for venue in [*V, None]]


@pytest.mark.parametrize(
    ("ours", "venue"), ROWS, ids=[f"{o.name}-{v.name if v else 'UNKNOWN'}" for o, v in ROWS]
)
def test_reconciliation_matrix(ours: OrderState, venue: V | None) -> None:
    d = _make(ours)
    k = d.k
    before = k.order("a")
    pos_before = k.position("BTC")
    expect = EXPECTED[ours][venue]
    flagged_too = isinstance(expect, tuple)
    target = expect[0] if isinstance(expect, tuple) else expect
    conflict = target == _CONFLICT or flagged_too
    vfilled = 0 if venue is None else VENUE_FILLED[venue]
    # venue's position: what it would be if its fills applied (it is the truth)
    applies_fills = target != _CONFLICT and vfilled > before.filled_qty
    vpos = pos_before.qty + (vfilled - before.filled_qty if applies_fills else 0)
    orders = (
        ()
        if venue is None
        else (
            VenueOrder(
                client_order_id="a",
                symbol="BTC",
                status=venue,
                filled_qty=vfilled,
                fill_cost=vfilled * PX,
            ),
        )
    )
    snap = VenueSnapshot(ts_ns=5, orders=orders, positions=(VenuePosition(symbol="BTC", qty=vpos),))

    report = reconcile(k, snap)

    after = k.order("a")
    kinds = {dd.kind for dd in report.conflicts}
    assert DiffKind.POSITION_MISMATCH not in kinds
    assert (not report.clean) is conflict, report.differences
    if target == _CONFLICT:
        assert after == before  # flagged, nothing changed
        assert k.position("BTC") == pos_before
        assert report.events == ()
        return
    assert after.state is (before.state if target == "same" else target)
    assert after.filled_qty == max(before.filled_qty, vfilled)
    assert after.avg_px_num == after.filled_qty * PX
    pos = k.position("BTC")
    assert pos.qty == vpos
    assert pos.cost_basis == vpos * PX
    fills = of(list(report.events), m.OrderFilled)
    assert sum(f.qty for f in fills) == after.filled_qty - before.filled_qty
    assert all(f.trade_id == f"recon:a:{f.filled_qty}" for f in fills)
    assert [e.seq for e in report.events] == list(
        range(k.last_seq - len(report.events) + 1, k.last_seq + 1)
    )


def test_every_row_is_covered() -> None:
    assert len(ROWS) == len(EXPECTED) * (len(V) + 1)
    assert set(EXPECTED) == set(S) - {S.INITIALIZED}


# ---------------------------------------------------------------- synthetic fills


def test_non_integer_average_price_is_split_into_exact_fills() -> None:
    d = _make(S.SUBMITTED)
    # 7 lots missing at an average of 900 + 3/7 ticks: 4 lots at 900, 3 at 901
    snap = VenueSnapshot(
        ts_ns=1,
        orders=(
            VenueOrder(
                client_order_id="a",
                symbol="BTC",
                status=V.PARTIALLY_FILLED,
                filled_qty=7,
                fill_cost=7 * 900 + 3,
                fees=11,
            ),
        ),
        positions=(VenuePosition(symbol="BTC", qty=7),),
    )
    report = reconcile(d.k, snap)
    fills = of(list(report.events), m.OrderFilled)
    assert [(f.trade_id, f.qty, f.price, f.fee) for f in fills] == [
        ("recon:a:4", 4, 900, 11),
        ("recon:a:7", 3, 901, 0),
    ]
    assert d.k.order("a").avg_px_num == 7 * 900 + 3
    assert d.k.position("BTC").fees_paid == 11
    assert report.clean


def test_reconcile_twice_changes_nothing_the_second_time() -> None:
    d = _make(S.PENDING)
    snap = VenueSnapshot(
        ts_ns=1,
        orders=(
            VenueOrder(
                client_order_id="a",
                symbol="BTC",
                status=V.PARTIALLY_FILLED,
                filled_qty=3,
                fill_cost=3 * PX,
            ),
        ),
        positions=(VenuePosition(symbol="BTC", qty=3),),
    )
    first = reconcile(d.k, snap)
    digest = d.k.state_digest()
    second = reconcile(d.k, snap)
    assert first.events and first.clean
    assert second.differences == () and second.events == ()
    # the kernel's seq and books did not move, except the recon clock
    assert d.k.state_digest() == digest


def test_unknown_venue_order_and_position_mismatch_are_flagged() -> None:
    d = Driver()
    snap = VenueSnapshot(
        ts_ns=1,
        orders=(
            VenueOrder(client_order_id="zz", symbol="BTC", status=V.OPEN),
            VenueOrder(client_order_id="old", symbol="BTC", status=V.CANCELLED),
        ),
        positions=(VenuePosition(symbol="ETH", qty=-5),),
    )
    report = reconcile(d.k, snap)
    assert [(x.kind, x.client_order_id, x.symbol) for x in report.conflicts] == [
        (DiffKind.UNKNOWN_TO_US, "zz", "BTC"),
        (DiffKind.POSITION_MISMATCH, None, "ETH"),
    ]
    assert all(x.resolution is Resolution.FLAGGED for x in report.differences)
    assert report.events == ()


def test_bad_snapshots_are_refused_with_the_order_id() -> None:
    d = Driver()
    dup = VenueOrder(client_order_id="x", symbol="BTC", status=V.OPEN)
    with pytest.raises(ReconcileError, match="'x' twice"):
        reconcile(d.k, VenueSnapshot(ts_ns=1, orders=(dup, dup)))
    neg = VenueOrder(client_order_id="y", symbol="BTC", status=V.OPEN, filled_qty=-1)
    with pytest.raises(ReconcileError, match="'y'"):
        reconcile(d.k, VenueSnapshot(ts_ns=1, orders=(neg,)))
    with pytest.raises(ReconcileError, match="ts_ns"):
        reconcile(d.k, VenueSnapshot(ts_ns=-1))


def test_cancelled_bracket_parent_places_its_children() -> None:
    d = Driver()
    d.submit("p", Side.BUY, OrderType.LIMIT, QTY, price=PX, bracket=m.Bracket(stop_loss=800))
    snap = VenueSnapshot(
        ts_ns=1,
        orders=(
            VenueOrder(
                client_order_id="p",
                symbol="BTC",
                status=V.CANCELLED,
                filled_qty=4,
                fill_cost=4 * PX,
            ),
        ),
        positions=(VenuePosition(symbol="BTC", qty=4),),
    )
    report = reconcile(d.k, snap)
    assert report.clean
    assert d.k.order("p.sl").qty == 4 and d.k.order("p.sl").state is S.SUBMITTED


# ---------------------------------------------------------------- log + recovery


def _commands() -> list[m.Command]:
    def sub(seq: int, cid: str, side: Side, qty: int, price: int) -> m.SubmitOrder:
        return m.SubmitOrder(
            session_id=SESSION,
            seq=seq,
            ts_ns=seq,
            client_order_id=cid,
            symbol="BTC",
            side=side,
            order_type=OrderType.LIMIT,
            qty=qty,
            price=price,
            tif=TimeInForce.GTC,
        )

    return [sub(1, "b1", Side.BUY, 10, 1000), sub(2, "b2", Side.BUY, 5, 990)]


def test_reconciliation_is_logged_and_replayed_by_recovery(tmp_path: Path) -> None:
    path = tmp_path / "s1.log"
    k = OrderKernel(SESSION, instruments(), SimVenue(), log=OrderLog(path))
    for c in _commands():
        k.handle(c)
    snap = VenueSnapshot(
        ts_ns=10,
        orders=(
            VenueOrder(
                client_order_id="b1", symbol="BTC", status=V.FILLED, filled_qty=10, fill_cost=10_000
            ),
            VenueOrder(client_order_id="b2", symbol="BTC", status=V.OPEN),
        ),
        positions=(VenuePosition(symbol="BTC", qty=10),),
    )
    report = reconcile(k, snap)
    assert report.clean and len(of(list(report.events), m.OrderFilled)) == 1
    after = k.handle(m.CancelOrder(session_id=SESSION, seq=3, ts_ns=11, client_order_id="b2"))
    assert of(after, m.OrderCancelled)
    assert after[0].seq == report.events[-1].seq + 1
    k.log.close()  # type: ignore[union-attr]
    order_log.verify(path)

    rec = OrderKernel.recover(path, SESSION, instruments(), SimVenue())
    assert rec.state_digest() == k.state_digest()
    assert rec.order("b1").state is S.FILLED
    rec.log.close()  # type: ignore[union-attr]


def test_recovery_refuses_a_tampered_reconciliation_record(tmp_path: Path) -> None:
    """The logged differences are re-derived on replay; a record that no longer matches the
    replayed books (here: rewritten to claim other differences) stops recovery."""
    path = tmp_path / "s1.log"
    k = OrderKernel(SESSION, instruments(), SimVenue(), log=OrderLog(path))
    k.handle(_commands()[0])
    snap = VenueSnapshot(
        ts_ns=3,
        orders=(
            VenueOrder(
                client_order_id="b1",
                symbol="BTC",
                status=V.PARTIALLY_FILLED,
                filled_qty=2,
                fill_cost=2000,
            ),
        ),
        positions=(VenuePosition(symbol="BTC", qty=2),),
    )
    reconcile(k, snap)
    k.log.close()  # type: ignore[union-attr]
    # rebuild the same log, but with a record whose differences were edited
    forged = tmp_path / "forged.log"
    with OrderLog(forged) as out:
        for entry in order_log.read(path):
            raw = entry.raw
            if entry.direction == order_log.IN and raw.startswith(RECON_RECORD_PREFIX):
                rec = msgspec.msgpack.decode(raw[len(RECON_RECORD_PREFIX) :], type=ReconRecord)
                rec = msgspec.structs.replace(rec, differences=rec.differences[:0])
                raw = RECON_RECORD_PREFIX + msgspec.msgpack.encode(rec)
                out.append_inbound(raw, seq=entry.seq)
            elif entry.direction == order_log.IN:
                out.append_inbound(raw, seq=entry.seq)
            else:
                out.append_outbound(raw, seq=entry.seq)
    order_log.verify(forged)  # the chain is valid: only the content lies
    with pytest.raises(RecoveryError, match="reconciliation"):
        OrderKernel.recover(forged, SESSION, instruments(), SimVenue())


# ---------------------------------------------------------------- the venue is the truth


def _run(
    k: OrderKernel, bars: list[tuple[int, int, int, int]], start: int, cmds: list[m.Command]
) -> None:
    for c in cmds:
        k.handle(c)
    for t, (o, h, lo, c_) in enumerate(bars, start):
        k.handle(
            m.MarketBar(
                session_id="feed",
                seq=0,
                ts_ns=t * 3_600_000_000_000,
                symbol="BTC",
                open=o,
                high=max(o, h, lo, c_),
                low=min(o, h, lo, c_),
                close=c_,
                volume=10**6,
                interval_ns=3_600_000_000_000,
            )
        )


bar_st = st.tuples(*(st.integers(950, 1080) for _ in range(4)))
FIRST_BAR = (1005, 1010, 995, 1000)  # fills b1 (buy limit 1000) and neither sell


@settings(max_examples=60, deadline=None)
@given(bars=st.lists(bar_st, min_size=0, max_size=6), lost=st.integers(0, 7))
def test_positions_and_pnl_agree_with_the_venue_after_reconciliation(
    bars: list[tuple[int, int, int, int]], lost: int
) -> None:
    """Ours misses the last `lost` bars (fills it never heard of); the truth kernel saw all.
    After reconciling against the truth's snapshot, every order's fills and avg price, and the
    position's qty, cost (avg price), realised PnL and fees agree exactly. The sells (limits
    1040 < 1060) always fill in submission order, the order reconciliation applies them in;
    s1 + s2 > b1, so the position may flip short."""
    spec = [
        ("b1", Side.BUY, 10, 1000),
        ("s1", Side.SELL, 6, 1040),
        ("s2", Side.SELL, 7, 1060),
    ]
    cmds: list[m.Command] = [
        m.SubmitOrder(
            session_id=SESSION,
            seq=i + 1,
            ts_ns=0,
            client_order_id=cid,
            symbol="BTC",
            side=side,
            order_type=OrderType.LIMIT,
            qty=qty,
            price=px,
        )
        for i, (cid, side, qty, px) in enumerate(spec)
    ]
    all_bars = [FIRST_BAR, *bars]
    truth = OrderKernel(SESSION, instruments(), SimVenue())
    ours = OrderKernel(SESSION, instruments(), SimVenue())
    _run(truth, all_bars, 1, cmds)
    _run(ours, all_bars[: max(0, len(all_bars) - lost)], 1, cmds)
    report = reconcile(ours, snapshot_from_kernel(truth, ts_ns=10**18))
    assert report.clean, report.differences
    for cid, *_ in spec:
        a, b = ours.order(cid), truth.order(cid)
        assert (a.state, a.filled_qty, a.avg_px_num) == (b.state, b.filled_qty, b.avg_px_num)
    p, q = ours.position("BTC"), truth.position("BTC")
    assert (p.qty, p.cost_basis, p.realized_pnl, p.fees_paid) == (
        q.qty,
        q.cost_basis,
        q.realized_pnl,
        q.fees_paid,
    )
