"""The sentiment node: news/posts (``feeds.schema.UnstructuredItem``) -> a bar-aligned score series.

A *scorer* turns texts into signed scores in [-1, 1]: :class:`SentimentModel` (a local
``transformers`` model, see ``indicators/sentiment_model.py``) or, only when asked for by name,
:class:`LexiconScorer`. :class:`SentimentSeries` aligns the scored items on bar closes without
look-ahead: the value at the bar closing at ``t`` uses only items with ``ts_ns < t``. It is a
signal the strategy reads, never a decision-maker, and never an LLM. See ``docs/sentiment.md``.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol

import numpy as np

from feeds.schema import UnstructuredItem
from indicators.sentiment_cache import CacheStats, ScoreCache, cache_key
from indicators.sentiment_errors import (
    SentimentCacheError,
    SentimentConfigError,
    SentimentError,
    SentimentInputError,
    SentimentModelError,
    SentimentStateError,
)
from indicators.sentiment_lexicon import LEXICON, LexiconScorer, lexicon_score
from indicators.sentiment_model import KNOWN_LABELS, SentimentModel, resolve_label_map

if TYPE_CHECKING:
    from indicators.nodes import BarValues, Value

__all__ = [
    "BACKENDS",
    "KNOWN_LABELS",
    "LEXICON",
    "POLICIES",
    "CacheStats",
    "LexiconScorer",
    "ScoreCache",
    "SentimentBar",
    "SentimentCacheError",
    "SentimentConfigError",
    "SentimentError",
    "SentimentInputError",
    "SentimentModel",
    "SentimentModelError",
    "SentimentScorer",
    "SentimentSeries",
    "SentimentSignal",
    "SentimentStateError",
    "align_sentiment",
    "cache_key",
    "lexicon_score",
    "make_scorer",
    "resolve_label_map",
]

Backend = Literal["model", "lexicon"]
Policy = Literal["ewm", "decay", "ffill"]
LatePolicy = Literal["next_bar", "drop", "error"]

BACKENDS: Final[tuple[str, ...]] = ("model", "lexicon")
POLICIES: Final[tuple[str, ...]] = ("ewm", "decay", "ffill")
LATE_POLICIES: Final[tuple[str, ...]] = ("next_bar", "drop", "error")
SNAPSHOT_VERSION: Final = 1


class SentimentScorer(Protocol):
    """Anything that scores texts in [-1, 1]; ``fingerprint`` identifies it (snapshots, caches)."""

    @property
    def fingerprint(self) -> str: ...

    def score(self, texts: Sequence[str]) -> list[float]: ...


def make_scorer(
    backend: str,
    *,
    model_dir: str | Path | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    label_map: Mapping[str, float] | None = None,
    cache_size: int = 100_000,
    cache_path: str | Path | None = None,
    num_threads: int = 1,
    expected_revision: str | None = None,
) -> SentimentScorer:
    """The scorer an artifact/setting names; ``model`` never falls back to the lexicon."""
    if backend == "model":
        if model_dir is None:
            raise SentimentConfigError(
                "sentiment backend 'model' needs model_dir: the local directory of a saved "
                "text-classification model (config.json, weights, tokenizer); set backend: "
                "lexicon explicitly to use the word list instead"
            )
        return SentimentModel(
            model_dir,
            batch_size=batch_size,
            max_length=max_length,
            label_map=label_map,
            cache_size=cache_size,
            cache_path=cache_path,
            num_threads=num_threads,
            expected_revision=expected_revision,
        )
    if backend == "lexicon":
        if model_dir is not None or label_map is not None or expected_revision is not None:
            raise SentimentConfigError(
                f"sentiment backend 'lexicon' was given model settings (model_dir={model_dir!r}, "
                f"label_map={label_map!r}, model_revision={expected_revision!r}) it would ignore; "
                "remove them or use backend: model"
            )
        return LexiconScorer()
    raise SentimentConfigError(
        f"unknown sentiment backend {backend!r}; use one of {', '.join(BACKENDS)}"
    )


class SentimentBar(NamedTuple):
    """What one bar of the series saw: its value, and the mean and number of items inside it."""

    close_ts_ns: int
    value: float  # the series value after this bar (NaN before the first item)
    mean: float  # mean score of the items in [previous close, close); NaN if none
    n_items: int  # items in the bar


def _check_half_life(policy: str, half_life_bars: float | None) -> float | None:
    if policy == "ffill":
        if half_life_bars is not None:
            raise SentimentConfigError(
                "half_life_bars is set but policy is 'ffill' (which holds the last bar's mean "
                "unchanged); use policy 'decay' or 'ewm', or remove half_life_bars"
            )
        return None
    if (
        half_life_bars is None
        or isinstance(half_life_bars, bool)
        or not isinstance(half_life_bars, int | float)
        or not math.isfinite(half_life_bars)
        or half_life_bars <= 0
    ):
        raise SentimentConfigError(
            f"policy {policy!r} needs half_life_bars: a finite number of bars > 0, got "
            f"{half_life_bars!r} (e.g. 24 on 1h bars: a day-old item counts half)"
        )
    return float(half_life_bars)


class SentimentSeries:
    """Streaming, look-ahead-free alignment of scored items on bar closes (a DAG node's state).

    Feed items with :meth:`add_items` (scored at once, in batches); call :meth:`update` with each
    bar's close time. Items with ``previous close <= ts_ns < close`` form the bar; between items the
    value follows ``policy``:

    * ``ewm``: exponentially weighted mean of all item scores, an item ``k`` bars old weighing
      ``0.5 ** (k / half_life_bars)``; it holds its level through bars without news.
    * ``decay``: the last bar's mean, multiplied by ``0.5 ** (age / half_life_bars)`` (decays to 0).
    * ``ffill``: the last bar's mean, held.

    ``max_age_bars`` turns the value to NaN once the newest item is older than that many bars.
    Before the first item the value is NaN. Items older than the last processed close (late
    arrivals) count in the next bar (``late='next_bar'``), or are dropped / raise.
    """

    def __init__(
        self,
        scorer: SentimentScorer,
        *,
        symbols: Sequence[str] | None = None,
        include_untagged: bool = False,
        sources: Sequence[str] | None = None,
        policy: str = "ewm",
        half_life_bars: float | None = None,
        max_age_bars: int | None = None,
        late: str = "next_bar",
    ) -> None:
        if policy not in POLICIES:
            raise SentimentConfigError(
                f"unknown sentiment policy {policy!r}; use one of {', '.join(POLICIES)}"
            )
        if late not in LATE_POLICIES:
            raise SentimentConfigError(
                f"unknown late-item policy {late!r}; use one of {', '.join(LATE_POLICIES)}"
            )
        if max_age_bars is not None and (
            isinstance(max_age_bars, bool) or not isinstance(max_age_bars, int) or max_age_bars < 0
        ):
            raise SentimentConfigError(
                f"max_age_bars must be an integer >= 0 or None, got {max_age_bars!r}"
            )
        for name, seq in (("symbols", symbols), ("sources", sources)):
            if seq is not None and (
                isinstance(seq, str) or not all(isinstance(s, str) and s for s in seq)
            ):
                raise SentimentConfigError(
                    f"{name} must be a list of non-empty strings or None, got {seq!r}"
                )
        self.scorer = scorer
        self.policy = policy
        self.half_life_bars = _check_half_life(policy, half_life_bars)
        self._decay = 1.0 if self.half_life_bars is None else 0.5 ** (1.0 / self.half_life_bars)
        self.max_age_bars = max_age_bars
        self.late = late
        self.symbols = None if symbols is None else tuple(sorted(set(symbols)))
        self.include_untagged = bool(include_untagged)
        self.sources = None if sources is None else tuple(sources)
        self._reset()

    def _reset(self) -> None:
        self.last_close: int | None = None
        self._pending_ts: list[int] = []  # sorted; parallel to _pending_score
        self._pending_score: list[float] = []
        self._head = 0  # entries before it were consumed by earlier bars
        self._num = 0.0  # ewm numerator / denominator as of the last bar with items
        self._den = 0.0
        self._last_mean = math.nan
        self._age: int | None = None  # bars since the last bar with items; None: no item yet
        self.value = math.nan
        self.last_bar: SentimentBar | None = None
        self.items_accepted = 0
        self.items_late = 0
        self.items_dropped = 0

    # ------------------------------------------------------------------ input

    def matches(self, item: UnstructuredItem) -> bool:
        """Whether ``item`` belongs to this series (symbol and source filters)."""
        if self.sources is not None and not any(
            fnmatch.fnmatchcase(item.source, pat) for pat in self.sources
        ):
            return False
        if self.symbols is None:
            return True
        if not item.symbols:
            return self.include_untagged
        return any(s in self.symbols for s in item.symbols)

    def add_items(self, items: Iterable[UnstructuredItem]) -> int:
        """Score the matching items (one batched scorer call) and queue them; returns how many."""
        chosen: list[UnstructuredItem] = []
        late = dropped = 0  # committed only if the whole call succeeds
        for n, item in enumerate(items):
            if not isinstance(item, UnstructuredItem):
                raise SentimentInputError(
                    f"items[{n}] is {type(item).__name__}, expected feeds.schema.UnstructuredItem"
                )
            if isinstance(item.ts_ns, bool) or not isinstance(item.ts_ns, int):
                raise SentimentInputError(
                    f"items[{n}] (source {item.source!r}): ts_ns must be int nanoseconds UTC, got "
                    f"{item.ts_ns!r}"
                )
            if not self.matches(item):
                continue
            if self.last_close is not None and item.ts_ns < self.last_close:
                if self.late == "error":
                    raise SentimentInputError(
                        f"items[{n}] (source {item.source!r}, url {item.url!r}) has ts_ns "
                        f"{item.ts_ns} before the last processed bar close {self.last_close}; "
                        "feed items before the bar that contains them, or set late: next_bar"
                    )
                if self.late == "drop":
                    dropped += 1
                    continue
                late += 1
            chosen.append(item)
        if not chosen:
            self.items_dropped += dropped
            return 0
        scores = self.scorer.score([it.text for it in chosen])
        fresh: list[tuple[int, float]] = []
        for item, score in zip(chosen, scores, strict=True):
            if not (math.isfinite(score) and -1.0 <= score <= 1.0):
                raise SentimentError(
                    f"scorer returned {score!r} for an item from {item.source!r}; scores must be "
                    "finite and in [-1, 1]"
                )
            ts = item.ts_ns
            if self.last_close is not None and ts < self.last_close:
                ts = self.last_close  # a late item is information first available now
            fresh.append((ts, float(score)))
        merged = self._pending_pairs() + fresh
        merged.sort()  # by (ts, score): a canonical order whatever the arrival order
        self._set_pending(merged)
        self.items_accepted += len(chosen)
        self.items_late += late
        self.items_dropped += dropped
        return len(chosen)

    def _pending_pairs(self) -> list[tuple[int, float]]:
        h = self._head
        return list(zip(self._pending_ts[h:], self._pending_score[h:], strict=True))

    def _set_pending(self, pairs: Sequence[tuple[int, float]]) -> None:
        self._pending_ts = [t for t, _ in pairs]
        self._pending_score = [s for _, s in pairs]
        self._head = 0

    @property
    def pending(self) -> int:
        """Queued items not yet in a bar (their timestamps are at or after the last close)."""
        return len(self._pending_ts) - self._head

    # ------------------------------------------------------------------ clock

    def update(self, bar_close_ts_ns: int) -> float:
        """Close the bar ending at ``bar_close_ts_ns`` and return the series value for it."""
        if isinstance(bar_close_ts_ns, bool) or not isinstance(bar_close_ts_ns, int | np.integer):
            raise SentimentInputError(
                f"bar_close_ts_ns must be int nanoseconds UTC, got {bar_close_ts_ns!r}"
            )
        close = int(bar_close_ts_ns)
        if self.last_close is not None and close <= self.last_close:
            raise SentimentInputError(
                f"bar close {close} is not after the previous bar close {self.last_close}; bar "
                "closes must increase strictly (replay bars in time order, once each)"
            )
        # the bar takes the queued items with ts_ns < close: no look-ahead
        cut = bisect.bisect_left(self._pending_ts, close, lo=self._head)
        scores = self._pending_score[self._head : cut]
        self._head = cut
        if self._head > 1024 and 2 * self._head > len(self._pending_ts):
            self._set_pending(self._pending_pairs())  # compact the consumed prefix
        count = len(scores)
        total = math.fsum(scores)
        mean = total / count if count else math.nan
        if count:
            if self._age is None:
                self._num, self._den = total, float(count)
            else:
                fade = self._decay ** (self._age + 1)
                self._num = self._num * fade + total
                self._den = self._den * fade + count
            self._last_mean = mean
            self._age = 0
        elif self._age is not None:
            self._age += 1
        self.value = self._value()
        self.last_close = close
        self.last_bar = SentimentBar(close, self.value, mean, count)
        return self.value

    def _value(self) -> float:
        if self._age is None:
            return math.nan
        if self.max_age_bars is not None and self._age > self.max_age_bars:
            return math.nan
        if self.policy == "ewm":
            return self._num / self._den
        if self.policy == "decay":
            return self._last_mean * self._decay**self._age
        return self._last_mean

    # ------------------------------------------------------------------ state

    def config(self) -> dict[str, Any]:
        """Parameters that a snapshot must agree with to be restored here."""
        return {
            "policy": self.policy,
            "half_life_bars": self.half_life_bars,
            "max_age_bars": self.max_age_bars,
            "late": self.late,
            "symbols": None if self.symbols is None else list(self.symbols),
            "include_untagged": self.include_untagged,
            "sources": None if self.sources is None else list(self.sources),
        }

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (scores, not texts; NaN as None): restoring needs no model call."""
        return {
            "version": SNAPSHOT_VERSION,
            "scorer": self.scorer.fingerprint,
            "config": self.config(),
            "last_close": self.last_close,
            "pending": [[t, s] for t, s in self._pending_pairs()],
            "num": self._num,
            "den": self._den,
            "last_mean": _nan_to_none(self._last_mean),
            "age": self._age,
            "value": _nan_to_none(self.value),
            "last_bar": None
            if self.last_bar is None
            else [
                self.last_bar[0],
                _nan_to_none(self.last_bar[1]),
                _nan_to_none(self.last_bar[2]),
                self.last_bar[3],
            ],
            "counters": [self.items_accepted, self.items_late, self.items_dropped],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot`; refuses one taken with another scorer or other parameters."""
        if not isinstance(state, Mapping) or state.get("version") != SNAPSHOT_VERSION:
            raise SentimentStateError(
                f"not a sentiment snapshot of version {SNAPSHOT_VERSION}: "
                f"{type(state).__name__} with version "
                f"{state.get('version') if isinstance(state, Mapping) else None!r}"
            )
        if state["scorer"] != self.scorer.fingerprint:
            raise SentimentStateError(
                f"sentiment snapshot was taken with scorer {state['scorer'][:12]}..., this series "
                f"uses {self.scorer.fingerprint[:12]}... (other model files, label map or "
                "max_length); rebuild the series from its items instead of restoring"
            )
        if state["config"] != self.config():
            raise SentimentStateError(
                f"sentiment snapshot parameters {state['config']} differ from this series' "
                f"{self.config()}; restore into a series built with the same parameters"
            )
        try:
            pending = sorted((int(t), float(s)) for t, s in state["pending"])
            self.last_close = None if state["last_close"] is None else int(state["last_close"])
            self._set_pending(pending)
            self._num, self._den = float(state["num"]), float(state["den"])
            self._last_mean = _none_to_nan(state["last_mean"])
            self._age = None if state["age"] is None else int(state["age"])
            self.value = _none_to_nan(state["value"])
            lb = state["last_bar"]
            self.last_bar = (
                None
                if lb is None
                else SentimentBar(int(lb[0]), _none_to_nan(lb[1]), _none_to_nan(lb[2]), int(lb[3]))
            )
            self.items_accepted, self.items_late, self.items_dropped = (
                int(c) for c in state["counters"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            self._reset()
            raise SentimentStateError(
                f"sentiment snapshot is malformed ({type(exc).__name__}: {exc}); the series was "
                "reset to empty"
            ) from exc


def _nan_to_none(x: float) -> float | None:
    """NaN as None, so a snapshot survives strict JSON (msgspec writes NaN as null)."""
    return None if math.isnan(x) else x


def _none_to_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


class SentimentSignal:
    """SignalNode adapter: ``update`` closes the bar at ``bar.ts_ns + timeframe_ns``.

    ``BarValues.ts_ns`` is the bar's open time (feeds' bar convention) and the DAG calls the node
    once the bar is final, so the close is open + timeframe. Items reach it via ``series.add_items``.
    """

    clocked = True

    def __init__(self, series: SentimentSeries, timeframe_ns: int) -> None:
        if isinstance(timeframe_ns, bool) or not isinstance(timeframe_ns, int) or timeframe_ns < 1:
            raise SentimentConfigError(
                f"timeframe_ns must be a positive int, got {timeframe_ns!r} "
                "(use feeds.schema.timeframe_to_ns('1h'))"
            )
        self.series = series
        self.timeframe_ns = timeframe_ns

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return self.series.update(int(bar.ts_ns) + self.timeframe_ns)

    def snapshot(self) -> Any:
        return self.series.snapshot()

    def restore(self, state: Any) -> None:
        self.series.restore(state)


def align_sentiment(
    scorer: SentimentScorer,
    items: Iterable[UnstructuredItem],
    bar_close_ts_ns: Sequence[int] | np.ndarray,
    **params: Any,
) -> np.ndarray:
    """Batch helper (research, backtest columns): the streaming series evaluated on every close.

    Built on :class:`SentimentSeries`, so it equals the streaming node by construction.
    """
    series = SentimentSeries(scorer, **params)
    series.add_items(items)
    closes = np.asarray(bar_close_ts_ns, dtype=np.int64)
    out = np.empty(len(closes), dtype=np.float64)
    for i, close in enumerate(closes.tolist()):
        out[i] = series.update(close)
    return out
