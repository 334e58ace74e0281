"""Seeded synthetic OHLCV bars for tests, demos and the bundled sample data.

The model, per bar of length ``dt`` (in years, 365-day calendar: crypto trades 24/7):

* a Markov chain of regimes (trending / ranging / volatile); a regime lasts a geometric number
  of bars with the regime's mean duration, then hands over to another regime chosen by
  ``entry_weight``; a trending regime draws its direction (up or down) when it starts;
* log price ``x`` follows ``dx = (mu - sigma^2/2) dt - k_a (x - ln anchor) dt
  - k_r (x - x_entry) dt + sigma dW + jumps``: GBM drift and volatility of the regime, a weak
  pull to a long-run anchor price (keeps long series in a plausible band), the regime's mean
  reversion to the price at regime entry (ranging markets), and Poisson jumps;
* each bar is simulated on ``substeps`` sub-steps, so high/low are the extremes of a real path
  (open and close included), not noise added to the close;
* volume = base * regime multiplier * hour-of-day seasonality * (1 + coupling * |r| / sigma_ref)
  * lognormal noise, so volume rises with the absolute return.

Everything is drawn from one ``numpy.random.Generator(PCG64(seed))`` in a fixed order, so the
bars are fully determined by (seed, start, n, timeframe, params). Prices are rounded to
``price_decimals`` and volume to ``volume_decimals`` (exchange-like ticks and lots; this also
makes CSV round trips exact).

Command line (this is how ``examples/data/btcusdt-1h-synthetic.csv`` is made)::

    python -m feeds.synthetic --seed 7 --start 2024-01-01 --bars 9000 --timeframe 1h \\
        --out examples/data/btcusdt-1h-synthetic.csv
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import polars as pl
from numpy.random import PCG64, Generator

from feeds.errors import FeedError
from feeds.files import TimestampFormat, conform_bars, write_bars
from feeds.schema import NS_PER_DAY, NS_PER_HOUR, timeframe_to_ns

__all__ = [
    "DEFAULT_PARAMS",
    "REGIME_NAMES",
    "Regime",
    "SyntheticParams",
    "SyntheticPath",
    "generate_bars",
    "main",
    "parse_start",
    "simulate",
]

NS_PER_YEAR: Final = 365 * NS_PER_DAY


class Regime(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One market state; rates are annualised, durations in days (timeframe independent)."""

    name: str
    annual_drift: float  # mu; for a trending regime the sign is drawn at regime entry
    annual_vol: float  # sigma
    mean_reversion: float  # k_r per year toward the price at regime entry (0 = none)
    jumps_per_day: float  # Poisson intensity
    jump_sigma: float  # std of a jump in log price
    volume_mult: float
    mean_duration_days: float
    entry_weight: float  # relative chance of being chosen when the current regime ends
    random_sign: bool = False  # draw +/- annual_drift at entry (trends go both ways)


class SyntheticParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """All knobs of the generator; the defaults look like BTC/USDT in 2024 (40k-70k)."""

    start_price: float = 42_000.0
    anchor_price: float = 55_000.0
    anchor_strength: float = 1.5  # k_a per year; 0 = pure regime-switching GBM
    regimes: tuple[Regime, ...] = (
        Regime(
            name="trending",
            annual_drift=0.9,
            annual_vol=0.45,
            mean_reversion=0.0,
            jumps_per_day=0.05,
            jump_sigma=0.012,
            volume_mult=1.0,
            mean_duration_days=20.0,
            entry_weight=1.0,
            random_sign=True,
        ),
        Regime(
            name="ranging",
            annual_drift=0.0,
            annual_vol=0.30,
            mean_reversion=40.0,
            jumps_per_day=0.02,
            jump_sigma=0.008,
            volume_mult=0.7,
            mean_duration_days=15.0,
            entry_weight=1.0,
        ),
        Regime(
            name="volatile",
            annual_drift=0.0,
            annual_vol=0.95,
            mean_reversion=0.0,
            jumps_per_day=0.3,
            jump_sigma=0.025,
            volume_mult=1.8,
            mean_duration_days=5.0,
            entry_weight=0.5,
        ),
    )
    initial_regime: int = 1  # index into regimes
    substeps: int = 16
    base_volume_per_day: float = 25_000.0  # base-currency units
    volume_return_coupling: float = 1.5
    volume_sigma_ref: float = 0.5  # annual vol that counts as "normal" for the coupling
    volume_noise: float = 0.35  # lognormal sigma
    seasonality: float = 0.3  # hour-of-day volume amplitude (used when timeframe < 1d)
    seasonality_peak_hour: int = 14  # UTC
    price_decimals: int = 2
    volume_decimals: int = 4

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.regimes:
            problems.append("regimes must not be empty")
        if not 0 <= self.initial_regime < len(self.regimes):
            problems.append(f"initial_regime {self.initial_regime} is not an index of regimes")
        if self.start_price <= 0 or self.anchor_price <= 0:
            problems.append("start_price and anchor_price must be > 0")
        if self.substeps < 1:
            problems.append("substeps must be >= 1")
        if any(
            r.mean_duration_days <= 0 or r.entry_weight < 0 or r.annual_vol < 0
            for r in self.regimes
        ):
            problems.append("regimes need mean_duration_days > 0, entry_weight >= 0, vol >= 0")
        if len(self.regimes) > 1 and sum(r.entry_weight for r in self.regimes) <= 0:
            problems.append("at least one regime needs entry_weight > 0")
        if problems:
            raise FeedError(
                "bad synthetic params: " + "; ".join(problems),
                hint="see feeds.synthetic.SyntheticParams",
            )


