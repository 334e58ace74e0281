"""Kernel-held (synthetic) stops in live mode (`OrderKernel(live=True)` + `LiveRoute`): STOP,
STOP_LIMIT and trailing orders stay in the kernel, trigger on the strategy's bars by the
SimVenue rules, and send one `<id>.trig` order to the (local fake) exchange; OCO / bracket
siblings, cancels, amends, GTD deadlines and restarts are checked against the exchange's book."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from fake_order_exchange import FakeOrderExchange
from test_live_routing import (
    _OPEN,
    SID,
    SYM,
    Session,
    _config,
    _fill_at_venue,
    _kinds,
    _poll,
    _server,
)

from order_kernel import messages as m
from order_kernel.kernel import OrderKernel
from order_kernel.live import session_client_id
from order_kernel.server import Server
from order_kernel.spec import OrderState, OrderType, Side, TimeInForce


@pytest.fixture
def fx() -> Iterator[FakeOrderExchange]:
    with FakeOrderExchange(delay_s=0.25) as fake:
        yield fake


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    while _OPEN:
        _OPEN.pop().close()
    c.term()


def bar(s: Session, *, o: int, h: int, lo: int, c: int) -> list[m.Event]:
    """A MarketBar between the session's commands (bars are not part of its sequence): at
    the previous command's ts + 500 ns, or 1 ns after the previous bar."""
    last = kernel(s.srv)._last_bar_ts.get(SYM, -1)
    cmd = m.MarketBar(
        session_id=SID,
        seq=0,
        ts_ns=max(last + 1, s.seq * 1_000 - 500),
        symbol=SYM,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=10,
    )
    _, _, raws = s.srv.handle_frames([SID.encode(), m.encode(cmd)])
    return [m.decode_event(r) for r in raws]


def at_venue(fx: FakeOrderExchange, cid: str) -> list[tuple[str, str, str]]:
    return [(o.side, o.type, o.status) for o in fx.by_client_id(session_client_id(SID, cid))]


def entry(s: Session, *, stop: int = 9_000, tp: int = 11_000) -> list[m.Event]:
    """Buy 1 BTC at market (fills at the fake's mark, 10_000 ticks) with a stop-loss and one
    take-profit leg for the whole quantity."""
    return s.submit(
        "e",
        market=True,
        qty=1000,
        bracket=m.Bracket(stop_loss=stop, take_profits=(m.TakeProfitLeg(price=tp, qty=1000),)),
    )


def kernel(srv: Server) -> OrderKernel:
    return srv.sessions[SID]


