"""SentimentSeries alignment (no look-ahead, policies, snapshots), the lexicon and the score cache.

These need no ML library: a fake scorer reads each item's score from its text, so the series
logic is checked exactly against a brute-force oracle that recomputes every bar from scratch.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.schema import UnstructuredItem
from indicators.nodes import BarValues
from indicators.sentiment import (
    LEXICON,
    LexiconScorer,
    ScoreCache,
    SentimentCacheError,
    SentimentConfigError,
    SentimentError,
    SentimentInputError,
    SentimentSeries,
    SentimentSignal,
    SentimentStateError,
    align_sentiment,
    cache_key,
    lexicon_score,
)

HOUR = 3_600_000_000_000


class FakeScorer:
    """Score = float(text); records every batch so tests can count scorer calls."""

    def __init__(self, fingerprint: str = "fake-v1") -> None:
        self.fingerprint = fingerprint
        self.batches: list[list[str]] = []

    def score(self, texts: Sequence[str]) -> list[float]:
        self.batches.append(list(texts))
        return [float(t) for t in texts]


def item(ts_ns: int, score: float, *symbols: str, source: str = "rss:test") -> UnstructuredItem:
    return UnstructuredItem(source=source, ts_ns=ts_ns, text=repr(score), symbols=symbols)


def oracle(
    items: Sequence[tuple[int, float]],
    closes: Sequence[int],
    policy: str,
    half_life: float | None,
    max_age: int | None,
) -> list[float]:
    """Every bar recomputed from scratch, from the items with ts < that bar's close only."""
    d = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
    out = []
    for j, close in enumerate(closes):
        bar_of: list[tuple[int, float]] = []  # (bar index, score) of items visible at bar j
        for ts, s in items:
            if ts >= close:
                continue
            k = next(i for i, c in enumerate(closes) if ts < c)
            bar_of.append((k, s))
        if not bar_of:
            out.append(math.nan)
            continue
        last = max(k for k, _ in bar_of)
        if max_age is not None and j - last > max_age:
            out.append(math.nan)
            continue
        last_mean = float(np.mean([s for k, s in bar_of if k == last]))
        if policy == "ffill":
            out.append(last_mean)
        elif policy == "decay":
            out.append(last_mean * d ** (j - last))
        else:
            w = [d ** (j - k) for k, _ in bar_of]
            out.append(sum(wi * s for wi, (_, s) in zip(w, bar_of, strict=True)) / sum(w))
    return out


scores_st = st.floats(-1.0, 1.0, allow_nan=False).map(lambda x: round(x, 6))
items_st = st.lists(st.tuples(st.integers(0, 20 * HOUR), scores_st), max_size=25)
gaps_st = st.lists(st.integers(1, 3 * HOUR), min_size=1, max_size=20)
params_st = st.sampled_from(
    [
        ("ewm", 1.0, None),
        ("ewm", 3.5, 4),
        ("decay", 2.0, None),
        ("decay", 0.5, 2),
        ("ffill", None, None),
        ("ffill", None, 0),
    ]
)


def closes_from(gaps: Sequence[int]) -> list[int]:
    return np.cumsum(gaps).tolist()


def make_items(pairs: Sequence[tuple[int, float]]) -> list[UnstructuredItem]:
    return [item(ts, s, "BTC/USDT") for ts, s in pairs]


# ----------------------------------------------------------------------------- alignment


@given(items_st, gaps_st, params_st)
def test_series_matches_the_from_scratch_oracle(
    pairs: list[tuple[int, float]], gaps: list[int], params: tuple[str, float | None, int | None]
) -> None:
    policy, half_life, max_age = params
    closes = closes_from(gaps)
    got = align_sentiment(
        FakeScorer(),
        make_items(pairs),
        closes,
        policy=policy,
        half_life_bars=half_life,
        max_age_bars=max_age,
    )
    expected = oracle(pairs, closes, policy, half_life, max_age)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@given(items_st, items_st, gaps_st, params_st, st.integers(0, 19))
