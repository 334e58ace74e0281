"""CcxtVenue against a local fake Binance order API: ambiguous outcomes stay in flight and are
resolved by client id, never doubled; rejections only with venue evidence."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fake_order_exchange import API_KEY, FakeOrderExchange

from order_kernel import messages as m
from order_kernel.credentials import ApiCredentials, Secret
from order_kernel.instruments import InstrumentSpec
from order_kernel.reconcile import VenueOrderStatus
from order_kernel.spec import OrderType, Reason, Side
from order_kernel.venues.ccxt_venue import (
    CcxtVenue,
    Outcome,
    VenueAdapterError,
    VenueResult,
    make_exchange,
    venue_client_id,
)

SYM = "BTC/USDT"
API_SECRET = "fake-secret-SK-do-not-print"
INST = {SYM: InstrumentSpec(SYM, Decimal("0.01"), Decimal("0.001"))}
MARK_TICKS = 10_000  # the fake's mark price 100.00


class Clock:
    """Injected monotonic clock: tests decide when the receive window has passed."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def _venue(fx: FakeOrderExchange, clock: Clock, *, recv_window_ns: int = 0) -> CcxtVenue:
    ex = make_exchange(
        "binance",
        ApiCredentials("binance", Secret(API_KEY), Secret(API_SECRET)),
        api_url=fx.url,
        timeout_ms=150,
        rate_limit_ms=0,
    )
    sleeps: list[float] = []
    v = CcxtVenue(ex, INST, clock_ns=clock, sleep=sleeps.append, recv_window_ns=recv_window_ns)
    v.sleeps = sleeps  # type: ignore[attr-defined]
    return v


def _cmd(cid: str, *, market: bool = False, qty: int = 1000, price: int = 9_000) -> m.SubmitOrder:
    return m.SubmitOrder(
        session_id="s",
        seq=1,
        ts_ns=0,
        client_order_id=cid,
        symbol=SYM,
        side=Side.BUY,
        order_type=OrderType.MARKET if market else OrderType.LIMIT,
        qty=qty,
        price=None if market else price,
    )


def _settle(v: CcxtVenue, r: VenueResult, clock: Clock, limit: int = 50) -> VenueResult:
    for _ in range(limit):
        if r.outcome is not Outcome.IN_FLIGHT:
            return r
        clock.t += 1
        r = v.resolve(r.client_order_id)
    raise AssertionError(f"{r.client_order_id} still in flight after {limit} resolves")


@pytest.fixture
def fx() -> Iterator[FakeOrderExchange]:
    with FakeOrderExchange(delay_s=0.25) as fake:
        yield fake


def test_submit_query_cancel_open_orders(fx: FakeOrderExchange) -> None:
    v = _venue(fx, Clock())
    rest = v.submit(_cmd("rest"))
    fill = v.submit(_cmd("mkt", market=True, qty=2500))
    assert rest.outcome is Outcome.ACCEPTED and rest.order is not None
    assert rest.order.status is VenueOrderStatus.OPEN
    assert fill.order is not None and fill.order.status is VenueOrderStatus.FILLED
    assert (fill.order.filled_qty, fill.order.fill_cost) == (2500, 2500 * MARK_TICKS)
    assert [o.client_order_id for o in v.open_orders(SYM)] == ["rest"]
    assert v.query("nope", SYM) is None
    c = v.cancel("rest", SYM)
    assert c.outcome is Outcome.ACCEPTED and c.order is not None
    assert c.order.status is VenueOrderStatus.CANCELLED
    gone = v.cancel("mkt", SYM)  # filled meanwhile: the query says so, not a failure
    assert gone.order is not None and gone.order.status is VenueOrderStatus.FILLED
    assert v.cancel("never", SYM).outcome is Outcome.NOT_FOUND
    assert v.open_orders(SYM) == []