def test_bracket_stop_hit_sends_one_market_order_and_cancels_the_target(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    ev = entry(s)
    assert _kinds(ev) == [
        "OrderAccepted",
        "OrderFilled",
        "PositionUpdate",
        "OrderAccepted",  # e.sl: held by the kernel
        "OrderAccepted",  # e.tp1: resting at the exchange
    ]
    assert isinstance(ev[3], m.OrderAccepted) and ev[3].client_order_id == "e.sl"
    assert ev[3].venue_order_id.startswith("HELD-")
    assert at_venue(fx, "e.sl") == [] and at_venue(fx, "e.tp1") == [("SELL", "LIMIT", "NEW")]
    k = kernel(srv)
    assert bar(s, o=9_900, h=10_000, lo=9_100, c=9_200) == []  # above the stop: nothing
    ev = bar(s, o=9_200, h=9_300, lo=8_900, c=8_950)
    assert _kinds(ev) == [
        "OrderTriggered",
        "OrderCancelled",  # e.tp1, cancelled at the exchange first
        "OrderAccepted",  # e.sl.trig
        "OrderFilled",
        "PositionUpdate",
    ]
    trig, tp_cancel, acc, fill, pos = ev
    assert isinstance(trig, m.OrderTriggered) and trig.client_order_id == "e.sl"
    assert trig.trigger_price == 9_000  # the worse of open (9_200) and stop
    assert isinstance(tp_cancel, m.OrderCancelled) and tp_cancel.client_order_id == "e.tp1"
    assert isinstance(acc, m.OrderAccepted) and acc.client_order_id == "e.sl.trig"
    assert isinstance(fill, m.OrderFilled) and fill.trade_id == "live:e.sl.trig:1000"
    assert (fill.side, fill.qty, fill.price) == (Side.SELL, 1000, 10_000)
    assert isinstance(pos, m.PositionUpdate) and pos.qty == 0
    assert at_venue(fx, "e.sl.trig") == [("SELL", "MARKET", "FILLED")]
    assert at_venue(fx, "e.tp1") == [("SELL", "LIMIT", "CANCELED")]
    assert at_venue(fx, "e.sl") == []
    assert k.order("e.sl").state is OrderState.FILLED
    assert k.order("e.sl").filled_qty == 1000
    assert k.order("e.tp1").state is OrderState.CANCELLED
    assert k.position(SYM).qty == 0 and k.open_orders() == []
    assert bar(s, o=8_900, h=9_000, lo=8_000, c=8_100) == []  # nothing triggers twice
    assert _poll(srv) == []
    assert len(fx.orders) == 3
    digest = k.state_digest()
    srv.close()
    srv2, _ = _server(config, fx, ctx)  # the log replays to the same state, nothing resent
    assert srv2.sessions[SID].state_digest() == digest
    assert _poll(srv2) == [] and len(fx.orders) == 3


def test_take_profit_fill_cancels_the_held_stop_locally(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    entry(s)
    _fill_at_venue(fx, "e.tp1", "1.0", "110.00", done=True)
    ev = _poll(srv)
    assert _kinds(ev) == ["OrderFilled", "PositionUpdate", "OrderCancelled"]
    assert isinstance(ev[2], m.OrderCancelled) and ev[2].client_order_id == "e.sl"
    k = kernel(srv)
    assert k.order("e.sl").state is OrderState.CANCELLED and k.position(SYM).qty == 0
    assert bar(s, o=9_000, h=9_100, lo=8_000, c=8_100) == []  # the stop is gone
    assert at_venue(fx, "e.sl") == [] and at_venue(fx, "e.sl.trig") == []
    assert len(fx.orders) == 2  # the entry and the take-profit only


def test_cancel_of_a_held_stop_is_local_and_a_gap_triggers_once(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    s.submit("long", market=True, qty=2000)
    sell_stop = {"side": Side.SELL, "order_type": OrderType.STOP, "reduce_only": True}
    s.submit("x", market=True, qty=1000, trigger_price=9_000, **sell_stop)
    ev = s.send(m.CancelOrder, client_order_id="x")
    assert _kinds(ev) == ["OrderCancelled"]
    assert kernel(srv).order("x").state is OrderState.CANCELLED and at_venue(fx, "x") == []
    s.submit("g", market=True, qty=1000, trigger_price=9_000, **sell_stop)
    ev = bar(s, o=8_500, h=8_700, lo=8_400, c=8_600)  # opens through the stop
    assert _kinds(ev)[:2] == ["OrderTriggered", "OrderAccepted"]
    assert isinstance(ev[0], m.OrderTriggered) and ev[0].trigger_price == 8_500  # the open
    assert bar(s, o=8_600, h=8_650, lo=8_000, c=8_100) == []
    assert at_venue(fx, "g.trig") == [("SELL", "MARKET", "FILLED")]
    assert len(fx.orders) == 2 and kernel(srv).position(SYM).qty == 1000
    # a cancel after the trigger cannot stop what the exchange already filled
    ev = s.send(m.CancelOrder, client_order_id="g")
    assert _kinds(ev) == ["CommandDenied"]


def test_trailing_stop_follows_bars_then_triggers(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    s.submit("long", market=True, qty=1000)
    s.submit(
        "t",
        market=True,
        qty=1000,
        side=Side.SELL,
        order_type=OrderType.STOP,
        trigger_price=9_500,
        trailing=m.Trailing(offset_ticks=200),
        reduce_only=True,
    )
    k = kernel(srv)
    assert bar(s, o=9_900, h=10_000, lo=9_800, c=9_950) == []
    assert k.order("t").trigger_price == 9_800  # high 10_000 - 200
    assert bar(s, o=9_950, h=10_300, lo=9_900, c=10_250) == []
    assert k.order("t").trigger_price == 10_100
    assert bar(s, o=10_250, h=10_260, lo=10_150, c=10_200) == []  # a lower high: kept
    assert k.order("t").trigger_price == 10_100
    ev = bar(s, o=10_200, h=10_210, lo=10_000, c=10_050)
    assert isinstance(ev[0], m.OrderTriggered) and ev[0].trigger_price == 10_100
    assert at_venue(fx, "t.trig") == [("SELL", "MARKET", "FILLED")]
    assert k.order("t").state is OrderState.FILLED and k.position(SYM).qty == 0


def test_amend_of_a_held_stop_is_applied_locally_and_survives_a_restart(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    entry(s)
    ev = s.send(m.AmendOrder, client_order_id="e.sl", trigger_price=9_600)  # tighten the stop
    assert _kinds(ev) == ["AmendAccepted"]
    assert isinstance(ev[0], m.AmendAccepted) and ev[0].trigger_price == 9_600
    ev = s.send(m.AmendOrder, client_order_id="e.tp1", price=11_500)  # at the exchange
    assert _kinds(ev) == ["AmendAccepted"]
    assert isinstance(ev[0], m.AmendAccepted) and ev[0].price == 11_500
    srv.close()
    srv2, _ = _server(config, fx, ctx)  # the held stop is not "missing at the exchange"
    rec = srv2.startup_report[0].reconciliation
    assert rec is not None and rec.clean and rec.differences == ()
    s = Session(srv2)
    k = kernel(srv2)
    assert k.order("e.sl").trigger_price == 9_600
    ev = bar(s, o=9_900, h=9_950, lo=9_550, c=9_700)  # would not reach the old stop 9_000
    assert isinstance(ev[0], m.OrderTriggered) and ev[0].trigger_price == 9_600
    assert at_venue(fx, "e.sl.trig") == [("SELL", "MARKET", "FILLED")]
    assert k.position(SYM).qty == 0 and k.open_orders() == []


def test_restart_between_trigger_and_answer_sends_no_second_order(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    entry(s)
    fx.script.append("timeout_after")  # the exchange fills the stop's order, the answer is lost
    ev = bar(s, o=9_200, h=9_300, lo=8_900, c=8_950)
    assert _kinds(ev) == ["OrderTriggered", "OrderCancelled"]
    k = kernel(srv)
    assert k.order("e.sl.trig").state is OrderState.PENDING
    assert k.order("e.sl").state is OrderState.TRIGGERED
    srv.close()  # down before the answer arrives
    srv2, _ = _server(config, fx, ctx)  # replay, then reconciliation queries by client id
    k2 = kernel(srv2)
    assert k2.order("e.sl.trig").state is OrderState.FILLED
    assert k2.order("e.sl").state is OrderState.FILLED and k2.position(SYM).qty == 0
    rec = srv2.startup_report[0].reconciliation
    assert rec is not None and rec.clean
    assert _poll(srv2) == []
    assert bar(Session(srv2), o=8_900, h=9_000, lo=8_000, c=8_100) == []
    assert at_venue(fx, "e.sl.trig") == [("SELL", "MARKET", "FILLED")]
    assert len(fx.orders) == 3


def test_stop_limit_sends_a_limit_and_deadlines_are_enforced_by_the_kernel(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    # a buy stop-limit entry: triggers at 10_500, rests as a limit at 9_500 below the mark
    s.submit("sl", qty=1000, order_type=OrderType.STOP_LIMIT, price=9_500, trigger_price=10_500)
    ev = bar(s, o=10_400, h=10_600, lo=10_300, c=10_500)
    assert _kinds(ev) == ["OrderTriggered", "OrderAccepted"]
    assert at_venue(fx, "sl.trig") == [("BUY", "LIMIT", "NEW")]
    k = kernel(srv)
    assert k.order("sl").state is OrderState.TRIGGERED
    ev = s.send(m.CancelOrder, client_order_id="sl")  # cancels its order at the exchange
    assert _kinds(ev) == ["OrderCancelled", "OrderCancelled"]
    assert [e.client_order_id for e in ev] == ["sl.trig", "sl"]  # type: ignore[union-attr]
    assert at_venue(fx, "sl.trig") == [("BUY", "LIMIT", "CANCELED")]
    # GTD: a held stop expires in the kernel; a resting limit is cancelled at the exchange
    deadline = (s.seq + 3) * 1_000  # two submits, one heartbeat, then the deadline
    s.submit(
        "hs",
        market=True,
        order_type=OrderType.STOP,
        trigger_price=12_000,
        tif=TimeInForce.GTD,
        expire_ts_ns=deadline,
    )
    s.submit("rl", qty=1000, tif=TimeInForce.GTD, expire_ts_ns=deadline)
    assert at_venue(fx, "rl") == [("BUY", "LIMIT", "NEW")]  # sent as GTC
    assert _kinds(s.send(m.Heartbeat)) == ["Heartbeat"]  # before the deadline
    ev = s.send(m.Heartbeat)  # the session clock reaches the deadline
    assert _kinds(ev) == ["OrderExpired", "Heartbeat", "OrderExpired"]  # held, then venue
    assert isinstance(ev[0], m.OrderExpired) and ev[0].client_order_id == "hs"
    assert isinstance(ev[2], m.OrderExpired) and ev[2].client_order_id == "rl"
    assert k.order("hs").state is OrderState.EXPIRED and k.order("rl").state is OrderState.EXPIRED
    assert at_venue(fx, "rl") == [("BUY", "LIMIT", "CANCELED")] and at_venue(fx, "hs") == []
    digest = k.state_digest()
    srv.close()
    srv2, _ = _server(config, fx, ctx)  # triggers, local cancels and expiries replay the same
    assert kernel(srv2).state_digest() == digest and len(fx.orders) == 2


def test_a_stop_without_a_position_to_reduce_is_cancelled_not_sent(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    s.submit("long", market=True, qty=1000)
    s.submit(
        "r",
        market=True,
        qty=1000,
        side=Side.SELL,
        order_type=OrderType.STOP,
        trigger_price=9_000,
        reduce_only=True,
    )
    s.submit("out", market=True, qty=1000, side=Side.SELL)  # flat: reduce-only stop cancelled
    k = kernel(srv)
    assert k.order("r").state is OrderState.CANCELLED
    assert bar(s, o=9_000, h=9_100, lo=8_000, c=8_100) == []
    assert at_venue(fx, "r.trig") == [] and len(fx.orders) == 2


def test_oco_group_stop_trigger_cancels_the_limit_and_a_limit_fill_cancels_the_stop(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    s.submit("long", market=True, qty=2000)
    for group, stop in (("a", 9_000), ("b", 8_000)):  # a take-profit and a stop per group
        s.submit(f"{group}.tp", price=11_000, side=Side.SELL, reduce_only=True, oco_group=group)
        s.submit(
            f"{group}.sl",
            market=True,
            side=Side.SELL,
            reduce_only=True,
            oco_group=group,
            order_type=OrderType.STOP,
            trigger_price=stop,
        )
    _fill_at_venue(fx, "b.tp", "1.0", "110.00", done=True)
    ev = _poll(srv)
    assert _kinds(ev) == ["OrderFilled", "PositionUpdate", "OrderCancelled"]
    assert isinstance(ev[2], m.OrderCancelled) and ev[2].client_order_id == "b.sl"
    ev = bar(s, o=9_500, h=9_600, lo=7_900, c=8_000)  # b.sl would trigger: it is gone
    assert [(type(e).__name__, getattr(e, "client_order_id", None)) for e in ev] == [
        ("OrderTriggered", "a.sl"),
        ("OrderCancelled", "a.tp"),  # the group's limit, cancelled at the exchange
        ("OrderAccepted", "a.sl.trig"),
        ("OrderFilled", "a.sl.trig"),
        ("PositionUpdate", None),
    ]
    assert at_venue(fx, "a.tp") == [("SELL", "LIMIT", "CANCELED")]
    assert at_venue(fx, "a.sl.trig") == [("SELL", "MARKET", "FILLED")]
    assert at_venue(fx, "b.sl.trig") == [] and kernel(srv).position(SYM).qty == 0


def test_a_triggered_stop_whose_order_never_arrived_is_sent_again_at_restart(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    entry(s)
    fx.script.append("drop_before")  # the stop's order is lost on the way: never processed
    bar(s, o=9_200, h=9_300, lo=8_900, c=8_950)
    assert kernel(srv).order("e.sl.trig").state is OrderState.PENDING
    assert at_venue(fx, "e.sl.trig") == []
    srv.close()  # down before the route resolved it
    srv2, _ = _server(config, fx, ctx)  # reconciliation: unknown at the venue -> same id again
    k2 = kernel(srv2)
    rec = srv2.startup_report[0].reconciliation
    assert rec is not None
    assert [d.detail for d in rec.differences if d.client_order_id == "e.sl.trig"] == [
        "a triggered stop's order never arrived at the venue; sent again, same id"
    ]
    assert at_venue(fx, "e.sl.trig") == [("SELL", "MARKET", "FILLED")]  # exactly one order
    assert k2.order("e.sl.trig").state is OrderState.FILLED
    assert k2.order("e.sl").state is OrderState.FILLED and k2.position(SYM).qty == 0
    assert _poll(srv2) == [] and len(fx.orders) == 3
    srv2.close()
    srv3, _ = _server(config, fx, ctx)  # a further restart finds nothing to do
    assert kernel(srv3).position(SYM).qty == 0 and len(fx.orders) == 3
