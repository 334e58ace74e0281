"""SignalNode kinds: level modes, trend lines, sessions, multi-timeframe clocks, conviction, python nodes."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactGraphError, ArtifactSchemaError
from artifacts.graph import check
from artifacts.io import loads
from feeds.resample import resample_bars
from indicators.nodes import (
    BarValues,
    Confluence,
    Conviction,
    Level,
    TimeWindow,
    fixed_band,
    line_band,
)
from strategy_kernel.dag import DagEvaluator

H = 3_600_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z, a Monday


def bar(i: int, o: float, h: float, lo: float, c: float) -> BarValues:
    return BarValues(T0 + i * H, o, h, lo, c, 1.0)


def run_level(mode: str, bars: list[tuple[float, float, float, float]]) -> list[bool]:
    node = Level(mode, fixed_band(100.0, 100))  # band [99, 101]
    return [bool(node.update([], bar(i, *b))) for i, b in enumerate(bars)]


SEQ = [
    (98, 99.5, 97, 98),  # 0 below, touches band top? high 99.5 >= 99: touch
    (98, 102, 98, 101.5),  # 1 breaks up (close above 101)
    (101.5, 103, 101.2, 102.5),  # 2 above, no touch
    (102.5, 102.6, 100.5, 102),  # 3 comes back into the band, closes above: retest
    (102, 103, 101.5, 102.8),  # 4 above
    (102.8, 102.9, 98, 98.5),  # 5 breaks down
    (98.5, 99.5, 97, 98),  # 6 retest from below
]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("touch", [True, True, False, True, False, True, True]),
        ("above", [False, True, True, True, True, False, False]),
        ("below", [True, False, False, False, False, True, True]),
        ("break_up", [False, True, False, False, False, False, False]),
        ("break_down", [False, False, False, False, False, True, False]),
        ("retest", [False, False, False, True, False, False, True]),
    ],
)
def test_level_modes(mode: str, expected: list[bool]) -> None:
    assert run_level(mode, SEQ) == expected


def test_failed_break_disarms_retest() -> None:
    seq = [
        (99, 100, 98.5, 100),
        (100, 102, 100, 101.5),
        (101.5, 101.6, 98, 98.2),
        (98.2, 99.5, 98, 101.5),
    ]
    # up-break on bar 1, falls back below on bar 2 (a break down, which arms a down retest), bar 3
    # closes above again: that is a new break up, not a retest.
    assert run_level("retest", seq) == [False, False, False, False]


def test_trend_line_projects_in_time() -> None:
    band = line_band(T0, 100.0, T0 + 10 * H, 110.0, 0.0, "right")
    assert band(bar(5, 1, 1, 1, 1)) == (105.0, 105.0)
    assert band(bar(20, 1, 1, 1, 1)) == (120.0, 120.0)  # extended to the right
    assert band(bar(-1, 1, 1, 1, 1)) is None  # before p1 the line does not exist
    none = line_band(T0, 100.0, T0 + 10 * H, 110.0, 0.0, "none")
    assert none(bar(11, 1, 1, 1, 1)) is None


def test_time_window_hours_weekdays_and_wrap() -> None:
    w = TimeWindow("08:00-16:00", ["mon", "tue"], "UTC")
    assert [bool(w.update([], bar(i, 1, 1, 1, 1))) for i in (7, 8, 15, 16)] == [
        False,
        True,
        True,
        False,
    ]
    assert not w.update([], bar(24 * 2 + 9, 1, 1, 1, 1))  # Wednesday
    night = TimeWindow("22:00-02:00", ["mon"], "UTC")
    assert night.update([], bar(23, 1, 1, 1, 1))  # Monday 23:00
    assert night.update([], bar(25, 1, 1, 1, 1))  # Tuesday 01:00 belongs to Monday's session
    assert not night.update([], bar(26, 1, 1, 1, 1))
    ny = TimeWindow("09:30-16:00", ["mon"], "America/New_York")
    assert ny.update([], bar(15, 1, 1, 1, 1))  # 15:00 UTC = 10:00 EST
    assert not ny.update([], bar(14, 1, 1, 1, 1))  # 09:00 EST


def test_conviction_and_confluence() -> None:
    c = Conviction(20.0, 80.0, 1.0, False)
    assert [c.update([x], bar(0, 1, 1, 1, 1)) for x in (20.0, 50.0, 80.0, 200.0)] == [
        -1.0,
        0.0,
        1.0,
        1.0,
    ]
    assert math.isnan(float(c.update([math.nan], bar(0, 1, 1, 1, 1))))
    assert Conviction(None, None, 0.7, True).update([True], bar(0, 1, 1, 1, 1)) == pytest.approx(
        1 + 1.7 * 4.5
    )
    ws = Confluence("weighted_sum", 3, [2.0, 1.0, 1.0], 1, 0.5)
    assert ws.update([1.0, -1.0, math.nan], bar(0, 1, 1, 1, 1)) == pytest.approx(1 / 3)
    k = Confluence("k_of_n", 3, None, 2, 0.5)
    assert k.update([0.6, 0.5, -1.0], bar(0, 1, 1, 1, 1)) is True
    assert k.update([0.6, 0.4, math.nan], bar(0, 1, 1, 1, 1)) is False
    veto = Confluence("veto", 2, None, 1, 0.5)
    assert veto.update([1.0, 1.0, True], bar(0, 1, 1, 1, 1)) == 0.0
    assert veto.update([1.0, 0.0, False], bar(0, 1, 1, 1, 1)) == 0.5


MTF = """
schema: stratagem/v1
name: mtf
version: 1
instrument: {venue: sim, symbol: X, timeframe: 1h}
nodes:
  close_4h: {kind: resample, input: close, timeframe: 4h, agg: last}
  high_4h: {kind: resample, input: high, timeframe: 4h, agg: max}
  sma_4h: {kind: indicator, fn: SMA, inputs: [close_4h], params: {period: 3}}
  above: {kind: threshold, input: close, op: ">", value: sma_4h}