@pytest.mark.parametrize("fault", ["drop_after", "timeout_after", "5xx_after"])
@pytest.mark.parametrize("market", [True, False], ids=["market", "limit"])
def test_ambiguous_after_accept_stays_in_flight_then_resolves(
    fx: FakeOrderExchange, fault: str, market: bool
) -> None:
    fx.script.append(fault)
    clock = Clock()
    v = _venue(fx, clock)
    r = v.submit(_cmd("a", market=market))
    assert r.outcome is Outcome.IN_FLIGHT and r.reason is Reason.VENUE_TIMEOUT
    assert v.in_flight() == ["a"]
    done = _settle(v, r, clock)
    assert done.outcome is Outcome.ACCEPTED and done.order is not None
    assert done.order.venue_order_id == "1"
    assert len(fx.by_client_id("a")) == 1  # never sent twice: the query found it
    assert v.in_flight() == []


@pytest.mark.parametrize("fault", ["5xx_before", "drop_before"])
def test_ambiguous_before_processing_is_resent_only_after_the_receive_window(
    fx: FakeOrderExchange, fault: str
) -> None:
    fx.script.append(fault)
    clock = Clock()
    v = _venue(fx, clock, recv_window_ns=1_000)
    r = v.submit(_cmd("b", market=True))
    assert r.outcome is Outcome.IN_FLIGHT
    clock.t = 500  # the request could still arrive: no resend
    again = v.resolve("b")
    assert again.outcome is Outcome.IN_FLIGHT and fx.by_client_id("b") == []
    clock.t = 1_000
    done = v.resolve("b")
    assert done.outcome is Outcome.ACCEPTED
    assert len(fx.by_client_id("b")) == 1


def test_rate_limit_is_retried_with_backoff(fx: FakeOrderExchange) -> None:
    fx.script.extend(["429", "429"])
    v = _venue(fx, Clock())
    r = v.submit(_cmd("c"))
    assert r.outcome is Outcome.ACCEPTED
    assert v.sleeps == [0.05, 0.1]  # type: ignore[attr-defined]
    assert len(fx.by_client_id("c")) == 1


def test_rejection_carries_venue_evidence(fx: FakeOrderExchange) -> None:
    v = _venue(fx, Clock())
    r = v.submit(_cmd("big", qty=60_000))  # 60 BTC > the fake's balance
    assert r.outcome is Outcome.REJECTED and r.reason is Reason.INSUFFICIENT_FUNDS
    assert "insufficient balance" in r.detail
    assert fx.rejections["big"]


def test_duplicate_client_id_of_a_working_order_is_not_a_rejection(
    fx: FakeOrderExchange,
) -> None:
    v = _venue(fx, Clock())
    first = v.submit(_cmd("dup"))
    v2 = _venue(fx, Clock())  # e.g. a restarted process that lost its in-flight table
    second = v2.submit(_cmd("dup"))
    assert second.outcome is Outcome.IN_FLIGHT
    done = v2.resolve("dup")
    assert done.outcome is Outcome.ACCEPTED and done.order == first.order
    assert len(fx.by_client_id("dup")) == 1


def test_a_blind_retry_would_double_the_order(fx: FakeOrderExchange) -> None:
    """The fake really punishes blind retries: after a dropped answer to a filled market order,
    resending the same client id creates a second order (Binance semantics)."""
    fx.script.append("drop_after")
    v = _venue(fx, Clock())
    cmd = _cmd("blind", market=True)
    assert v.submit(cmd).outcome is Outcome.IN_FLIGHT
    v._in_flight.clear()  # what a naive adapter does: forget and resend
    assert v.submit(cmd).outcome is Outcome.ACCEPTED
    assert len(fx.by_client_id("blind")) == 2


