"""Shared builders for the order kernel tests (bars, commands, a small kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from order_kernel import messages as m
from order_kernel import spec
from order_kernel.instruments import InstrumentSpec
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.risk import RiskLimits
from order_kernel.spec import OrderEvent, OrderState, OrderType, Reason, Side
from order_kernel.venues.sim import SimVenue

H = 3_600_000_000_000
SESSION = "s1"


def instruments(kind: str = "spot") -> dict[str, InstrumentSpec]:
    return {
        "BTC": InstrumentSpec("BTC", Decimal("0.1"), Decimal("0.001"), kind=kind),  # type: ignore[arg-type]
        "ETH": InstrumentSpec("ETH", Decimal("0.01"), Decimal("0.01"), kind=kind),  # type: ignore[arg-type]
    }


class Driver:
    """Drives a kernel with auto-incrementing command seqs and hourly bars."""

    def __init__(
        self,
        venue: SimVenue | None = None,
        risk: RiskLimits | None = None,
        log: OrderLog | None = None,
        kind: str = "spot",
        capacity: int = 256,
    ) -> None:
        self.k = OrderKernel(
            SESSION, instruments(kind), venue or SimVenue(), log=log, risk=risk, capacity=capacity
        )
        self.seq = 0
        self.t = 0
        self.events: list[m.Event] = []

    def cmd(self, cls: type[Any], **kw: Any) -> list[m.Event]:
        self.seq += 1
        kw.setdefault("ts_ns", self.t * H)
        out = self.k.handle(cls(session_id=SESSION, seq=self.seq, **kw))
        self.events.extend(out)
        return out

    def submit(
        self, cid: str, side: Side, order_type: OrderType, qty: int, symbol: str = "BTC", **kw: Any
    ) -> list[m.Event]:
        return self.cmd(
            m.SubmitOrder,
            client_order_id=cid,
            symbol=symbol,
            side=side,
            order_type=order_type,
            qty=qty,
            **kw,
        )

    def bar(
        self, o: int, h: int, lo: int, c: int, volume: int = 1_000_000, symbol: str = "BTC"
    ) -> list[m.Event]:
        """Next hourly bar (advances the clock by one hour first)."""
        self.t += 1
        out = self.k.handle(
            m.MarketBar(
                session_id="feed",
                seq=0,
                ts_ns=self.t * H,
                symbol=symbol,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=volume,
                interval_ns=H,
            )
        )
        self.events.extend(out)
        return out


def of(events: list[m.Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


@dataclass
class RefOrder:
    """Plain-Python model of one order, interpreting spec.TRANSITIONS (the dict, not the arrays)."""

    qty: int
    state: OrderState = OrderState.INITIALIZED
    prev: OrderState = OrderState.INITIALIZED
    filled: int = 0
    price: int = 0
    trigger: int = 0
    amend: tuple[int, int, int] = (0, 0, 0)
    fills: list[tuple[int, int]] = field(default_factory=list)

    def apply(self, ev: OrderEvent, qty: int = 0, price: int = 0, trigger: int = 0) -> Reason:
        if ev in (OrderEvent.FILL_PARTIAL, OrderEvent.FILL_FULL):
            ev = OrderEvent.FILL_FULL if qty >= self.qty - self.filled else OrderEvent.FILL_PARTIAL
        t = spec.TRANSITIONS.get((self.state, ev))
        if t is None:
            return spec.refusal_reason(self.state, ev)
        if spec.Action.APPLY_FILL in t.actions:
            if qty <= 0:
                return Reason.INVALID_QTY
            if price <= 0:
                return Reason.INVALID_PRICE
            if qty > self.qty - self.filled:
                return Reason.OVERFILL
        if ev is OrderEvent.AMEND and qty <= self.filled:
            return Reason.INVALID_QTY
        if spec.Action.APPLY_AMEND in t.actions and self.amend[0] <= self.filled:
            return Reason.INVALID_QTY
        nxt = self.prev if t.next_state is None else t.next_state
        if spec.Action.SAVE_PREV in t.actions:
            self.prev = self.state
        if spec.Action.MARK_PREV_PARTIAL in t.actions:
            self.prev = OrderState.PARTIALLY_FILLED
        if spec.Action.APPLY_FILL in t.actions:
            self.filled += qty
            self.fills.append((qty, price))
        if ev is OrderEvent.AMEND:
            self.amend = (qty, price, trigger)
        if spec.Action.APPLY_AMEND in t.actions:
            self.qty, self.price, self.trigger = self.amend
        self.state = nxt
        return Reason.OK
