"""Live routing (`order_kernel.live`): a server with `[venue] kind = "ccxt"` sends orders to a
local fake Binance (the one the CcxtVenue tests use), maps its answers onto the transition
table, adopts its fills exactly once, never doubles an ambiguous order, and survives restarts."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import zmq
from fake_order_exchange import API_KEY, FakeOrderExchange

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.client import OrderKernelClient
from order_kernel.config import CcxtVenueConfig, KernelConfig, parse_config
from order_kernel.credentials import ApiCredentials, CredentialsError, Secret
from order_kernel.errors import ConfigError
from order_kernel.kernel import LIVE_RECORD_PREFIX
from order_kernel.live import LiveRoute, route_from_config, session_client_id
from order_kernel.server import Server
from order_kernel.spec import Liquidity, OrderState, OrderType, Reason, Side
from order_kernel.venues.ccxt_venue import CcxtVenue, make_exchange

SID = "s1"
SYM = "BTC/USDT"
API_SECRET = "fake-secret-SK-do-not-print"
TOML = """
log_dir = "{log_dir}"
fsync = "always"

[venue]
kind = "ccxt"
exchange = "binance"
api_url = "{url}"
timeout_ms = 150
poll_interval_ms = 50

[[instruments]]
symbol = "BTC/USDT"
price_increment = "0.01"
size_increment = "0.001"
"""


class Clock:
    """The loop's injected clock (tests move it)."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def fx() -> Iterator[FakeOrderExchange]:
    with FakeOrderExchange(delay_s=0.25) as fake:
        yield fake


_OPEN: list[Server] = []


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A zmq context; every server a test built is closed afterwards, even when it failed
    (closing twice is harmless)."""
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    while _OPEN:
        _OPEN.pop().close()
    c.term()


def _config(tmp_path: Path, fx: FakeOrderExchange) -> KernelConfig:
    return parse_config(TOML.format(log_dir=tmp_path / "logs", url=fx.url))


def _route(
    config: KernelConfig, fx: FakeOrderExchange, clock: Clock, recv_window_ns: int = 0
) -> LiveRoute:
    ex = make_exchange(
        "binance",
        ApiCredentials("binance", Secret(API_KEY), Secret(API_SECRET)),
        api_url=fx.url,
        timeout_ms=150,
        rate_limit_ms=0,
    )
    venue = CcxtVenue(
        ex,
        config.instrument_specs(),
        clock_ns=clock,
        sleep=lambda s: None,
        recv_window_ns=recv_window_ns,
    )
    return LiveRoute(venue, poll_interval_ns=1)


def _server(
    config: KernelConfig,
    fx: FakeOrderExchange,
    ctx: zmq.Context[zmq.Socket[bytes]],
    clock: Clock | None = None,
    recv_window_ns: int = 0,
) -> tuple[Server, io.StringIO]:
    out = io.StringIO()
    clock = clock or Clock()
    srv = Server(
        config,
        "inproc://live",
        clock_ns=clock,
        context=ctx,
        report=out,
        live_route=_route(config, fx, clock, recv_window_ns),
    )
    _OPEN.append(srv)
    return srv, out


class Session:
    """Sends commands with increasing seq and ts, decodes the reply events."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        kernel = srv.sessions.get(SID)
        self.seq = (kernel._expected_in or 1) if kernel is not None else 1

    def send(self, cmd_type: type[m.Command], **kw: object) -> list[m.Event]:
        cmd = cmd_type(session_id=SID, seq=self.seq, ts_ns=self.seq * 1_000, **kw)  # type: ignore[arg-type]
        self.seq += 1
        _, _, raws = self.srv.handle_frames([SID.encode(), m.encode(cmd)])
        return [m.decode_event(r) for r in raws]

    def submit(
        self, cid: str, *, market: bool = False, qty: int = 1000, **kw: object
    ) -> list[m.Event]:
        fields: dict[str, object] = {
            "client_order_id": cid,
            "symbol": SYM,
            "side": Side.BUY,
            "order_type": OrderType.MARKET if market else OrderType.LIMIT,
            "qty": qty,
            "price": None if market else 9_000,
        }
        fields.update(kw)
        return self.send(m.SubmitOrder, **fields)


def _poll(srv: Server) -> list[m.Event]:
    return [m.decode_event(r) for raws in srv.poll_venue().values() for r in raws]


