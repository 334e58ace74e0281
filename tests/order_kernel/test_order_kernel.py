"""OrderKernel.handle: validation, idempotency, sequencing, risk gate, kill switch, timers, amend."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ok_helpers import SESSION, Driver, instruments, of

from order_kernel import messages as m
from order_kernel.errors import ConfigError
from order_kernel.kernel import OrderKernel
from order_kernel.risk import RiskLimits
from order_kernel.spec import OrderState, OrderType, Reason, Side, TimeInForce
from order_kernel.venues.sim import SimVenue

B, SL = Side.BUY, Side.SELL
MKT, LMT, STP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
H = 3_600_000_000_000


def test_events_carry_session_increasing_seq_and_input_ts() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 1, ts_ns=12345)
    d.bar(100, 101, 99, 100)
    seqs = [e.seq for e in d.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(e.session_id == SESSION for e in d.events)
    assert d.events[0].ts_ns == 12345 and d.events[-1].ts_ns == 2 * H


def test_duplicate_client_order_id_returns_the_original_result_and_creates_nothing() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    first = d.submit("a", B, LMT, 1, price=90)
    again = d.submit("a", SL, MKT, 9)
    assert [type(e) for e in again] == [m.OrderAccepted]
    assert again[0].possible_duplicate and again[0].seq == first[0].seq
    assert len(d.k.orders()) == 1 and d.k.order("a").side is B
    denied = d.submit("x", B, LMT, 0, price=90)
    assert of(d.submit("x", B, LMT, 5, price=90), m.OrderDenied)[0].seq == denied[0].seq


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"symbol": "NOPE"}, Reason.UNKNOWN_SYMBOL),
        ({"qty": 0}, Reason.INVALID_QTY),
        ({"qty": -3}, Reason.INVALID_QTY),
        ({"order_type": LMT}, Reason.MISSING_PRICE),
        ({"order_type": STP}, Reason.MISSING_PRICE),
        ({"order_type": OrderType.STOP_LIMIT, "price": 5}, Reason.MISSING_PRICE),
        ({"price": 5}, Reason.INVALID_PRICE),
        ({"order_type": LMT, "price": 0}, Reason.INVALID_PRICE),
        ({"order_type": LMT, "price": 2**60}, Reason.INVALID_PRICE),
        ({"qty": 2**62}, Reason.INVALID_QTY),
        ({"tif": TimeInForce.GTD}, Reason.INVALID_DEADLINE),
        ({"tif": TimeInForce.GTD, "expire_ts_ns": 1}, Reason.INVALID_DEADLINE),
        ({"expire_ts_ns": 10 * H}, Reason.INVALID_DEADLINE),
        ({"post_only": True}, Reason.POST_ONLY_WOULD_TAKE),
        ({"display_qty": 9}, Reason.INVALID_QTY),
        ({"trailing": m.Trailing(offset_ticks=5)}, Reason.INVALID_PRICE),
        (
            {"order_type": STP, "trigger_price": 90, "trailing": m.Trailing()},
            Reason.INVALID_PRICE,
        ),
        (
            {"order_type": STP, "trigger_price": 90, "trailing": m.Trailing(offset_bps=0)},
            Reason.INVALID_PRICE,
        ),
        (
            {"order_type": LMT, "price": 100, "bracket": m.Bracket(stop_loss=101)},
            Reason.INVALID_PRICE,
        ),
        (
            {"bracket": m.Bracket(take_profits=(m.TakeProfitLeg(price=110, qty=2),))},
            Reason.INVALID_QTY,
        ),
    ],
)
def test_bad_orders_are_denied_with_a_reason(kw: dict[str, object], reason: Reason) -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    args: dict[str, object] = {"side": B, "order_type": MKT, "qty": 1, **kw}
    out = d.cmd(m.SubmitOrder, client_order_id="x", symbol=args.pop("symbol", "BTC"), **args)
    denied = of(out, m.OrderDenied)
    assert len(denied) == 1 and denied[0].reason is reason, out
    assert d.k.order("x").state is OrderState.DENIED
    assert d.k.open_orders() == []


def test_a_schedule_on_a_stop_is_denied_not_sent() -> None:
    # TWAP slices are MARKET or LIMIT orders (test_twap.py has the rest of the rules)
    d = Driver()
    out = d.submit("t", B, STP, 3, trigger_price=110, schedule=m.Schedule(slices=3, interval_ns=H))
    assert of(out, m.OrderDenied)[0].reason is Reason.INVALID_QTY
    assert of(out, m.OrderRejected) == []


def test_cancel_unknown_terminal_and_twice() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    assert (
        of(d.cmd(m.CancelOrder, client_order_id="zz"), m.CommandDenied)[0].reason
        is Reason.UNKNOWN_ORDER
    )
    d.submit("a", B, LMT, 1, price=90)
    assert of(d.cmd(m.CancelOrder, client_order_id="a"), m.OrderCancelled)
    again = of(d.cmd(m.CancelOrder, client_order_id="a"), m.CommandDenied)[0]
    assert again.reason is Reason.ORDER_TERMINAL and again.client_order_id == "a"


def test_amend_keeps_identity_and_rejects_bad_values() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 5, price=90)
    out = d.cmd(m.AmendOrder, client_order_id="a", price=92, qty=6)
    acc = of(out, m.AmendAccepted)[0]
    assert (acc.qty, acc.price) == (6, 92)
    assert d.k.order("a").price == 92 and d.k.order("a").state is OrderState.SUBMITTED
    assert of(d.cmd(m.AmendOrder, client_order_id="a", trigger_price=5), m.CommandDenied)
    assert (
        of(d.cmd(m.AmendOrder, client_order_id="a", qty=0), m.CommandDenied)[0].reason
        is Reason.INVALID_QTY
    )
    out = d.bar(93, 94, 91, 92)
    assert of(out, m.OrderFilled)[0].price == 92


def test_post_only_amend_that_would_take_is_rejected_and_order_restored() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 5, price=90, post_only=True)
    out = d.cmd(m.AmendOrder, client_order_id="a", price=101)
    assert of(out, m.AmendRejected)[0].reason is Reason.POST_ONLY_WOULD_TAKE
    assert d.k.order("a").state is OrderState.SUBMITTED and d.k.order("a").price == 90


# ---------------------------------------------------------------- sequencing


def test_seq_gap_queues_and_requests_resend_then_drains_in_order() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    k = d.k

    def sub(seq: int, cid: str, **kw: Any) -> list[m.Event]:
        return k.handle(
            m.SubmitOrder(
                session_id=SESSION,
                seq=seq,
                ts_ns=H,
                client_order_id=cid,
                symbol="BTC",
                side=B,
                order_type=LMT,
                qty=1,
                price=90,
                **kw,
            )
        )

    assert of(sub(1, "a"), m.OrderAccepted)
    out = sub(4, "d")
    assert [(r.begin_seq, r.end_seq) for r in of(out, m.ResendRequest)] == [(2, 3)]
    assert "d" not in [o.client_order_id for o in k.orders()]
    assert of(sub(2, "b", possible_duplicate=True), m.OrderAccepted)
    out = sub(3, "c", possible_duplicate=True)
    assert [e.client_order_id for e in of(out, m.OrderAccepted)] == ["c", "d"]
    assert sub(2, "b", possible_duplicate=True) == []  # duplicate: ignored
    low = of(sub(3, "c"), m.CommandDenied)[0]
    assert low.reason is Reason.SEQ_TOO_LOW and low.ref_seq == 3


def test_wrong_session_is_denied() -> None:
    d = Driver()
    out = d.k.handle(m.CancelAll(session_id="other", seq=1, ts_ns=0))
    assert of(out, m.CommandDenied)[0].reason is Reason.UNKNOWN_SESSION


def test_resend_request_replays_events_as_possible_duplicates() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 1)
    d.bar(100, 101, 99, 100)
    sent = list(d.events)
    out = d.cmd(m.ResendRequest, begin_seq=2, end_seq=3)
    assert [e.seq for e in out] == [2, 3]
    assert all(e.possible_duplicate for e in out)
    assert [msgspec.structs.replace(e, possible_duplicate=False) for e in out] == sent[1:3]


def test_open_ended_resend_with_nothing_missed_is_an_empty_answer() -> None:
    """A restarted client asks for everything after the last event it has; when that is the
    last event sent, the answer is empty (no denial, no event seq used up)."""
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 1)
    d.bar(100, 101, 99, 100)
    last = max(e.seq for e in d.events)
    assert d.cmd(m.ResendRequest, begin_seq=last + 1, end_seq=0) == []
    out = d.cmd(m.ResendRequest, begin_seq=last + 2, end_seq=0)  # beyond what was ever sent
    assert [e.reason for e in of(out, m.CommandDenied)] == [Reason.SEQ_GAP]
    again = d.cmd(m.ResendRequest, begin_seq=last, end_seq=0)  # the denial was an event too
    assert [e.seq for e in again] == [last, last + 1]
    assert all(e.possible_duplicate for e in again)


def test_heartbeat_is_answered() -> None:
    d = Driver()
    assert [type(e) for e in d.cmd(m.Heartbeat)] == [m.Heartbeat]


# ---------------------------------------------------------------- bad input


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_never_crash_the_kernel(data: bytes) -> None:
    d = Driver()
    out = d.k.handle_bytes(data)
    assert all(isinstance(e, (*m.EVENT_TYPES, m.Heartbeat, m.ResendRequest)) for e in out)


@settings(max_examples=300)
@given(st.sampled_from(m.COMMAND_TYPES), st.data())
def test_fuzzed_fields_of_valid_commands_are_denied_not_crashes(
    cls: type[m.Message], data: st.DataObject
) -> None:
    """Mutate one field of a valid command to a random value (wrong type or extreme int)."""
    d = Driver()
    d.bar(100, 101, 99, 100)
    base: dict[str, object] = {"session_id": SESSION, "seq": 1, "ts_ns": 2 * H}
    samples: dict[type, dict[str, Any]] = {
        m.SubmitOrder: {
            "client_order_id": "a",
            "symbol": "BTC",
            "side": 0,
            "order_type": 1,
            "qty": 1,
            "price": 90,
        },
        m.AmendOrder: {"client_order_id": "a", "price": 91},
        m.CancelOrder: {"client_order_id": "a"},
        m.SetTimer: {"timer_id": "t", "fire_ts_ns": 5},
        m.ResendRequest: {"begin_seq": 1},
        m.MarketBar: {"symbol": "BTC", "open": 1, "high": 2, "low": 1, "close": 2, "volume": 3},
    }
    fields = {**base, **samples.get(cls, {})}
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(
        st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.none(), st.booleans())
    )
    raw = msgspec.msgpack.encode({"type": cls.__name__, **fields})
    out = d.k.handle_bytes(raw)
    assert isinstance(out, list)
    for e in out:
        m.decode_event(m.encode(e))


@pytest.mark.parametrize(
    "raw",
    [b"\xc1garbage", b"\x81\xa4\xff\xfe\xfd\xfc\x01", b"", b"\x91\x01", b"\x81\xa4type\xa3Bad"],
    ids=["reserved-byte", "bad-utf8-key", "empty", "array", "unknown-tag"],
)
def test_malformed_bytes_give_command_denied(raw: bytes) -> None:
    d = Driver()
    out = d.k.handle_bytes(raw)
    assert of(out, m.CommandDenied)[0].reason is Reason.MALFORMED_MESSAGE
    assert d.k.handle_bytes(
        m.encode(m.Heartbeat(session_id=SESSION, seq=1, ts_ns=0))
    )  # still alive


def test_bad_bars_are_refused() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    bad = m.MarketBar(
        session_id="f",
        seq=0,
        ts_ns=5 * H,
        symbol="BTC",
        open=100,
        high=99,
        low=98,
        close=99,
        volume=1,
    )
    assert of(d.k.handle(bad), m.CommandDenied)[0].reason is Reason.MALFORMED_MESSAGE
    stale = m.MarketBar(
        session_id="f", seq=0, ts_ns=H, symbol="BTC", open=100, high=101, low=98, close=99, volume=1
    )
    assert of(d.k.handle(stale), m.CommandDenied)[0].reason is Reason.MALFORMED_MESSAGE


# ---------------------------------------------------------------- risk gate


def test_risk_limits_deny_each_rule() -> None:
    lim = RiskLimits(
        max_order_notional=Decimal("50"),  # 50 / (0.1*0.001) = 500_000 units
        max_position=Decimal("5"),  # 5000 lots
        max_open_orders=3,
        max_orders_per_sec=100,
        restricted_symbols=frozenset({"ETH"}),
    )
    d = Driver(risk=lim)
    d.bar(100, 101, 99, 100)
    assert (
        of(d.submit("n", B, LMT, 5001, price=100), m.OrderDenied)[0].reason
        is Reason.RISK_MAX_NOTIONAL
    )
    assert (
        of(d.submit("e", B, MKT, 1, symbol="ETH"), m.OrderDenied)[0].reason
        is Reason.RISK_RESTRICTED_SYMBOL
    )
    d.submit("p1", B, MKT, 4000)
    d.bar(100, 101, 99, 100)
    assert of(d.submit("p2", B, MKT, 1001), m.OrderDenied)[0].reason is Reason.RISK_MAX_POSITION
    assert of(
        d.submit("p3", SL, MKT, 4500), m.OrderAccepted
    )  # reducing through zero to -500 is fine
    d.cmd(m.CancelOrder, client_order_id="p3")
    for i in range(3):
        d.submit(f"o{i}", B, LMT, 1, price=50)
    assert (
        of(d.submit("o3", B, LMT, 1, price=50), m.OrderDenied)[0].reason
        is Reason.RISK_MAX_OPEN_ORDERS
    )


def test_rate_limit_uses_the_injected_clock() -> None:
    d = Driver(risk=RiskLimits(max_orders_per_sec=2))
    d.bar(100, 101, 99, 100)
    t = 10 * H
    assert of(d.submit("a", B, LMT, 1, price=50, ts_ns=t), m.OrderAccepted)
    assert of(d.submit("b", B, LMT, 1, price=50, ts_ns=t + 1), m.OrderAccepted)
    assert (
        of(d.submit("c", B, LMT, 1, price=50, ts_ns=t + 2), m.OrderDenied)[0].reason
        is Reason.RISK_RATE_LIMIT
    )
    assert of(d.submit("d", B, LMT, 1, price=50, ts_ns=t + 1_000_000_000), m.OrderAccepted)


def test_daily_loss_blocks_new_risk_until_next_day() -> None:
    d = Driver(risk=RiskLimits(max_daily_loss=Decimal("0.5")))  # 5000 units
    d.bar(1000, 1001, 999, 1000)
    d.submit("a", B, MKT, 100)
    d.bar(1000, 1001, 999, 1000)
    d.bar(940, 941, 930, 940)  # unrealised -6000 units = 0.6 quote
    assert of(d.submit("b", B, MKT, 1), m.OrderDenied)[0].reason is Reason.RISK_DAILY_LOSS
    assert of(d.submit("c", SL, MKT, 100, reduce_only=True), m.OrderAccepted)  # reducing is allowed
    d.bar(940, 941, 930, 940)
    d.t = 24
    d.bar(940, 941, 930, 940)  # next UTC day: snapshot resets
    assert of(d.submit("e", B, MKT, 1), m.OrderAccepted)


def test_risk_limits_from_toml_and_tighten(tmp_path: Path) -> None:
    p = tmp_path / "risk_limits.toml"
    p.write_text('max_order_notional = "1000"\nmax_open_orders = 5\nrestricted_symbols = ["X"]\n')
    lim = RiskLimits.from_toml(p)
    assert lim.max_order_notional == Decimal("1000") and lim.max_open_orders == 5
    art = RiskLimits(
        max_order_notional=Decimal("5000"),
        max_open_orders=2,
        max_daily_loss=Decimal("10"),
        restricted_symbols=frozenset({"Y"}),
    )
    t = lim.tighten(art)
    assert t.max_order_notional == Decimal("1000") and t.max_open_orders == 2
    assert t.max_daily_loss == Decimal("10") and t.restricted_symbols == {"X", "Y"}
    assert lim.tighten(RiskLimits()) == lim  # an empty override loosens nothing
    p.write_text("max_open_orders = 1.5\n")
    with pytest.raises(ConfigError, match="max_open_orders"):
        RiskLimits.from_toml(p)
    p.write_text("max_leverage = 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        RiskLimits.from_toml(p)


@given(
    st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=4, max_size=4),
)
def test_tighten_never_loosens(a: list[int | None], b: list[int | None]) -> None:
    def mk(v: list[int | None]) -> RiskLimits:
        return RiskLimits(
            max_order_notional=None if v[0] is None else Decimal(v[0]),
            max_position=None if v[1] is None else Decimal(v[1]),
            max_open_orders=v[2],
            max_orders_per_sec=v[3],
        )

    base, other = mk(a), mk(b)
    t = base.tighten(other)
    for name in ("max_order_notional", "max_position", "max_open_orders", "max_orders_per_sec"):
        tv, bv = getattr(t, name), getattr(base, name)
        assert bv is None or (tv is not None and tv <= bv)


# ---------------------------------------------------------------- kill switch, timers, cancel all


def test_kill_switch_cancels_all_blocks_new_and_flattens() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, MKT, 3)
    d.bar(100, 101, 99, 100)
    d.submit("w", B, LMT, 1, price=50)
    out = d.cmd(m.KillSwitch, flatten=True, reason="test")
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["w"]
    flat = of(out, m.OrderAccepted)
    assert len(flat) == 1 and flat[0].client_order_id.startswith("kill.")
    assert of(d.submit("b", B, MKT, 1), m.OrderDenied)[0].reason is Reason.KILL_SWITCH_ACTIVE
    d.bar(100, 101, 99, 100)
    assert d.k.position("BTC").qty == 0 and d.k.kill_switch_active


def test_timers_fire_on_bar_time_and_can_cancel_their_order() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 1, price=50)
    d.cmd(
        m.SetTimer, timer_id="t2", fire_ts_ns=3 * H, client_order_id="a", cancel_order_on_fire=True
    )
    d.cmd(m.SetTimer, timer_id="t1", fire_ts_ns=3 * H - 1)
    assert of(d.bar(100, 101, 99, 100), m.TimerFired) == []
    out = d.bar(100, 101, 99, 100)
    assert [t.timer_id for t in of(out, m.TimerFired)] == ["t1", "t2"]
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["a"]
    assert of(
        d.cmd(m.SetTimer, timer_id="x", fire_ts_ns=1, client_order_id="nope"), m.CommandDenied
    )


def test_cancel_all_by_symbol() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    d.bar(100, 101, 99, 100, symbol="ETH")
    d.submit("a", B, LMT, 1, price=50)
    d.submit("b", B, LMT, 1, price=50, symbol="ETH")
    out = d.cmd(m.CancelAll, symbol="ETH")
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["b"]
    assert [o.client_order_id for o in d.k.open_orders()] == ["a"]


def test_bracket_children_get_derived_ids_and_sizes() -> None:
    d = Driver()
    d.bar(100, 101, 99, 100)
    b = m.Bracket(
        stop_loss=90,
        take_profits=(m.TakeProfitLeg(price=110, qty=2), m.TakeProfitLeg(price=120, qty=3)),
    )
    d = Driver(SimVenue(participation_bps=5000))
    d.bar(100, 101, 99, 100)
    d.submit("p", B, LMT, 5, price=100, bracket=b, tif=TimeInForce.IOC)
    d.bar(100, 101, 99, 100, volume=8)  # IOC: 4 of 5 lots fill, the rest is cancelled
    kids = {o.client_order_id: o for o in d.k.open_orders()}
    assert sorted(kids) == ["p.sl", "p.tp1", "p.tp2"]
    assert (kids["p.sl"].qty, kids["p.sl"].trigger_price, kids["p.sl"].side) == (4, 90, SL)
    assert (kids["p.tp1"].qty, kids["p.tp2"].qty) == (2, 2)  # legs clamped to the filled qty


def test_store_full_is_denied_not_crashed() -> None:
    d = Driver(capacity=2)
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 1, price=50)
    d.submit("b", B, LMT, 1, price=50)
    assert of(d.submit("c", B, LMT, 1, price=50), m.OrderDenied)[0].reason is Reason.BOOK_FULL
    d.cmd(m.CancelOrder, client_order_id="a")
    assert of(d.submit("d", B, LMT, 1, price=50), m.OrderAccepted)  # slot reused


# ---------------------------------------------------------------- messages


def _example(cls: type[m.Message]) -> m.Message:
    base: dict[str, Any] = {"session_id": "s", "seq": 3, "ts_ns": 5}
    values: dict[Any, Any] = {str: "x", int: 7, bool: True}
    kw: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        if f.name in base or f.default is not msgspec.NODEFAULT:
            continue
        t = f.type
        if t in values:
            kw[f.name] = values[t]
        elif t is Reason:
            kw[f.name] = Reason.OVERFILL
        elif t is Side:
            kw[f.name] = Side.SELL
        elif t is OrderType:
            kw[f.name] = OrderType.STOP
        else:
            kw[f.name] = list(t.__members__.values())[-1] if hasattr(t, "__members__") else None
    return cls(**base, **kw)


@pytest.mark.parametrize(
    "cls",
    list(dict.fromkeys(m.COMMAND_TYPES + m.EVENT_TYPES + (m.Heartbeat, m.ResendRequest))),
    ids=lambda c: c.__name__,
)
def test_every_message_type_round_trips(cls: type[m.Message]) -> None:
    msg = _example(cls)
    assert m.decode_any(m.encode(msg)) == msg
    if cls in m.COMMAND_TYPES:
        assert m.decode_command(m.encode(msg)) == msg
    if cls in m.EVENT_TYPES:
        assert m.decode_event(m.encode(msg)) == msg


def test_full_submit_order_round_trips() -> None:
    msg = m.SubmitOrder(
        session_id="s", seq=1, ts_ns=2, client_order_id="a", symbol="BTC", side=Side.SELL,
        order_type=OrderType.STOP_LIMIT, qty=3, price=4, trigger_price=5, tif=TimeInForce.GTD,
        expire_ts_ns=9, post_only=False, reduce_only=True, display_qty=1, oco_group="g",
        bracket=m.Bracket(stop_loss=1, take_profits=(m.TakeProfitLeg(price=8, qty=1),)),
        trailing=m.Trailing(offset_bps=5), schedule=m.Schedule(slices=3, interval_ns=10),
        venue_hint="v", tag="t",
    )  # fmt: skip
    assert m.decode_command(m.encode(msg)) == msg


def test_cancel_all_leaves_nothing_open_even_with_bracket_children() -> None:
    d = Driver(SimVenue(participation_bps=5000))
    d.bar(100, 101, 99, 100)
    br = m.Bracket(stop_loss=90, take_profits=(m.TakeProfitLeg(price=110, qty=5),))
    d.submit("p", B, MKT, 10, bracket=br)
    d.bar(100, 101, 99, 100, volume=10)  # 5 of 10 lots fill; parent stays open
    out = d.cmd(m.KillSwitch)
    assert d.k.open_orders() == []
    assert [c.client_order_id for c in of(out, m.OrderCancelled)] == ["p", "p.sl", "p.tp1"]


def test_kernel_source_has_no_wall_clock_or_unseeded_randomness() -> None:
    """RELIABILITY promise 7, as a grep over the order kernel's sources."""
    import re

    root = Path(__file__).parents[2] / "order_kernel"
    banned = re.compile(
        r"time\.time\(|time\.monotonic\(|perf_counter\(|datetime\.now|datetime\.utcnow|"
        r"date\.today|import random|from random|default_rng\(\)|np\.random\.(rand|randint|random)\("
    )
    hits = [
        f"{p.relative_to(root)}:{i}: {line.strip()}"
        for p in sorted(root.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert hits == []


def test_silent_strategy_gets_its_orders_cancelled_once() -> None:
    d = Driver()
    d.k = OrderKernel(SESSION, instruments(), SimVenue(), heartbeat_timeout_ns=2 * H)
    d.bar(100, 101, 99, 100)
    d.submit("a", B, LMT, 1, price=50)  # heard at 1h
    assert of(d.bar(100, 101, 99, 100), m.OrderCancelled) == []  # 2h: 1h of silence
    assert of(d.bar(100, 101, 99, 100), m.OrderCancelled) == []  # 3h: exactly the timeout
    out = d.bar(100, 101, 99, 100)  # 4h: silent for 3h > 2h
    assert [(c.client_order_id, c.detail[:17]) for c in of(out, m.OrderCancelled)] == [
        ("a", "heartbeat timeout")
    ]
    d.cmd(m.Heartbeat)
    assert of(d.submit("b", B, LMT, 1, price=50), m.OrderAccepted)
    with pytest.raises(ConfigError):
        OrderKernel(SESSION, instruments(), SimVenue(), heartbeat_timeout_ns=0)


def test_instrument_spec_converts_exactly_and_rejects_bad_values() -> None:
    from order_kernel.instruments import InstrumentSpec

    inst = InstrumentSpec("BTC", Decimal("0.1"), Decimal("0.001"), maker_fee_bps=Decimal("-0.5"))
    assert inst.to_ticks(Decimal("61250.3")) == 612503
    assert inst.to_lots(Decimal("0.25")) == 250
    assert inst.price_of(612503) == Decimal("61250.3") and inst.qty_of(250) == Decimal("0.250")
    assert inst.money_of(12345) == Decimal("1.2345")
    assert inst.fee(3, 1000, maker=True) == 0  # rebate: ceil(-0.15) = 0
    assert inst.fee(10, 1000, maker=True) == 0 and inst.fee(100, 1000, maker=True) == -5
    with pytest.raises(ConfigError, match="not a multiple"):
        inst.to_ticks(Decimal("1.05"))
    with pytest.raises(ConfigError, match="price_increment"):
        InstrumentSpec("X", Decimal(0), Decimal("1"))
    with pytest.raises(ConfigError, match="kind"):
        InstrumentSpec("X", Decimal(1), Decimal(1), kind="option")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        InstrumentSpec("", Decimal(1), Decimal(1))
    with pytest.raises(ConfigError, match="keys must equal"):
        OrderKernel(SESSION, {"ETH": inst}, SimVenue())


def test_fills_that_would_overflow_int64_are_cancelled_not_wrapped() -> None:
    d = Driver()
    d.submit("big", B, MKT, 2**47)  # no bar yet: no reference price to check the notional
    out = d.bar(2**40, 2**40, 2**40, 2**40)
    assert of(out, m.OrderFilled) == []
    assert of(out, m.OrderCancelled)[0].reason is Reason.INVALID_QTY
    assert d.k.position("BTC").qty == 0
