"""Live amends (`LiveRoute` + `CcxtVenue.amend`): an AmendOrder of an order resting at the local
fake Binance is edited there through the transition table (PENDING_AMEND -> AmendAccepted /
AmendRejected), survives ambiguous answers and restarts without a second edit, keeps the
kernel's client id on the replacement a cancel-replace creates, and is rejected with the fix
where the exchange cannot edit."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fake_order_exchange import API_KEY, FakeOrderExchange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_kernel import messages as m
from order_kernel.config import parse_config
from order_kernel.credentials import ApiCredentials, Secret
from order_kernel.kernel import OrderKernel
from order_kernel.live import LiveRoute, session_client_id
from order_kernel.log import OrderLog
from order_kernel.spec import OrderState, OrderType, Reason, Side
from order_kernel.venues.ccxt_venue import CcxtVenue, make_exchange
from order_kernel.venues.sim import SimVenue

SID = "s1"
SYM = "BTC/USDT"
API_SECRET = "fake-secret-SK-amend-never-logged"
TOML = """
[venue]
kind = "ccxt"
exchange = "binance"
api_url = "{url}"

[[instruments]]
symbol = "BTC/USDT"
price_increment = "0.01"
size_increment = "0.001"
"""


@pytest.fixture
def fx() -> Iterator[FakeOrderExchange]:
    with FakeOrderExchange(delay_s=0.25) as fake:
        yield fake


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class Live:
    """One live session: a kernel (optionally logged) and a route to the fake exchange."""

    def __init__(
        self,
        fx: FakeOrderExchange,
        log_path: Path | None = None,
        *,
        edit_replaces: bool | None = None,
        can_edit: bool = True,
        recv_window_ns: int = 0,
        clock: Clock | None = None,
    ) -> None:
        ex = make_exchange(
            "binance",
            ApiCredentials("binance", Secret(API_KEY), Secret(API_SECRET)),
            api_url=fx.url,
            timeout_ms=150,
            rate_limit_ms=0,
        )
        if not can_edit:
            ex.has = {**ex.has, "editOrder": False}
        self.inst = parse_config(TOML.format(url=fx.url)).instrument_specs()
        self.clock = clock or Clock()
        venue = CcxtVenue(
            ex,
            self.inst,
            clock_ns=self.clock,
            sleep=lambda s: None,
            recv_window_ns=recv_window_ns,
            edit_replaces=edit_replaces,
        )
        self.route = LiveRoute(venue, poll_interval_ns=1)
        self.log_path = log_path
        if log_path is not None and log_path.exists():
            self.k = OrderKernel.recover(log_path, SID, self.inst, SimVenue(), live=True)
        else:
            log = OrderLog(log_path, fsync="never") if log_path is not None else None
            self.k = OrderKernel(SID, self.inst, SimVenue(), log=log, live=True)
        self.seq = (self.k._expected_in or 1) if log_path is not None else 1

    def send(self, cls: type[m.Command], **kw: object) -> list[m.Event]:
        cmd = cls(session_id=SID, seq=self.seq, ts_ns=self.seq * 1_000, **kw)  # type: ignore[arg-type]
        self.seq += 1
        return self.k.handle(cmd) + self.route.dispatch(SID, self.k)

    def limit(self, cid: str, qty: int = 1000, price: int = 9_000) -> list[m.Event]:
        return self.send(
            m.SubmitOrder,
            client_order_id=cid,
            symbol=SYM,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            qty=qty,
            price=price,
        )

    def amend(self, cid: str, **kw: object) -> list[m.Event]:
        return self.send(m.AmendOrder, client_order_id=cid, **kw)

    def poll(self) -> list[m.Event]:
        return self.route.poll(SID, self.k)

    def close(self) -> None:
        if self.k.log is not None:
            self.k.log.close()


def kinds(events: list[m.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def vid(cid: str, gen: int = 0) -> str:
    return session_client_id(SID, cid, gen)


def test_amend_is_edited_at_the_venue_and_the_replacement_keeps_the_clients_id(
    tmp_path: Path, fx: FakeOrderExchange
) -> None:
    live = Live(fx, tmp_path / "s1.log")
    assert kinds(live.limit("lim")) == ["OrderAccepted"]
    fx.fill(vid("lim"), Decimal("0.4"), Decimal("90"))  # 0.4 filled before the amend
    ev = live.amend("lim", qty=2000, price=8_900)
    # the fills that happened meanwhile come first, then the edit
    assert kinds(ev) == ["OrderFilled", "PositionUpdate", "AmendAccepted"]
    acc = ev[2]
    assert isinstance(acc, m.AmendAccepted) and (acc.qty, acc.price) == (2000, 8_900)
    (old,) = fx.by_client_id(vid("lim"))
    (new,) = fx.by_client_id(vid("lim", 1))  # Binance cancel-replace: a new order id
    assert old.status == "CANCELED" and old.executed == Decimal("0.4")
    assert (new.qty, new.price, new.status) == (Decimal("1.6"), Decimal("89"), "NEW")
    o = live.k.order("lim")
    assert (o.state, o.qty, o.price, o.filled_qty) == (
        OrderState.PARTIALLY_FILLED,
        2000,
        8_900,
        400,
    )
    assert live.poll() == []  # the replaced order's fills are not counted twice
    fx.fill(vid("lim", 1), Decimal("1.0"), Decimal("89"))
    ev = live.poll()
    assert kinds(ev) == ["OrderFilled", "PositionUpdate"]
    f = ev[0]
    assert isinstance(f, m.OrderFilled) and (f.trade_id, f.qty, f.price) == (
        "live:lim:1400",
        1000,
        8_900,
    )
    digest = live.k.state_digest()
    live.close()
    again = Live(fx, tmp_path / "s1.log")  # replay reproduces the amended order
    assert again.k.state_digest() == digest and again.poll() == []
    ev = again.send(m.CancelOrder, client_order_id="lim")  # the cancel reaches the replacement
    assert kinds(ev) == ["OrderCancelled"] and new.status == "CANCELED"
    assert again.k.order("lim").filled_qty == 1400
    again.close()
    assert API_SECRET.encode() not in (tmp_path / "s1.log").read_bytes()
    assert API_KEY.encode() not in (tmp_path / "s1.log").read_bytes()


def test_an_amend_that_loses_the_race_to_a_fill_sends_no_edit(fx: FakeOrderExchange) -> None:
    live = Live(fx)
    live.limit("a")
    fx.fill(vid("a"), Decimal("1"), Decimal("90"))
    ev = live.amend("a", price=8_000)
    assert kinds(ev) == ["OrderFilled", "PositionUpdate"]
    assert live.k.order("a").state is OrderState.FILLED and len(fx.orders) == 1
    live.limit("b")
    fx.fill(vid("b"), Decimal("0.6"), Decimal("90"))
    ev = live.amend("b", qty=500)  # below what is filled by now
    assert kinds(ev) == ["OrderFilled", "PositionUpdate", "AmendRejected"]
    rej = ev[2]
    assert isinstance(rej, m.AmendRejected) and rej.reason is Reason.INVALID_QTY
    assert "600 lots were filled" in rej.detail
    o = live.k.order("b")
    assert (o.state, o.qty) == (OrderState.PARTIALLY_FILLED, 1000)
    assert fx.by_client_id(vid("b", 1)) == []


@pytest.mark.parametrize("fault", ["timeout_after", "drop_after", "5xx_after"])
def test_an_ambiguous_edit_stays_pending_until_a_query_finds_it(
    fx: FakeOrderExchange, fault: str
) -> None:
    live = Live(fx)
    live.limit("x")
    fx.script.append(fault)
    assert live.amend("x", price=8_800) == []  # unknown: neither accepted nor rejected
    assert live.k.order("x").state is OrderState.PENDING_AMEND
    ev = live.send(m.CancelOrder, client_order_id="x")
    assert kinds(ev) == ["CommandDenied"] and ev[0].reason is Reason.AMEND_PENDING  # type: ignore[union-attr]
    ev = live.poll()
    assert kinds(ev) == ["AmendAccepted"]
    assert len(fx.by_client_id(vid("x", 1))) == 1  # edited once
    assert live.route.venue.amend_in_flight() == []
    o = live.k.order("x")
    assert (o.state, o.price) == (OrderState.SUBMITTED, 8_800)


@pytest.mark.parametrize("fault", ["5xx_before", "drop_before"])
def test_an_edit_that_never_arrived_is_sent_again_after_the_receive_window(
    fx: FakeOrderExchange, fault: str
) -> None:
    clock = Clock()
    live = Live(fx, recv_window_ns=1_000, clock=clock)
    live.limit("y")
    fx.script.append(fault)
    assert live.amend("y", price=8_700) == []
    clock.t = 500  # it could still arrive: look, do not resend
    assert live.poll() == [] and fx.by_client_id(vid("y", 1)) == []
    clock.t = 1_000
    assert kinds(live.poll()) == ["AmendAccepted"]
    assert len(fx.by_client_id(vid("y", 1))) == 1
    (old,) = fx.by_client_id(vid("y"))
    assert old.status == "CANCELED"


def test_an_edit_of_an_order_that_finished_meanwhile_is_rejected_then_applied(
    fx: FakeOrderExchange,
) -> None:
    live = Live(fx)
    live.limit("z")
    fx.script.append("drop_before")  # the edit is lost; then the order fills at the venue
    assert live.amend("z", price=8_500) == []
    fx.fill(vid("z"), Decimal("1"), Decimal("90"))
    ev = live.poll()
    assert kinds(ev) == ["AmendRejected", "OrderFilled", "PositionUpdate"]
    assert "no longer working" in ev[0].detail  # type: ignore[union-attr]
    assert live.k.order("z").state is OrderState.FILLED and fx.by_client_id(vid("z", 1)) == []


def test_a_venue_without_edit_rejects_the_amend_with_the_fix(fx: FakeOrderExchange) -> None:
    live = Live(fx, can_edit=False)  # ccxt's class has no editOrder: nothing is sent
    live.limit("n")
    ev = live.amend("n", price=8_900)
    assert kinds(ev) == ["AmendRejected"]
    rej = ev[0]
    assert isinstance(rej, m.AmendRejected) and rej.reason is Reason.VENUE_REJECTED
    assert "'binance' has no editOrder" in rej.detail
    assert "cancel the order and submit a new one" in rej.detail
    assert live.k.order("n").state is OrderState.SUBMITTED and live.k.order("n").price == 9_000
    assert len(fx.orders) == 1
    fx.edit = "none"  # the exchange itself refuses edits (binance -1020)
    live2 = Live(fx)
    live2.limit("n2")
    ev = live2.amend("n2", price=8_900)
    assert kinds(ev) == ["AmendRejected"]
    assert "not supported" in ev[0].detail  # type: ignore[union-attr]
    assert "cancel the order and submit a new one" in ev[0].detail  # type: ignore[union-attr]
    assert live2.k.order("n2").price == 9_000 and fx.by_client_id(vid("n2", 1)) == []


def test_an_in_place_edit_keeps_the_venue_order(fx: FakeOrderExchange) -> None:
    fx.edit = "in_place"
    live = Live(fx, edit_replaces=False)
    live.limit("p")
    fx.fill(vid("p"), Decimal("0.3"), Decimal("90"))
    ev = live.amend("p", qty=1500, price=8_950)
    assert kinds(ev) == ["OrderFilled", "PositionUpdate", "AmendAccepted"]
    (o,) = fx.by_client_id(vid("p"))  # same order, new terms, fills kept
    assert (o.order_id, o.qty, o.price, o.executed) == (
        1,
        Decimal("1.5"),
        Decimal("89.5"),
        Decimal("0.3"),
    )
    fx.script.append("timeout_after")
    assert live.amend("p", qty=1200) == []
    assert kinds(live.poll()) == ["AmendAccepted"]  # the query shows the new terms
    assert o.qty == Decimal("1.2") and live.k.order("p").qty == 1200


def test_restart_with_an_unrecorded_edit_adopts_the_replacement(
    tmp_path: Path, fx: FakeOrderExchange
) -> None:
    live = Live(fx, tmp_path / "s1.log")
    live.limit("r")
    fx.script.append("timeout_after")  # the edit happens, its answer is lost; then we stop
    assert live.amend("r", price=8_600) == []
    live.close()
    again = Live(fx, tmp_path / "s1.log")
    assert again.k.order("r").state is OrderState.PENDING_AMEND
    snap = again.route.session(SID).snapshot(again.k.now_ns, again.k.venue_order_ids())
    (vo,) = snap.orders  # the replacement, reported as the kernel's order (not "cancelled")
    assert vo.client_order_id == "r" and vo.status.name == "OPEN"
    assert kinds(again.poll()) == ["AmendAccepted"]  # settled by client id, no second edit
    assert len(fx.by_client_id(vid("r", 1))) == 1 and fx.by_client_id(vid("r", 2)) == []
    o = again.k.order("r")
    assert (o.state, o.price) == (OrderState.SUBMITTED, 8_600)
    again.close()


# ---------------------------------------------------------------- property

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("amend"), st.integers(1, 4), st.integers(-3, 3)),
        st.tuples(st.just("fill"), st.integers(1, 3), st.just(0)),
        st.tuples(
            st.just("fault"),
            st.sampled_from(["timeout_after", "drop_after", "5xx_after", "drop_before"]),
            st.just(0),
        ),
        st.tuples(st.just("poll"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=7,
)


def _venue_view(fx: FakeOrderExchange, cid: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(total qty, filled, price, fill cost) of one kernel order across its generations."""
    gens = []
    g = 0
    while hits := fx.by_client_id(vid(cid, g)):
        (o,) = hits
        gens.append(o)
        g += 1
    cur = gens[-1]
    filled = sum((o.executed for o in gens), Decimal(0))
    carried = sum((o.executed for o in gens[:-1]), Decimal(0))
    assert cur.price is not None
    return carried + cur.qty, filled, cur.price, sum((o.quote for o in gens), Decimal(0))


