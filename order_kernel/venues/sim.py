"""SimVenue: deterministic fill rules against OHLCV bars (integer ticks and lots).

The rules (the kernel asks the venue, order by order, in a fixed order within each bar):

1. **Next bar only.** An order is matched only against bars that arrive after it was
   submitted (bar.ts_ns > ts of the last bar the kernel had seen at submission), never the bar
   it was decided on. Bracket children placed by a fill are the exception (rule 15).
2. **Order within a bar:** market orders (and already-triggered stop-markets) first, then stop
   trigger checks, then limits; ties by submission order. Stops before limits makes the
   adverse leg win when one bar touches both a stop-loss and a take-profit.
3. **Market:** fills at the bar's open, moved against the order by the slippage model
   (fixed ticks + ceil(bps of price) + optional seeded random ticks), clamped into
   [low, high] so no fill is ever at a price the bar did not trade. Taker.
4. **Limit:** buy fills if low <= limit at min(open, limit); sell if high >= limit at
   max(open, limit). On its first bar an order whose limit is crossed by the open takes at
   the open (taker); otherwise it fills as maker. Post-only: crossed at its first bar open ->
   cancelled with POST_ONLY_WOULD_TAKE (and rejected at submission if it crosses the last close).
5. **Stop:** buy triggers if high >= stop, sell if low <= stop (price == stop triggers);
   trigger price = max(open, stop) for buys, min(open, stop) for sells (the worse of open and
   stop); a stop-market then fills there with slippage (clamped to the bar), taker.
6. **Stop-limit:** triggers as a stop; if the trigger price is within the limit it fills there
   (taker), otherwise it rests as a limit from the next bar.
7. **Reduce-only:** the fill is clamped to the open position; an order that would increase or
   open a position is cancelled (REDUCE_ONLY_VIOLATION). When a position goes flat the
   kernel cancels the remaining reduce-only orders of that symbol (bracket behaviour).
8. **IOC / FOK** act at the order's first matching opportunity (first bar; the trigger bar for
   stops): only an immediate fill counts, the rest is cancelled; FOK fills all or nothing
   (FOK_NOT_FILLABLE).
9. **GTD:** an order is live in a bar only if its deadline is after the bar's ts_ns; else it
   expires at the start of that bar.
10. **Volume participation** (optional): fills in one bar use at most
    floor(volume x participation_bps / 10_000) lots per symbol in total; the rest stays working.
11. **Fees:** ceil(qty x price x bps / 10_000) notional units; maker/taker bps from the
    instrument (defaults 2 / 5 bps).
12. **Funding (perps):** at each multiple of `funding_interval_ns` (UTC epoch), on the bar
    containing it (or the first bar after it), after matching: amount =
    ceil(position x close x rate_ppb / 1e9); longs pay a positive rate, shorts receive it.
    The rate is the symbol's constant (`funding_rate_ppb`) or, with a schedule
    (`set_funding_schedule`, historical rates), the rate published for that settlement time:
    the newest schedule entry at or before it (0 before the first).
13. **Trailing stops** (STOP orders with `trailing`): after each bar in which the stop did not
    trigger, a sell stop's trigger moves up to high - offset and a buy stop's down to
    low + offset (never back); the new trigger applies from the next bar (the bar's path is
    unknown, so the stop cannot be tightened and hit inside the same bar).
14. **Latency** (all optional, ns, deterministic):
    - `latency_ns` (submit delay): an order (or a re-priced amend) reaches the venue at its
      command's ts_ns + latency_ns and is matched only against bars with ts_ns at or after that;
    - `ack_latency_ns`: the venue's answers to a command (OrderAccepted/Rejected, OrderCancelled,
      AmendAccepted/Rejected, ...) reach the strategy at command ts + latency_ns + ack_latency_ns;
    - `fill_latency_ns`: reports produced while matching a bar (OrderTriggered, OrderFilled,
      PositionUpdate, unsolicited cancels, expiries, funding) reach it at bar ts + fill_latency_ns.
    Events travel on one ordered channel: an event's ts_ns (when the strategy sees it) is the
    max of its own delivery time and the previous event's, so nothing overtakes (an ack is
    never seen after its fill: a fill is never visible before submit + submit + ack delay).
    Held events are delivered by the first command or bar whose ts_ns reaches theirs, before
    that input's own events. The kernel's own answers (OrderDenied, CommandDenied, TimerFired,
    Heartbeat, ResendRequest) have no venue delay but still queue behind held events. The
    kernel's books move at venue time (the venue is co-located with the matching); only what the
    strategy sees is delayed.
15. **Bracket children in the parent's fill bar.** Children (`<id>.sl`, `<id>.tpN`) placed by a
    fill are live for the rest of that same bar, after the bar's other orders:
    - parent filled *at the open* (market, a limit crossed by the open, a stop gapped through):
      every child is matched against the whole bar, stop-loss first, so when the bar touches
      both the stop and a target the adverse stop fills (adverse-first, as backtesting.py);
    - parent filled *intrabar* (a limit or stop touched inside the bar, or the children reach
      the venue after the open because of `latency_ns`): the path after the entry is unknown,
      so the conservative rule lets only the stop-loss fill, if the bar's range reaches it, at
      the stop price (slipped, clamped to the bar; the open preceded the entry); targets start
      on the next bar. Children arriving after the bar's end (latency) start on a later bar.
16. **Iceberg** (`display_qty`): only the displayed clip rests at the touch, so a passive
    (maker) fill takes at most what is left of the clip; when the clip is used up the order
    refills min(display_qty, leaves) lots and the refill goes to the back of the venue's queue:
    after every order already queued, in this bar (matched again while the bar's volume budget
    lasts, rule 10) and in later bars (queue position = submission order, renewed by each
    refill). Taking fills (a limit crossed by its first bar's open) trade the whole order.
    Without participation the bar has unlimited volume, so the clips all fill in the same bar
    (one OrderFilled per clip).
17. **TWAP slices** are ordinary orders to the venue (the parent lives in the kernel): see
    `OrderKernel` and docs/order-kernel.md "TWAP / interval schedules".
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

from order_kernel.errors import ConfigError
from order_kernel.messages import MarketBar, Trailing
from order_kernel.spec import Side

NS_PER_HOUR = 3_600_000_000_000
_BUY, _SELL = Side.BUY, Side.SELL  # bound once: enum attribute lookups are slow on 3.11


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class SimVenue:
    """Fill rules and their parameters; stateless apart from the seeded slippage RNG."""

    def __init__(
        self,
        *,
        slippage_ticks: int = 0,
        slippage_bps: int = 0,
        random_slippage_ticks: int = 0,
        seed: int = 0,
        participation_bps: int | None = None,
        funding_interval_ns: int = 8 * NS_PER_HOUR,
        funding_rate_ppb: int | Mapping[str, int] = 0,
        latency_ns: int = 0,
        ack_latency_ns: int = 0,
        fill_latency_ns: int = 0,
    ) -> None:
        for name, v in (
            ("ack_latency_ns", ack_latency_ns),
            ("fill_latency_ns", fill_latency_ns),
            ("slippage_ticks", slippage_ticks),
            ("slippage_bps", slippage_bps),
            ("random_slippage_ticks", random_slippage_ticks),
            ("latency_ns", latency_ns),
        ):
            if v < 0:
                raise ConfigError(f"SimVenue({name}={v}): must be >= 0")
        if participation_bps is not None and not 0 < participation_bps <= 10_000:
            raise ConfigError(
                f"SimVenue(participation_bps={participation_bps}): use 1..10000 or None"
            )
        rates = (
            [funding_rate_ppb]
            if isinstance(funding_rate_ppb, int)
            else list(funding_rate_ppb.values())
        )
        if any(abs(r) > 1_000_000_000 for r in rates):
            raise ConfigError(
                f"SimVenue(funding_rate_ppb={funding_rate_ppb!r}): |rate| must be <= 1e9 ppb (100 %)"
            )
        if funding_interval_ns <= 0:
            raise ConfigError(f"SimVenue(funding_interval_ns={funding_interval_ns}): must be > 0")
        self.slippage_ticks = slippage_ticks
        self.slippage_bps = slippage_bps
        self.random_slippage_ticks = random_slippage_ticks
        self.seed = seed
        self.participation_bps = participation_bps
        self.funding_interval_ns = funding_interval_ns
        self.latency_ns = latency_ns  # submit delay: strategy -> venue
        self.ack_latency_ns = ack_latency_ns  # venue -> strategy, for answers to a request
        self.fill_latency_ns = fill_latency_ns  # venue -> strategy, for reports from matching
        self._funding = funding_rate_ppb
        self._schedules: dict[str, tuple[list[int], list[int]]] = {}
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def rng_state(self) -> str:
        """The slippage RNG's state, for checking that a recovered run continues identically."""
        return repr(self._rng.bit_generator.state)

    # ------------------------------------------------------------ prices

    def slipped(self, side: Side, price: int, bar: MarketBar) -> int:
        """Price moved against the taker by the slippage model, clamped into [low, high]."""
        slip = self.slippage_ticks + _ceil_div(price * self.slippage_bps, 10_000)
        if self.random_slippage_ticks:
            slip += int(self._rng.integers(0, self.random_slippage_ticks + 1))
        px = price + slip if side is _BUY else price - slip
        return min(max(px, bar.low), bar.high)

    @staticmethod
    def trigger_price(side: Side, stop: int, bar: MarketBar) -> int | None:
        """The worse of open and stop if the bar reached the stop, else None."""
        if side is _BUY:
            return max(bar.open, stop) if bar.high >= stop else None
        return min(bar.open, stop) if bar.low <= stop else None

    @staticmethod
    def intrabar_trigger_price(side: Side, stop: int, bar: MarketBar) -> int | None:
        """A stop that went live inside the bar (rule 15): the stop itself if the bar's range
        reached it (clamped into the bar), else None."""
        if side is _BUY:
            return min(max(stop, bar.low), bar.high) if bar.high >= stop else None
        return max(min(stop, bar.high), bar.low) if bar.low <= stop else None

    @staticmethod
    def crosses(side: Side, limit: int, price: int) -> bool:
        """Is `price` at or better than the limit for this side (i.e. would a limit fill there)?"""
        return price <= limit if side is _BUY else price >= limit

    @staticmethod
    def limit_price(side: Side, limit: int, bar: MarketBar) -> int | None:
        """The better of open and limit if the bar touched the limit, else None."""
        if side is _BUY:
            return min(bar.open, limit) if bar.low <= limit else None
        return max(bar.open, limit) if bar.high >= limit else None

    @staticmethod
    def trailing_trigger(side: Side, trailing: Trailing, bar: MarketBar) -> int:
        """Where a trailing stop's trigger would sit after this bar: a sell stop trails the
        high by the offset, a buy stop trails the low (bps offsets rounded up, i.e. looser)."""
        ref = bar.high if side is _SELL else bar.low
        if trailing.offset_ticks is not None:
            off = trailing.offset_ticks
        else:
            off = _ceil_div(ref * (trailing.offset_bps or 0), 10_000)
        return ref - off if side is _SELL else ref + off

    # ------------------------------------------------------------ quantities

    def volume_budget(self, bar: MarketBar) -> int | None:
        """Lots the bar can give in total to our orders (None: unlimited)."""
        if self.participation_bps is None:
            return None
        return bar.volume * self.participation_bps // 10_000

    # ------------------------------------------------------------ funding

    def funding_rate_ppb(self, symbol: str, at_ns: int | None = None) -> int:
        """The rate charged at settlement time `at_ns` (the constant rate when no schedule)."""
        schedule = self._schedules.get(symbol)
        if schedule is not None and at_ns is not None:
            k = bisect.bisect_right(schedule[0], at_ns)
            return schedule[1][k - 1] if k else 0
        if isinstance(self._funding, int):
            return self._funding
        return self._funding.get(symbol, 0)

    def set_funding_schedule(
        self, symbol: str, ts_ns: Sequence[int], rate_ppb: Sequence[int]
    ) -> None:
        """Historical funding for one symbol: `rate_ppb[k]` applies to settlements from `ts_ns[k]`
        until the next entry. Times strictly increasing; |rate| <= 1e9 ppb."""
        ts, rates = [int(t) for t in ts_ns], [int(r) for r in rate_ppb]
        if len(ts) != len(rates):
            raise ConfigError(
                f"set_funding_schedule({symbol!r}): {len(ts)} times but {len(rates)} rates"
            )
        for k in range(1, len(ts)):
            if ts[k] <= ts[k - 1]:
                raise ConfigError(
                    f"set_funding_schedule({symbol!r}): entry {k} (ts {ts[k]}) is not after "
                    f"entry {k - 1} (ts {ts[k - 1]}); sort the rates and drop duplicates"
                )
        bad = next((k for k, r in enumerate(rates) if abs(r) > 1_000_000_000), None)
        if bad is not None:
            raise ConfigError(
                f"set_funding_schedule({symbol!r}): entry {bad} rate {rates[bad]} ppb; "
                "|rate| must be <= 1e9 ppb (100 %)"
            )
        self._schedules[symbol] = (ts, rates)

    def set_funding_rate(self, symbol: str, rate_ppb: int) -> None:
        """Update one symbol's funding rate (e.g. from a funding feed) before the next bar."""
        rates = dict(self._funding) if not isinstance(self._funding, int) else {}
        if isinstance(self._funding, int) and self._funding:
            raise ConfigError(
                "SimVenue was built with one rate for all symbols; pass a mapping instead"
            )
        if abs(rate_ppb) > 1_000_000_000:
            raise ConfigError(
                f"set_funding_rate({symbol!r}, {rate_ppb}): |rate| must be <= 1e9 ppb"
            )
        rates[symbol] = rate_ppb
        self._funding = rates

    def first_funding_ts(self, ts_ns: int) -> int:
        """The first funding time at or after ts_ns."""
        return _ceil_div(ts_ns, self.funding_interval_ns) * self.funding_interval_ns

    @staticmethod
    def funding_amount(position: int, mark: int, rate_ppb: int) -> int:
        """Funding paid (> 0) or received (< 0), rounded up (never in our favour)."""
        return _ceil_div(position * mark * rate_ppb, 1_000_000_000)
