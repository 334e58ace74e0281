"""The local-model sentiment scorer, on tiny BERT models built in tmp dirs (no hub, no download).

Warnings: pytest runs with -W error and this file needs no filter: building, saving, loading and
running the tiny models emits no warning on the installed transformers/torch (progress bars go
to stderr and are not warnings). If an upgrade adds one, filter that exact message here with a
reason, never a blanket ignore. The import-hygiene test runs in a subprocess, so it sees a
fresh interpreter whatever the fixtures have imported.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from feeds.schema import UnstructuredItem
from indicators.errors import IndicatorError
from indicators.sentiment import (
    LexiconScorer,
    SentimentConfigError,
    SentimentModel,
    SentimentModelError,
    SentimentSeries,
    align_sentiment,
    make_scorer,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = [
    *("the", "a", "market", "stock", "price", "bitcoin", "btc", "eth", "rally", "crash", "gain"),
    *("loss", "bullish", "bearish", "strong", "weak", "up", "down", "good", "bad", "beats"),
    *("misses", "record", "profit", "fraud", "lawsuit", "growth", "surge", "plunge", "upgrade"),
    *("downgrade", "hack", "approval", "etf", "inflows", "outflows", "fear", "greed"),
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = [
    "bitcoin rally record profit",
    "crash fraud lawsuit loss bad",
    "the market",
    "eth etf approval inflows strong growth beats",
    "weak down misses",
    "fear",
    "",
    "stock price upgrade surge up up up good",
    "btc hack plunge outflows bearish",
    "greed",
]


def _build_model(
    path: Path,
    *,
    id2label: dict[int, str],
    seed: int,
    initializer_range: float = 0.3,
    bias: list[float] | None = None,
) -> Path:
    """A 2-layer BERT (hidden 32) with seeded random weights, saved with its tokenizer."""
    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(vocab=str(vocab))  # v5 name; v4 took vocab_file
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=initializer_range,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config)
    if bias is not None:  # constant logits: probabilities independent of the text
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once per module: FinBERT-ordered 3-label model, a generic 2-label one, a biased one."""
    root = tmp_path_factory.mktemp("sentiment_models")
    return {
        "finbert_like": _build_model(
            root / "finbert_like", id2label={0: "positive", 1: "negative", 2: "neutral"}, seed=7
        ),
        "generic2": _build_model(root / "generic2", id2label={0: "LABEL_0", 1: "LABEL_1"}, seed=8),
        "biased2": _build_model(
            root / "biased2",
            id2label={0: "LABEL_0", 1: "LABEL_1"},
            seed=9,
            bias=[0.5, -1.0],
        ),
    }


@pytest.fixture(scope="module")
def model(models: dict[str, Path]) -> Iterator[SentimentModel]:
    m = SentimentModel(models["finbert_like"], batch_size=4, max_length=32, cache_size=0)
    yield m
    m.close()


# ----------------------------------------------------------------------------- scores


def test_scores_are_signed_and_depend_on_the_text(model: SentimentModel) -> None:
    scores = model.score(TEXTS)
    assert len(scores) == len(TEXTS)
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > len(TEXTS) // 2  # a random-weight model still separates texts


def test_two_loads_give_identical_floats(models: dict[str, Path], model: SentimentModel) -> None:
    again = SentimentModel(models["finbert_like"], batch_size=4, max_length=32, cache_size=0)
    assert again.fingerprint == model.fingerprint
    assert again.revision == model.revision
    assert again.score(TEXTS) == model.score(TEXTS)  # bit for bit


def test_batched_equals_one_by_one(models: dict[str, Path], model: SentimentModel) -> None:
    single = SentimentModel(models["finbert_like"], batch_size=1, max_length=32, cache_size=0)
    batched = model.score(TEXTS)
    one_by_one = single.score(TEXTS)
    # padding changes the matmul shapes; scores agree far below any trading threshold
    assert one_by_one == pytest.approx(batched, abs=1e-6)
    assert single.model_calls == len(TEXTS)


def test_batches_are_bounded_by_batch_size(models: dict[str, Path]) -> None:
    m = SentimentModel(models["finbert_like"], batch_size=3, max_length=32, cache_size=0)
    m.score(TEXTS)
    assert m.model_calls == math.ceil(len(TEXTS) / 3)
    assert m.texts_scored == len(TEXTS)


