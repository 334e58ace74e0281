"""Several strategies on one account: cross-strategy limits and a multi-artifact backtest.

A `Portfolio` is consulted by every attached `StrategyKernel` right before it sends an entry
(after its own sizing and risk rules passed). It refuses the entry, naming the rule, when

- `portfolio.max_concurrent_positions`: the strategies with an open position or a working entry
  already number the limit;
- `portfolio.max_exposure_pct`: gross notional of every open position (marked at its last close)
  and every working entry (at its reference price), plus the new entry, would exceed the cap as a
  % of the account equity (the sum of the strategies' equities);
- `portfolio.max_correlation`: the rolling correlation of bar returns between the new entry's
  instrument and the instrument of an open position / working entry of *another* strategy,
  multiplied by both sides' signs (a long against a short of correlated markets is a hedge:
  negative), exceeds the threshold; an undefined correlation (too little common history, a flat
  series) is refused too, so the guard never lets an unmeasured pair through.

Limits come from the account (`AccountLimits`, e.g. `account.toml`) and each artifact's
`risk.portfolio` block, which can only tighten them. The consultation order is the order in
which the strategies were attached, so same-bar entries are decided deterministically: an entry
accepted first counts against every later one on the same bar. Every decision of the portfolio
(accepted or refused, with the numbers) is a record of its own hash-chained log.

`step_account` is one timestamp of the account; the backtest (`run_portfolio_backtest`) and
paper mode (`strategy_kernel.paper.run_portfolio_paper`, in lockstep on the bus) both step
through it, so fed the same bars they decide the same.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.graph import SignalGraph, check
from artifacts.schema import Artifact, PortfolioLimits
from feeds.schema import timeframe_to_ns
from indicators.nodes import BarValues
from order_kernel import messages as m
from order_kernel.kernel import OrderKernel
from order_kernel.log import OrderLog
from order_kernel.venues.sim import SimVenue
from strategy_kernel.backtest import (
    BacktestResult,
    BarLoop,
    check_data,
    instrument_spec,
    log_run_header,
)
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.errors import StrategyError
from strategy_kernel.log import StrategyLog
from strategy_kernel.multidata import DataFeed
from strategy_kernel.risk import EntryPlan
from strategy_kernel.state import Phase

_BUSY = (Phase.ENTERED, Phase.MANAGING)


class PortfolioError(StrategyError):
    """The strategies cannot run together as given (config, names, data)."""


@dataclass(frozen=True)
class AccountLimits:
    """The account's cross-strategy limits; None means no limit. Artifacts may only tighten them."""

    max_exposure_pct: float | None = None
    max_concurrent_positions: int | None = None
    max_correlation: float | None = None
    correlation_lookback: int = 50  # bar returns the correlation guard measures

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            v = getattr(self, f.name)
            whole = f.name in ("max_concurrent_positions", "correlation_lookback")
            kinds: tuple[type, ...] = (int,) if whole else (int, float)
            if (v is not None or f.name == "correlation_lookback") and (
                isinstance(v, bool) or not isinstance(v, kinds)
            ):
                problems.append(
                    f"{f.name} = {v!r} must be {'a whole number' if whole else 'a number'}"
                )
        if problems:
            raise PortfolioError("account limits: " + "; ".join(problems))
        if self.max_exposure_pct is not None and not self.max_exposure_pct > 0:
            problems.append(f"max_exposure_pct {self.max_exposure_pct} must be > 0")
        if self.max_concurrent_positions is not None and self.max_concurrent_positions < 1:
            problems.append(
                f"max_concurrent_positions {self.max_concurrent_positions} must be >= 1"
            )
        if self.max_correlation is not None and not -1 < self.max_correlation <= 1:
            problems.append(f"max_correlation {self.max_correlation} must be in (-1, 1]")
        if self.correlation_lookback < 3:
            problems.append(f"correlation_lookback {self.correlation_lookback} must be >= 3")
        if problems:
            raise PortfolioError("account limits: " + "; ".join(problems))

    def tighten(self, own: PortfolioLimits | None) -> AccountLimits:
        """The tighter of the account's and an artifact's limits, field by field."""
        if own is None:
            return self

        def tighter(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        conc = tighter(self.max_concurrent_positions, own.max_concurrent_positions)
        return replace(
            self,
            max_exposure_pct=tighter(self.max_exposure_pct, own.max_exposure_pct),
            max_concurrent_positions=None if conc is None else int(conc),
            max_correlation=tighter(self.max_correlation, own.max_correlation),
        )


def load_account_limits(path: str | Path) -> AccountLimits:
    """Read `[portfolio]` of an account TOML file (unknown keys are errors, with the file named)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PortfolioError(f"{p}: account config not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PortfolioError(f"{p}: invalid TOML: {exc}") from None
    section = data.get("portfolio", {})
    if not isinstance(section, dict):
        raise PortfolioError(f"{p}: [portfolio] must be a table")
    known = {f.name for f in fields(AccountLimits)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise PortfolioError(
            f"{p}: [portfolio] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return AccountLimits(**section)
    except PortfolioError as exc:
        raise PortfolioError(f"{p}: {exc}") from None


def correlation(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Pearson correlation of two equal-length return series; NaN if either is flat or too short."""
    if a.shape[0] < 3:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    return float(np.dot(da, db)) / den if den > 0 else math.nan


@dataclass
class _Member:
    name: str
    kernel: StrategyKernel
    symbol: str
    limits: AccountLimits


class Portfolio:
    """Shared-account limits across strategies; see the module docstring for the rules."""

    def __init__(self, limits: AccountLimits, log: StrategyLog | None = None) -> None:
        self.limits = limits
        self.log = log or StrategyLog(None)
        self.members: list[_Member] = []
        self._closes: dict[str, deque[tuple[int, float]]] = {}
        self.refusals: list[dict[str, object]] = []

    def attach(self, name: str, kernel: StrategyKernel) -> None:
        """Make `kernel` consult this portfolio before every entry (in attachment order)."""
        if any(mb.name == name for mb in self.members):
            raise PortfolioError(f"two strategies named {name!r}: give each artifact its own name")
        own = kernel.artifact.risk.portfolio
        symbol = kernel.artifact.instrument.symbol
        self.members.append(_Member(name, kernel, symbol, self.limits.tighten(own)))
        self._closes.setdefault(symbol, deque(maxlen=self.limits.correlation_lookback + 1))
        kernel.entry_gate = self.check_entry

    def on_close(self, symbol: str, ts_ns: int, close: float) -> None:
        """A bar of `symbol` closed (call before the strategies decide on it)."""
        if symbol in self._closes:
            self._closes[symbol].append((ts_ns, close))

    # ------------------------------------------------------------------ measures

    def equity(self) -> float:
        """Account equity: the sum of the strategies' equities (each marked at its last close)."""
        return sum(mb.kernel.equity() for mb in self.members)

    @staticmethod
    def _notional(k: StrategyKernel) -> float:
        """Gross notional a strategy holds or has asked for, quote currency."""
        units = (abs(k.position) + k.pending_add) * k.last_close
        t = k.trade
        if k.entry_id is not None and t is not None:
            units += max(t.planned_qty - t.entry_qty, 0) * t.ref_price
        return units * k.unit_value

    def exposure(self) -> float:
        return sum(self._notional(mb.kernel) for mb in self.members)

    def open_positions(self) -> int:
        """Strategies holding a position (working entries not counted)."""
        return sum(1 for mb in self.members if mb.kernel.position != 0)

    def busy(self) -> list[_Member]:
        """Strategies with an open position or a working entry."""
        return [mb for mb in self.members if mb.kernel.phase in _BUSY or mb.kernel.position]

    def returns(self, symbol: str) -> dict[int, float]:
        """Log returns of `symbol` by bar timestamp over the correlation window."""
        pts = list(self._closes.get(symbol, ()))
        return {
            t1: math.log(c1 / c0)
            for (_, c0), (t1, c1) in itertools.pairwise(pts)
            if c0 > 0 and c1 > 0
        }

    def pair_correlation(self, sym_a: str, sym_b: str) -> tuple[float, int]:
        """Correlation of the two symbols' returns at their common timestamps, and how many."""
        ra, rb = self.returns(sym_a), self.returns(sym_b)
        common = sorted(set(ra) & set(rb))
        need = max(3, self.limits.correlation_lookback // 2)
        if len(common) < need:
            return math.nan, len(common)
        a = np.array([ra[t] for t in common])
        b = np.array([rb[t] for t in common])
        return correlation(a, b), len(common)

    # ------------------------------------------------------------------ the gate

    def _member(self, kernel: StrategyKernel) -> _Member:
        for mb in self.members:
            if mb.kernel is kernel:
                return mb
        raise PortfolioError("a kernel that was never attached asked the portfolio")

    def check_entry(
        self, kernel: StrategyKernel, plan: EntryPlan, ref: int, ts_ns: int
    ) -> str | None:
        """None to let the entry through, else 'rule: detail' (also logged here and by the kernel)."""
        me = self._member(kernel)
        lim = me.limits
        busy = [mb for mb in self.busy() if mb is not me]
        new = plan.lots * ref * kernel.unit_value
        equity = self.equity()
        exposure = self.exposure()
        verdict: str | None = None
        if lim.max_concurrent_positions is not None and len(busy) >= lim.max_concurrent_positions:
            verdict = (
                f"portfolio.max_concurrent_positions: {len(busy)} strategies already hold or "
                f"work a position ({', '.join(mb.name for mb in busy)}); limit "
                f"{lim.max_concurrent_positions}"
            )
        if verdict is None and lim.max_exposure_pct is not None:
            pct = (exposure + new) / equity * 100 if equity > 0 else math.inf
            if pct > lim.max_exposure_pct:
                verdict = (
                    f"portfolio.max_exposure_pct: exposure would be {pct:.2f}% of account equity "
                    f"{equity:.2f} (open {exposure:.2f} + new {new:.2f}); limit {lim.max_exposure_pct}%"
                )
        if verdict is None:
            sign = 1 if kernel.artifact.entry.side == "long" else -1
            for other in busy:
                thresholds = [
                    x for x in (lim.max_correlation, other.limits.max_correlation) if x is not None
                ]
                if not thresholds:
                    continue
                limit = min(thresholds)
                corr, n = self.pair_correlation(me.symbol, other.symbol)
                other_sign = 1 if other.kernel.artifact.entry.side == "long" else -1
                signed = corr * sign * other_sign
                if math.isnan(signed):
                    verdict = (
                        f"portfolio.max_correlation: correlation with {other.name} "
                        f"({other.symbol}) is undefined ({n} common returns, a flat series or "
                        f"too little history); limit {limit}"
                    )
                elif signed > limit:
                    verdict = (
                        f"portfolio.max_correlation: signed return correlation {signed:.4f} with "
                        f"{other.name} ({other.symbol}) over {n} bars exceeds {limit}"
                    )
                if verdict is not None:
                    break
        rule = verdict.partition(": ")[0] if verdict else None
        self.log.append(
            "portfolio",
            ts_ns,
            strategy=me.name,
            accepted=verdict is None,
            rule=rule,
            detail=verdict.partition(": ")[2] if verdict else None,
            exposure=exposure,
            new=new,
            equity=equity,
            busy=[mb.name for mb in busy],
        )
        if verdict is not None:
            self.refusals.append(
                {"strategy": me.name, "ts_ns": ts_ns, "bar": kernel.bar_index, "rule": rule}
            )
        return verdict


# ============================================================================ backtest


@dataclass
class PortfolioResult:
    """Per-strategy results plus the account view on the union of bar timestamps."""

    results: dict[str, BacktestResult]
    ts_ns: npt.NDArray[np.int64]
    equity: npt.NDArray[np.float64]  # account equity after each timestamp
    exposure: npt.NDArray[np.float64]  # gross notional after each timestamp
    open_positions: npt.NDArray[np.int64]  # strategies with a position after each timestamp
    refusals: list[dict[str, object]] = field(default_factory=list)
    portfolio_log_head: str = ""


class DueFeed(Protocol):
    """Data inputs of one strategy: `DataFeed` (backtest) or `LiveDataFeed` (paper)."""

    def due(self, main_ts_ns: int) -> list[tuple[str, BarValues | None, int]]: ...


@dataclass
class Lane:
    """One strategy of the account in the lockstep: its bar loop and its data inputs."""

    loop: BarLoop
    feed: DueFeed | None = None


def check_lineup(artifacts: Sequence[Artifact]) -> int:
    """Refuse what cannot share one account clock (no artifacts, a name twice, two timeframes);
    returns the common timeframe in ns."""
    if not artifacts:
        raise PortfolioError("no artifacts given: pass at least one")
    names = [a.name for a in artifacts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PortfolioError(
            f"artifact name(s) {', '.join(dupes)} appear more than once: each strategy needs its "
            "own name (its logs and orders are keyed by it)"
        )
    tfs = sorted({a.instrument.timeframe for a in artifacts})
    if len(tfs) > 1:
        raise PortfolioError(
            f"the artifacts trade different timeframes ({', '.join(tfs)}): a portfolio backtest "
            "steps one bar clock; resample so they share one"
        )
    return timeframe_to_ns(tfs[0])


def log_portfolio_run(log: StrategyLog, first_ts_ns: int, portfolio: Portfolio) -> None:
    """The portfolio log's first record: the strategies in decision order and the limits."""
    names = [mb.name for mb in portfolio.members]
    log.append("run", first_ts_ns, strategies=names, limits=_limits_dict(portfolio.limits))


def step_account(
    portfolio: Portfolio,
    ts_ns: int,
    stepping: Sequence[tuple[Lane, BarValues, Sequence[int]]],
    tf_ns: int,
) -> None:
    """One timestamp of the account, for the strategies with a bar at `ts_ns` (in the order
    given; `ticks` = open, high, low, close in ticks and volume in lots): each one's data inputs
    and bar go to its order kernel first (fills), the portfolio sees the closes, then the
    strategies decide in that order. Backtest and paper mode both step through here."""
    for lane, _bar, tk in stepping:
        loop = lane.loop
        if lane.feed is not None:  # data inputs closed by this bar's close
            for name, aux, at in lane.feed.due(ts_ns):
                loop.sk.on_data(name, aux, at)
        loop.deliver(
            [
                m.MarketBar(
                    session_id=loop.sk.session_id,
                    seq=0,
                    ts_ns=ts_ns,
                    symbol=loop.inst.symbol,
                    open=tk[0],
                    high=tk[1],
                    low=tk[2],
                    close=tk[3],
                    volume=tk[4],
                    interval_ns=tf_ns,
                )
            ]
        )
    seen: set[str] = set()
    for lane, bar, _tk in stepping:
        symbol = lane.loop.inst.symbol
        if symbol not in seen:
            seen.add(symbol)
            portfolio.on_close(symbol, ts_ns, bar.close)
    for lane, bar, _tk in stepping:  # decisions in the order the artifacts were given
        loop = lane.loop
        sk = loop.sk
        loop.deliver(sk.on_bar(bar))
        loop.ts.append(bar.ts_ns)
        loop.close.append(bar.close)
        loop.equity.append(sk.equity())
        loop.position.append(sk.position)


def run_portfolio_backtest(
    artifacts: Sequence[Artifact],
    bars_by_symbol: Mapping[str, pl.DataFrame],
    *,
    account: AccountLimits | None = None,
    graphs: Sequence[SignalGraph] | None = None,
    out_dir: Path | None = None,
    base_dir: Path | None = None,
) -> PortfolioResult:
    """Backtest several artifacts on one account: each has its own strategy and order kernel
    (a sub-account; `backtest.initial_equity` is its allocation), all consult one `Portfolio`.

    Per timestamp: every strategy's bar goes to its order kernel first (fills), the portfolio
    sees the closes, then the strategies decide in the order given. Artifacts must share a
    timeframe and have distinct names; `bars_by_symbol` maps each `instrument.symbol` to its
    bars. Logs go to `out_dir/<name>/` and `out_dir/portfolio.log.jsonl`.
    """
    tf_ns = check_lineup(artifacts)
    missing = sorted({a.instrument.symbol for a in artifacts} - set(bars_by_symbol))
    if missing:
        raise PortfolioError(
            f"no bars for {', '.join(missing)}: give bars for every instrument.symbol "
            f"(have {', '.join(sorted(bars_by_symbol)) or 'none'})"
        )
    graphs = list(graphs) if graphs is not None else [check(a) for a in artifacts]
    plog = StrategyLog(out_dir / "portfolio.log.jsonl" if out_dir else None)
    portfolio = Portfolio(account or AccountLimits(), plog)
    lanes: list[Lane] = []
    olog_list: list[OrderLog] = []
    streams: list[tuple[dict[int, int], npt.NDArray[np.int64], list[tuple[float, ...]]]] = []
    for a, g in zip(artifacts, graphs, strict=True):
        bars = bars_by_symbol[a.instrument.symbol]
        check_data(a, bars)
        inst = instrument_spec(a)
        sk = StrategyKernel(a, g, session_id=a.name, timeframe_ns=tf_ns, base_dir=base_dir)
        if bars.height < sk.warmup + 1:
            raise PortfolioError(
                f"{a.name}: {bars.height} bars of {a.instrument.symbol} is not enough for "
                f"{sk.warmup} warm-up bars plus one to trade; give more data"
            )
        sdir = out_dir / a.name if out_dir else None
        venue = SimVenue(slippage_ticks=a.backtest.slippage_ticks, seed=a.backtest.seed)
        ok = OrderKernel(a.name, {inst.symbol: inst}, venue)
        if sdir is not None:
            sdir.mkdir(parents=True, exist_ok=True)
            olog = OrderLog(sdir / "orders.log", fsync="never")
            ok.log = olog
            olog_list.append(olog)
        sk.log = StrategyLog(sdir / "strategy.log.jsonl" if sdir else None)
        log_run_header(sk.log, a, int(bars["ts_ns"][0]), a.name)
        portfolio.attach(a.name, sk)
        loop = BarLoop(sk, ok, a, inst, tf_ns)
        lanes.append(Lane(loop, DataFeed(a, bars_by_symbol, tf_ns) if a.data else None))
        ts = bars["ts_ns"].to_numpy().astype(np.int64)
        cols = [bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
        ticks = np.column_stack(
            [np.rint(c / loop.price_inc).astype(np.int64) for c in cols[:4]]
            + [np.rint(cols[4] / loop.size_inc).astype(np.int64)]
        )
        rows = list(zip(*(c.tolist() for c in cols), strict=True))
        streams.append(({int(t): i for i, t in enumerate(ts.tolist())}, ticks, rows))
    all_ts = np.unique(
        np.concatenate([bars_by_symbol[a.instrument.symbol]["ts_ns"].to_numpy() for a in artifacts])
    )
    log_portfolio_run(plog, int(all_ts[0]), portfolio)
    eq_out = np.empty(all_ts.shape[0])
    ex_out = np.empty(all_ts.shape[0])
    open_out = np.empty(all_ts.shape[0], dtype=np.int64)
    try:
        for j, t in enumerate(all_ts.tolist()):
            stepping: list[tuple[Lane, BarValues, Sequence[int]]] = []
            for lane, (index, ticks, rows) in zip(lanes, streams, strict=True):
                i = index.get(t)
                if i is not None:
                    stepping.append((lane, BarValues(t, *rows[i]), ticks[i].tolist()))
            step_account(portfolio, t, stepping, tf_ns)
            eq_out[j] = portfolio.equity()
            ex_out[j] = portfolio.exposure()
            open_out[j] = portfolio.open_positions()
        results = {lane.loop.sk.artifact.name: lane.loop.result() for lane in lanes}
    finally:
        plog.close()
        for lane in lanes:
            lane.loop.sk.log.close()
        for olog in olog_list:
            olog.close()
    return PortfolioResult(
        results=results,
        ts_ns=all_ts.astype(np.int64),
        equity=eq_out,
        exposure=ex_out,
        open_positions=open_out,
        refusals=portfolio.refusals,
        portfolio_log_head=plog.head,
    )


def _limits_dict(lim: AccountLimits) -> dict[str, object]:
    return {f.name: getattr(lim, f.name) for f in fields(AccountLimits)}
