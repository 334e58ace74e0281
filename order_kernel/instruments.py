"""Per-instrument constants the kernel needs to turn decimals into ticks/lots and to charge fees."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from order_kernel.errors import ConfigError

InstrumentKind = Literal["spot", "perp"]


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Increments and fees of one symbol. Money inside the kernel is in notional units
    (price_increment x size_increment of the quote currency), so qty*price is exact."""

    symbol: str
    price_increment: Decimal
    size_increment: Decimal
    maker_fee_bps: Decimal | int = 2
    taker_fee_bps: Decimal | int = 5
    kind: InstrumentKind = "spot"

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ConfigError(
                "InstrumentSpec.symbol is empty; give the venue symbol, e.g. 'BTC/USDT'"
            )
        for name in ("price_increment", "size_increment"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise ConfigError(
                    f"InstrumentSpec({self.symbol!r}).{name} = {value!r}: must be a positive Decimal, "
                    "e.g. Decimal('0.01')"
                )
        if self.kind not in ("spot", "perp"):
            raise ConfigError(
                f"InstrumentSpec({self.symbol!r}).kind = {self.kind!r}: use 'spot' or 'perp'"
            )

    @property
    def notional_unit(self) -> Decimal:
        """Quote-currency value of one notional unit (one tick times one lot)."""
        return self.price_increment * self.size_increment

    def to_ticks(self, price: Decimal) -> int:
        """Price in ticks; raises if the price is not a whole number of ticks."""
        return _exact_units(price, self.price_increment, f"{self.symbol} price")

    def to_lots(self, qty: Decimal) -> int:
        """Quantity in lots; raises if the quantity is not a whole number of lots."""
        return _exact_units(qty, self.size_increment, f"{self.symbol} quantity")

    def price_of(self, ticks: int) -> Decimal:
        return ticks * self.price_increment

    def qty_of(self, lots: int) -> Decimal:
        return lots * self.size_increment

    def money_of(self, units: int) -> Decimal:
        """Quote-currency amount of an integer notional-unit amount (fees, PnL, funding)."""
        return units * self.notional_unit

    def fee(self, qty: int, price: int, maker: bool) -> int:
        """Fee in notional units: ceil(qty*price*bps/10_000), exact integer arithmetic."""
        bps = Fraction(self.maker_fee_bps if maker else self.taker_fee_bps)
        raw = Fraction(qty * price) * bps / 10_000
        return -((-raw.numerator) // raw.denominator)


def _exact_units(value: Decimal, increment: Decimal, what: str) -> int:
    units = value / increment
    if units != units.to_integral_value():
        raise ConfigError(
            f"{what} {value} is not a multiple of the increment {increment}; round it first"
        )
    return int(units)
