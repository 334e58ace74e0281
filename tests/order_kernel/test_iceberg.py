"""Iceberg / display quantity at the SimVenue (rule 16).

Only the displayed clip rests at the touch: a passive (maker) fill takes at most the clip; when
the clip is used up the order refills (min(display, leaves)) and the refill goes to the back of
the venue's queue, behind every order already there, in this bar (if the bar's volume budget
is not spent) and in later bars. Taking fills (a limit crossed by its first bar's open) are not
limited by the display.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ok_helpers import Driver, of

from order_kernel import messages as m
from order_kernel.spec import Liquidity, OrderState, OrderType, Side
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
LMT = OrderType.LIMIT


def _fills(events: list[m.Event]) -> list[tuple[str, int]]:
    return [(f.client_order_id, f.qty) for f in of(events, m.OrderFilled)]


def test_clip_then_others_then_refill_within_a_bar() -> None:
    d = Driver(SimVenue(participation_bps=100))  # 1 % of the bar's volume
    d.bar(100, 101, 99, 100)
    d.submit("ice", B, LMT, 10, price=98, display_qty=2)
    d.submit("plain", B, LMT, 3, price=98)
    out = d.bar(100, 100, 97, 99, volume=600)  # budget 6 lots
    assert _fills(out) == [("ice", 2), ("plain", 3), ("ice", 1)]
    assert all(f.liquidity is Liquidity.MAKER for f in of(out, m.OrderFilled))


def test_without_display_the_first_order_takes_the_whole_budget() -> None:
    d = Driver(SimVenue(participation_bps=100))
    d.bar(100, 101, 99, 100)
    d.submit("big", B, LMT, 10, price=98)
    d.submit("plain", B, LMT, 3, price=98)
    assert _fills(d.bar(100, 100, 97, 99, volume=600)) == [("big", 6)]


def test_a_refill_loses_priority_in_later_bars() -> None:
    d = Driver(SimVenue(participation_bps=100))
    d.bar(100, 101, 99, 100)
    d.submit("ice", B, LMT, 6, price=98, display_qty=2)
    d.submit("plain", B, LMT, 2, price=98)
    assert _fills(d.bar(100, 100, 97, 99, volume=200)) == [("ice", 2)]  # clip used: refilled
    # next bar: "plain" (queued before the refill) now comes first
    assert _fills(d.bar(99, 100, 97, 99, volume=300)) == [("plain", 2), ("ice", 1)]


def test_unlimited_volume_fills_the_whole_iceberg_clip_by_clip() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("ice", SL, LMT, 7, price=102, display_qty=3)
    out = d.bar(100, 103, 99, 101)
    assert _fills(out) == [("ice", 3), ("ice", 3), ("ice", 1)]
    assert d.k.order("ice").state is OrderState.FILLED


def test_taking_at_the_open_is_not_limited_by_the_display() -> None:
    d = Driver(SimVenue(participation_bps=10_000))
    d.bar(100, 101, 99, 100)
    d.submit("ice", B, LMT, 5, price=105, display_qty=1)
    out = d.bar(101, 102, 100, 101, volume=100)
    assert [(f.qty, f.liquidity) for f in of(out, m.OrderFilled)] == [(5, Liquidity.TAKER)]


@settings(max_examples=80, deadline=None)
@given(
    qty=st.integers(1, 40),
    display=st.integers(1, 40),
    vols=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
)
def test_clip_fills_never_exceed_the_display_and_sum_up(
    qty: int, display: int, vols: list[int]
) -> None:
    display = min(display, qty)
    d = Driver(SimVenue(participation_bps=100))
    d.bar(100, 101, 99, 100)
    d.submit("ice", B, LMT, qty, price=98, display_qty=display)
    budget_total = 0
    for v in vols:
        out = d.bar(100, 100, 97, 99, volume=v)
        fills = [f.qty for f in of(out, m.OrderFilled)]
        assert all(q <= display for q in fills)
        assert sum(fills) <= v // 100
        budget_total += v // 100
    assert d.k.order("ice").filled_qty == min(qty, budget_total)
    assert d.k.position("BTC").qty == d.k.order("ice").filled_qty
