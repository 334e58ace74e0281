"""`kernel.toml`: what an order-kernel process needs (instruments, venue, risk limits, logs).

Decoded with msgspec into strict structs, so a typo is an error with a path
(``Object contains unknown field `slipage_ticks` - at `$.venue` ``) plus the file name.
Relative paths (log_dir, risk_limits) are resolved against the config file's directory.

```toml
log_dir = "order-logs"          # one hash-chained log per session: <log_dir>/<session>.log
fsync = "batch"                 # always | batch | never (see docs/order-kernel.md)
risk_limits = "risk_limits.toml"  # optional, user-owned
heartbeat_interval_ms = 1000    # server -> client liveness beats on the PUB socket
capacity = 4096                 # order slots per session

[venue]                          # the simulated venue (paper mode)
kind = "sim"
slippage_ticks = 0
seed = 0

# or a real exchange through ccxt (live mode, see order_kernel/live.py):
# [venue]
# kind = "ccxt"
# exchange = "binance"           # a ccxt exchange id
# sandbox = true                 # the exchange's test network
# credentials = "env"            # "env" (STRATAGEM_<VENUE>_API_KEY/...) or an encrypted file path
# poll_interval_ms = 1000        # how often open orders are queried for fills

[[instruments]]
symbol = "BTC/USDT"
price_increment = "0.1"
size_increment = "0.001"
kind = "spot"
```
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import msgspec

from order_kernel.errors import ConfigError
from order_kernel.instruments import InstrumentSpec
from order_kernel.log import FsyncPolicy
from order_kernel.risk import RiskLimits
from order_kernel.venues.sim import NS_PER_HOUR, SimVenue


class InstrumentConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    symbol: str
    price_increment: str
    size_increment: str
    maker_fee_bps: str = "2"
    taker_fee_bps: str = "5"
    kind: Literal["spot", "perp"] = "spot"


class VenueConfig(
    msgspec.Struct,
    kw_only=True,
    forbid_unknown_fields=True,
    frozen=True,
    tag_field="kind",
    tag="sim",
):
    """The simulated venue (paper mode, backtests): `kind = "sim"`, the default."""

    slippage_ticks: int = 0
    slippage_bps: int = 0
    random_slippage_ticks: int = 0
    seed: int = 0
    participation_bps: int | None = None
    funding_interval_ns: int = 8 * NS_PER_HOUR
    funding_rate_ppb: int = 0
    # historical funding per symbol: [[settlement ts_ns, rate_ppb], ...], newest at or before
    # a settlement applies (SimVenue.set_funding_schedule); replaces funding_rate_ppb there
    funding_schedule: dict[str, list[tuple[int, int]]] = {}
    latency_ns: int = 0
    ack_latency_ns: int = 0
    fill_latency_ns: int = 0


class CcxtVenueConfig(
    msgspec.Struct,
    kw_only=True,
    forbid_unknown_fields=True,
    frozen=True,
    tag_field="kind",
    tag="ccxt",
):
    """Live venue: orders go to `exchange` through `CcxtVenue` (no secrets in this file)."""

    exchange: str
    sandbox: bool = False
    credentials: str = "env"  # "env" or the path of an encrypted credentials file
    credentials_name: str | None = None  # the venue's key in the store; default: `exchange`
    poll_interval_ms: int = 1000
    timeout_ms: int = 10_000
    api_url: str | None = None  # replaces the REST host (a local fake exchange in tests)

    def credentials_path(self, base_dir: str) -> Path | None:
        """The encrypted credentials file (relative to the config's directory), or None: env."""
        if self.credentials == "env":
            return None
        p = Path(self.credentials)
        return p if p.is_absolute() or not base_dir else Path(base_dir) / p


class KernelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    instruments: list[InstrumentConfig]
    venue: VenueConfig | CcxtVenueConfig = VenueConfig()
    log_dir: str = "order-logs"
    fsync: Literal["always", "batch", "never"] = "batch"
    risk_limits: str | None = None
    heartbeat_interval_ms: int = 1000
    capacity: int = 4096
    session_heartbeat_timeout_ns: int | None = None
    base_dir: str = ""  # filled in by load_config: the config file's directory

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self.fsync

    def log_path(self) -> Path:
        p = Path(self.log_dir)
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p

    def instrument_specs(self) -> dict[str, InstrumentSpec]:
        """InstrumentSpecs keyed by symbol (sorted), with the config's field names in errors."""
        out: dict[str, InstrumentSpec] = {}
        for i, ic in enumerate(self.instruments):
            where = f"instruments[{i}] ({ic.symbol!r})"
            if ic.symbol in out:
                raise ConfigError(f"{where}: symbol listed twice; keep one entry per symbol")
            try:
                out[ic.symbol] = InstrumentSpec(
                    ic.symbol,
                    Decimal(ic.price_increment),
                    Decimal(ic.size_increment),
                    Decimal(ic.maker_fee_bps),
                    Decimal(ic.taker_fee_bps),
                    kind=ic.kind,
                )
            except InvalidOperation as exc:
                raise ConfigError(
                    f'{where}: increments and fees must be decimal strings, e.g. "0.01"'
                ) from exc
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        return dict(sorted(out.items()))

    @property
    def venue_name(self) -> str:
        """How start-up messages name the venue ("sim", or the exchange id and network)."""
        v = self.venue
        if isinstance(v, CcxtVenueConfig):
            return f"{v.exchange} ({'sandbox' if v.sandbox else 'production'})"
        return "sim"

    @property
    def live(self) -> bool:
        """True when orders go to a real exchange (`[venue] kind = "ccxt"`)."""
        return isinstance(self.venue, CcxtVenueConfig)

    def make_venue(self) -> SimVenue:
        """A fresh venue with the configured parameters (also used to recover a session). In
        live mode a default SimVenue (no latency model) only serves the kernel's bookkeeping;
        it matches nothing (the exchange does)."""
        v = self.venue
        if isinstance(v, CcxtVenueConfig):
            return SimVenue()
        venue = SimVenue(
            slippage_ticks=v.slippage_ticks,
            slippage_bps=v.slippage_bps,
            random_slippage_ticks=v.random_slippage_ticks,
            seed=v.seed,
            participation_bps=v.participation_bps,
            funding_interval_ns=v.funding_interval_ns,
            funding_rate_ppb=v.funding_rate_ppb,
            latency_ns=v.latency_ns,
            ack_latency_ns=v.ack_latency_ns,
            fill_latency_ns=v.fill_latency_ns,
        )
        for symbol, rows in sorted(v.funding_schedule.items()):
            venue.set_funding_schedule(symbol, [t for t, _ in rows], [r for _, r in rows])
        return venue

    def risk(self) -> RiskLimits | None:
        if self.risk_limits is None:
            return None
        p = Path(self.risk_limits)
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return RiskLimits.from_toml(p)


def parse_config(
    text: str | bytes, where: str = "<kernel.toml>", base_dir: str = ""
) -> KernelConfig:
    """Decode and check a kernel config; errors name the file and the field path."""
    try:
        raw = msgspec.toml.decode(text)
        venue = raw.get("venue") if isinstance(raw, dict) else None
        if isinstance(venue, dict) and "kind" not in venue:
            venue["kind"] = "sim"  # the default venue; the tag is optional in the file
        cfg = msgspec.convert(raw, type=KernelConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc
    if not cfg.instruments:
        raise ConfigError(f"{where}: add at least one [[instruments]] table")
    if cfg.heartbeat_interval_ms <= 0:
        raise ConfigError(f"{where}: heartbeat_interval_ms must be > 0")
    if cfg.capacity <= 0:
        raise ConfigError(f"{where}: capacity must be > 0")
    if isinstance(cfg.venue, CcxtVenueConfig):
        if not cfg.venue.exchange:
            raise ConfigError(
                f"{where}: [venue] exchange must name a ccxt exchange id, e.g. 'binance'"
            )
        if cfg.venue.poll_interval_ms <= 0 or cfg.venue.timeout_ms <= 0:
            raise ConfigError(f"{where}: [venue] poll_interval_ms and timeout_ms must be > 0")
    cfg = msgspec.structs.replace(cfg, base_dir=base_dir)
    cfg.instrument_specs()  # validate now, not at the first session
    cfg.make_venue()
    return cfg


def load_config(path: str | Path) -> KernelConfig:
    """Read `kernel.toml`; relative paths inside it are relative to its directory."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{p}: config file not found; see docs/order-kernel.md for an example"
        ) from exc
    return parse_config(text, where=str(p), base_dir=str(p.resolve().parent))
