"""TWAP / interval schedules: slices fired by the clock from data in the parent's record.

Rules under test (docs/order-kernel.md "TWAP schedules"): slice j (0-based) of N is due at
submit ts + j * interval_ns and is placed at the start of the first bar whose ts_ns is after
that, with id `<parent>.s<j+1>` and qty // N lots (the last slice takes the remainder); the
parent's filled qty is the sum of its slices'; cancelling the parent, the kill switch or the
parent's expiry cancel the outstanding slices; recovery replays to the same state.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ok_helpers import SESSION, Driver, instruments, of

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.reconcile import VenueOrder, VenueOrderStatus, VenueSnapshot, reconcile
from order_kernel.spec import OrderState, OrderType, Reason, Side, TimeInForce
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
MKT, LMT = OrderType.MARKET, OrderType.LIMIT
H = 3_600_000_000_000


def twap(slices: int, interval_ns: int = H) -> m.Schedule:
    return m.Schedule(slices=slices, interval_ns=interval_ns)


def flat_bar(d: Driver, px: int = 1000) -> list[m.Event]:
    return d.bar(px, px + 5, px - 5, px)


@given(qty=st.integers(1, 10_000), n=st.integers(1, 200))
def test_slice_sizes_sum_to_qty_and_the_last_takes_the_remainder(qty: int, n: int) -> None:
    if n > qty:
        return
    sizes = [OrderKernel.slice_qty(qty, n, j) for j in range(n)]
    assert sum(sizes) == qty
    assert all(s == qty // n for s in sizes[:-1])
    assert sizes[-1] == qty // n + qty % n >= 1


def test_market_twap_fills_one_slice_per_interval_and_parent_is_the_sum() -> None:
    d = Driver()
    flat_bar(d)
    out = d.submit("tw", B, MKT, 10, schedule=twap(3))
    assert [type(e) for e in out] == [m.OrderAccepted]  # no slice before the clock moves
    per_bar = [flat_bar(d, 1000 + 10 * i) for i in range(4)]
    fills = [of(evs, m.OrderFilled) for evs in per_bar]
    assert [[(f.client_order_id, f.qty, f.price) for f in fs] for fs in fills] == [
        [("tw.s1", 3, 1000)],
        [("tw.s2", 3, 1010)],
        [("tw.s3", 4, 1020)],  # the last slice takes the rounding remainder
        [],
    ]
    # the parent itself never reports a fill (summing OrderFilled never double counts) ...
    assert all(f.client_order_id != "tw" for f in of(d.events, m.OrderFilled))
    # ... but its record is the sum of its slices, and the position counts each lot once
    p = d.k.order("tw")
    assert (p.state, p.filled_qty, p.avg_px_num) == (
        OrderState.FILLED,
        10,
        3 * 1000 + 3 * 1010 + 4 * 1020,
    )
    assert d.k.position("BTC").qty == 10
    assert d.k.open_orders() == []
    assert d.k.refusals == 0


def test_sparse_bars_place_every_due_slice_at_once_in_order() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tw", SL, MKT, 7, schedule=twap(4, interval_ns=H // 4))
    out = flat_bar(d)
    assert [e.client_order_id for e in of(out, m.OrderAccepted)] == [
        "tw.s1",
        "tw.s2",
        "tw.s3",
        "tw.s4",
    ]
    assert [f.qty for f in of(out, m.OrderFilled)] == [1, 1, 1, 4]
    assert d.k.order("tw").state is OrderState.FILLED


def test_cancel_parent_cancels_outstanding_slices_first_and_stops_the_clock() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tl", B, LMT, 6, price=900, schedule=twap(3))
    flat_bar(d)
    flat_bar(d)  # s1 and s2 rest (limit never touched)
    out = d.cmd(m.CancelOrder, client_order_id="tl")
    assert [e.client_order_id for e in of(out, m.OrderCancelled)] == ["tl.s1", "tl.s2", "tl"]
    later = flat_bar(d) + flat_bar(d)
    assert of(later, m.OrderAccepted) == []  # s3 never fires
    assert "tl.s3" not in {o.client_order_id for o in d.k.orders()}
    assert d.k.order("tl").state is OrderState.CANCELLED


def test_kill_switch_stops_the_schedule() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tw", B, MKT, 4, schedule=twap(4))
    flat_bar(d)
    out = d.cmd(m.KillSwitch, reason="stop")
    assert [e.client_order_id for e in of(out, m.OrderCancelled)] == ["tw"]
    later = flat_bar(d) + flat_bar(d)
    assert of(later, m.OrderAccepted) == [] and of(later, m.OrderFilled) == []
    assert d.k.order("tw").filled_qty == 1 and d.k.position("BTC").qty == 1


def test_a_schedule_that_ends_short_cancels_the_parent_with_the_remainder() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("ti", B, LMT, 5, price=900, tif=TimeInForce.IOC, schedule=twap(2))
    out = flat_bar(d) + flat_bar(d)
    cancelled = of(out, m.OrderCancelled)
    assert [c.client_order_id for c in cancelled] == ["ti.s1", "ti.s2", "ti"]
    assert "0 of 5 lots" in cancelled[-1].detail
    assert d.k.order("ti").state is OrderState.CANCELLED


def test_partial_schedule_fill_keeps_the_parent_partially_filled() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tp", B, LMT, 4, price=1000, schedule=twap(2))
    flat_bar(d)  # s1 fills at 1000
    p = d.k.order("tp")
    assert (p.state, p.filled_qty) == (OrderState.PARTIALLY_FILLED, 2)
    d.bar(1100, 1110, 1090, 1100)  # s2 placed, does not fill
    assert d.k.order("tp.s2").state is OrderState.SUBMITTED
    d.cmd(m.CancelOrder, client_order_id="tp.s2")  # the last slice ends: the parent ends too
    p = d.k.order("tp")
    assert (p.state, p.filled_qty) == (OrderState.CANCELLED, 2)


def test_gtd_parent_expiry_cancels_its_slices() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tg", B, LMT, 6, price=900, tif=TimeInForce.GTD, expire_ts_ns=4 * H, schedule=twap(3))
    flat_bar(d)
    flat_bar(d)
    out = flat_bar(d)  # ts 4H: the parent expires before any new slice
    assert [e.client_order_id for e in of(out, m.OrderExpired)] == ["tg"]
    assert {e.client_order_id for e in of(out, m.OrderCancelled)} == {"tg.s1", "tg.s2"}
    assert of(out, m.OrderAccepted) == []


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"qty": 2, "schedule": twap(3)}, Reason.INVALID_QTY),
        ({"schedule": twap(0)}, Reason.INVALID_QTY),
        ({"schedule": twap(2, interval_ns=0)}, Reason.INVALID_DEADLINE),
        ({"schedule": twap(3, interval_ns=2**62)}, Reason.INVALID_DEADLINE),
        ({"order_type": OrderType.STOP, "trigger_price": 1100}, Reason.INVALID_QTY),
        ({"oco_group": "g"}, Reason.INVALID_QTY),
        ({"display_qty": 1}, Reason.INVALID_QTY),
        ({"bracket": m.Bracket(stop_loss=900)}, Reason.INVALID_QTY),
    ],
)
def test_bad_schedules_are_denied(kw: dict[str, object], reason: Reason) -> None:
    d = Driver()
    flat_bar(d)
    args: dict[str, object] = {"order_type": MKT, "qty": 4, "schedule": twap(2), **kw}
    out = d.submit("x", B, args.pop("order_type"), args.pop("qty"), **args)  # type: ignore[arg-type]
    assert [e.reason for e in of(out, m.OrderDenied)] == [reason]
    flat_bar(d)
    assert d.k.orders()[0].state is OrderState.DENIED and len(d.k.orders()) == 1


def test_amend_parent_denied_slice_qty_fixed_slice_price_allowed() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tl", B, LMT, 4, price=900, schedule=twap(2))
    flat_bar(d)
    assert of(d.cmd(m.AmendOrder, client_order_id="tl", price=901), m.CommandDenied)[0].reason is (
        Reason.INVALID_TRANSITION
    )
    assert of(d.cmd(m.AmendOrder, client_order_id="tl.s1", qty=5), m.CommandDenied)[0].reason is (
        Reason.INVALID_QTY
    )
    assert of(d.cmd(m.AmendOrder, client_order_id="tl.s1", price=905), m.AmendAccepted)


def test_resubmitting_the_parent_id_creates_nothing() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tw", B, MKT, 4, schedule=twap(2))
    out = d.submit("tw", B, MKT, 4, schedule=twap(2))
    assert all(e.possible_duplicate for e in out)
    flat_bar(d)
    flat_bar(d)
    assert d.k.position("BTC").qty == 4


def test_a_taken_slice_id_denies_that_slice_and_the_parent_ends_short() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tw", B, MKT, 4, schedule=twap(2))
    d.submit("tw.s2", B, LMT, 1, price=1)  # squats on the second slice's id
    flat_bar(d)
    out = flat_bar(d)
    assert [(e.client_order_id, e.reason) for e in of(out, m.OrderDenied)] == [
        ("tw.s2", Reason.DUPLICATE_CLIENT_ORDER_ID)
    ]
    p = d.k.order("tw")
    assert (p.state, p.filled_qty) == (OrderState.CANCELLED, 2)


def _scenario(d: Driver) -> None:
    flat_bar(d)
    d.submit("tw", B, MKT, 10, schedule=twap(3))
    d.submit("tl", SL, LMT, 5, price=1012, schedule=twap(2, interval_ns=2 * H))
    flat_bar(d)
    d.bar(1005, 1015, 1000, 1010)
    d.cmd(m.CancelOrder, client_order_id="tl")
    flat_bar(d)
    flat_bar(d)


@pytest.mark.parametrize("cut", [2, 4, 6])
def test_recovery_replays_a_schedule_to_the_same_state(tmp_path: Path, cut: int) -> None:
    full = tmp_path / "full.log"
    with OrderLog(full, fsync="never") as lg:
        ref = Driver(log=lg)
        _scenario(ref)
    # crash after `cut` commands: rebuild from the log, then feed the rest
    part = tmp_path / "part.log"
    cmds = [m.decode_command(e.raw) for e in order_log.read(full) if e.direction == order_log.IN]
    with OrderLog(part, fsync="never") as lg:
        k = OrderKernel(SESSION, instruments(), SimVenue(), log=lg, capacity=256)
        for c in cmds[:cut]:
            k.handle(c)
    k2 = OrderKernel.recover(part, SESSION, instruments(), SimVenue(), capacity=256)
    for c in cmds[cut:]:
        k2.handle(c)
    assert k2.log is not None
    k2.log.close()
    assert k2.state_digest() == ref.k.state_digest()
    assert part.read_bytes() == full.read_bytes()


def test_reconciliation_adopts_a_slice_fill_into_the_parent() -> None:
    d = Driver()
    flat_bar(d)
    d.submit("tl", B, LMT, 4, price=900, schedule=twap(2))
    flat_bar(d)  # s1 rests
    snap = VenueSnapshot(
        ts_ns=3 * H,
        orders=(
            VenueOrder(
                client_order_id="tl.s1",
                symbol="BTC",
                status=VenueOrderStatus.FILLED,
                filled_qty=2,
                fill_cost=2 * 900,
            ),
        ),
    )
    rep = reconcile(d.k, snap)
    assert rep.clean, rep.differences  # the parent is kernel-side: not expected at the venue
    assert d.k.order("tl.s1").state is OrderState.FILLED
    p = d.k.order("tl")
    assert (p.state, p.filled_qty) == (OrderState.PARTIALLY_FILLED, 2)
    assert d.k.position("BTC").qty == 2
    assert not reconcile(d.k, snap).events  # idempotent
