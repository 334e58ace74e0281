"""SimVenue latency model (rule 14): submit, ack and fill delays in ns.

Venue reports reach the strategy no earlier than their delays, on one ordered channel; the
kernel's books move at venue time, so with the same inputs the delivered events equal the
zero-delay run's apart from their ts_ns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ok_helpers import SESSION, Driver, instruments, of

from order_kernel import messages as m
from order_kernel.config import parse_config
from order_kernel.errors import ConfigError
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.spec import OrderType, Side
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
H = 3_600_000_000_000
MS = 1_000_000


def test_ack_is_held_until_submit_plus_ack_delay() -> None:
    d = Driver(SimVenue(latency_ns=3 * MS, ack_latency_ns=7 * MS))
    d.bar(100, 101, 99, 100)
    t0 = d.t * H
    assert d.submit("a", B, OrderType.LIMIT, 1, price=90) == []  # nothing visible yet
    assert d.k.order("a").state.name == "SUBMITTED"  # the books move at venue time
    early = d.cmd(m.Heartbeat, ts_ns=t0 + 10 * MS - 1)
    assert early == []  # the kernel's own answer queues behind the held ack
    late = d.cmd(m.Heartbeat, ts_ns=t0 + 10 * MS)
    assert [type(e) for e in late] == [m.OrderAccepted, m.Heartbeat, m.Heartbeat]
    assert [e.ts_ns for e in late] == [t0 + 10 * MS] * 3
    assert [e.seq for e in late] == [1, 2, 3]


def test_a_fill_is_never_visible_before_submit_plus_ack_delay() -> None:
    # the order reaches the venue before the next bar and fills there; the fill report has a
    # short delay, but it cannot overtake the (slower) acknowledgement
    d = Driver(SimVenue(latency_ns=1 * MS, ack_latency_ns=2 * H, fill_latency_ns=1 * MS))
    d.bar(100, 101, 99, 100)
    t0 = d.t * H
    d.submit("a", B, OrderType.MARKET, 2)
    out = d.bar(100, 102, 98, 101)  # the fill happens in this bar (venue time)
    assert of(out, m.OrderFilled) == []
    out = d.bar(101, 102, 100, 101) + d.bar(101, 102, 100, 101)
    acc, fill = of(out, m.OrderAccepted)[0], of(out, m.OrderFilled)[0]
    assert acc.ts_ns == t0 + 1 * MS + 2 * H
    assert fill.ts_ns >= acc.ts_ns and fill.seq > acc.seq


def test_fill_delay_applies_to_reports_from_matching() -> None:
    d = Driver(SimVenue(fill_latency_ns=5 * MS))
    d.bar(100, 101, 99, 100)
    assert of(d.submit("a", B, OrderType.MARKET, 1), m.OrderAccepted)  # no ack delay
    out = d.bar(100, 102, 98, 101)
    assert of(out, m.OrderFilled) == []
    fills = of(d.cmd(m.Heartbeat, ts_ns=d.t * H + 5 * MS), m.OrderFilled)
    assert [f.ts_ns for f in fills] == [d.t * H + 5 * MS]


def _random_run(venue: SimVenue, ops: list[tuple[int, int, int]]) -> list[m.Event]:
    d = Driver(venue)
    d.bar(100, 101, 99, 100)
    px = 100
    for n, (kind, a, b) in enumerate(ops):
        if kind == 0:
            side = B if a % 2 else SL
            if b % 3 == 0:
                d.submit(f"o{n}", side, OrderType.MARKET, 1 + a % 4)
            else:
                d.submit(f"o{n}", side, OrderType.LIMIT, 1 + a % 4, price=max(1, px + b % 7 - 3))
        elif kind == 1:
            d.cmd(m.CancelOrder, client_order_id=f"o{max(0, n - 1 - a % 4)}")
        else:
            c = max(2, px + a % 7 - 3)
            d.bar(px, max(px, c) + b % 3, max(1, min(px, c) - b % 3), c)
            px = c
    d.cmd(m.Heartbeat, ts_ns=(d.t + 1000) * H)  # far later: every held report is delivered
    return d.events


@settings(max_examples=60, deadline=None)
@given(
    ack=st.integers(0, 3 * H),
    fill=st.integers(0, 3 * H),
    submit=st.integers(0, 2 * H),
    ops=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50), st.integers(0, 50)), max_size=40),
)
def test_delays_change_only_when_events_are_seen(
    ack: int, fill: int, submit: int, ops: list[tuple[int, int, int]]
) -> None:
    plain = _random_run(SimVenue(latency_ns=submit), ops)
    slow = _random_run(SimVenue(latency_ns=submit, ack_latency_ns=ack, fill_latency_ns=fill), ops)
    again = _random_run(SimVenue(latency_ns=submit, ack_latency_ns=ack, fill_latency_ns=fill), ops)
    assert slow == again  # deterministic

    def strip(ev: m.Event) -> Any:
        return msgspec.structs.replace(ev, ts_ns=0)

    # same events, same order (ordering preserved), only ts_ns differs
    assert [strip(e) for e in slow] == [strip(e) for e in plain]
    assert [e.seq for e in slow] == list(range(1, len(slow) + 1))
    ts = [e.ts_ns for e in slow]
    assert ts == sorted(ts)  # one ordered channel
    for e_slow, e_plain in zip(slow, plain, strict=True):
        assert e_slow.ts_ns >= e_plain.ts_ns
        if isinstance(e_slow, m.OrderFilled):
            assert e_slow.ts_ns >= e_plain.ts_ns + fill
        if isinstance(e_slow, m.OrderAccepted):
            assert e_slow.ts_ns >= e_plain.ts_ns + submit + ack
    accepted = {e.client_order_id: e.ts_ns for e in slow if isinstance(e, m.OrderAccepted)}
    for f in of(slow, m.OrderFilled):
        assert f.ts_ns >= accepted[f.client_order_id]  # never filled before the ack is seen


def test_recovery_restores_held_reports(tmp_path: Path) -> None:
    def venue() -> SimVenue:
        return SimVenue(latency_ns=MS, ack_latency_ns=2 * H, fill_latency_ns=H // 2)

    path = tmp_path / "s.log"
    with OrderLog(path, fsync="never") as lg:
        d = Driver(venue(), log=lg)
        d.bar(100, 101, 99, 100)
        d.submit("a", B, OrderType.MARKET, 1)
        d.bar(100, 102, 98, 101)
    k = OrderKernel.recover(path, SESSION, instruments(), venue(), capacity=256)
    assert k.state_digest() == d.k.state_digest()  # the held ack and fill are part of it
    d.k.log = None  # its file is closed; the recovered kernel now owns the log
    nxt = m.Heartbeat(session_id=SESSION, seq=d.seq + 1, ts_ns=10 * H)
    out = k.handle(nxt)
    assert out == d.k.handle(nxt)
    assert [type(e) for e in out] == [m.OrderAccepted, m.OrderFilled, m.PositionUpdate, m.Heartbeat]
    assert k.log is not None
    k.log.close()


@pytest.mark.parametrize("field", ["ack_latency_ns", "fill_latency_ns"])
def test_negative_delays_are_config_errors(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SimVenue(**{field: -1})
    text = f'[venue]\n{field} = 5\n[[instruments]]\nsymbol = "X"\nprice_increment = "1"\nsize_increment = "1"\n'
    assert getattr(parse_config(text).make_venue(), field) == 5