def _kinds(events: list[m.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def _fill_at_venue(fx: FakeOrderExchange, cid: str, qty: str, quote: str, *, done: bool) -> None:
    (o,) = [o for o in fx.by_client_id(session_client_id(SID, cid))]
    o.executed, o.quote = Decimal(qty), Decimal(quote)
    o.status = "FILLED" if done else "PARTIALLY_FILLED"


def _logged_fills(path: Path) -> list[tuple[str, int, int, int]]:
    out = []
    for e in order_log.read(path):
        if e.direction == order_log.OUT:
            ev = m.decode_event(e.raw)
            if isinstance(ev, m.OrderFilled):
                out.append((ev.trade_id, ev.qty, ev.price, ev.fee))
    return out


def test_market_and_limit_orders_fill_exactly_once(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    s = Session(srv)
    # market: 2.5 BTC at the fake's mark 100.00 = 10_000 ticks; taker 5 bps of 25_000_000 units
    ev = s.submit("mkt", market=True, qty=2500)
    assert _kinds(ev) == ["OrderAccepted", "OrderFilled", "PositionUpdate"]
    acc, fill, pos = ev
    assert isinstance(acc, m.OrderAccepted) and acc.venue_order_id == "1"
    assert isinstance(fill, m.OrderFilled) and isinstance(pos, m.PositionUpdate)
    assert (fill.trade_id, fill.qty, fill.price, fill.fee) == (
        "live:mkt:2500",
        2500,
        10_000,
        12_500,
    )
    assert fill.liquidity is Liquidity.TAKER and not fill.partial
    assert (pos.qty, pos.cost_basis, pos.fees_paid) == (2500, 25_000_000, 12_500)
    # limit below the mark: rests at the venue, accepted only
    ev = s.submit("lim", qty=1000)
    assert _kinds(ev) == ["OrderAccepted"]
    assert srv.sessions[SID].order("lim").state is OrderState.SUBMITTED
    records = srv.sessions[SID].log.records  # type: ignore[union-attr]
    assert _poll(srv) == []  # nothing changed at the venue: nothing applied, nothing logged
    assert srv.sessions[SID].log.records == records  # type: ignore[union-attr]
    # the venue fills 0.4 BTC, then the rest, at 90.00 (maker: 2 bps)
    _fill_at_venue(fx, "lim", "0.4", "36.00", done=False)
    ev = _poll(srv)
    assert _kinds(ev) == ["OrderFilled", "PositionUpdate"]
    f1 = ev[0]
    assert isinstance(f1, m.OrderFilled)
    assert (f1.trade_id, f1.qty, f1.price, f1.fee, f1.partial) == (
        "live:lim:400",
        400,
        9_000,
        720,
        True,
    )
    assert f1.liquidity is Liquidity.MAKER
    assert _poll(srv) == []  # the same cumulative fill again: applied once only
    _fill_at_venue(fx, "lim", "1.0", "90.00", done=True)
    ev = _poll(srv)
    assert _kinds(ev) == ["OrderFilled", "PositionUpdate"]
    assert _poll(srv) == []
    k = srv.sessions[SID]
    assert k.order("lim").state is OrderState.FILLED and k.order("lim").filled_qty == 1000
    assert k.position(SYM).qty == 3500 and k.position(SYM).fees_paid == 12_500 + 720 + 1080
    assert len(fx.orders) == 2
    log_path = srv.log_path(SID)
    digest = k.state_digest()
    srv.close()
    assert _logged_fills(log_path) == [
        ("live:mkt:2500", 2500, 10_000, 12_500),
        ("live:lim:400", 400, 9_000, 720),
        ("live:lim:1000", 600, 9_000, 1080),
    ]
    # the venue's answers are inputs in the log: recovery replays them to the same state
    assert sum(e.raw.startswith(LIVE_RECORD_PREFIX) for e in order_log.read(log_path)) == 4
    srv2, _ = _server(config, fx, ctx)
    assert srv2.sessions[SID].state_digest() == digest
    assert _poll(srv2) == []
    srv2.close()
    assert len(_logged_fills(log_path)) == 3


def test_venue_rejection_becomes_order_rejected_with_the_venues_reason(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    ev = s.submit("big", qty=60_000)  # 60 BTC > the fake's balance
    assert _kinds(ev) == ["OrderRejected"]
    rej = ev[0]
    assert isinstance(rej, m.OrderRejected) and rej.reason is Reason.INSUFFICIENT_FUNDS
    assert "insufficient balance" in rej.detail
    assert fx.rejections[session_client_id(SID, "big")]
    assert srv.sessions[SID].order("big").state is OrderState.REJECTED
    # a stop order is held by the kernel (test_live_stops.py): accepted, nothing sent
    ev = s.submit("stop", market=True, order_type=OrderType.STOP, trigger_price=11_000)
    assert _kinds(ev) == ["OrderAccepted"]
    assert fx.by_client_id(session_client_id(SID, "stop")) == []
    # a resubmission of the same id answers with the original result, sends nothing
    dup = s.submit("big", qty=60_000)
    assert _kinds(dup) == ["OrderRejected"] and dup[0].possible_duplicate
    assert len(fx.rejections[session_client_id(SID, "big")]) == 1
    srv.close()


@pytest.mark.parametrize("fault", ["timeout_after", "drop_after", "5xx_after"])
@pytest.mark.parametrize("market", [True, False], ids=["market", "limit"])
def test_ambiguous_send_stays_in_flight_and_a_query_resolves_it(
    tmp_path: Path,
    fx: FakeOrderExchange,
    ctx: zmq.Context[zmq.Socket[bytes]],
    fault: str,
    market: bool,
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    fx.script.append(fault)
    ev = s.submit("amb", market=market)
    assert ev == []  # neither accepted nor rejected: the outcome is unknown
    k = srv.sessions[SID]
    assert k.order("amb").state is OrderState.PENDING
    vid = session_client_id(SID, "amb")
    assert srv._live is not None and srv._live.venue.in_flight() == [vid]
    ev = _poll(srv)  # queries by client id: the venue has it
    want = ["OrderAccepted", "OrderFilled", "PositionUpdate"] if market else ["OrderAccepted"]
    assert _kinds(ev) == want
    assert len(fx.by_client_id(vid)) == 1  # never sent twice
    assert srv._live.venue.in_flight() == []
    assert _poll(srv) == []
    assert k.position(SYM).qty == (1000 if market else 0)
    srv.close()


@pytest.mark.parametrize("fault", ["5xx_before", "drop_before"])
def test_unprocessed_send_is_resent_only_after_the_receive_window(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]], fault: str
) -> None:
    clock = Clock()
    srv, _ = _server(_config(tmp_path, fx), fx, ctx, clock, recv_window_ns=1_000)
    fx.script.append(fault)
    assert Session(srv).submit("late", market=True) == []
    vid = session_client_id(SID, "late")
    clock.t = 500  # the request could still arrive: query only, no resend
    assert _poll(srv) == [] and fx.by_client_id(vid) == []
    assert srv.sessions[SID].order("late").state is OrderState.PENDING
    clock.t = 1_000
    assert _kinds(_poll(srv)) == ["OrderAccepted", "OrderFilled", "PositionUpdate"]
    assert len(fx.by_client_id(vid)) == 1
    srv.close()


def test_venue_fills_that_cannot_be_applied_are_reported_not_guessed(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, out = _server(_config(tmp_path, fx), fx, ctx)
    Session(srv).submit("lim", qty=1000)
    _fill_at_venue(fx, "lim", "2.0", "180.00", done=True)  # more than we ordered
    assert _poll(srv) == []
    assert srv.sessions[SID].order("lim").filled_qty == 0
    assert "order 'lim': the venue reports filled=2000" in out.getvalue()
    srv.close()


def test_cancel_goes_to_the_venue_and_a_fill_racing_it_stands(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    srv, _ = _server(_config(tmp_path, fx), fx, ctx)
    s = Session(srv)
    s.submit("a")
    s.submit("b")
    ev = s.send(m.CancelOrder, client_order_id="a")
    assert _kinds(ev) == ["OrderCancelled"]
    (va,) = fx.by_client_id(session_client_id(SID, "a"))
    assert va.status == "CANCELED"
    _fill_at_venue(fx, "b", "1.0", "90.00", done=True)  # filled before our cancel arrives
    ev = s.send(m.CancelOrder, client_order_id="b")
    assert _kinds(ev) == ["OrderFilled", "PositionUpdate"]
    k = srv.sessions[SID]
    assert k.order("b").state is OrderState.FILLED and k.position(SYM).qty == 1000
    # amends are routed live: the exchange edits the order and the kernel follows
    s.submit("c")
    ev = s.send(m.AmendOrder, client_order_id="c", price=8_900)
    assert _kinds(ev) == ["AmendAccepted"]
    assert isinstance(ev[0], m.AmendAccepted) and ev[0].price == 8_900
    srv.close()


def test_restart_adopts_a_fill_made_while_down_exactly_once(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    srv, _ = _server(config, fx, ctx)
    Session(srv).submit("lim", qty=1000)
    log_path = srv.log_path(SID)
    srv.close()  # down with the order resting at the venue
    _fill_at_venue(fx, "lim", "1.0", "90.00", done=True)
    srv2, report = _server(config, fx, ctx)  # reconciles with the exchange before serving
    k = srv2.sessions[SID]
    assert k.order("lim").state is OrderState.FILLED and k.position(SYM).qty == 1000
    rec = srv2.startup_report[0].reconciliation
    assert rec is not None and rec.clean
    assert "MISSING_FILLS" in report.getvalue()
    assert _poll(srv2) == []  # the poll does not apply it again
    srv2.close()
    srv3, _ = _server(config, fx, ctx)  # replay includes the reconciliation: nothing new
    rec3 = srv3.startup_report[0].reconciliation
    assert rec3 is not None and rec3.differences == ()
    assert srv3.sessions[SID].position(SYM).qty == 1000
    srv3.close()
    assert [f[:3] for f in _logged_fills(log_path)] == [("recon:lim:1000", 1000, 9_000)]
    assert len(fx.orders) == 1


def test_the_serve_loop_polls_and_publishes_venue_fills(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    out = io.StringIO()
    srv = Server(
        config,
        "inproc://live-serve",
        clock_ns=time.monotonic_ns,
        context=ctx,
        report=out,
        live_route=_route(config, fx, Clock()),
    )
    _OPEN.append(srv)
    ready = threading.Event()
    loop = threading.Thread(target=srv.serve, kwargs={"ready": ready.set}, daemon=True)
    loop.start()
    assert ready.wait(5)
    with OrderKernelClient("inproc://live-serve", SID, context=ctx) as client:
        time.sleep(0.05)  # let the SUB connect before events are published
        sub = m.SubmitOrder(
            session_id=SID,
            seq=1,
            ts_ns=1_000,
            client_order_id="lim",
            symbol=SYM,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            qty=1000,
            price=9_000,
        )
        assert _kinds(client.request(sub)) == ["OrderAccepted"]
        _fill_at_venue(fx, "lim", "1.0", "90.00", done=True)
        seen = list(client.events(3000, until=lambda e: isinstance(e, m.OrderFilled)))
    srv.stop()
    loop.join(5)
    assert not loop.is_alive()
    fills = [e for e in seen if isinstance(e, m.OrderFilled)]
    assert [(f.trade_id, f.qty, f.price) for f in fills] == [("live:lim:1000", 1000, 9_000)]
    assert _logged_fills(srv.log_path(SID)) == [("live:lim:1000", 1000, 9_000, 1_800)]


def test_secrets_never_reach_the_log(
    tmp_path: Path, fx: FakeOrderExchange, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    config = _config(tmp_path, fx)
    env = {"STRATAGEM_BINANCE_API_KEY": API_KEY, "STRATAGEM_BINANCE_API_SECRET": API_SECRET}
    clock = Clock()
    route = route_from_config(config, clock_ns=clock, sleep=lambda s: None, environ=env)
    assert route is not None
    out = io.StringIO()
    srv = Server(config, "inproc://live", clock_ns=clock, context=ctx, report=out, live_route=route)
    _OPEN.append(srv)
    s = Session(srv)
    s.submit("m", market=True)
    s.submit("big", qty=60_000)
    fx.script.append("5xx_after")
    s.submit("amb")
    clock.t = 20 * 10**9  # past the receive window
    _poll(srv)
    s.send(m.CancelOrder, client_order_id="amb")
    srv.close()
    data = srv.log_path(SID).read_bytes()
    assert b"insufficient balance" in data  # the venue's answers are there...
    for secret in (API_KEY, API_SECRET):  # ...its credentials are not
        assert secret.encode() not in data and secret not in out.getvalue()
    assert b"signature=" not in data and b"timestamp=" not in data
    assert len(fx.by_client_id(session_client_id(SID, "amb"))) == 1


def test_live_config_is_checked(tmp_path: Path, fx: FakeOrderExchange) -> None:
    config = _config(tmp_path, fx)
    assert isinstance(config.venue, CcxtVenueConfig) and config.live
    assert config.venue.poll_interval_ms == 50 and config.venue_name == "binance (production)"
    with pytest.raises(CredentialsError, match="STRATAGEM_BINANCE_API_KEY"):
        route_from_config(config, clock_ns=Clock(), sleep=lambda s: None, environ={})
    bad = TOML.format(log_dir="x", url=fx.url).replace("timeout_ms = 150", "slippage_ticks = 1")
    with pytest.raises(ConfigError, match="unknown field `slippage_ticks`"):
        parse_config(bad)
    with pytest.raises(ConfigError, match="poll_interval_ms"):
        parse_config(TOML.format(log_dir="x", url=fx.url).replace("= 50", "= 0"))
    sandbox = msgspec.structs.replace(
        config, venue=msgspec.structs.replace(config.venue, sandbox=True)
    )
    env = {"STRATAGEM_BINANCE_API_KEY": API_KEY, "STRATAGEM_BINANCE_API_SECRET": API_SECRET}
    with pytest.raises(ConfigError, match="exclusive"):
        route_from_config(sandbox, clock_ns=Clock(), sleep=lambda s: None, environ=env)
    sim = parse_config(
        '[venue]\nslippage_ticks = 1\n[[instruments]]\nsymbol = "B"\n'
        'price_increment = "0.1"\nsize_increment = "1"\n'
    )
    assert (
        not sim.live and route_from_config(sim, clock_ns=Clock(), sleep=print, environ={}) is None
    )
