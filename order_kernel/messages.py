"""Messages between the strategy kernel and the order kernel (msgspec tagged unions).

The same structs travel in-process in backtests and as msgpack over ZeroMQ live. Every message
carries `session_id`, a per-session monotonically increasing `seq` and `ts_ns` (int64 ns UTC).
Prices are integer ticks and quantities integer lots: exact, fixed width, FPGA-friendly;
conversion to decimal happens at the edges with the instrument's increments. Money (fees, PnL,
funding, cost basis) is in *notional units*: 1 unit = price_increment x size_increment of the
quote currency, so qty (lots) x price (ticks) is a notional exactly.

Naming: commands are imperative (`SubmitOrder`), events past tense (`OrderFilled`).
`*Denied` means refused by us (kernel or risk gate), `*Rejected` means refused by the venue.
"""

from __future__ import annotations

from typing import Final

import msgspec

from order_kernel.spec import Liquidity, OrderType, Reason, Side, TimeInForce


class Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag=True,
):
    """Header shared by every message. `possible_duplicate` marks a resend (FIX PossDupFlag)."""

    session_id: str
    seq: int
    ts_ns: int
    possible_duplicate: bool = False


# ---------------------------------------------------------------- order description


class TakeProfitLeg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    price: int  # ticks
    qty: int  # lots