entry: {when: above, side: long}
"""


def _random_bars(seed: int, n: int, start: int = T0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(rng.normal(0, 0.01, n).cumsum())
    opn = np.concatenate([[100.0], close[:-1]])
    return pl.DataFrame(
        {
            "ts_ns": start + np.arange(n, dtype=np.int64) * H,
            "open": opn,
            "high": np.maximum(opn, close) * 1.002,
            "low": np.minimum(opn, close) * 0.998,
            "close": close,
            "volume": np.ones(n),
        }
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), offset=st.integers(0, 3))
def test_resample_node_equals_feeds_resample_without_look_ahead(seed: int, offset: int) -> None:
    a = loads(MTF)
    ev = DagEvaluator(a, check(a))
    bars = _random_bars(seed, 60, T0 + offset * H)
    coarse = resample_bars(bars, "1h", "4h")  # complete buckets only: the oracle
    by_close = {
        int(t) + 4 * H: (c, h)
        for t, c, h in zip(coarse["ts_ns"], coarse["close"], coarse["high"], strict=True)
    }
    sma = talib.SMA(coarse["close"].to_numpy(), 3)
    seen = 0
    for row in bars.iter_rows(named=True):
        ev.on_bar(
            BarValues(
                row["ts_ns"], row["open"], row["high"], row["low"], row["close"], row["volume"]
            )
        )
        close_ts = row["ts_ns"] + H
        if close_ts in by_close:  # a 4h bucket completed at this bar's close
            c, h = by_close[close_ts]
            assert ev.values["close_4h"] == c and ev.values["high_4h"] == h
            want = sma[seen]
            got = ev.values["sma_4h"]
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=1e-12)
            seen += 1
        elif seen == 0:
            assert math.isnan(ev.values["close_4h"])  # nothing before the first complete bucket
    assert seen == coarse.height


def test_coarse_indicator_steps_only_on_its_clock() -> None:
    a = loads(MTF)
    g = check(a)
    assert g.warmup == 4 + 2 * 4  # first 4h bucket, then SMA(3) needs 2 more 4h bars
    ev = DagEvaluator(a, g)
    history = []
    for row in _random_bars(1, 40).iter_rows(named=True):
        ev.on_bar(
            BarValues(
                row["ts_ns"], row["open"], row["high"], row["low"], row["close"], row["volume"]
            )
        )
        history.append(ev.values["sma_4h"])
    changes = [
        i
        for i in range(1, 40)
        if not (math.isnan(history[i]) and math.isnan(history[i - 1]))
        and history[i] != history[i - 1]
    ]
    assert changes and all((i + 1) % 4 == 0 for i in changes)


def test_resample_timeframe_must_be_a_multiple() -> None:
    with pytest.raises(ArtifactGraphError, match="whole multiple"):
        check(loads(MTF.replace("timeframe: 4h, agg: last", "timeframe: 90m, agg: last")))


PY_NODE = """
class Momentum:
    def initialize(self, params):
        self.n = params["n"]
        self.hist = []
    def update(self, inputs, bar):
        self.hist.append(inputs[0])
        if len(self.hist) <= self.n:
            return float("nan")
        return self.hist[-1] - self.hist[-1 - self.n]
    def get_state(self):
        return {"hist": list(self.hist)}
    def load_state(self, state):
        self.hist = list(state["hist"])
