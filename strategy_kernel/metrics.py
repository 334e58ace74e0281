"""Performance metrics from an equity curve and a trade list (float64 analytics, quote currency)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

NS_PER_YEAR = int(365.25 * 86_400 * 1_000_000_000)


@dataclass(frozen=True)
class TradeStats:
    pnl: float  # quote currency, after fees
    r_multiple: float  # pnl / planned risk (NaN if no stop)
    bars_held: int
    fees: float


@dataclass(frozen=True)
class Metrics:
    start_equity: float
    end_equity: float
    total_return_pct: float
    cagr_pct: float
    volatility_pct: float  # annualised stdev of bar returns
    sharpe: float  # annualised, risk-free 0
    sortino: float
    calmar: float
    max_drawdown_pct: float
    max_drawdown_bars: int  # longest time under a previous peak
    trades: int
    win_rate_pct: float
    profit_factor: float
    expectancy: float  # mean pnl per trade, quote currency
    avg_r: float
    exposure_pct: float  # share of bars with an open position
    turnover: float  # traded notional / mean equity
    fees_paid: float
    funding_paid: float

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: undefined values (NaN, inf) become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def drawdown(equity: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Drawdown at each bar as a fraction of the running peak (<= 0)."""
    peak = np.maximum.accumulate(equity)
    return np.asarray(equity / peak - 1.0, dtype=np.float64)


def _longest_underwater(dd: npt.NDArray[np.float64]) -> int:
    """Longest run of consecutive bars below a previous peak (vectorised)."""
    under = np.concatenate(([False], dd < 0, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(under))
    if len(edges) == 0:
        return 0
    return int((edges[1::2] - edges[::2]).max())


def compute(
    *,
    equity: npt.NDArray[np.float64],
    ts_ns: npt.NDArray[np.int64],
    timeframe_ns: int,
    in_position: npt.NDArray[np.bool_],
    trades: Sequence[TradeStats],
    traded_notional: float,
    fees_paid: float,
    funding_paid: float,
) -> Metrics:
    start, end = float(equity[0]), float(equity[-1])
    periods_per_year = NS_PER_YEAR / timeframe_ns
    rets = np.diff(equity) / equity[:-1] if len(equity) > 1 else np.zeros(0)
    years = (int(ts_ns[-1]) - int(ts_ns[0]) + timeframe_ns) / NS_PER_YEAR
    total = end / start - 1.0
    cagr = (end / start) ** (1 / years) - 1.0 if years > 0 and end > 0 else math.nan
    std = float(np.std(rets, ddof=1)) if len(rets) > 1 else math.nan
    mean = float(np.mean(rets)) if len(rets) else math.nan
    # downside deviation over every period (target 0), the usual Sortino definition
    dstd = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))) if len(rets) else math.nan
    sharpe = mean / std * math.sqrt(periods_per_year) if std and std > 0 else math.nan
    sortino = mean / dstd * math.sqrt(periods_per_year) if dstd and dstd > 0 else math.nan
    dd = drawdown(equity)
    max_dd = float(dd.min()) if len(dd) else 0.0
    pnls = np.array([t.pnl for t in trades], dtype=np.float64)
    wins, losses = pnls[pnls > 0], pnls[pnls < 0]
    gross_loss = float(-losses.sum())
    rs = np.array([t.r_multiple for t in trades if math.isfinite(t.r_multiple)], dtype=np.float64)
    return Metrics(
        start_equity=start,
        end_equity=end,
        total_return_pct=total * 100,
        cagr_pct=cagr * 100,
        volatility_pct=std * math.sqrt(periods_per_year) * 100 if math.isfinite(std) else math.nan,
        sharpe=sharpe,
        sortino=sortino,
        calmar=(cagr / -max_dd) if max_dd < 0 and math.isfinite(cagr) else math.nan,
        max_drawdown_pct=max_dd * 100,
        max_drawdown_bars=_longest_underwater(dd),
        trades=len(trades),
        win_rate_pct=len(wins) / len(pnls) * 100 if len(pnls) else math.nan,
        profit_factor=float(wins.sum()) / gross_loss
        if gross_loss > 0
        else (math.inf if len(wins) else math.nan),
        expectancy=float(pnls.mean()) if len(pnls) else math.nan,
        avg_r=float(rs.mean()) if len(rs) else math.nan,
        exposure_pct=float(np.mean(in_position)) * 100 if len(in_position) else 0.0,
        turnover=traded_notional / float(np.mean(equity)),
        fees_paid=fees_paid,
        funding_paid=funding_paid,
    )