def test_future_items_never_change_past_values(
    pairs: list[tuple[int, float]],
    extra: list[tuple[int, float]],
    gaps: list[int],
    params: tuple[str, float | None, int | None],
    cut: int,
) -> None:
    policy, half_life, max_age = params
    closes = closes_from(gaps)
    t = min(cut, len(closes) - 1)
    future = [(closes[t] + ts, s) for ts, s in extra]  # every one at or after bar t's close
    kw: dict[str, Any] = {"policy": policy, "half_life_bars": half_life, "max_age_bars": max_age}
    base = align_sentiment(FakeScorer(), make_items(pairs), closes, **kw)
    more = align_sentiment(FakeScorer(), make_items(pairs + future), closes, **kw)
    assert base[: t + 1].tobytes() == more[: t + 1].tobytes()  # bit for bit


@given(items_st, gaps_st, params_st, st.randoms(use_true_random=False))
def test_streaming_arrival_equals_everything_up_front(
    pairs: list[tuple[int, float]],
    gaps: list[int],
    params: tuple[str, float | None, int | None],
    rnd: Any,
) -> None:
    """Items fed just before their bar (shuffled, in small batches) = all items fed at once."""
    policy, half_life, max_age = params
    closes = closes_from(gaps)
    kw: dict[str, Any] = {"policy": policy, "half_life_bars": half_life, "max_age_bars": max_age}
    upfront = align_sentiment(FakeScorer(), make_items(pairs), closes, **kw)
    live = SentimentSeries(FakeScorer(), **kw)
    queue = make_items(pairs)
    rnd.shuffle(queue)
    out = []
    for close in closes:
        due = [it for it in queue if it.ts_ns < close]
        queue = [it for it in queue if it.ts_ns >= close]
        while due:
            n = rnd.randint(1, 3)
            live.add_items(due[:n])
            due = due[n:]
        out.append(live.update(close))
    assert np.array(out).tobytes() == upfront.tobytes()


def test_item_at_the_close_belongs_to_the_next_bar() -> None:
    s = SentimentSeries(FakeScorer(), policy="ffill")
    s.add_items([item(HOUR, 0.5), item(HOUR - 1, -0.25)])
    assert s.update(HOUR) == -0.25  # ts == close is not visible yet
    assert s.last_bar is not None and s.last_bar.n_items == 1
    assert s.update(2 * HOUR) == 0.5


def test_nan_before_the_first_item() -> None:
    s = SentimentSeries(FakeScorer(), policy="ewm", half_life_bars=2)
    s.add_items([item(3 * HOUR + 5, 0.8)])
    values = [s.update(h * HOUR) for h in range(1, 6)]
    assert all(math.isnan(v) for v in values[:3])
    assert values[3:] == [0.8, 0.8]  # ewm holds its level through bars without news


def test_ewm_weights_by_bar_age() -> None:
    s = SentimentSeries(FakeScorer(), policy="ewm", half_life_bars=1)
    s.add_items([item(0, 1.0), item(1, 1.0), item(HOUR + 1, -1.0), item(3 * HOUR, 0.5)])
    v1 = s.update(HOUR)  # two items at +1
    v2 = s.update(2 * HOUR)  # one at -1; the first two now weigh 1/2 each
    s.update(3 * HOUR)  # no news
    v4 = s.update(4 * HOUR)  # 0.5 now; -1 is two bars old (1/4), the first two three (1/8)
    assert v1 == 1.0
    assert v2 == pytest.approx((0.5 * 2 - 1.0) / (0.5 * 2 + 1.0))
    assert v4 == pytest.approx((2 * 0.125 - 0.25 + 0.5) / (2 * 0.125 + 0.25 + 1.0))


def test_decay_and_max_age() -> None:
    s = SentimentSeries(FakeScorer(), policy="decay", half_life_bars=1, max_age_bars=2)
    s.add_items([item(0, 0.8), item(10, 0.4)])
    assert [s.update(h * HOUR) for h in range(1, 4)] == pytest.approx([0.6, 0.3, 0.15])
    assert math.isnan(s.update(4 * HOUR))  # three bars old > max_age_bars


