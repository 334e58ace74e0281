"""The ZeroMQ server as a subprocess: replies, events, sessions, garbage, SIGTERM, restart."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from server_helpers import KERNEL_TOML, ServerProcess, running_server, write_config

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.client import ClientTimeoutError, OrderKernelClient
from order_kernel.config import load_config
from order_kernel.kernel import OrderKernel
from order_kernel.spec import OrderType, Reason, Side

H = 3_600_000_000_000


class Seq:
    """Builds one session's commands with consecutive seqs and hourly bars."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.seq = 0
        self.bar_seq = 0
        self.t = 0

    def submit(self, cid: str, side: Side = Side.BUY, qty: int = 1, **kw: Any) -> m.SubmitOrder:
        self.seq += 1
        kw.setdefault("order_type", OrderType.MARKET)
        return m.SubmitOrder(
            session_id=self.sid,
            seq=self.seq,
            ts_ns=self.t * H,
            client_order_id=cid,
            symbol="BTC",
            side=side,
            qty=qty,
            **kw,
        )

    def cmd(self, cls: type[Any], **kw: Any) -> Any:
        self.seq += 1
        return cls(session_id=self.sid, seq=self.seq, ts_ns=self.t * H, **kw)

    def bar(self, o: int = 1000, h: int = 1010, lo: int = 990, c: int = 1000) -> m.MarketBar:
        self.t += 1
        self.bar_seq += 1
        return m.MarketBar(
            session_id=self.sid,
            seq=self.bar_seq,
            ts_ns=self.t * H,
            symbol="BTC",
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=10_000,
            interval_ns=H,
        )


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = write_config(tmp_path, beat_ms=50)
    with running_server(tmp_path, cfg) as srv:
        yield srv


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[OrderKernelClient]:
    c = OrderKernelClient(server.endpoint, "s1")
    try:
        yield c
    finally:
        c.close()


def test_submit_is_acknowledged_and_published(client: OrderKernelClient) -> None:
    s = Seq("s1")
    assert client.request(s.bar()) == []
    out = client.request(s.submit("a", qty=3))
    (acc,) = out
    assert isinstance(acc, m.OrderAccepted)
    assert acc.client_order_id == "a" and acc.seq == 1
    fills = client.request(s.bar(o=1005))
    assert [(e.client_order_id, e.qty, e.price) for e in fills if isinstance(e, m.OrderFilled)] == [
        ("a", 3, 1006)
    ]
    assert client.unacknowledged() == []
    published = list(client.events(500, until=lambda e: isinstance(e, m.PositionUpdate)))
    assert [type(e) for e in published] == [m.OrderAccepted, m.OrderFilled, m.PositionUpdate]
    assert [e.seq for e in published] == [1, 2, 3]


def test_server_heartbeats_reach_the_subscriber(client: OrderKernelClient) -> None:
    assert client.server_alive(2000)
    assert client.server_alive(2000)
    assert client.server_beats >= 2


def test_two_sessions_have_their_own_seq_and_log(server: ServerProcess) -> None:
    with (
        OrderKernelClient(server.endpoint, "s1") as c1,
        OrderKernelClient(server.endpoint, "s10") as c2,
    ):
        a, b = Seq("s1"), Seq("s10")
        assert c1.request(a.submit("x"))[0].seq == 1
        assert c2.request(b.submit("x"))[0].seq == 1  # same client id, other session: fine
        assert c2.request(b.submit("y"))[0].seq == 2
        ev1 = list(c1.events(300))
        assert [e.session_id for e in ev1] == ["s1"]  # s10's events never reach s1 (prefix)
    logs = sorted(p.name for p in (server.workdir / "logs").iterdir())
    assert logs == ["s1.log", "s10.log"]


def test_garbage_and_bad_session_ids_get_a_denial_not_a_crash(server: ServerProcess) -> None:
    with OrderKernelClient(server.endpoint, "s1") as c:
        c.send_raw(b"\xc1not msgpack")
        reply = c.poll_reply(5000)
        assert reply is not None and reply.ref_seq == -1
        (ev,) = reply.events
        assert isinstance(ev, m.CommandDenied) and ev.reason is Reason.MALFORMED_MESSAGE
    with OrderKernelClient(server.endpoint, "../etc") as bad:
        bad.send_raw(b"x")
        reply = bad.poll_reply(5000)
        assert reply is not None
        assert isinstance(reply.events[0], m.CommandDenied)
        assert reply.events[0].reason is Reason.UNKNOWN_SESSION
    with OrderKernelClient(server.endpoint, "s1") as c:  # still serving
        assert isinstance(c.request(Seq("s1").cmd(m.Heartbeat))[0], m.Heartbeat)


