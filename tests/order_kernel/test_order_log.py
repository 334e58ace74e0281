"""Order log: hash chain, tamper and truncation detection, recovery by replay, determinism, golden logs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from ok_helpers import SESSION, Driver, instruments, of

from order_kernel import log as order_log
from order_kernel import messages as m
from order_kernel.errors import LogIntegrityError, RecoveryError
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.spec import OrderType, Side, TimeInForce
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
H = 3_600_000_000_000
GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("STRATAGEM_REGEN_GOLDEN") == "1"


def _venue() -> SimVenue:
    return SimVenue(slippage_ticks=1, random_slippage_ticks=2, seed=42, funding_rate_ppb=50_000)


# ---------------------------------------------------------------- scenarios (one per order type)


def sc_market(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("m1", B, OrderType.MARKET, 10)
    d.bar(1006, 1012, 1001, 1010)
    d.submit("m2", SL, OrderType.MARKET, 4)
    d.bar(1010, 1015, 1000, 1002)


def sc_limit(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("l1", B, OrderType.LIMIT, 5, price=995)
    d.submit("l2", SL, OrderType.LIMIT, 5, price=1020, post_only=True)
    d.bar(1004, 1008, 996, 1000)
    d.bar(1000, 1002, 994, 998)
    d.cmd(m.AmendOrder, client_order_id="l2", price=1012)
    d.bar(999, 1013, 998, 1011)


def sc_stop(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("e", B, OrderType.MARKET, 3)
    d.bar(1005, 1006, 1000, 1003)
    d.submit("s1", SL, OrderType.STOP, 3, trigger_price=990, reduce_only=True)
    d.bar(1003, 1004, 995, 996)
    d.bar(994, 995, 980, 985)


def sc_stop_limit(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("sl1", B, OrderType.STOP_LIMIT, 2, trigger_price=1010, price=1012)
    d.submit("sl2", B, OrderType.STOP_LIMIT, 2, trigger_price=1011, price=1011)
    d.bar(1015, 1020, 1014, 1018)
    d.bar(1016, 1017, 1009, 1010)


def sc_bracket_oco(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    br = m.Bracket(
        stop_loss=980,
        take_profits=(m.TakeProfitLeg(price=1020, qty=2), m.TakeProfitLeg(price=1040, qty=2)),
    )
    d.submit("p", B, OrderType.LIMIT, 4, price=1000, bracket=br)
    d.submit("o1", SL, OrderType.LIMIT, 1, price=1100, oco_group="g", symbol="ETH")
    d.submit("o2", SL, OrderType.LIMIT, 1, price=900, oco_group="g", symbol="ETH")
    d.bar(1001, 1004, 999, 1002)
    d.bar(1002, 1025, 1000, 1022)
    d.bar(1022, 1023, 975, 978)


def sc_tif_timers_kill(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("i", B, OrderType.LIMIT, 2, price=990, tif=TimeInForce.IOC)
    d.submit("f", B, OrderType.MARKET, 2, tif=TimeInForce.FOK)
    d.submit("g", B, OrderType.LIMIT, 2, price=900, tif=TimeInForce.GTD, expire_ts_ns=4 * H)
    d.cmd(m.SetTimer, timer_id="hb", fire_ts_ns=3 * H)
    d.bar(1005, 1006, 1000, 1003)
    d.bar(1003, 1004, 995, 996)
    d.bar(996, 997, 990, 992)
    d.cmd(m.KillSwitch, flatten=True, reason="end")
    d.submit("x", B, OrderType.MARKET, 1)
    d.bar(992, 993, 990, 991)


def sc_trailing(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("e", SL, OrderType.MARKET, 3)
    d.bar(1005, 1006, 1000, 1003)
    d.submit(
        "t",
        B,
        OrderType.STOP,
        3,
        trigger_price=1050,
        reduce_only=True,
        trailing=m.Trailing(offset_bps=50),
    )
    d.bar(1003, 1004, 980, 985)
    d.bar(985, 990, 960, 962)
    d.bar(962, 975, 961, 974)


def sc_twap(d: Driver) -> None:
    d.bar(1000, 1010, 990, 1005)
    d.submit("tw", B, OrderType.MARKET, 10, schedule=m.Schedule(slices=3, interval_ns=H))
    d.submit("tl", SL, OrderType.LIMIT, 7, price=1012, schedule=m.Schedule(slices=3, interval_ns=H))
    d.bar(1005, 1008, 1001, 1006)
    d.bar(1006, 1014, 1004, 1012)
    d.cmd(m.CancelOrder, client_order_id="tl")
    d.bar(1012, 1013, 1009, 1010)
    d.bar(1010, 1011, 1007, 1008)


SCENARIOS: dict[str, Callable[[Driver], None]] = {
    "market": sc_market,
    "limit": sc_limit,
    "stop": sc_stop,
    "stop_limit": sc_stop_limit,
    "bracket_oco": sc_bracket_oco,
    "tif_timers_kill": sc_tif_timers_kill,
    "trailing": sc_trailing,
    "twap": sc_twap,
}


def run(path: Path, scenario: Callable[[Driver], None]) -> Driver:
    with OrderLog(path, fsync="never") as lg:
        d = Driver(_venue(), log=lg, kind="perp")
        scenario(d)
    return d


# ---------------------------------------------------------------- chain, tamper, truncation


def test_log_records_every_command_and_event_and_verifies(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    d = run(p, sc_bracket_oco)
    entries = list(order_log.read(p))
    outs = [e.message for e in entries if e.direction == order_log.OUT]
    assert outs == d.events
    ins = [e for e in entries if e.direction == order_log.IN]
    assert len(ins) == 7 and all(isinstance(e.message, m.COMMAND_TYPES) for e in ins)
    assert order_log.verify(p).records == len(entries)


def test_tampering_is_detected_at_the_record(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    run(p, sc_market)
    entries = list(order_log.read(p))
    target = entries[3]
    data = bytearray(p.read_bytes())
    i = data.index(b"m1", target.offset)  # flip a byte of the client order id in a later record
    data[i] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(LogIntegrityError) as ei:
        order_log.verify(p)
    assert ei.value.problem == "hash_mismatch"
    # the edited record itself still decodes; the next record's prev hash no longer matches
    assert ei.value.record_index > target.index - 1
    assert ei.value.byte_offset == entries[ei.value.record_index].offset


def test_truncation_is_a_torn_tail_with_offset_and_can_be_cut_explicitly(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    run(p, sc_market)
    entries = list(order_log.read(p))
    size = p.stat().st_size
    with p.open("r+b") as fh:
        fh.truncate(size - 3)
    with pytest.raises(LogIntegrityError) as ei:
        order_log.verify(p)
    assert (ei.value.problem, ei.value.record_index, ei.value.byte_offset) == (
        "torn_tail",
        len(entries) - 1,
        entries[-1].offset,
    )
    assert order_log.truncate_torn_tail(p) == size - 3 - entries[-1].offset
    assert order_log.verify(p).records == len(entries) - 1


def test_deleting_a_middle_record_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    run(p, sc_market)
    e = list(order_log.read(p))
    data = p.read_bytes()
    p.write_bytes(data[: e[2].offset] + data[e[3].offset :])
    with pytest.raises(LogIntegrityError, match="record 2"):
        order_log.verify(p)


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    with OrderLog(p, fsync="always") as lg:
        lg.append_inbound(b"a", 1)
    with OrderLog(p, fsync="batch", batch_records=1) as lg:
        assert lg.records == 1
        lg.append_outbound(b"b", 1)
    assert [e.raw for e in order_log.read(p)] == [b"a", b"b"]
    assert [e.message for e in order_log.read(p)] == [None, None]  # not messages: kept as raw


# ---------------------------------------------------------------- determinism, recovery


def test_same_commands_give_byte_identical_logs(tmp_path: Path) -> None:
    for name, sc in SCENARIOS.items():
        run(tmp_path / f"{name}.a", sc)
        run(tmp_path / f"{name}.b", sc)
        assert (tmp_path / f"{name}.a").read_bytes() == (tmp_path / f"{name}.b").read_bytes(), name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_logs(tmp_path: Path, name: str) -> None:
    """A change of kernel behaviour changes these bytes: regenerate only on purpose with
    STRATAGEM_REGEN_GOLDEN=1 and review the event diff."""
    p = tmp_path / "o.log"
    run(p, SCENARIOS[name])
    golden = GOLDEN / f"{name}.log"
    if REGEN:
        golden.write_bytes(p.read_bytes())
    assert golden.exists(), f"missing {golden}; run with STRATAGEM_REGEN_GOLDEN=1 to create it"
    want = [e.message for e in order_log.read(golden)]
    got = [e.message for e in order_log.read(p)]
    assert got == want
    assert p.read_bytes() == golden.read_bytes()


@pytest.mark.parametrize("cut", [5, 11, 17, 23])
def test_recovery_after_crash_equals_the_uninterrupted_run(tmp_path: Path, cut: int) -> None:
    """Run the full scenario; separately run it and 'crash' after `cut` inbound commands;
    recover from that log and feed the rest: state and log must equal the uninterrupted run."""
    full = tmp_path / "full.log"
    ref = run(full, sc_tif_timers_kill)
    commands = [e.raw for e in order_log.read(full) if e.direction == order_log.IN]
    cut = min(cut, len(commands))
    crashed = tmp_path / "crashed.log"
    lg = OrderLog(crashed, fsync="never")
    k = OrderKernel(SESSION, instruments("perp"), _venue(), log=lg, capacity=256)
    for raw in commands[:cut]:
        k.handle_bytes(raw)
    lg.close()
    # the crash also lost the outbound events of the last command
    entries = list(order_log.read(crashed))
    last_in = max(e.index for e in entries if e.direction == order_log.IN)
    with crashed.open("r+b") as fh:
        fh.truncate(
            entries[last_in + 1].offset if last_in + 1 < len(entries) else crashed.stat().st_size
        )
    rec = OrderKernel.recover(
        crashed, SESSION, instruments("perp"), _venue(), fsync="never", capacity=256
    )
    for raw in commands[cut:]:
        rec.handle_bytes(raw)
    assert rec.state_digest() == ref.k.state_digest()
    assert rec.log is not None
    rec.log.close()
    assert crashed.read_bytes() == full.read_bytes()


def test_recovery_refuses_a_tampered_log_and_a_different_venue(tmp_path: Path) -> None:
    p = tmp_path / "o.log"
    run(p, sc_market)
    with pytest.raises(RecoveryError, match="diverged"):
        OrderKernel.recover(p, SESSION, instruments("perp"), SimVenue(seed=1), capacity=256)
    data = bytearray(p.read_bytes())
    data[-2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(LogIntegrityError):
        OrderKernel.recover(p, SESSION, instruments("perp"), _venue(), capacity=256)


def test_resend_older_than_buffer_reads_the_log(tmp_path: Path) -> None:
    with OrderLog(tmp_path / "o.log", fsync="never") as lg:
        d = Driver(log=lg)
        d.k._sent.clear()  # pretend the in-memory buffer rolled over
        d.bar(100, 101, 99, 100)
        d.submit("a", B, OrderType.MARKET, 1)
        d.bar(100, 101, 99, 100)
        sent = list(d.events)
        d.k._sent.clear()
        out = d.cmd(m.ResendRequest, begin_seq=1, end_seq=2)
    assert [e.seq for e in out] == [1, 2] and all(e.possible_duplicate for e in out)
    assert [e.client_order_id for e in of(out, m.OrderAccepted)] == [
        e.client_order_id for e in of(sent[:1], m.OrderAccepted)
    ]


def test_verify_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "o.log"
    run(p, sc_market)
    assert order_log.main(["verify", str(p)]) == 0
    assert "ok" in capsys.readouterr().out
    with p.open("r+b") as fh:
        fh.truncate(p.stat().st_size - 1)
    assert order_log.main(["verify", str(p)]) == 2
    err = capsys.readouterr().err
    assert "torn_tail at record" in err and "byte offset" in err
    assert order_log.main(["verify", str(tmp_path / "missing.log")]) == 2
    assert order_log.main([]) == 2
