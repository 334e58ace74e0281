"""SimVenue fill rules, one test per rule, through the kernel (as the backtest uses them)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ok_helpers import Driver, of

from order_kernel import messages as m
from order_kernel.errors import ConfigError
from order_kernel.spec import Liquidity, OrderState, OrderType, Reason, Side, TimeInForce
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
MKT, LMT, STP, STL = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT


def fills(events: list[m.Event]) -> list[tuple[str, int, int]]:
    return [(f.client_order_id, f.qty, f.price) for f in of(events, m.OrderFilled)]


def test_order_is_never_filled_on_the_bar_it_was_decided_on() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 5)
    assert d.k.order("a").state is OrderState.SUBMITTED
    out = d.bar(103, 105, 102, 104)
    assert fills(out) == [("a", 5, 103)]  # next bar's open


def test_market_slippage_fixed_ticks_and_bps_clamped_to_the_bar() -> None:
    d = Driver(SimVenue(slippage_ticks=2, slippage_bps=100))  # 2 ticks + ceil(1% of 100) = 3
    d.bar(100, 100, 100, 100)
    d.submit("a", B, MKT, 1)
    assert fills(d.bar(100, 110, 95, 100)) == [("a", 1, 103)]
    d.submit("b", SL, MKT, 1)
    assert fills(d.bar(100, 101, 99, 100)) == [("b", 1, 99)]  # 97 clamped to the bar's low


def test_seeded_random_slippage_is_reproducible() -> None:
    def run(seed: int) -> list[int]:
        d = Driver(SimVenue(random_slippage_ticks=5, seed=seed))
        d.bar(100, 100, 100, 100)
        prices = []
        for i in range(10):
            d.submit(f"o{i}", B, MKT, 1)
            prices += [p for _, _, p in fills(d.bar(100, 200, 90, 100))]
        return prices

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert all(100 <= p <= 105 for p in run(3))


def test_limit_fills_when_touched_at_the_better_of_open_and_limit() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 2, price=95)
    assert fills(d.bar(100, 101, 96, 97)) == []  # never reached 95
    out = d.bar(97, 98, 95, 96)  # low == limit: fills at the limit, maker (resting)
    assert fills(out) == [("a", 2, 95)]
    assert of(out, m.OrderFilled)[0].liquidity is Liquidity.MAKER
    d.submit("b", B, LMT, 1, price=95)
    d.bar(96, 97, 96, 96)
    out = d.bar(90, 92, 88, 91)  # gap through the limit: fills at the better open
    assert fills(out) == [("b", 1, 90)]


def test_marketable_limit_on_its_first_bar_takes_at_the_open() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", SL, LMT, 1, price=95)
    out = d.bar(98, 99, 97, 98)
    assert fills(out) == [("a", 1, 98)]
    assert of(out, m.OrderFilled)[0].liquidity is Liquidity.TAKER


def test_stop_triggers_at_price_equal_to_stop_and_fills_at_worse_of_open_and_stop() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("s", SL, STP, 1, trigger_price=95)
    assert of(d.bar(99, 100, 96, 97), m.OrderTriggered) == []
    out = d.bar(97, 98, 95, 96)  # low == stop: triggers
    assert [t.trigger_price for t in of(out, m.OrderTriggered)] == [95]
    assert fills(out) == [("s", 1, 95)]
    d.submit("b", B, STP, 1, trigger_price=105)
    out = d.bar(110, 112, 108, 111)  # gap above the stop: the worse (open) price
    assert fills(out) == [("b", 1, 110)]


def test_stop_limit_triggers_then_acts_as_a_limit() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, STL, 1, trigger_price=105, price=106)
    out = d.bar(100, 107, 99, 106)  # trigger 105 within the limit: fills at 105
    assert fills(out) == [("a", 1, 105)]
    d.submit("b", B, STL, 1, trigger_price=105, price=106)
    out = d.bar(110, 111, 109, 110)  # gapped above the limit: triggered, rests
    assert fills(out) == [] and of(out, m.OrderTriggered)
    assert d.k.order("b").state is OrderState.TRIGGERED
    out = d.bar(108, 109, 104, 105)  # now a resting limit at 106
    assert fills(out) == [("b", 1, 106)]


def test_adverse_leg_fills_first_when_a_bar_touches_stop_and_target() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    bracket = m.Bracket(stop_loss=95, take_profits=(m.TakeProfitLeg(price=110, qty=4),))
    d.submit("p", B, MKT, 4, bracket=bracket)
    d.bar(100, 101, 99, 100)  # parent fills; children start next bar
    out = d.bar(100, 111, 94, 100)  # touches both 95 and 110
    assert fills(out) == [("p.sl", 4, 95)]
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["p.tp1"]
    assert d.k.position("BTC").qty == 0


def test_no_fill_at_a_price_the_bar_never_reached() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("l", B, LMT, 1, price=98)
    d.submit("s", B, STP, 1, trigger_price=103)
    assert fills(d.bar(100, 102, 99, 101)) == []
    assert d.k.order("l").state is OrderState.SUBMITTED


@given(
    st.lists(
        st.tuples(st.integers(50, 150), st.integers(0, 10), st.integers(0, 10), st.integers(0, 20)),
        min_size=2,
        max_size=12,
    ),
    st.sampled_from([MKT, LMT, STP, STL]),
    st.sampled_from([B, SL]),
    st.integers(60, 140),
)
def test_every_fill_is_inside_its_bar_and_after_submission(
    bars: list[tuple[int, int, int, int]], ot: OrderType, side: Side, px: int
) -> None:
    d = Driver(SimVenue(slippage_ticks=3))
    d.bar(100, 100, 100, 100)
    kw: dict[str, Any] = {}
    if ot in (LMT, STL):
        kw["price"] = px
    if ot in (STP, STL):
        kw["trigger_price"] = px + (3 if side is B else -3)
    d.submit("o", side, ot, 5, **kw)
    for o, up, dn, c in bars:
        hi, lo = o + up, max(1, o - dn)
        close = min(max(c + lo, lo), hi)
        for f in of(d.bar(o, hi, lo, close), m.OrderFilled):
            assert lo <= f.price <= hi
            assert f.ts_ns > 1 * 3_600_000_000_000  # never the decision bar
            if ot is LMT:
                assert f.price <= px if side is B else f.price >= px


def test_reduce_only_is_clamped_and_cancelled_when_flat() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("e", B, MKT, 3)
    d.bar(100, 101, 99, 100)
    d.submit("r1", SL, LMT, 5, price=105, reduce_only=True)
    d.submit("r2", SL, STP, 5, trigger_price=90, reduce_only=True)
    out = d.bar(100, 106, 99, 105)
    assert fills(out) == [("r1", 3, 105)]  # clamped to the 3-lot position
    assert {c.client_order_id for c in of(out, m.OrderCancelled)} == {"r1", "r2"}
    assert d.k.position("BTC").qty == 0


def test_reduce_only_that_would_open_is_denied() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    out = d.submit("r", SL, MKT, 1, reduce_only=True)
    assert of(out, m.OrderDenied)[0].reason is Reason.REDUCE_ONLY_VIOLATION


def test_explicit_oco_fill_cancels_siblings() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 1, price=95, oco_group="g")
    d.submit("b", B, STP, 1, trigger_price=110, oco_group="g")
    out = d.bar(100, 101, 94, 96)
    assert fills(out) == [("a", 1, 95)]
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["b"]
    assert fills(d.bar(100, 120, 99, 115)) == []


def test_ioc_fills_what_it_can_at_once_and_cancels_the_rest() -> None:
    d = Driver(SimVenue(participation_bps=1000))  # 10% of volume
    d.bar(100, 101, 99, 100)
    d.submit("i", B, MKT, 50, tif=TimeInForce.IOC)
    out = d.bar(100, 101, 99, 100, volume=200)
    assert fills(out) == [("i", 20, 100)]
    cancels = of(out, m.OrderCancelled)
    assert [c.client_order_id for c in cancels] == ["i"] and cancels[0].detail == "IOC remainder"
    d.submit("j", B, LMT, 1, price=95, tif=TimeInForce.IOC)  # not marketable at the open
    out = d.bar(100, 101, 90, 100)
    assert fills(out) == [] and of(out, m.OrderCancelled)


def test_fok_is_all_or_nothing() -> None:
    d = Driver(SimVenue(participation_bps=1000))
    d.bar(100, 101, 99, 100)
    d.submit("f", B, MKT, 50, tif=TimeInForce.FOK)
    out = d.bar(100, 101, 99, 100, volume=200)
    assert fills(out) == []
    assert of(out, m.OrderCancelled)[0].reason is Reason.FOK_NOT_FILLABLE
    d.submit("g", B, MKT, 10, tif=TimeInForce.FOK)
    assert fills(d.bar(100, 101, 99, 100, volume=200)) == [("g", 10, 100)]


def test_volume_participation_splits_fills_across_bars() -> None:
    d = Driver(SimVenue(participation_bps=5000))
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 10)
    d.submit("b", B, MKT, 10)
    out = d.bar(100, 101, 99, 100, volume=12)  # budget 6 lots for both orders together
    assert fills(out) == [("a", 6, 100)]
    out = d.bar(101, 102, 100, 101, volume=40)  # budget 20
    assert fills(out) == [("a", 4, 101), ("b", 10, 101)]
    assert of(out, m.OrderFilled)[0].partial is False


def test_gtd_expires_at_the_first_bar_at_or_after_the_deadline() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    h = 3_600_000_000_000
    d.submit("g", B, LMT, 1, price=90, tif=TimeInForce.GTD, expire_ts_ns=3 * h)
    assert of(d.bar(100, 101, 99, 100), m.OrderExpired) == []
    out = d.bar(100, 101, 80, 100)  # ts == deadline: expired before matching
    assert [e.client_order_id for e in of(out, m.OrderExpired)] == ["g"] and fills(out) == []


def test_post_only_rejected_or_cancelled_if_it_would_take() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    out = d.submit("p", B, LMT, 1, price=101, post_only=True)
    assert of(out, m.OrderRejected)[0].reason is Reason.POST_ONLY_WOULD_TAKE
    d.submit("q", B, LMT, 1, price=99, post_only=True)
    out = d.bar(98, 99, 97, 98)  # opens through the limit: would take
    assert of(out, m.OrderCancelled)[0].reason is Reason.POST_ONLY_WOULD_TAKE
    d.submit("r", B, LMT, 1, price=97, post_only=True)
    out = d.bar(98, 99, 96, 97)
    assert fills(out) == [("r", 1, 97)] and of(out, m.OrderFilled)[0].liquidity is Liquidity.MAKER


def test_fees_maker_and_taker_rounded_up() -> None:
    d = Driver()
    d.bar(1000, 1001, 999, 1000)
    d.submit("t", B, MKT, 7)  # taker 5 bps of 7000 = 3.5 -> 4
    f = of(d.bar(1000, 1001, 999, 1000), m.OrderFilled)[0]
    assert f.fee == 4
    d.submit("mk", SL, LMT, 7, price=1001)  # maker 2 bps of 7007 = 1.4014 -> 2
    d.bar(1000, 1000, 999, 1000)
    f = of(d.bar(1000, 1001, 999, 1000), m.OrderFilled)[0]
    assert (f.fee, f.liquidity) == (2, Liquidity.MAKER)
    assert d.k.position("BTC").fees_paid == 6


def test_perp_funding_is_paid_by_longs_at_funding_times() -> None:
    d = Driver(
        SimVenue(funding_rate_ppb=100_000, funding_interval_ns=4 * 3_600_000_000_000), kind="perp"
    )
    d.bar(1000, 1001, 999, 1000)  # t=1h
    d.submit("a", B, MKT, 10)
    applied: list[m.FundingApplied] = []
    for _ in range(8):  # t=2h..9h: funding at 4h and 8h
        applied += of(d.bar(1000, 1001, 999, 1000), m.FundingApplied)
    assert [(f.ts_ns // 3_600_000_000_000, f.amount) for f in applied] == [(4, 1), (8, 1)]
    assert d.k.position("BTC").funding_paid == 2
    assert SimVenue.funding_amount(-10, 1000, 100_000) == -1  # shorts receive


def test_spot_pays_no_funding() -> None:
    d = Driver(SimVenue(funding_rate_ppb=100_000))
    d.bar(1000, 1001, 999, 1000)
    d.submit("a", B, MKT, 10)
    for _ in range(10):
        assert of(d.bar(1000, 1001, 999, 1000), m.FundingApplied) == []


def test_latency_delays_the_first_matching_bar() -> None:
    h = 3_600_000_000_000
    d = Driver(SimVenue(latency_ns=h + 1))  # arrives just after the next bar opens
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 1)  # at t = 1h: arrives at 2h + 1 ns
    assert fills(d.bar(101, 102, 100, 101)) == []  # bar at 2h: not there yet
    assert fills(d.bar(105, 106, 104, 105)) == [("a", 1, 105)]


def test_trailing_stop_follows_the_high_and_never_moves_back() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("e", B, MKT, 2)
    d.bar(100, 101, 99, 100)
    d.submit(
        "t", SL, STP, 2, trigger_price=90, reduce_only=True, trailing=m.Trailing(offset_ticks=5)
    )
    d.bar(100, 101, 99, 100)  # first bar: trigger -> max(90, 101 - 5) = 96
    assert d.k.order("t").trigger_price == 96
    d.bar(100, 110, 99, 108)
    assert d.k.order("t").trigger_price == 105
    d.bar(108, 109, 106, 107)  # lower high: the stop does not move back
    assert d.k.order("t").trigger_price == 105
    out = d.bar(107, 108, 104, 104)
    assert fills(out) == [("t", 2, 105)]
    assert d.k.order("t").state is OrderState.FILLED


def test_trailing_buy_stop_in_bps_follows_the_low() -> None:
    d = Driver()
    d.bar(1000, 1001, 999, 1000)
    d.submit("t", B, STP, 1, trigger_price=1100, trailing=m.Trailing(offset_bps=100))
    d.bar(1000, 1001, 950, 960)  # 950 + ceil(9.5) = 960
    assert d.k.order("t").trigger_price == 960
    out = d.bar(961, 970, 955, 965)  # high 970 >= 960: triggers at the worse of open and stop
    assert fills(out) == [("t", 1, 961)]


def test_venue_configuration_is_validated() -> None:
    import pytest

    from order_kernel.errors import ConfigError

    for kw in (
        {"slippage_ticks": -1},
        {"participation_bps": 0},
        {"participation_bps": 10_001},
        {"funding_interval_ns": 0},
        {"funding_rate_ppb": 2_000_000_000},
        {"latency_ns": -5},
    ):
        with pytest.raises(ConfigError):
            SimVenue(**kw)
    v = SimVenue(funding_rate_ppb={"BTC": 10})
    v.set_funding_rate("ETH", 20)
    assert (v.funding_rate_ppb("BTC"), v.funding_rate_ppb("ETH"), v.funding_rate_ppb("X")) == (
        10,
        20,
        0,
    )
    with pytest.raises(ConfigError):
        SimVenue(funding_rate_ppb=5).set_funding_rate("BTC", 1)


def test_funding_schedule_rate_per_settlement_and_bad_schedules() -> None:
    v = SimVenue(funding_rate_ppb={"BTC": 7})
    assert v.funding_rate_ppb("BTC", 100) == 7  # no schedule: the constant
    v.set_funding_schedule("BTC", [100, 200, 400], [5, -3, 9])
    got = [v.funding_rate_ppb("BTC", t) for t in (99, 100, 199, 200, 300, 400, 10**9)]
    assert got == [0, 5, 5, -3, -3, 9, 9]  # newest entry at or before; 0 before the first
    assert v.funding_rate_ppb("ETH", 300) == 0
    with pytest.raises(ConfigError, match=r"entry 1 .* is not after entry 0"):
        v.set_funding_schedule("BTC", [100, 100], [1, 2])
    with pytest.raises(ConfigError, match="2 times but 1 rates"):
        v.set_funding_schedule("BTC", [100, 200], [1])
    with pytest.raises(ConfigError, match="entry 0 rate"):
        v.set_funding_schedule("BTC", [100], [2_000_000_000])