def test_sigterm_stops_cleanly_and_restart_recovers_the_same_state(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    s = Seq("s1")
    cmds: list[m.Command] = [s.bar()]
    cmds += [s.submit(f"o{i}", Side.BUY if i % 2 else Side.SELL, qty=1 + i) for i in range(5)]
    cmds += [s.bar(o=1002), s.submit("l", order_type=OrderType.LIMIT, price=900), s.bar()]
    srv = ServerProcess(tmp_path, cfg)
    try:
        srv.wait_ready()
        with OrderKernelClient(srv.endpoint, "s1") as c:
            for cmd in cmds:
                c.request(cmd)
        assert srv.terminate() == 0
        assert "stopped cleanly" in srv.stderr()
    finally:
        srv.kill()
    log = tmp_path / "logs" / "s1.log"
    order_log.verify(log)
    inbound = [e.raw for e in order_log.read(log) if e.direction == order_log.IN]
    assert inbound == [m.encode(c) for c in cmds]  # every acknowledged command is logged
    config = load_config(tmp_path / "kernel.toml")
    ref = OrderKernel("s1", config.instrument_specs(), config.make_venue())
    for cmd in cmds:
        ref.handle(cmd)
    with running_server(tmp_path, cfg) as srv2:
        assert "recovered session 's1'" in srv2.stderr()
        with OrderKernelClient(srv2.endpoint, "s1") as c:
            nxt = s.submit("after")
            out = c.request(nxt)
            assert out == ref.handle(nxt)  # same seq, same ids: it continues where it stopped
        srv2.terminate()
    rec = OrderKernel.recover(log, "s1", config.instrument_specs(), config.make_venue())
    assert rec.log is not None
    rec.log.close()
    assert rec.state_digest() == ref.state_digest()


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, write_config(tmp_path))
    try:
        srv.wait_ready()
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(20) == 0
    finally:
        srv.kill()


def test_request_times_out_when_the_server_is_gone(tmp_path: Path) -> None:
    with OrderKernelClient(f"ipc://{tmp_path}/nobody.sock", "s1") as c:
        cmd = Seq("s1").submit("a")
        with pytest.raises(ClientTimeoutError, match="stays unacknowledged"):
            c.request(cmd, timeout_ms=100)
        assert c.unacknowledged() == [cmd]


def test_bad_config_is_an_error_with_the_field_path(tmp_path: Path) -> None:
    from order_kernel.config import parse_config
    from order_kernel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown field `slipage`.*\$\.venue"):
        parse_config(
            '[venue]\nslipage = 1\n[[instruments]]\nsymbol="X"\nprice_increment="1"\nsize_increment="1"\n',
            "k.toml",
        )
    with pytest.raises(ConfigError, match=r"instruments\[0\].*price_increment"):
        parse_config(
            '[[instruments]]\nsymbol="X"\nprice_increment="-1"\nsize_increment="1"\n', "k.toml"
        )


def test_ping_answers_without_touching_a_session(server: ServerProcess) -> None:
    with OrderKernelClient(server.endpoint, "s1") as c:
        assert c.ping(5000)
        assert not (server.workdir / "logs" / "s1.log").exists()  # no session created
        assert c.request(Seq("s1").submit("a"))[0].seq == 1  # nothing consumed a seq


def test_a_resent_bar_is_ignored_but_a_stale_new_one_is_denied() -> None:
    """Client resends after a crash may repeat market data: with possible_duplicate it is
    ignored (no event, no seq consumed); without the flag it is still a malformed bar."""
    from order_kernel.config import parse_config

    config = parse_config(KERNEL_TOML.format(fsync="never", beat_ms=100))
    k = OrderKernel("s1", config.instrument_specs(), config.make_venue())
    s = Seq("s1")
    bar = s.bar()
    assert k.handle(bar) == []
    before = k.state_digest()
    assert k.handle(msgspec.structs.replace(bar, possible_duplicate=True)) == []
    assert k.state_digest() == before
    (denied,) = k.handle(bar)
    assert isinstance(denied, m.CommandDenied) and denied.reason is Reason.MALFORMED_MESSAGE