def test_filters_by_symbol_and_source() -> None:
    s = SentimentSeries(
        FakeScorer(), symbols=["BTC/USDT"], sources=["rss:*"], policy="ffill", include_untagged=True
    )
    added = s.add_items(
        [
            item(1, 0.1, "BTC/USDT"),
            item(2, 0.3, "ETH/USDT"),  # other symbol
            item(3, 0.5),  # untagged: included on request
            item(4, 0.7, "BTC/USDT", source="x:posts"),  # other source
            item(5, 0.9, "ETH/USDT", "BTC/USDT"),
        ]
    )
    assert added == 3
    assert s.update(HOUR) == pytest.approx((0.1 + 0.5 + 0.9) / 3)
    strict = SentimentSeries(FakeScorer(), symbols=["BTC/USDT"], policy="ffill")
    assert strict.add_items([item(3, 0.5)]) == 0  # untagged excluded by default


def test_items_are_scored_in_one_batch_per_add() -> None:
    scorer = FakeScorer()
    s = SentimentSeries(scorer, policy="ffill")
    s.add_items([item(i, 0.1 * (i % 3)) for i in range(7)])
    s.add_items([])
    assert [len(b) for b in scorer.batches] == [7]


def test_late_items() -> None:
    nb = SentimentSeries(FakeScorer(), policy="ffill")
    nb.update(HOUR)
    nb.add_items([item(HOUR - 10, 0.6)])  # published in the first bar, arrived after it closed
    assert nb.items_late == 1
    assert nb.update(2 * HOUR) == 0.6  # counted in the bar where it became known
    drop = SentimentSeries(FakeScorer(), policy="ffill", late="drop")
    drop.update(HOUR)
    assert drop.add_items([item(5, 0.6)]) == 0 and drop.items_dropped == 1
    strict = SentimentSeries(FakeScorer(), policy="ffill", late="error")
    strict.update(HOUR)
    with pytest.raises(SentimentInputError, match="before the last processed bar close"):
        strict.add_items([item(5, 0.6)])


def test_bar_closes_must_increase() -> None:
    s = SentimentSeries(FakeScorer(), policy="ffill")
    s.update(2 * HOUR)
    with pytest.raises(SentimentInputError, match="not after the previous bar close"):
        s.update(2 * HOUR)
    with pytest.raises(SentimentInputError, match="must be int nanoseconds"):
        s.update(3.0 * HOUR)  # type: ignore[arg-type]


def test_bad_items_and_scores() -> None:
    s = SentimentSeries(FakeScorer(), policy="ffill")
    with pytest.raises(SentimentInputError, match=r"items\[0\] is dict"):
        s.add_items([{"ts_ns": 1, "text": "x"}])  # type: ignore[list-item]
    with pytest.raises(SentimentError, match=r"scorer returned 1\.5"):
        s.add_items([UnstructuredItem(source="s", ts_ns=1, text="1.5")])
    with pytest.raises(SentimentError, match="scorer returned nan"):
        s.add_items([UnstructuredItem(source="s", ts_ns=1, text="nan")])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "mean"}, "unknown sentiment policy 'mean'"),
        ({"policy": "ewm"}, "policy 'ewm' needs half_life_bars"),
        ({"policy": "decay", "half_life_bars": 0}, "needs half_life_bars"),
        ({"policy": "decay", "half_life_bars": math.inf}, "needs half_life_bars"),
        ({"policy": "ffill", "half_life_bars": 3}, "policy is 'ffill'"),
        ({"policy": "ffill", "max_age_bars": -1}, "max_age_bars must be an integer >= 0"),
        ({"policy": "ffill", "late": "later"}, "unknown late-item policy"),
        ({"policy": "ffill", "symbols": "BTC/USDT"}, "symbols must be a list"),
        ({"policy": "ffill", "sources": [""]}, "sources must be a list"),
    ],
)
def test_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SentimentConfigError, match=message):
        SentimentSeries(FakeScorer(), **kwargs)