class Bracket(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exit orders the kernel places, reduce-only and linked, once the parent fills."""

    stop_loss: int | None = None  # trigger price in ticks
    take_profits: tuple[TakeProfitLeg, ...] = ()


class Trailing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A trailing stop follows the best price by a fixed distance (exactly one is set)."""

    offset_ticks: int | None = None
    offset_bps: int | None = None


class Schedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """TWAP / interval execution: `slices` child orders, one every `interval_ns`."""

    slices: int
    interval_ns: int


# ---------------------------------------------------------------- commands (strategy -> kernel)


class SubmitOrder(Message, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: int
    price: int | None = None  # limit price, ticks
    trigger_price: int | None = None  # stop trigger, ticks
    tif: TimeInForce = TimeInForce.GTC
    expire_ts_ns: int | None = None  # GTD deadline
    post_only: bool = False
    reduce_only: bool = False
    display_qty: int | None = None  # iceberg: visible quantity
    oco_group: str | None = None  # orders sharing a group cancel each other on fill
    bracket: Bracket | None = None
    trailing: Trailing | None = None
    schedule: Schedule | None = None
    venue_hint: str | None = None
    tag: str = ""  # free text from the strategy (e.g. "entry", "tp1"); logged, never interpreted


class AmendOrder(Message, frozen=True, kw_only=True):
    """Change a working order in place; it keeps its client_order_id."""

    client_order_id: str
    qty: int | None = None
    price: int | None = None
    trigger_price: int | None = None
    expire_ts_ns: int | None = None


class CancelOrder(Message, frozen=True, kw_only=True):
    client_order_id: str


class CancelAll(Message, frozen=True, kw_only=True):
    symbol: str | None = None  # None: every symbol of the session


class SetTimer(Message, frozen=True, kw_only=True):
    """Ask the kernel to emit TimerFired at `fire_ts_ns`; timers are data, never callbacks."""

    timer_id: str
    fire_ts_ns: int
    client_order_id: str | None = None
    cancel_order_on_fire: bool = False


class KillSwitch(Message, frozen=True, kw_only=True):
    """Cancel all, block new orders; optionally flatten positions at market."""

    flatten: bool = False
    reason: str = ""


class Heartbeat(Message, frozen=True, kw_only=True):
    pass


class ResendRequest(Message, frozen=True, kw_only=True):
    """FIX-style gap fill: resend messages with begin_seq <= seq <= end_seq (0 = to the end)."""

    begin_seq: int
    end_seq: int = 0


class MarketBar(Message, frozen=True, kw_only=True):
    """Market data the simulated venue matches against (ticks and lots)."""

    symbol: str
    open: int
    high: int
    low: int
    close: int
    volume: int
    interval_ns: int = 0  # bar length; fills happen inside [ts_ns, ts_ns + interval_ns)


# ---------------------------------------------------------------- events (kernel -> strategy)


class OrderAccepted(Message, frozen=True, kw_only=True):
    client_order_id: str
    venue_order_id: str


class OrderDenied(Message, frozen=True, kw_only=True):
    """Refused by our kernel or risk gate; never reached a venue."""

    client_order_id: str
    reason: Reason
    detail: str = ""


class CommandDenied(Message, frozen=True, kw_only=True):
    """A cancel/amend/timer/other command refused by our kernel (e.g. invalid transition)."""

    ref_seq: int
    command: str
    client_order_id: str | None = None
    reason: Reason
    detail: str = ""


class OrderRejected(Message, frozen=True, kw_only=True):
    """Refused by the venue."""

    client_order_id: str
    reason: Reason
    detail: str = ""


class OrderTriggered(Message, frozen=True, kw_only=True):
    client_order_id: str
    trigger_price: int


class OrderFilled(Message, frozen=True, kw_only=True):
    client_order_id: str
    trade_id: str
    symbol: str
    side: Side
    partial: bool
    qty: int  # lots in this fill
    price: int  # ticks
    fee: int  # notional units, >= 0 paid, < 0 rebate
    liquidity: Liquidity
    leaves_qty: int
    filled_qty: int


class OrderCancelled(Message, frozen=True, kw_only=True):
    client_order_id: str
    reason: Reason = Reason.OK
    detail: str = ""


class OrderExpired(Message, frozen=True, kw_only=True):
    client_order_id: str


class AmendAccepted(Message, frozen=True, kw_only=True):
    client_order_id: str
    qty: int
    price: int | None
    trigger_price: int | None


class AmendRejected(Message, frozen=True, kw_only=True):
    client_order_id: str
    reason: Reason
    detail: str = ""


class CancelRejected(Message, frozen=True, kw_only=True):
    client_order_id: str
    reason: Reason
    detail: str = ""


class TimerFired(Message, frozen=True, kw_only=True):
    timer_id: str
    client_order_id: str | None = None


class PositionUpdate(Message, frozen=True, kw_only=True):
    """Position after a fill or funding. `cost_basis` = sum of signed qty * price (tick-lots)."""

    symbol: str
    qty: int  # signed lots, > 0 long
    cost_basis: int
    realized_pnl: int  # notional units
    fees_paid: int  # notional units
    funding_paid: int = 0  # notional units, > 0 paid


class FundingApplied(Message, frozen=True, kw_only=True):
    symbol: str
    rate_ppb: int  # funding rate in parts per billion
    amount: int  # notional units, > 0 paid by us


Command = (
    SubmitOrder
    | AmendOrder
    | CancelOrder
    | CancelAll
    | SetTimer
    | KillSwitch
    | Heartbeat
    | ResendRequest
    | MarketBar
)
Event = (
    OrderAccepted
    | OrderDenied
    | CommandDenied
    | OrderRejected
    | OrderTriggered
    | OrderFilled
    | OrderCancelled
    | OrderExpired
    | AmendAccepted
    | AmendRejected
    | CancelRejected
    | TimerFired
    | PositionUpdate
    | FundingApplied
    | Heartbeat
    | ResendRequest
)
AnyMessage = Command | Event

COMMAND_TYPES: Final[tuple[type[Message], ...]] = (
    SubmitOrder,
    AmendOrder,
    CancelOrder,
    CancelAll,
    SetTimer,
    KillSwitch,
    Heartbeat,
    ResendRequest,
    MarketBar,
)
EVENT_TYPES: Final[tuple[type[Message], ...]] = (
    OrderAccepted,
    OrderDenied,
    CommandDenied,
    OrderRejected,
    OrderTriggered,
    OrderFilled,
    OrderCancelled,
    OrderExpired,
    AmendAccepted,
    AmendRejected,
    CancelRejected,
    TimerFired,
    PositionUpdate,
    FundingApplied,
)

_encoder: Final = msgspec.msgpack.Encoder()
_command_decoder: Final = msgspec.msgpack.Decoder(Command)
_event_decoder: Final = msgspec.msgpack.Decoder(Event)
_any_decoder: Final = msgspec.msgpack.Decoder(AnyMessage)


def encode(msg: Message) -> bytes:
    """msgpack bytes of a message (deterministic: field order is the struct's)."""
    return _encoder.encode(msg)


def decode_command(data: bytes) -> Command:
    """Decode a strategy->kernel message; raises msgspec.ValidationError/DecodeError with a path."""
    msg: Command = _command_decoder.decode(data)
    return msg


def decode_event(data: bytes) -> Event:
    """Decode a kernel->strategy message."""
    msg: Event = _event_decoder.decode(data)
    return msg


def decode_any(data: bytes) -> AnyMessage:
    msg: AnyMessage = _any_decoder.decode(data)
    return msg