"""


def _py_artifact(tmp_path: Path, sha: str | None = None) -> str:
    code = tmp_path / "nodes" / "momentum.py"
    code.parent.mkdir(exist_ok=True)
    code.write_text(PY_NODE)
    digest = sha or hashlib.sha256(code.read_bytes()).hexdigest()
    return f"""
schema: stratagem/v1
name: py
version: 1
instrument: {{venue: sim, symbol: X, timeframe: 1h}}
nodes:
  mom: {{kind: python, path: nodes/momentum.py, class_name: Momentum, sha256: "{digest}", inputs: [close], params: {{n: 2}}, warmup: 2}}
  up: {{kind: threshold, input: mom, op: ">", value: 0}}
entry: {{when: up, side: long}}
"""


def test_python_node_runs_pinned_code(tmp_path: Path) -> None:
    a = loads(_py_artifact(tmp_path))
    g = check(a, base_dir=tmp_path)
    ev = DagEvaluator(a, g, base_dir=tmp_path)
    closes = [10.0, 11.0, 13.0, 12.0]
    out = []
    for i, c in enumerate(closes):
        ev.on_bar(bar(i, c, c, c, c))
        out.append(ev.values["mom"])
    assert math.isnan(out[0]) and math.isnan(out[1]) and out[2:] == [3.0, 1.0]
    snap = ev.snapshot()
    ev2 = DagEvaluator(a, g, base_dir=tmp_path)
    ev2.restore(snap)
    ev.on_bar(bar(4, 20.0, 20, 20, 20))
    ev2.on_bar(bar(4, 20.0, 20, 20, 20))
    assert ev.values["mom"] == ev2.values["mom"] == 7.0  # 20 - 13


def test_python_node_with_changed_code_is_refused(tmp_path: Path) -> None:
    a = loads(_py_artifact(tmp_path, sha="0" * 64))
    with pytest.raises(ArtifactGraphError, match="the code changed"):
        check(a, base_dir=tmp_path)
    with pytest.raises(ArtifactSchemaError, match="sha256"):
        loads(_py_artifact(tmp_path, sha="not-a-hash"))


SENTIMENT = """
schema: stratagem/v1
name: news
version: 1
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
nodes:
  mood: {kind: sentiment, backend: lexicon, policy: ffill}
  bullish: {kind: threshold, input: mood, op: ">", value: 0.2}
entry: {when: bullish, side: long}
"""


def test_sentiment_node_aligns_items_to_bar_closes_without_look_ahead() -> None:
    from feeds.schema import UnstructuredItem

    a = loads(SENTIMENT)
    ev = DagEvaluator(a, check(a))
    items = [
        UnstructuredItem(
            source="news",
            ts_ns=T0 + H // 2,
            text="bitcoin rally surges to record gains",
            symbols=["BTC/USDT"],
        ),
        UnstructuredItem(
            source="news",
            ts_ns=T0 + 2 * H,
            text="exchange hack crash losses fear",
            symbols=["BTC/USDT"],
        ),
        UnstructuredItem(
            source="news", ts_ns=T0 + 2 * H, text="rally", symbols=["ETH/USDT"]
        ),  # other symbol
    ]
    ev.on_items(items)
    seen = []
    for i in range(4):
        ev.on_bar(bar(i, 100, 101, 99, 100))
        seen.append(ev.values["mood"])
    assert (
        seen[0] > 0.2 and ev.values is not None
    )  # bar 0 closes at 01:00: sees the 00:30 item only
    assert seen[1] == seen[0]  # nothing new before 02:00 (the 02:00 item belongs to the next bar)
    assert seen[2] < 0  # bar 2 closes at 03:00 and sees the bearish 02:00 item
    assert seen[3] == seen[2]


def test_sentiment_model_backend_needs_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ArtifactSchemaError, match="model_dir"):
        loads(SENTIMENT.replace("backend: lexicon", "backend: model"))
    a = loads(SENTIMENT.replace("backend: lexicon", "backend: model, model_dir: missing-model"))
    from indicators.sentiment_errors import SentimentError

    with pytest.raises(SentimentError, match="missing-model"):
        DagEvaluator(a, check(a), base_dir=tmp_path)