def test_label_mapping_is_positive_minus_negative(model: SentimentModel) -> None:
    probs = model.probabilities(TEXTS)
    assert model.label_map == {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
    for p, s in zip(probs, model.score(TEXTS), strict=True):
        assert set(p) == {"positive", "negative", "neutral"}
        assert math.fsum(p.values()) == pytest.approx(1.0, abs=1e-6)
        assert s == pytest.approx(p["positive"] - p["negative"], abs=1e-12)


def test_explicit_label_map_on_constant_logits(models: dict[str, Path]) -> None:
    m = SentimentModel(models["biased2"], label_map={"LABEL_0": -1.0, "LABEL_1": 1.0})
    e0, e1 = math.exp(0.5), math.exp(-1.0)
    expected = (e1 - e0) / (e0 + e1)  # p(LABEL_1) - p(LABEL_0) from the fixed biases
    assert m.score(["bitcoin rally", "crash"]) == pytest.approx([expected, expected], abs=1e-6)
    half = SentimentModel(models["biased2"], label_map={"LABEL_0": -0.5, "LABEL_1": 0.0})
    assert half.score(["x"])[0] == pytest.approx(-0.5 * e0 / (e0 + e1), abs=1e-6)
    assert half.fingerprint != m.fingerprint  # another map: another cache namespace


def test_generic_labels_need_an_explicit_map(models: dict[str, Path]) -> None:
    with pytest.raises(SentimentModelError, match=r"LABEL_0.*label_map"):
        SentimentModel(models["generic2"])


@pytest.mark.parametrize(
    ("label_map", "message"),
    [
        ({"LABEL_0": -1.0}, r"missing \['LABEL_1'\]"),
        ({"LABEL_0": -1.0, "LABEL_1": 1.0, "neutral": 0.0}, r"not in the model \['neutral'\]"),
        ({"LABEL_0": -1.0, "LABEL_1": 2.0}, r"label_map\['LABEL_1'\] = 2.0 .*\[-1, 1\]"),
        ({"label_0": -1.0, "LABEL_1": 1.0}, "case-sensitive"),
    ],
)
def test_bad_label_maps_are_rejected(
    models: dict[str, Path], label_map: dict[str, float], message: str
) -> None:
    with pytest.raises(SentimentConfigError, match=message):
        SentimentModel(models["generic2"], label_map=label_map)


def test_truncation_to_max_length(models: dict[str, Path]) -> None:
    m = SentimentModel(models["finbert_like"], max_length=8, cache_size=0)
    head = "bitcoin rally record profit strong growth"  # 6 tokens + [CLS] + [SEP] = 8
    long_a = head + " crash" * 200
    long_b = head + " surge" * 200
    a, b, h = m.score([long_a, long_b, head])
    assert a == b == pytest.approx(h, abs=1e-6)  # everything past max_length is cut
    with pytest.raises(SentimentConfigError, match="exceeds the model's limit of 64"):
        SentimentModel(models["finbert_like"], max_length=65)


# ----------------------------------------------------------------------------- cache


def test_cache_serves_repeated_texts(models: dict[str, Path]) -> None:
    m = SentimentModel(models["finbert_like"], batch_size=4, max_length=32)
    first = m.score(TEXTS + TEXTS[:3])  # duplicates inside one call are scored once
    assert m.texts_scored == len(TEXTS)
    calls = m.model_calls
    assert m.score(list(reversed(TEXTS))) == list(reversed(first[: len(TEXTS)]))
    assert m.model_calls == calls  # no model call on a full hit
    assert m.cache.stats.memory_hits >= len(TEXTS)
    m.score(["a brand new headline"])
    assert m.texts_scored == len(TEXTS) + 1


def test_lru_bound_evicts_oldest(models: dict[str, Path]) -> None:
    m = SentimentModel(models["finbert_like"], max_length=32, cache_size=2)
    m.score(["up", "down", "fear"])
    assert len(m.cache) == 2 and m.cache.stats.evictions == 1
    m.score(["fear"])  # still cached
    assert m.texts_scored == 3
    m.score(["up"])  # evicted first: scored again
    assert m.texts_scored == 4


def test_sqlite_cache_survives_a_restart(models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "scores.sqlite"
    m1 = SentimentModel(models["finbert_like"], max_length=32, cache_path=db)
    scores = m1.score(TEXTS)
    m1.close()
    # another batch size would round a few ulps differently; the cache replays the first floats
    m2 = SentimentModel(models["finbert_like"], max_length=32, cache_path=db, batch_size=1)
    assert m2.score(TEXTS) == scores  # bit-identical floats from disk
    assert m2.texts_scored == 0 and m2.model_calls == 0
    assert m2.cache.stats.disk_hits == len(set(TEXTS))
    m2.close()
    # another max_length is another fingerprint: the shared file does not serve its texts
    m3 = SentimentModel(models["finbert_like"], max_length=16, cache_path=db)
    m3.score(TEXTS[:2])
    assert m3.texts_scored == 2
    m3.close()


def test_changed_weights_change_the_fingerprint(models: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(models["finbert_like"], copy)
    same = SentimentModel(copy, max_length=32)
    base = SentimentModel(models["finbert_like"], max_length=32)
    assert same.fingerprint == base.fingerprint  # the directory name does not matter
    cfg = json.loads((copy / "config.json").read_text())
    cfg["id2label"] = {"0": "negative", "1": "positive", "2": "neutral"}
    cfg["label2id"] = {"negative": 0, "positive": 1, "neutral": 2}
    (copy / "config.json").write_text(json.dumps(cfg))
    swapped = SentimentModel(copy, max_length=32)
    assert swapped.fingerprint != base.fingerprint
    assert swapped.score(TEXTS[:3]) == pytest.approx([-s for s in base.score(TEXTS[:3])], abs=1e-12)


def test_revision_pin(models: dict[str, Path], model: SentimentModel) -> None:
    pinned = SentimentModel(models["finbert_like"], expected_revision=model.revision)
    assert pinned.info()["revision"] == model.revision
    assert pinned.info()["label_map"] == {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
    with pytest.raises(SentimentModelError, match=r"but 0+ is pinned \(model_revision\)"):
        SentimentModel(models["finbert_like"], expected_revision="0" * 64)


def test_torch_settings_are_scoped_to_scoring(models: dict[str, Path]) -> None:
    m = SentimentModel(models["finbert_like"], num_threads=2, cache_size=0)
    seen: list[tuple[bool, int]] = []
    real_run = m._pipeline

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))
        return real_run(*args, **kwargs)

    m._pipeline = spy
    threads = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    m.score(["restored after"])
    assert seen == [(True, 2)]  # inside the forward pass
    assert not torch.are_deterministic_algorithms_enabled()  # and restored after
    assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- bad input


def test_missing_directory_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "finbert"
    with pytest.raises(SentimentModelError) as err:
        SentimentModel(missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg and "backend: lexicon" in msg
    assert isinstance(err.value, IndicatorError)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(SentimentModelError, match="is a file, not a directory"):
        SentimentModel(f)


def test_directory_without_config_or_weights(models: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SentimentModelError, match=r"has no config\.json"):
        SentimentModel(empty)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(models["finbert_like"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(SentimentModelError, match=r"has no weights .*model\.safetensors"):
        SentimentModel(no_weights)


def test_directory_without_tokenizer(models: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "no_tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(models["finbert_like"] / name, broken / name)
    with pytest.raises(SentimentModelError, match="has no tokenizer vocabulary"):
        SentimentModel(broken)
    (broken / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(SentimentModelError, match="only its 5 special tokens"):
        SentimentModel(broken)
    (broken / "vocab.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SentimentModelError, match="tokenizer"):
        SentimentModel(broken)


def test_corrupt_weights(models: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "corrupt"
    shutil.copytree(models["finbert_like"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SentimentModelError, match="cannot load a sequence-classification model"):
        SentimentModel(broken)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"max_length": -1}, "max_length must be an integer >= 1"),
        ({"cache_size": -5}, "cache_size must be an integer >= 0"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1"),
    ],
)
def test_bad_parameters(models: dict[str, Path], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(IndicatorError, match=message):
        SentimentModel(models["finbert_like"], **kwargs)


def test_non_string_text(model: SentimentModel) -> None:
    with pytest.raises(SentimentConfigError, match=r"texts\[1\] is int"):
        model.score(["ok", 3])  # type: ignore[list-item]


def test_missing_library_is_a_clear_error(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> ModuleType:
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(SentimentModelError, match=r"pip install 'stratagem\[ml\]'"):
        SentimentModel(models["finbert_like"])


# ----------------------------------------------------------------------------- backends


def test_make_scorer_never_falls_back(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(SentimentModelError, match="does not exist"):
        make_scorer("model", model_dir=tmp_path / "nope")
    with pytest.raises(SentimentConfigError, match="needs model_dir"):
        make_scorer("model")
    with pytest.raises(SentimentConfigError, match="unknown sentiment backend 'vader'"):
        make_scorer("vader")
    with pytest.raises(SentimentConfigError, match="would ignore"):
        make_scorer("lexicon", model_dir=models["finbert_like"])
    with pytest.raises(SentimentConfigError, match="would ignore"):
        make_scorer("lexicon", expected_revision="abc")
    assert isinstance(make_scorer("lexicon"), LexiconScorer)
    assert isinstance(make_scorer("model", model_dir=models["finbert_like"]), SentimentModel)


def test_importing_the_node_loads_no_ml_library() -> None:
    code = (
        "import sys, indicators.sentiment, indicators.sentiment_model; "
        "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- end to end


def test_series_on_the_model(model: SentimentModel) -> None:
    hour = 3_600_000_000_000
    items = [
        UnstructuredItem(source="rss:x", ts_ns=i * hour + 1, text=t, symbols=("BTC/USDT",))
        for i, t in enumerate(TEXTS)
    ]
    closes = [(i + 1) * hour for i in range(len(TEXTS))]
    ffill = align_sentiment(model, items, closes, symbols=["BTC/USDT"], policy="ffill")
    assert ffill.tolist() == model.score(TEXTS)  # one item per bar: the bar's score
    series = SentimentSeries(model, policy="ewm", half_life_bars=2.0)
    series.add_items(items)
    values = [series.update(c) for c in closes]
    assert all(-1.0 <= v <= 1.0 for v in values)