def test_client_id_mapping_is_stable_and_round_trips(fx: FakeOrderExchange) -> None:
    long_id = "strategy-rsi-reversion.v3/entry#" + "x" * 40
    mapped = venue_client_id(long_id)
    assert mapped == venue_client_id(long_id) and mapped.startswith("ok-") and len(mapped) == 35
    assert venue_client_id("p.sl") == "p.sl"
    v = _venue(fx, Clock())
    assert v.submit(_cmd(long_id)).outcome is Outcome.ACCEPTED
    assert fx.by_client_id(mapped)
    q = v.query(long_id, SYM)
    assert q is not None and q.client_order_id == long_id
    snap = v.snapshot(7, {long_id: SYM})
    assert [o.client_order_id for o in snap.orders] == [long_id]
    assert snap.positions is None


def test_unsupported_orders_and_symbols_are_refused_locally(fx: FakeOrderExchange) -> None:
    v = _venue(fx, Clock())
    stop = m.SubmitOrder(
        session_id="s",
        seq=1,
        ts_ns=0,
        client_order_id="st",
        symbol=SYM,
        side=Side.SELL,
        order_type=OrderType.STOP,
        qty=1,
        trigger_price=9000,
    )
    with pytest.raises(VenueAdapterError, match=r"'st'.*STOP"):
        v.submit(stop)
    with pytest.raises(VenueAdapterError, match="ETH/USDT"):
        v.query("x", "ETH/USDT")
    with pytest.raises(VenueAdapterError, match="not in flight"):
        v.resolve("x")


def test_secrets_never_appear_in_results(fx: FakeOrderExchange) -> None:
    fx.script.extend(["5xx_after", "drop_after"])
    v = _venue(fx, Clock())
    results = [v.submit(_cmd("s1")), v.submit(_cmd("s2")), v.submit(_cmd("s3", qty=99_000))]
    text = repr(results) + repr(v.exchange.__dict__.get("headers"))
    assert API_SECRET not in text and "signature=" not in text.replace("signature=<redacted>", "")


# ---------------------------------------------------------------- soak


def _soak(n: int, seed: int) -> None:
    faults = {
        "none": 0.70,
        "drop_after": 0.06,
        "timeout_after": 0.02,
        "5xx_after": 0.05,
        "5xx_before": 0.04,
        "drop_before": 0.04,
        "429": 0.05,
    }
    query_faults = {"none": 0.9, "drop": 0.04, "5xx": 0.04, "timeout": 0.02}
    rng = random.Random(seed)
    clock = Clock()
    with FakeOrderExchange(seed=seed, faults=faults, query_faults=query_faults, delay_s=0.2) as fx:
        v = _venue(fx, clock, recv_window_ns=3)
        outcomes: dict[str, VenueResult] = {}
        for i in range(n):
            cid = f"o{i}"
            market = rng.random() < 0.5
            qty = 60_000 if rng.random() < 0.03 else rng.randrange(1, 5_000)
            price = rng.choice([9_000, 10_000, 11_000])
            r = _settle(v, v.submit(_cmd(cid, market=market, qty=qty, price=price)), clock)
            outcomes[cid] = r
            if rng.random() < 0.1 and r.outcome is Outcome.ACCEPTED:
                v.cancel(cid, SYM)
        duplicates = [c for c in outcomes if len(fx.by_client_id(c)) > 1]
        unproven = [
            c
            for c, r in outcomes.items()
            if r.outcome is Outcome.REJECTED and not fx.rejections.get(c)
        ]
        assert duplicates == []
        assert unproven == []
        assert max(fx.open_count(c) for c in outcomes) <= 1
        for c, r in outcomes.items():
            if r.outcome is Outcome.ACCEPTED:
                assert r.order is not None and len(fx.by_client_id(c)) == 1
        assert v.in_flight() == []
        # the faults did happen, after acceptance too
        for kind in ("drop_after", "5xx_after", "5xx_before", "429"):
            assert fx.faults_done.get(kind, 0) > 0, kind


def test_soak_no_duplicates_no_unproven_rejections() -> None:
    _soak(300, seed=1)


@pytest.mark.slow
def test_soak_long() -> None:
    _soak(int(os.environ.get("STRATAGEM_CCXT_SOAK", "10000")), seed=2)
