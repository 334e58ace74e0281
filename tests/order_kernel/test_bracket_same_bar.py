"""SimVenue rule 15: bracket children are live in the bar their parent filled in.

Fill at the open -> every child against the whole bar, stop first (adverse-first); intrabar
fill (or venue latency) -> only the stop-loss, at its stop price; targets from the next bar.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ok_helpers import Driver, H, of

from order_kernel import messages as m
from order_kernel.spec import Liquidity, OrderState, OrderType, Side
from order_kernel.venues.sim import SimVenue

B, S = Side.BUY, Side.SELL
MKT, LMT, STP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP


def fills(events: list[m.Event]) -> list[tuple[str, int, int]]:
    return [(f.client_order_id, f.qty, f.price) for f in of(events, m.OrderFilled)]


def bracket(sl: int | None, *tps: tuple[int, int]) -> m.Bracket:
    return m.Bracket(
        stop_loss=sl, take_profits=tuple(m.TakeProfitLeg(price=p, qty=q) for p, q in tps)
    )


def test_market_parent_stop_hit_in_the_fill_bar() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, MKT, 4, bracket=bracket(95, (110, 4)))
    out = d.bar(100, 101, 94, 96)  # fills at the open 100, then trades down through 95
    assert fills(out) == [("p", 4, 100), ("p.sl", 4, 95)]
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["p.tp1"]
    assert d.k.position("BTC").qty == 0


def test_market_parent_adverse_first_when_the_fill_bar_touches_both() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, MKT, 4, bracket=bracket(95, (110, 4)))
    out = d.bar(100, 111, 94, 100)
    assert fills(out) == [("p", 4, 100), ("p.sl", 4, 95)]
    assert d.k.order("p.tp1").state is OrderState.CANCELLED


def test_market_parent_target_hit_in_the_fill_bar_as_maker() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", S, MKT, 4, bracket=bracket(106, (95, 1), (90, 3)))
    out = d.bar(100, 102, 93, 94)  # short at 100, tp1 95 reached, tp2 90 not, stop 106 not
    assert fills(out) == [("p", 4, 100), ("p.tp1", 1, 95)]
    tp = of(out, m.OrderFilled)[1]
    assert tp.liquidity is Liquidity.MAKER
    assert d.k.position("BTC").qty == -3
    assert d.k.order("p.sl").qty == 4 and d.k.order("p.sl").state is OrderState.SUBMITTED
    out = d.bar(94, 95, 89, 90)  # next bar: tp2 fills, the stop is cancelled (flat)
    assert fills(out) == [("p.tp2", 3, 90)]
    assert d.k.order("p.sl").state is OrderState.CANCELLED


def test_stop_gapped_through_counts_as_an_open_fill() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, STP, 2, trigger_price=102, bracket=bracket(97, (108, 2)))
    out = d.bar(104, 109, 103, 105)  # gaps over 102: entry at the open 104, target 108 reached
    assert fills(out) == [("p", 2, 104), ("p.tp1", 2, 108)]
    assert d.k.position("BTC").qty == 0


def test_intrabar_limit_parent_lets_only_the_stop_fill_at_its_price() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, LMT, 3, price=98, bracket=bracket(95, (103, 3)))
    out = d.bar(100, 104, 93, 94)  # entry at 98 inside the bar; 95 reached after it
    assert fills(out) == [("p", 3, 98), ("p.sl", 3, 95)]
    assert d.k.order("p.tp1").state is OrderState.CANCELLED


def test_intrabar_limit_parent_target_waits_for_the_next_bar() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, LMT, 3, price=98, bracket=bracket(95, (103, 3)))
    out = d.bar(100, 104, 97, 102)  # touches 98 and 103, not 95: the target does not fill
    assert fills(out) == [("p", 3, 98)]
    assert d.k.order("p.tp1").state is OrderState.SUBMITTED
    out = d.bar(102, 103, 101, 102)
    assert fills(out) == [("p.tp1", 3, 103)]
    # the target was not live through the fill bar, so it is not resting: first-bar rules
    assert of(out, m.OrderFilled)[0].liquidity is Liquidity.MAKER


def test_intrabar_stop_parent_stop_below_the_open_uses_the_stop_price() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("p", B, STP, 1, trigger_price=103, bracket=bracket(99))
    out = d.bar(100, 104, 98, 103)  # entry 103 inside; 99 in range: pessimistic stop at 99
    assert fills(out) == [("p", 1, 103), ("p.sl", 1, 99)]


def test_latency_inside_the_bar_degrades_to_the_intrabar_rule() -> None:
    d = Driver(SimVenue(latency_ns=H // 2))
    d.bar(100, 101, 99, 100)
    d.submit("p", B, MKT, 2, bracket=bracket(95, (105, 2)))  # arrives at 1.5h
    out = d.bar(100, 106, 94, 100)  # bar 2h: parent at the open, children arrive at 2.5h
    assert fills(out) == [("p", 2, 100), ("p.sl", 2, 95)]  # target 106 >= 105 not live


def test_latency_past_the_bar_end_starts_children_on_a_later_bar() -> None:
    d = Driver(SimVenue(latency_ns=2 * H))
    d.bar(100, 101, 99, 100)
    d.submit("p", B, MKT, 2, bracket=bracket(95, (105, 2)))  # arrives at 3h
    d.bar(100, 101, 99, 100)
    out = d.bar(100, 106, 94, 100)  # bar 3h: parent fills; children arrive at 5h
    assert fills(out) == [("p", 2, 100)]
    assert d.k.order("p.sl").state is OrderState.SUBMITTED
    assert fills(d.bar(100, 101, 94, 100)) == []  # 4h: still travelling
    assert fills(d.bar(100, 101, 94, 100)) == [("p.sl", 2, 95)]  # 5h


@given(
    st.lists(
        st.tuples(st.integers(60, 140), st.integers(0, 12), st.integers(0, 12), st.integers(0, 24)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([MKT, LMT, STP]),
    st.sampled_from([B, S]),
    st.integers(-6, 6),
    st.integers(1, 8),
    st.integers(1, 8),
)
def test_children_fill_inside_their_bar_never_both_and_never_flip(
    bars: list[tuple[int, int, int, int]],
    ot: OrderType,
    side: Side,
    entry_off: int,
    sl_dist: int,
    tp_dist: int,
) -> None:
    d = Driver(SimVenue(slippage_ticks=1))
    d.bar(100, 101, 99, 100)
    entry = 100 + entry_off
    sign = 1 if side is B else -1
    kw: dict[str, int] = {}
    if ot is LMT:
        kw["price"] = entry
    elif ot is STP:
        kw["trigger_price"] = entry
    d.submit("p", side, ot, 5, bracket=bracket(entry - sign * sl_dist, (entry + sign * tp_dist, 5)))
    for o, up, down, c in bars:
        hi, lo = o + up, max(1, o - down)
        close = min(max(o + c - 12, lo), hi)
        out = d.bar(o, hi, lo, close)
        for f in of(out, m.OrderFilled):
            assert lo <= f.price <= hi, (f, o, hi, lo)
        pos = d.k.position("BTC").qty
        assert 0 <= sign * pos <= 5  # reduce-only children never flip the position
    filled = {e.client_order_id for e in of(d.events, m.OrderFilled)}
    assert not {"p.sl", "p.tp1"} <= filled  # one exit leg only (OCO by reduce-only + flat)
    if filled & {"p.sl", "p.tp1"}:
        assert "p" in filled