# ----------------------------------------------------------------------------- state


@given(items_st, gaps_st, params_st, st.integers(0, 20), st.booleans())
def test_snapshot_restore_continues_identically(
    pairs: list[tuple[int, float]],
    gaps: list[int],
    params: tuple[str, float | None, int | None],
    split: int,
    via_msgspec: bool,
) -> None:
    policy, half_life, max_age = params
    closes = closes_from(gaps)
    kw: dict[str, Any] = {"policy": policy, "half_life_bars": half_life, "max_age_bars": max_age}
    full = align_sentiment(FakeScorer(), make_items(pairs), closes, **kw)
    first = SentimentSeries(FakeScorer(), **kw)
    first.add_items(make_items(pairs))
    k = min(split, len(closes))
    head = [first.update(c) for c in closes[:k]]
    state = first.snapshot()
    # through a JSON file and back: what recovery does (msgspec writes NaN as null)
    blob = msgspec.json.encode(state) if via_msgspec else json.dumps(state).encode()
    second = SentimentSeries(FakeScorer(), **kw)
    second.restore(json.loads(blob))
    assert second.snapshot() == state
    tail = [second.update(c) for c in closes[k:]]
    assert np.array(head + tail).tobytes() == full.tobytes()


def test_restore_refuses_foreign_snapshots() -> None:
    s = SentimentSeries(FakeScorer(), policy="ewm", half_life_bars=4)
    s.add_items([item(1, 0.5)])
    s.update(HOUR)
    state = s.snapshot()
    other_model = SentimentSeries(FakeScorer("another-model"), policy="ewm", half_life_bars=4)
    with pytest.raises(SentimentStateError, match="taken with scorer"):
        other_model.restore(state)
    other_params = SentimentSeries(FakeScorer(), policy="ewm", half_life_bars=8)
    with pytest.raises(SentimentStateError, match="parameters"):
        other_params.restore(state)
    with pytest.raises(SentimentStateError, match="version"):
        other_params.restore({"version": 99})
    broken = dict(state, pending=[["x", 1.0]])
    fresh = SentimentSeries(FakeScorer(), policy="ewm", half_life_bars=4)
    with pytest.raises(SentimentStateError, match="malformed"):
        fresh.restore(broken)
    assert math.isnan(fresh.value) and fresh.last_close is None  # reset, not half-restored


def test_signal_node_closes_bars_at_open_plus_timeframe() -> None:
    node = SentimentSignal(SentimentSeries(FakeScorer(), policy="ffill"), timeframe_ns=HOUR)
    assert node.clocked
    node.series.add_items([item(HOUR - 1, 0.2), item(HOUR, 0.4)])
    bar0 = BarValues(0, 1.0, 1.0, 1.0, 1.0, 0.0)  # the bar opened at 0, closes at HOUR
    assert node.update([], bar0) == 0.2
    node2 = SentimentSignal(SentimentSeries(FakeScorer(), policy="ffill"), timeframe_ns=HOUR)
    node2.restore(node.snapshot())
    assert node2.update([], BarValues(HOUR, 1.0, 1.0, 1.0, 1.0, 0.0)) == 0.4
    with pytest.raises(SentimentConfigError, match="timeframe_ns must be a positive int"):
        SentimentSignal(node.series, 0)


# ----------------------------------------------------------------------------- lexicon


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("Bitcoin ETF approved, inflows surge to a record", 1),
        ("Exchange hacked: funds lost, withdrawals halted", -1),
        ("The committee meets on Tuesday", 0),
        ("", 0),
        ("Prices did not rise", -1),
        ("Regulator isn't planning a ban", 1),
    ],
)
def test_lexicon_signs(text: str, sign: int) -> None:
    s = lexicon_score(text)
    assert -1.0 < s < 1.0
    assert (s > 0) - (s < 0) == sign