DEFAULT_PARAMS: Final = SyntheticParams()
REGIME_NAMES: Final[tuple[str, ...]] = tuple(r.name for r in DEFAULT_PARAMS.regimes)


@dataclass(frozen=True, eq=False)
class SyntheticPath:
    """Bars plus the hidden regime index of every bar (ground truth for regime-node tests)."""

    bars: pl.DataFrame
    regime: np.ndarray  # int8 index into params.regimes, one per bar


def _next_regime(current: int, u: float, weights: np.ndarray) -> int:
    """Choose a different regime with probability proportional to its entry weight."""
    w = weights.copy()
    w[current] = 0.0
    total = float(w.sum())
    if total <= 0.0:
        return current
    return int(np.searchsorted(np.cumsum(w) / total, u, side="right").clip(0, len(w) - 1))


def simulate(
    *,
    seed: int,
    start_ns: int,
    n: int,
    timeframe: str,
    params: SyntheticParams = DEFAULT_PARAMS,
) -> SyntheticPath:
    """Generate ``n`` bars starting at ``start_ns`` (the first bar's open time)."""
    if n < 1:
        raise FeedError(f"n must be >= 1, got {n}", hint="ask for at least one bar")
    tf_ns = timeframe_to_ns(timeframe)
    if start_ns < 0 or start_ns + (n - 1) * tf_ns > 2**63 - 1:
        raise FeedError(
            "bar times fall outside int64 nanoseconds since 1970",
            hint="choose a start after 1970 and fewer bars",
        )
    rng = Generator(PCG64(seed))
    k = params.substeps
    dt = tf_ns / NS_PER_YEAR
    n_reg = len(params.regimes)

    # Draws, in a fixed order (changing it changes every bar: bump the sample data with it).
    u_switch = rng.random(n)
    u_next = rng.random(n)
    u_sign = rng.random(n)
    z = rng.standard_normal((n, k))
    jump_u = rng.random(n)
    jump_z = rng.standard_normal(n)
    jump_pos = rng.integers(1, k + 1, size=n)
    vol_z = rng.standard_normal(n)

    drift = np.array([r.annual_drift for r in params.regimes])
    sigma = np.array([r.annual_vol for r in params.regimes])
    k_rev = np.array([r.mean_reversion for r in params.regimes])
    p_jump = 1.0 - np.exp(-np.array([r.jumps_per_day for r in params.regimes]) * tf_ns / NS_PER_DAY)
    jump_sigma = np.array([r.jump_sigma for r in params.regimes])
    p_leave = np.minimum(
        1.0, tf_ns / (np.array([r.mean_duration_days for r in params.regimes]) * NS_PER_DAY)
    )
    weights = np.array([r.entry_weight for r in params.regimes])

    # Standardised sub-step Brownian path per bar, 0 at the open: shape (n, k + 1).
    walk = np.zeros((n, k + 1))
    np.cumsum(z / math.sqrt(k), axis=1, out=walk[:, 1:])

    regime = np.empty(n, dtype=np.int8)
    x_open = np.empty(n)
    bar_drift = np.empty(n)
    bar_sigma = np.empty(n)
    bar_jump = np.zeros(n)
    log_anchor = math.log(params.anchor_price)
    x = math.log(params.start_price)
    state = params.initial_regime
    sign = 1.0 if u_sign[0] < 0.5 else -1.0
    x_entry = x
    sqrt_dt = math.sqrt(dt)
    for i in range(n):
        if i > 0 and n_reg > 1 and u_switch[i] < p_leave[state]:
            state = _next_regime(state, float(u_next[i]), weights)
            sign = 1.0 if u_sign[i] < 0.5 else -1.0
            x_entry = x
        mu = drift[state] * (sign if params.regimes[state].random_sign else 1.0)
        s = sigma[state]
        d = (
            mu
            - 0.5 * s * s
            - params.anchor_strength * (x - log_anchor)
            - k_rev[state] * (x - x_entry)
        ) * dt
        jump = float(jump_z[i] * jump_sigma[state]) if jump_u[i] < p_jump[state] else 0.0
        regime[i] = state
        x_open[i] = x
        bar_drift[i] = d
        bar_sigma[i] = s * sqrt_dt
        bar_jump[i] = jump
        x = x + d + s * sqrt_dt * float(walk[i, k]) + jump

    frac = np.linspace(0.0, 1.0, k + 1)
    steps = np.arange(k + 1)
    path = (
        x_open[:, None]
        + bar_drift[:, None] * frac[None, :]
        + bar_sigma[:, None] * walk
        + bar_jump[:, None] * (steps[None, :] >= jump_pos[:, None])
    )
    prices = np.round(np.exp(path), params.price_decimals)
    open_ = prices[:, 0]
    close = prices[:, k]
    high = prices.max(axis=1)
    low = prices.min(axis=1)
    # A price rounded to 0 would break the bar rules; keep one tick as the floor.
    tick = 10.0 ** (-params.price_decimals)
    open_, high, low, close = (np.maximum(a, tick) for a in (open_, high, low, close))

    ts = start_ns + np.arange(n, dtype=np.int64) * tf_ns
    abs_ret = np.abs(path[:, k] - path[:, 0])
    coupling = 1.0 + params.volume_return_coupling * abs_ret / (params.volume_sigma_ref * sqrt_dt)
    if tf_ns < NS_PER_DAY and params.seasonality:
        hour = ((ts // NS_PER_HOUR) % 24).astype(np.float64)
        season = 1.0 + params.seasonality * np.cos(
            2.0 * math.pi * (hour - params.seasonality_peak_hour) / 24.0
        )
    else:
        season = np.ones(n)
    mult = np.array([r.volume_mult for r in params.regimes])[regime]
    noise = np.exp(params.volume_noise * vol_z - 0.5 * params.volume_noise**2)
    volume = np.round(
        params.base_volume_per_day * (tf_ns / NS_PER_DAY) * mult * season * coupling * noise,
        params.volume_decimals,
    )
    frame = pl.DataFrame(
        {"ts_ns": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )
    return SyntheticPath(bars=conform_bars(frame), regime=regime)


def generate_bars(
    *,
    seed: int,
    start_ns: int,
    n: int,
    timeframe: str,
    params: SyntheticParams = DEFAULT_PARAMS,
) -> pl.DataFrame:
    """Canonical bars only; see :func:`simulate` for the regime labels."""
    return simulate(seed=seed, start_ns=start_ns, n=n, timeframe=timeframe, params=params).bars


def parse_start(text: str) -> int:
    """ISO date/datetime (no offset = UTC) to ns, for the command line."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FeedError(
            f"cannot parse start {text!r}",
            hint="use ISO-8601, e.g. 2024-01-01 or 2024-01-01T00:00Z",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m feeds.synthetic``: write seeded bars to CSV/parquet; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m feeds.synthetic",
        description="Write seeded synthetic OHLCV bars (default params: BTC/USDT-like).",
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", required=True, help="first bar open time, ISO-8601 (UTC)")
    parser.add_argument("--bars", type=int, required=True, help="number of bars")
    parser.add_argument("--timeframe", default="1h")
    parser.add_argument("--out", type=Path, required=True, help=".csv or .parquet")
    parser.add_argument(
        "--timestamp-format",
        choices=("iso", "ts_ns"),
        default="iso",
        help="CSV time column: ISO-8601 'timestamp' (default) or integer 'ts_ns'",
    )
    args = parser.parse_args(argv)
    fmt: TimestampFormat = "iso" if args.timestamp_format == "iso" else "ts_ns"
    try:
        bars = generate_bars(
            seed=args.seed, start_ns=parse_start(args.start), n=args.bars, timeframe=args.timeframe
        )
        write_bars(bars, args.out, timestamp_format=fmt)
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {bars.height} bars to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
