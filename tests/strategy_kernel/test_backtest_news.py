"""Stored news reaches sentiment nodes in a backtest, each item from the first bar close after it."""

from __future__ import annotations

import math

import polars as pl

from artifacts.graph import check
from artifacts.io import loads
from feeds.schema import UnstructuredItem
from strategy_kernel.backtest import run_backtest

NEWS = """
schema: stratagem/v1
name: news
version: 1
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
nodes:
  mood: {kind: sentiment, backend: lexicon, policy: ffill}
  bullish: {kind: threshold, input: mood, op: ">", value: 0.2}
entry: {when: bullish, side: long, order: {type: market}}
exit: {stop_loss: {pct: 5}, time_exit: {count: 3, unit: bars}}
risk: {sizing: {method: pct_equity, value: 50}}
"""


def test_run_backtest_feeds_stored_news_to_sentiment_nodes(sample_bars: pl.DataFrame) -> None:
    a = loads(NEWS)
    g = check(a)
    bars = sample_bars.head(48)
    ts = bars["ts_ns"].to_list()
    hour = ts[1] - ts[0]
    item = UnstructuredItem(
        source="news",
        ts_ns=ts[10] + hour // 2,  # published inside bar 10, visible from bar 10's close
        text="bitcoin rally surges to record gains",
        symbols=("BTC/USDT",),
    )
    quiet = run_backtest(a, g, bars, record_nodes=("mood",))
    newsy = run_backtest(a, g, bars, record_nodes=("mood",), items=[item])
    before = newsy.node_series["mood"][:10]
    after = newsy.node_series["mood"][10:]
    assert not any(v > 0.2 for v in quiet.node_series["mood"] if not math.isnan(v))
    assert not any(v > 0.2 for v in before if not math.isnan(v))
    assert after[0] > 0.2  # point-in-time: bar 10 is the first close at or after the item
    assert len(newsy.trades) >= 1 and not quiet.trades
