"""Hypothesis state machine over random commands and bars driving the whole kernel.

A plain-Python reference (`RefOrder`, which interprets `spec.TRANSITIONS`) replays each order's
lifecycle from the events the kernel emits; the kernel's order states must match it. Invariants
after every step: filled <= qty, terminal states absorbing, position = sum of fills, fees >= 0,
OCO siblings never both filled, trade ids unique, seq increasing, refusals change nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from ok_helpers import Driver, RefOrder

from order_kernel import messages as m
from order_kernel.spec import (
    TERMINAL_STATES,
    OrderEvent,
    OrderState,
    OrderType,
    Reason,
    Side,
    TimeInForce,
)
from order_kernel.venues.sim import SimVenue

E = OrderEvent
TYPES = [OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]


class KernelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver(SimVenue(participation_bps=3000, slippage_ticks=1), capacity=64)
        self.d.bar(100, 101, 99, 100)
        self.price = 100
        self.ref: dict[str, RefOrder] = {}
        self.terminal: dict[str, OrderState] = {}
        self.fills_by_cid: dict[str, int] = {}
        self.trade_ids: set[str] = set()
        self.pos = 0
        self.last_seq = len(self.d.events)
        self.n = 0
        self._absorb(self.d.events)

    # ------------------------------------------------------------ reference replay from events

    def _absorb(self, events: list[m.Event]) -> None:
        for ev in events:
            if ev.possible_duplicate:
                continue
            assert ev.seq == self.last_seq + 1 or not self.ref, (ev.seq, self.last_seq)
            self.last_seq = ev.seq
            cid = getattr(ev, "client_order_id", None)
            r = self.ref.get(cid) if cid is not None else None
            if isinstance(ev, m.OrderAccepted | m.OrderDenied | m.OrderRejected):
                o = self.d.k.order(ev.client_order_id)
                r = self.ref.setdefault(ev.client_order_id, RefOrder(qty=o.qty))
                if isinstance(ev, m.OrderDenied):
                    assert r.apply(E.DENY) is Reason.OK
                else:
                    assert r.apply(E.SUBMIT) is Reason.OK
                    assert (
                        r.apply(E.ACCEPT if isinstance(ev, m.OrderAccepted) else E.REJECT)
                        is Reason.OK
                    )
            elif isinstance(ev, m.OrderTriggered):
                assert r is not None and r.apply(E.TRIGGER) is Reason.OK
            elif isinstance(ev, m.OrderFilled):
                assert r is not None and r.apply(E.FILL_FULL, ev.qty, ev.price) is Reason.OK
                assert ev.fee >= 0 and ev.trade_id not in self.trade_ids
                assert ev.filled_qty == r.filled and ev.leaves_qty == r.qty - r.filled
                self.trade_ids.add(ev.trade_id)
                parent = self.d.k._orders[ev.client_order_id].parent
                if parent is not None:  # a TWAP slice: the parent's record mirrors the fill
                    rp = self.ref[parent.cmd.client_order_id]
                    assert rp.apply(E.FILL_FULL, ev.qty, ev.price) is Reason.OK
                self.fills_by_cid[ev.client_order_id] = (
                    self.fills_by_cid.get(ev.client_order_id, 0) + 1
                )
                if ev.symbol == "BTC":
                    self.pos += ev.qty if ev.side is Side.BUY else -ev.qty
            elif isinstance(ev, m.OrderCancelled):
                assert r is not None
                if r.state in (
                    OrderState.SUBMITTED,
                    OrderState.TRIGGERED,
                    OrderState.PARTIALLY_FILLED,
                ):
                    r.apply(E.CANCEL)
                assert r.apply(E.CANCEL_ACK) is Reason.OK
            elif isinstance(ev, m.OrderExpired):
                assert r is not None and r.apply(E.EXPIRE) is Reason.OK
            elif isinstance(ev, m.AmendAccepted):
                assert (
                    r is not None
                    and r.apply(E.AMEND, ev.qty, ev.price or 0, ev.trigger_price or 0) is Reason.OK
                )
                assert r.apply(E.AMEND_ACK) is Reason.OK
            elif isinstance(ev, m.AmendRejected):
                assert r is not None and r.apply(E.AMEND, r.qty, r.price, r.trigger) is Reason.OK
                assert r.apply(E.AMEND_REJECT) is Reason.OK

    def _run(self, fn: Any, *a: Any, **kw: Any) -> list[m.Event]:
        k = self.d.k
        open_slots = sorted(o.slot for o in k._open.values())
        before = (k.machine.orders[:, open_slots].copy(), k.machine.positions.copy(), k.last_seq)
        out: list[m.Event] = fn(*a, **kw)
        if out and all(isinstance(e, m.CommandDenied | m.OrderDenied) for e in out):
            # a refusal changes nothing of the existing orders or positions
            np.testing.assert_array_equal(k.machine.orders[:, open_slots], before[0])
            np.testing.assert_array_equal(k.machine.positions, before[1])
            assert k.last_seq == before[2] + sum(not e.possible_duplicate for e in out)
        if not out:
            np.testing.assert_array_equal(k.machine.positions, before[1])
        self._absorb(out)
        return out

    # ------------------------------------------------------------ rules

    @rule(
        ot=st.sampled_from(TYPES),
        side=st.sampled_from([Side.BUY, Side.SELL]),
        qty=st.integers(1, 8),
        off=st.integers(-6, 6),
        tif=st.sampled_from(
            [TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD]
        ),
        oco=st.sampled_from([None, None, "g1", "g2"]),
        reduce_only=st.booleans(),
        bracket=st.booleans(),
        trailing=st.integers(0, 3),
        display=st.sampled_from([None, None, 1, 2]),
    )
    def submit(
        self,
        ot: OrderType,
        side: Side,
        qty: int,
        off: int,
        tif: TimeInForce,
        oco: str | None,
        reduce_only: bool,
        bracket: bool,
        trailing: int,
        display: int | None,
    ) -> None:
        self.n += 1
        kw: dict[str, Any] = {"tif": tif, "oco_group": oco, "reduce_only": reduce_only}
        if display is not None and display <= qty:
            kw["display_qty"] = display  # iceberg (rule 16)
        px = max(1, self.price + off)
        if ot in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            kw["price"] = px
        if ot in (OrderType.STOP, OrderType.STOP_LIMIT):
            kw["trigger_price"] = max(
                1, self.price + (abs(off) + 1) * (1 if side is Side.BUY else -1)
            )
        if ot is OrderType.STOP and trailing:
            kw["trailing"] = m.Trailing(offset_ticks=trailing)
        if tif is TimeInForce.GTD:
            kw["expire_ts_ns"] = (self.d.t + 2) * 3_600_000_000_000
        if bracket and not reduce_only:
            sign = 1 if side is Side.BUY else -1
            ref = kw.get("price") or kw.get("trigger_price") or self.price
            kw["bracket"] = m.Bracket(
                stop_loss=max(1, ref - sign * 5) if sign > 0 or ref > 5 else None,
                take_profits=(m.TakeProfitLeg(price=max(1, ref + sign * 5), qty=qty),),
            )
        self._run(self.d.submit, f"o{self.n}", side, ot, qty, **kw)

    @rule(
        side=st.sampled_from([Side.BUY, Side.SELL]),
        qty=st.integers(1, 8),
        slices=st.integers(1, 4),
        limit=st.booleans(),
        off=st.integers(-3, 3),
        ioc=st.booleans(),
        reduce_only=st.booleans(),
    )
    def submit_twap(
        self,
        side: Side,
        qty: int,
        slices: int,
        limit: bool,
        off: int,
        ioc: bool,
        reduce_only: bool,
    ) -> None:
        self.n += 1
        kw: dict[str, Any] = {
            "schedule": m.Schedule(slices=slices, interval_ns=3_600_000_000_000),
            "tif": TimeInForce.IOC if ioc else TimeInForce.GTC,
            "reduce_only": reduce_only,
        }
        if limit:
            kw["price"] = max(1, self.price + off)
        self._run(
            self.d.submit,
            f"o{self.n}",
            side,
            OrderType.LIMIT if limit else OrderType.MARKET,
            qty,
            **kw,
        )

    @precondition(lambda self: bool(self.ref))
    @rule(data=st.data())
    def resubmit_same_id(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.ref)))
        n_before = len(self.d.k.orders())
        out = self._run(self.d.submit, cid, Side.BUY, OrderType.MARKET, 1)
        assert len(self.d.k.orders()) == n_before and all(e.possible_duplicate for e in out)

    @precondition(lambda self: bool(self.ref))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.ref)))
        self._run(self.d.cmd, m.CancelOrder, client_order_id=cid)

    @precondition(lambda self: bool(self.ref))
    @rule(data=st.data(), dq=st.integers(-3, 3), dp=st.integers(-3, 3))
    def amend(self, data: st.DataObject, dq: int, dp: int) -> None:
        cid = data.draw(st.sampled_from(sorted(self.ref)))
        o = self.d.k.order(cid)
        kw: dict[str, Any] = {"qty": max(1, o.qty + dq)}
        if o.price is not None:
            kw["price"] = max(1, o.price + dp)
        self._run(self.d.cmd, m.AmendOrder, client_order_id=cid, **kw)

    @rule(
        move=st.integers(-5, 5), up=st.integers(0, 4), dn=st.integers(0, 4), vol=st.integers(0, 40)
    )
    def bar(self, move: int, up: int, dn: int, vol: int) -> None:
        o = self.price
        c = max(2, o + move)
        hi, lo = max(o, c) + up, max(1, min(o, c) - dn)
        self.price = c
        out = self._run(self.d.bar, o, hi, lo, c, volume=vol)
        for f in out:
            if isinstance(f, m.OrderFilled):
                assert lo <= f.price <= hi

    @rule(flatten=st.booleans())
    def kill(self, flatten: bool) -> None:
        self._run(self.d.cmd, m.KillSwitch, flatten=flatten)

    @rule(dt=st.integers(0, 3), cancel=st.booleans(), data=st.data())
    def timer(self, dt: int, cancel: bool, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.ref))) if self.ref and cancel else None
        self._run(
            self.d.cmd,
            m.SetTimer,
            timer_id=f"t{dt}",
            fire_ts_ns=(self.d.t + dt) * 3_600_000_000_000,
            client_order_id=cid,
            cancel_order_on_fire=cancel,
        )

    # ------------------------------------------------------------ invariants

    @invariant()
    def orders_match_reference(self) -> None:
        for cid, r in self.ref.items():
            o = self.d.k.order(cid)
            assert o.state is r.state, (cid, o.state, r.state)
            assert 0 <= o.filled_qty <= o.qty and o.filled_qty == r.filled
            if cid in self.terminal:
                assert o.state is self.terminal[cid]  # absorbing
            elif o.state in TERMINAL_STATES:
                self.terminal[cid] = o.state

    @invariant()
    def position_is_sum_of_fills(self) -> None:
        p = self.d.k.position("BTC")
        assert p.qty == self.pos
        assert p.fees_paid >= 0

    @invariant()
    def twap_parent_is_the_sum_of_its_slices(self) -> None:
        for cid, o in self.d.k._orders.items():
            if o.cmd.schedule is not None and o.slices:
                kids = [self.d.k.order(s.cmd.client_order_id) for s in o.slices]
                assert self.d.k.order(cid).filled_qty == sum(k.filled_qty for k in kids)
                assert len(o.slices) <= o.cmd.schedule.slices

    @invariant()
    def oco_siblings_never_both_filled(self) -> None:
        groups: dict[str, int] = {}
        for o in self.d.k.orders():
            g = self.d.k._orders[o.client_order_id].cmd.oco_group
            if g is not None and o.filled_qty > 0:
                groups[g] = groups.get(g, 0) + 1
        assert all(v <= 1 for v in groups.values()), groups

    @invariant()
    def kernel_only_sends_events_the_table_allows(self) -> None:
        # in the simulated venue every open order is in a working state, so the kernel's own
        # lookups refuse bad commands before the machine sees them: the counter stays at 0
        assert self.d.k.refusals == 0


KernelMachine.TestCase.settings = settings(
    max_examples=max(1000, settings().max_examples),  # the "long" profile runs 20,000
    stateful_step_count=50,
    deadline=None,
)
TestKernelMachine = KernelMachine.TestCase
