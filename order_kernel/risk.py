"""Account-level hard limits from the user's `risk_limits.toml`, and the gate that enforces them.

Money limits are in quote currency and position limits in base units (Decimal, as a person
writes them); the gate converts them per instrument into exact integer notional units / lots.
An artifact may `tighten` the limits, never loosen them.

Example `risk_limits.toml`::

    max_order_notional = "50000"     # quote currency per order
    max_position = "2.5"             # base units, absolute, per symbol
    max_open_orders = 20
    max_orders_per_sec = 5
    max_daily_loss = "1500"          # quote currency, realised + unrealised, per UTC day
    restricted_symbols = ["DOGE/USDT"]
"""

from __future__ import annotations

import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from order_kernel.errors import ConfigError
from order_kernel.instruments import InstrumentSpec
from order_kernel.spec import Reason

NS_PER_SEC = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SEC

_DECIMAL_FIELDS = ("max_order_notional", "max_position", "max_daily_loss")
_INT_FIELDS = ("max_open_orders", "max_orders_per_sec")
_KNOWN = frozenset((*_DECIMAL_FIELDS, *_INT_FIELDS, "restricted_symbols"))


def _min_opt(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Hard limits; None means "no limit". Restricted symbols can never trade."""

    max_order_notional: Decimal | None = None
    max_position: Decimal | None = None
    max_open_orders: int | None = None
    max_orders_per_sec: int | None = None
    max_daily_loss: Decimal | None = None
    restricted_symbols: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in _DECIMAL_FIELDS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, Decimal) or not v.is_finite() or v < 0):
                raise ConfigError(
                    f"RiskLimits.{name} = {v!r}: must be a non-negative Decimal or None"
                )
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"RiskLimits.{name} = {v!r}: must be a non-negative int or None")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "<mapping>") -> RiskLimits:
        """Build from parsed TOML; names the unknown or badly typed key and the file."""
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(_KNOWN)}"
            )
        kwargs: dict[str, Any] = {}
        for name in _DECIMAL_FIELDS:
            if name in data:
                raw = data[name]
                if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                    raise ConfigError(
                        f'{where}: {name} = {raw!r}: write a number, e.g. {name} = "1000"'
                    )
                try:
                    kwargs[name] = Decimal(str(raw))
                except InvalidOperation as exc:
                    raise ConfigError(f"{where}: {name} = {raw!r} is not a number") from exc
        for name in _INT_FIELDS:
            if name in data:
                raw = data[name]
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ConfigError(f"{where}: {name} = {raw!r}: must be a whole number")
                kwargs[name] = raw
        if "restricted_symbols" in data:
            raw = data["restricted_symbols"]
            if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
                raise ConfigError(f"{where}: restricted_symbols must be a list of strings")
            kwargs["restricted_symbols"] = frozenset(raw)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> RiskLimits:
        """Load the user-owned `risk_limits.toml`."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{p}: risk limits file not found; create it (see order_kernel.risk)"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
        return cls.from_mapping(data, where=str(p))

    def tighten(self, other: RiskLimits) -> RiskLimits:
        """Limits at least as strict as both: the smaller of each, the union of restrictions."""
        return RiskLimits(
            max_order_notional=_min_opt(self.max_order_notional, other.max_order_notional),
            max_position=_min_opt(self.max_position, other.max_position),
            max_open_orders=_min_opt(self.max_open_orders, other.max_open_orders),
            max_orders_per_sec=_min_opt(self.max_orders_per_sec, other.max_orders_per_sec),
            max_daily_loss=_min_opt(self.max_daily_loss, other.max_daily_loss),
            restricted_symbols=self.restricted_symbols | other.restricted_symbols,
        )


class RiskGate:
    """Stateful checks of the limits on the injected clock (ts_ns of each command)."""

    def __init__(self, limits: RiskLimits, instruments: Mapping[str, InstrumentSpec]) -> None:
        self.limits = limits
        self._notional_units: dict[str, int | None] = {}
        self._position_lots: dict[str, int | None] = {}
        for sym, inst in instruments.items():
            lim = limits.max_order_notional
            self._notional_units[sym] = None if lim is None else int(lim / inst.notional_unit)
            pos = limits.max_position
            self._position_lots[sym] = None if pos is None else int(pos / inst.size_increment)
        self._recent: deque[int] = deque()
        self._day = -1
        self._day_start_equity = Decimal(0)

    def snapshot(self) -> tuple[object, ...]:
        """The gate's mutable state (for recovery equality checks)."""
        return (tuple(self._recent), self._day, self._day_start_equity)

    def is_new_day(self, ts_ns: int) -> bool:
        """Would `roll_day` take a new snapshot? (lets callers skip computing equity per bar)"""
        return ts_ns // NS_PER_DAY != self._day

    def roll_day(self, ts_ns: int, equity: Decimal) -> None:
        """Snapshot net equity at the first command of each UTC day (for the daily loss stop)."""
        day = ts_ns // NS_PER_DAY
        if day != self._day:
            self._day = day
            self._day_start_equity = equity

    def daily_loss(self, equity: Decimal) -> Decimal:
        return self._day_start_equity - equity

    def check(
        self,
        *,
        symbol: str,
        qty: int,
        signed_qty: int,
        ref_price: int | None,
        position: int,
        open_orders: int,
        ts_ns: int,
        equity: Decimal,
        reduce_only: bool,
    ) -> tuple[Reason, str] | None:
        """None if the order passes; else (reason, detail). Records the order for the rate limit."""
        lim = self.limits
        if symbol in lim.restricted_symbols:
            return Reason.RISK_RESTRICTED_SYMBOL, f"{symbol} is in restricted_symbols"
        if lim.max_open_orders is not None and open_orders >= lim.max_open_orders:
            return (
                Reason.RISK_MAX_OPEN_ORDERS,
                f"{open_orders} open orders, max_open_orders = {lim.max_open_orders}",
            )
        max_units = self._notional_units.get(symbol)
        if max_units is not None:
            if ref_price is None:
                return (
                    Reason.RISK_MAX_NOTIONAL,
                    "no reference price yet (no bar seen) to check max_order_notional",
                )
            if qty * ref_price > max_units:
                return (
                    Reason.RISK_MAX_NOTIONAL,
                    f"notional {qty * ref_price} units > max {max_units} units",
                )
        max_lots = self._position_lots.get(symbol)
        new_pos = position + signed_qty
        if max_lots is not None and abs(new_pos) > max_lots and abs(new_pos) > abs(position):
            return (
                Reason.RISK_MAX_POSITION,
                f"position would be {new_pos} lots, max_position = {max_lots} lots",
            )
        if lim.max_daily_loss is not None and not reduce_only:
            self.roll_day(ts_ns, equity)
            loss = self.daily_loss(equity)
            if loss >= lim.max_daily_loss:
                return (
                    Reason.RISK_DAILY_LOSS,
                    f"daily loss {loss} >= max_daily_loss {lim.max_daily_loss}",
                )
        if lim.max_orders_per_sec is not None:
            while self._recent and self._recent[0] <= ts_ns - NS_PER_SEC:
                self._recent.popleft()
            if len(self._recent) >= lim.max_orders_per_sec:
                return (
                    Reason.RISK_RATE_LIMIT,
                    f"{len(self._recent)} orders in the last second, max_orders_per_sec = {lim.max_orders_per_sec}",
                )
            self._recent.append(ts_ns)
        return None
