"""Sentiment node throughput: texts/s batched vs one-by-one (baseline), and cache-hit speed-ups.

Run: ``python benchmarks/bench_sentiment.py [--texts 512] [--repeat 5]``. A tiny BERT (2 layers,
hidden 64, seeded random weights, its own WordPiece vocabulary) is built in a temp directory:
nothing is downloaded. Every row is measured in the same invocation, round-robin, and reported
as a ratio to the one-by-one baseline, so only the ratios are meaningful on a noisy machine.
A real FinBERT (12 layers, hidden 768) spends far more time in the forward pass, so its batched
speed-up is smaller and its cache-hit speed-up far larger than this tiny model's.
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from feeds.schema import UnstructuredItem
from indicators.sentiment import LexiconScorer, SentimentModel, SentimentSeries

HOUR = 3_600_000_000_000
_VOCAB_TEXT = (
    "bitcoin btc eth ether market stock price etf rally crash gain loss bullish bearish strong weak "
    "up down good bad beats misses record profit fraud lawsuit growth surge plunge upgrade "
    "downgrade hack approval inflows outflows fear greed the a of to in on after as fed rates "
    "inflation cut hike exchange whales buy sell support resistance breakout liquidation"
)
WORDS = _VOCAB_TEXT.split()


def build_tiny_model(path: Path) -> Path:
    """Seeded random 2-layer BERT with a FinBERT-style label order, saved with its tokenizer."""
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizer(vocab=str(vocab))
    labels = {0: "positive", 1: "negative", 2: "neutral"}
    config = transformers.BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def headlines(n: int, seed: int) -> list[str]:
    """``n`` distinct pseudo-headlines of 5-30 words (seeded)."""
    rnd = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 30)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def median_seconds(cases: list[tuple[str, Callable[[], object]]], repeat: int) -> dict[str, float]:
    """Median wall time per case, run round-robin so machine noise hits all alike."""
    for _, fn in cases:
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeat):
        for name, fn in cases:
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    texts = headlines(args.texts, seed=1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_model(root / "tiny-bert")
        single = SentimentModel(model_dir, batch_size=1, cache_size=0)
        batched = SentimentModel(model_dir, batch_size=args.batch_size, cache_size=0)
        cached = SentimentModel(model_dir, batch_size=args.batch_size)
        cached.score(texts)  # prime the in-memory LRU
        db = root / "scores.sqlite"
        writer = SentimentModel(model_dir, batch_size=args.batch_size, cache_path=db)
        writer.score(texts)
        writer.close()
        disk = SentimentModel(model_dir, batch_size=args.batch_size, cache_size=0, cache_path=db)
        lexicon = LexiconScorer()

        items = [
            UnstructuredItem(source="bench", ts_ns=i * HOUR // 4, text=t, symbols=("BTC/USDT",))
            for i, t in enumerate(texts)
        ]
        n_bars = len(texts) // 4 + 1

        def series_run() -> None:
            s = SentimentSeries(lexicon, policy="ewm", half_life_bars=24.0)
            s.add_items(items)
            for b in range(1, n_bars + 1):
                s.update(b * HOUR)

        def one_by_one() -> None:
            for t in texts:
                single.score([t])

        cases: list[tuple[str, Callable[[], object]]] = [
            ("model, one text per call (baseline)", one_by_one),
            (f"model, batched (batch_size={args.batch_size})", lambda: batched.score(texts)),
            ("model, in-memory cache hits", lambda: cached.score(texts)),
            ("model, SQLite cache hits (LRU off)", lambda: disk.score(texts)),
            ("lexicon backend", lambda: lexicon.score(texts)),
        ]
        secs = median_seconds(cases, args.repeat)
        assert batched.score(texts) == cached.score(texts) == disk.score(texts)
        series_secs = median_seconds([("series", series_run)], args.repeat)["series"]
        disk.close()

    base = secs[cases[0][0]]
    print(f"{len(texts)} distinct headlines, 5-30 words; tiny BERT (2 layers, hidden 64), CPU")
    print(f"median of {args.repeat} round-robin runs\n")
    print("| case | texts/s | vs one-by-one |")
    print("|---|---:|---:|")
    for name, _ in cases:
        rate = len(texts) / secs[name]
        print(f"| {name} | {rate:,.0f} | {base / secs[name]:.1f}x |")
    print(
        f"\nSentimentSeries (lexicon, ewm): {len(items)} items over {n_bars} bars in "
        f"{series_secs * 1e3:.1f} ms = {series_secs / n_bars * 1e6:.1f} us/bar incl. scoring"
    )


if __name__ == "__main__":
    main()