_CASE = [0]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_any_interleaving_of_amends_fills_and_faults_ends_equal_to_the_venue(
    fx: FakeOrderExchange, ops: list[tuple[str, int | str, int]]
) -> None:
    """Whatever the order of amends, venue fills and lost/late answers, after the route has
    settled everything the kernel's qty, price, fills and cost equal the exchange's view."""
    _CASE[0] += 1
    cid = f"h{_CASE[0]}"
    fx.script.clear()
    live = Live(fx)
    live.limit(cid, qty=4000, price=9_000)
    for op, a, b in ops:
        o = live.k.order(cid)
        if o.state in (OrderState.FILLED, OrderState.CANCELLED):
            break
        if op == "amend":
            live.amend(cid, qty=o.filled_qty + int(a) * 500, price=9_000 + int(b) * 10)
        elif op == "fill" and o.state is not OrderState.PENDING_AMEND:
            (venue_order,) = [w for w in fx.working() if w.client_id.startswith(vid(cid))]
            lots = min(Decimal(int(a)) * Decimal("0.25"), venue_order.qty - venue_order.executed)
            fx.fill(venue_order.client_id, lots, venue_order.price or Decimal(90))
        elif op == "fault":
            fx.script.append(str(a))
        else:
            live.poll()
    fx.script.clear()
    for _ in range(3):  # settle: in-flight edits are found or resent, fills adopted
        live.poll()
    o = live.k.order(cid)
    qty, filled, price, cost = _venue_view(fx, cid)
    inst = live.inst[SYM]
    assert o.state is not OrderState.PENDING_AMEND
    assert o.qty == inst.to_lots(qty)
    assert o.filled_qty == inst.to_lots(filled)
    assert o.price == inst.to_ticks(price)
    assert o.avg_px_num == int(cost / inst.notional_unit)
    assert len([w for w in fx.working() if w.client_id.startswith(vid(cid))]) <= 1