def test_lexicon_squash_values() -> None:
    assert lexicon_score("gain") == pytest.approx(1 / math.sqrt(16))
    assert lexicon_score("crash crash") == pytest.approx(-4 / math.sqrt(31))


def test_lexicon_scorer_is_deterministic_and_configurable() -> None:
    a, b = LexiconScorer(), LexiconScorer()
    assert a.fingerprint == b.fingerprint
    assert a.score(["rally", "crash"]) == [lexicon_score("rally"), lexicon_score("crash")]
    custom = LexiconScorer({**LEXICON, "moon": 2.0})
    assert custom.fingerprint != a.fingerprint
    assert custom.score(["moon"])[0] > 0
    assert a.score(["moon"]) == [0.0]
    with pytest.raises(SentimentConfigError, match="lower-case word"):
        LexiconScorer({"Moon": 1.0})
    with pytest.raises(SentimentConfigError, match="finite"):
        LexiconScorer({"moon": math.nan})


# ----------------------------------------------------------------------------- cache


def test_score_cache_lru_and_disk(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    with ScoreCache(2, db) as cache:
        cache.put_many({"a": 0.1, "b": 0.2})
        cache.get_many(["a"])  # touch a: b is now the oldest
        cache.put_many({"c": 0.3})
        assert len(cache) == 2 and cache.stats.evictions == 1
        assert cache.get_many(["b", "a", "zz"]) == {"a": 0.1, "b": 0.2}  # b from disk
        assert cache.stats.disk_hits == 1 and cache.stats.misses == 1
    with ScoreCache(0, db) as reopened:
        assert reopened.get_many(["a", "b", "c"]) == {"a": 0.1, "b": 0.2, "c": 0.3}
        assert len(reopened) == 0  # memory disabled


def test_score_cache_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SentimentCacheError, match="does not exist"):
        ScoreCache(10, tmp_path / "missing" / "c.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SentimentCacheError, match="cannot be used as an SQLite database"):
        ScoreCache(10, junk)
    with pytest.raises(SentimentCacheError, match="cache_size must be an integer >= 0"):
        ScoreCache(-1)


def test_cache_keys_separate_scorers_and_texts(tmp_path: Path) -> None:
    k = cache_key("fp1", "text")
    assert k != cache_key("fp2", "text") and k != cache_key("fp1", "text ")
    assert k == cache_key("fp1", "text") and len(k) == 64
    db = tmp_path / "k.sqlite"
    with ScoreCache(10, db) as cache:
        cache.put_many({k: -0.123456789012345678})
    con = sqlite3.connect(db)
    rows = con.execute("SELECT score FROM sentiment_scores").fetchall()
    con.close()
    assert rows == [(-0.123456789012345678,)]  # doubles stored exactly


def test_snapshot_is_canonical_whatever_the_arrival_order() -> None:
    a = SentimentSeries(FakeScorer(), policy="ffill")
    b = SentimentSeries(FakeScorer(), policy="ffill")
    same_ts = [item(HOUR + 5, 0.25), item(HOUR + 5, -0.5), item(HOUR + 5, 0.125)]
    a.add_items(same_ts)
    for it in reversed(same_ts):
        b.add_items([it])
    assert math.isnan(a.update(HOUR)) and math.isnan(b.update(HOUR))  # still pending
    assert a.snapshot() == b.snapshot()
    assert json.dumps(a.snapshot()) == json.dumps(b.snapshot())


def test_a_failed_add_changes_nothing() -> None:
    s = SentimentSeries(FakeScorer(), policy="ffill", late="drop")
    s.update(HOUR)
    before = s.snapshot()
    with pytest.raises(SentimentError):
        s.add_items([item(5, 0.1), item(2 * HOUR, 0.2), item(2 * HOUR, 7.0)])  # late, ok, bad
    assert s.snapshot() == before and s.items_dropped == 0
