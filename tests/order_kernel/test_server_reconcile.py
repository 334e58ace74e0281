"""Start-up reconciliation in the server: replay the log, reconcile with the venue, then serve.

The "venue" is a SimVenue-driven kernel that kept trading while our server was down (it saw
the bar that filled our order); its books are reported through `snapshot_from_kernel`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import zmq

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.config import KernelConfig, parse_config
from order_kernel.kernel import OrderKernel
from order_kernel.reconcile import (
    ReconcileError,
    VenueOrder,
    VenueOrderStatus,
    VenueSnapshot,
    snapshot_from_kernel,
)
from order_kernel.server import Server
from order_kernel.spec import OrderState, OrderType, Side

H = 3_600_000_000_000
SID = "s1"
TOML = """
log_dir = "{log_dir}"
fsync = "always"

[[instruments]]
symbol = "BTC"
price_increment = "0.1"
size_increment = "0.001"
"""


def _bar(t: int, o: int, h: int, lo: int, c: int) -> m.MarketBar:
    return m.MarketBar(
        session_id=SID,
        seq=0,
        ts_ns=t * H,
        symbol="BTC",
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=1_000,
        interval_ns=H,
    )


BEFORE: list[m.Command] = [
    _bar(1, 100, 101, 99, 100),
    m.SubmitOrder(
        session_id=SID,
        seq=1,
        ts_ns=1 * H,
        client_order_id="buy",
        symbol="BTC",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=5,
        price=95,
    ),
]
WHILE_DOWN = _bar(2, 97, 98, 94, 96)  # touches 95: the venue fills our order


class TruthVenue:
    """A snapshot source backed by a kernel that saw everything the venue saw."""

    def __init__(self, config: KernelConfig, commands: list[m.Command]) -> None:
        self.kernel = OrderKernel(SID, config.instrument_specs(), config.make_venue())
        for c in commands:
            self.kernel.handle(c)
        self.calls: list[dict[str, str]] = []

    def snapshot(self, ts_ns: int, client_order_ids: Mapping[str, str]) -> VenueSnapshot:
        self.calls.append(dict(client_order_ids))
        return snapshot_from_kernel(self.kernel, ts_ns)


def _server(
    config: KernelConfig, ctx: zmq.Context[zmq.Socket[bytes]], **kw: object
) -> tuple[Server, str]:
    out = io.StringIO()
    srv = Server(
        config,
        "inproc://ok",
        clock_ns=time.monotonic_ns,
        context=ctx,
        report=out,
        **kw,  # type: ignore[arg-type]
    )
    return srv, out.getvalue()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[KernelConfig, zmq.Context[zmq.Socket[bytes]]]]:
    config = parse_config(TOML.format(log_dir=tmp_path / "logs"))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    srv, _ = _server(config, ctx)
    for c in BEFORE:
        srv.handle_frames([SID.encode(), m.encode(c)])
    srv.close()  # the server goes down with the order working
    yield config, ctx
    ctx.term()


def test_a_fill_seen_while_down_is_adopted_exactly_once(
    setup: tuple[KernelConfig, zmq.Context[zmq.Socket[bytes]]],
) -> None:
    config, ctx = setup
    venue = TruthVenue(config, [*BEFORE, WHILE_DOWN])
    assert venue.kernel.order("buy").state is OrderState.FILLED
    srv, report = _server(config, ctx, snapshot_source=lambda sid: venue)
    assert venue.calls == [{"buy": "BTC"}]  # asked about our open order
    k = srv.sessions[SID]
    assert k.order("buy").state is OrderState.FILLED
    assert k.position("BTC").qty == 5
    assert "MISSING_FILLS" in report and "'buy'" in report
    rec = srv.startup_report[0].reconciliation
    assert rec is not None and rec.clean
    fills = [e for e in rec.events if isinstance(e, m.OrderFilled)]
    assert [(f.trade_id, f.qty, f.price) for f in fills] == [("recon:buy:5", 5, 95)]
    # the reconciliation is in the log, before anything new is served
    log_path = srv.log_path(SID)
    srv.close()
    raws = [e.raw for e in order_log.read(log_path)]
    assert any(r.startswith(b"\x00stratagem-recon\x00") for r in raws)
    # restart: replay includes the reconciliation; the venue fill is not applied again
    srv2, _ = _server(config, ctx, snapshot_source=lambda sid: venue)
    k2 = srv2.sessions[SID]
    assert k2.position("BTC").qty == 5 and k2.order("buy").filled_qty == 5
    rec2 = srv2.startup_report[0].reconciliation
    assert rec2 is not None and rec2.differences == () and rec2.events == ()
    trade_ids = [
        m.decode_event(e.raw).trade_id  # type: ignore[union-attr]
        for e in order_log.read(log_path)
        if e.direction == order_log.OUT and isinstance(m.decode_event(e.raw), m.OrderFilled)
    ]
    assert trade_ids == ["recon:buy:5"]
    # and the session goes on serving with the next seq
    sub = m.SubmitOrder(
        session_id=SID,
        seq=2,
        ts_ns=3 * H,
        client_order_id="sell",
        symbol="BTC",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        qty=5,
    )
    _, _, events = srv2.handle_frames([SID.encode(), m.encode(sub)])
    assert isinstance(m.decode_event(events[0]), m.OrderAccepted)
    srv2.close()


def test_without_a_snapshot_source_nothing_is_reconciled(
    setup: tuple[KernelConfig, zmq.Context[zmq.Socket[bytes]]],
) -> None:
    config, ctx = setup
    srv, report = _server(config, ctx)
    assert srv.startup_report[0].reconciliation is None and "reconciled" not in report
    assert srv.sessions[SID].order("buy").state is OrderState.SUBMITTED
    srv.close()


def test_a_conflict_halts_start_up_unless_told_otherwise(
    setup: tuple[KernelConfig, zmq.Context[zmq.Socket[bytes]]],
) -> None:
    config, ctx = setup

    class Stranger:
        def snapshot(self, ts_ns: int, ids: Mapping[str, str]) -> VenueSnapshot:
            return VenueSnapshot(
                ts_ns=ts_ns,
                orders=(
                    VenueOrder(client_order_id="buy", symbol="BTC", status=VenueOrderStatus.OPEN),
                    VenueOrder(client_order_id="zzz", symbol="BTC", status=VenueOrderStatus.OPEN),
                ),
            )

    with pytest.raises(ReconcileError, match="UNKNOWN_TO_US 'zzz'"):
        _server(config, ctx, snapshot_source=lambda sid: Stranger())
    srv, report = _server(
        config, ctx, snapshot_source=lambda sid: Stranger(), halt_on_conflict=False
    )
    assert "FLAGGED UNKNOWN_TO_US" in report
    srv.close()
