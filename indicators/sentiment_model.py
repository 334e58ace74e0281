"""The local-model sentiment scorer: a ``transformers`` text-classification pipeline on the CPU.

Run time never talks to a hub: the model is a directory on this machine (``config.json``,
weights, tokenizer files) loaded with ``local_files_only=True``. ``transformers`` and ``torch``
are imported lazily inside :class:`SentimentModel` (import-linter forbids ``indicators`` from
importing ``transformers`` statically), so importing this module costs nothing.

Score of one text = ``sum(label_map[label] * p(label))`` over the softmax probabilities of all
labels, clipped to [-1, 1]; with the default map that is ``p(positive) - p(negative)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Final

from indicators.sentiment_cache import ScoreCache, cache_key
from indicators.sentiment_errors import SentimentConfigError, SentimentModelError

__all__ = [
    "KNOWN_LABELS",
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "SentimentModel",
    "directory_digest",
    "resolve_label_map",
]

KNOWN_LABELS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "positive": 1.0,
        "pos": 1.0,
        "bullish": 1.0,
        "negative": -1.0,
        "neg": -1.0,
        "bearish": -1.0,
        "neutral": 0.0,
        "neu": 0.0,
    }
)
"""Label names (case-insensitive) whose meaning is unambiguous; anything else needs a label map."""

WEIGHT_FILES: Final[tuple[str, ...]] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""File names of which a model directory must contain at least one."""

TOKENIZER_FILES: Final[tuple[str, ...]] = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""Tokenizer vocabularies, one of which must be present: without one, recent ``transformers``
builds an empty-vocabulary tokenizer that maps every word to [UNK] without a word of warning."""

DEFAULT_MAX_LENGTH: Final = 512  # tokens; capped by the model's own limit when max_length is None
SCORING_RULE: Final = "softmax-label-weighted-sum/v1"  # part of the fingerprint: bump on change

_INSTALL_HINT: Final = "install the ML extra: pip install 'stratagem[ml]' (torch + transformers)"
_HASH_CHUNK: Final = 1 << 20


def _fix_hint(path: Path) -> str:
    return (
        f"copy a downloaded text-classification model (e.g. a FinBERT snapshot: config.json, "
        f"model.safetensors, tokenizer files) into {str(path)!r}, or set model_dir to such a "
        "directory; to run without a model set backend: lexicon explicitly"
    )


def check_model_dir(path: Path) -> None:
    """Raise :class:`SentimentModelError` naming ``path`` unless it looks like a saved model."""
    if not path.exists():
        raise SentimentModelError(
            f"sentiment model directory {str(path)!r} does not exist; {_fix_hint(path)}"
        )
    if not path.is_dir():
        raise SentimentModelError(
            f"sentiment model path {str(path)!r} is a file, not a directory; point model_dir at "
            "the directory that holds config.json and the weights"
        )
    if not (path / "config.json").is_file():
        raise SentimentModelError(
            f"sentiment model directory {str(path)!r} has no config.json; {_fix_hint(path)}"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise SentimentModelError(
            f"sentiment model directory {str(path)!r} has no weights (expected one of "
            f"{', '.join(WEIGHT_FILES)}); {_fix_hint(path)}"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise SentimentModelError(
            f"sentiment model directory {str(path)!r} has no tokenizer vocabulary (expected one "
            f"of {', '.join(TOKENIZER_FILES)}); copy the tokenizer files that came with the model "
            "(tokenizer.save_pretrained writes them)"
        )


def directory_digest(path: Path) -> str:
    """sha256 over the names and contents of the regular files directly inside ``path``.

    This is the model's revision: the same files give the same digest on any machine, whatever the
    directory is called, and any change to weights, config or tokenizer gives a new one.
    """
    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(file.name.encode("utf-8"))
        h.update(b"\x00")
        file_hash = hashlib.sha256()
        with file.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                file_hash.update(chunk)
        h.update(file_hash.digest())
    return h.hexdigest()


def resolve_label_map(
    model_labels: Sequence[str], label_map: Mapping[str, float] | None, where: str
) -> dict[str, float]:
    """Weight in [-1, 1] for every label the model emits; never guesses an unknown label.

    Without ``label_map`` every label must be one of :data:`KNOWN_LABELS` and the model must have
    both a positive and a negative label. With it, the map must name exactly the model's labels.
    """
    labels = list(model_labels)
    if len(labels) < 2:
        raise SentimentModelError(
            f"{where}: the model has {len(labels)} label(s) {labels}; a sentiment model needs at "
            "least two classes (e.g. negative/positive)"
        )
    if label_map is None:
        unknown = [lb for lb in labels if lb.lower() not in KNOWN_LABELS]
        if unknown:
            example = {lb: 0.0 for lb in labels}
            raise SentimentModelError(
                f"{where}: model labels {labels} include {unknown}, which have no known sentiment "
                f"meaning; set label_map explicitly from the model card, e.g. {example} with "
                "+1.0 for the positive class and -1.0 for the negative one"
            )
        resolved = {lb: KNOWN_LABELS[lb.lower()] for lb in labels}
        if not any(w > 0 for w in resolved.values()) or not any(w < 0 for w in resolved.values()):
            raise SentimentModelError(
                f"{where}: model labels {labels} lack a positive or a negative class; set "
                "label_map explicitly"
            )
        return resolved
    missing = [lb for lb in labels if lb not in label_map]
    extra = sorted(k for k in label_map if k not in labels)
    if missing or extra:
        raise SentimentConfigError(
            f"{where}: label_map must name exactly the model's labels {labels}; missing "
            f"{missing}, not in the model {extra} (labels are case-sensitive, as in config.json "
            "id2label)"
        )
    resolved = {}
    for lb in labels:
        w = label_map[lb]
        if isinstance(w, bool) or not isinstance(w, int | float) or not -1.0 <= float(w) <= 1.0:
            raise SentimentConfigError(
                f"{where}: label_map[{lb!r}] = {w!r} must be a number in [-1, 1]"
            )
        resolved[lb] = float(w)
    return resolved


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SentimentModelError(
            f"sentiment backend 'model' needs the {name!r} package, which is not installed "
            f"({exc}); {_INSTALL_HINT}, or set backend: lexicon explicitly"
        ) from exc


def _positive_int(name: str, value: object, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SentimentConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if upper is not None and value > upper:
        raise SentimentConfigError(f"{name} = {value} exceeds the model's limit of {upper}")
    return value


def _length_limit(config: Any, tokenizer: Any) -> int:
    """Longest input the model takes: position embeddings and the tokenizer's own limit.

    RoBERTa-style configs report 514 positions but take 512 tokens; the tokenizer knows that.
    A tokenizer saved without a limit reports a huge sentinel, which is ignored.
    """
    limits = [DEFAULT_MAX_LENGTH * 64]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    return min(limits)


class SentimentModel:
    """Scores texts in [-1, 1] with a local text-classification model, batched and cached.

    Deterministic: eval mode (no dropout), float32, torch deterministic algorithms and a fixed
    thread count (``num_threads``) while scoring, and a text is scored once per fingerprint (weights digest + label map + max length); later
    requests are served by the cache, optionally persisted in SQLite at ``cache_path``.
    """

    backend = "model"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        label_map: Mapping[str, float] | None = None,
        cache_size: int = 100_000,
        cache_path: str | Path | None = None,
        num_threads: int = 1,
        expected_revision: str | None = None,
    ) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)
        self.num_threads = _positive_int("num_threads", num_threads)
        if max_length is not None:
            _positive_int("max_length", max_length)
        self.model_dir = Path(model_dir).expanduser().absolute()
        check_model_dir(self.model_dir)
        where = f"sentiment model {str(self.model_dir)!r}"
        transformers = _import("transformers")
        self._torch = _import("torch")
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(self.model_dir), local_files_only=True
            )
        except Exception as exc:  # tokenizers raises bare Exception on a corrupt vocabulary
            raise SentimentModelError(
                f"{where}: cannot load the tokenizer ({type(exc).__name__}: {exc}); the directory "
                "needs the tokenizer files saved with the model (tokenizer.json or vocab.txt "
                "and tokenizer_config.json)"
            ) from exc
        specials = set(getattr(tokenizer, "all_special_ids", ()))
        if len(tokenizer) <= len(specials):
            raise SentimentModelError(
                f"{where}: the tokenizer has only its {len(specials)} special tokens and no words; "
                "its vocabulary file is empty or unreadable; copy the model's tokenizer files again"
            )
        try:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(self.model_dir), local_files_only=True, dtype=self._torch.float32
            )
        except Exception as exc:  # safetensors/torch raise a variety of types; all are wrapped
            raise SentimentModelError(
                f"{where}: cannot load a sequence-classification model ({type(exc).__name__}: "
                f"{exc}); the directory must hold a text-classification checkpoint"
            ) from exc
        model.eval()
        limit = _length_limit(model.config, tokenizer)
        self.max_length = _positive_int(
            "max_length",
            min(limit, DEFAULT_MAX_LENGTH) if max_length is None else max_length,
            limit,
        )
        id2label = model.config.id2label
        labels = [str(id2label[i]) for i in sorted(id2label)]
        self.label_map: Mapping[str, float] = MappingProxyType(
            resolve_label_map(labels, label_map, where)
        )
        self.revision = directory_digest(self.model_dir)
        if expected_revision is not None and expected_revision != self.revision:
            raise SentimentModelError(
                f"{where}: files have revision {self.revision}, but {expected_revision} is pinned "
                "(model_revision); copy the pinned model files there, or update the pin after "
                "checking the new model"
            )
        payload = {
            "revision": self.revision,
            "labels": sorted(self.label_map.items()),
            "max_length": self.max_length,
            "rule": SCORING_RULE,
        }
        self.fingerprint = hashlib.sha256(json.dumps(payload).encode()).hexdigest()
        self._pipeline: Any = transformers.pipeline(
            "text-classification", model=model, tokenizer=tokenizer, device="cpu"
        )
        self.cache = ScoreCache(cache_size, cache_path)
        self.model_calls = 0  # forward passes (batches) run
        self.texts_scored = 0  # texts that went through the model (cache misses)

    def info(self) -> dict[str, Any]:
        """What a strategy log or provenance record should say about the model in use."""
        return {
            "backend": self.backend,
            "model_dir": str(self.model_dir),
            "revision": self.revision,
            "fingerprint": self.fingerprint,
            "label_map": dict(self.label_map),
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "num_threads": self.num_threads,
            "cache_path": None if self.cache.path is None else str(self.cache.path),
        }

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [-1, 1] per text, in order; cached texts never reach the model."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise SentimentConfigError(
                    f"texts[{i}] is {type(t).__name__}, expected str; pass the item's text field"
                )
        keys = [cache_key(self.fingerprint, t) for t in texts]
        unique: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            unique.setdefault(key, text)
        found = self.cache.get_many(list(unique))
        todo = [(k, t) for k, t in unique.items() if k not in found]
        if todo:
            fresh = dict(
                zip((k for k, _ in todo), self._score_uncached([t for _, t in todo]), strict=True)
            )
            self.cache.put_many(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    def probabilities(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Raw label probabilities (no cache): for checking a label map against a model card."""
        return self._probabilities(list(texts))

    def _score_uncached(self, texts: list[str]) -> list[float]:
        scores = []
        for probs in self._probabilities(texts):
            s = math.fsum(self.label_map[lb] * p for lb, p in sorted(probs.items()))
            scores.append(min(1.0, max(-1.0, s)))
        self.texts_scored += len(texts)
        return scores

    def _probabilities(self, texts: list[str]) -> list[dict[str, float]]:
        """Batches of similar length (less padding), results in the caller's order.

        The batch a text lands in changes its float32 probabilities by a few ulps (GEMM shapes
        differ); the partition is a pure function of ``texts``, so equal calls give equal floats.
        """
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out: list[dict[str, float]] = [{} for _ in texts]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, probs in zip(idx, self._run([texts[i] for i in idx]), strict=True):
                out[i] = probs
        return out

    def _run(self, batch: list[str]) -> list[dict[str, float]]:
        """One forward pass over ``batch`` (at most ``batch_size`` texts)."""
        with self._deterministic():
            raw = self._pipeline(
                batch,
                batch_size=len(batch),
                top_k=None,
                function_to_apply="softmax",
                truncation=True,
                max_length=self.max_length,
            )
        self.model_calls += 1
        return [{str(d["label"]): float(d["score"]) for d in row} for row in raw]

    @contextlib.contextmanager
    def _deterministic(self) -> Iterator[None]:
        """Deterministic algorithms and ``num_threads`` intra-op threads while scoring only.

        Both are process-wide torch settings, so the caller's values are restored afterwards.
        One thread (the default) makes a text's float independent of the machine's core count and
        avoids OpenMP spin-waits on a busy small machine, where it is also the fastest.
        """
        torch = self._torch
        previous = bool(torch.are_deterministic_algorithms_enabled())
        warn_only = bool(torch.is_deterministic_algorithms_warn_only_enabled())
        threads = int(torch.get_num_threads())
        torch.use_deterministic_algorithms(True)
        if threads != self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            if threads != self.num_threads:
                torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(previous, warn_only=warn_only)

    def close(self) -> None:
        """Close the on-disk cache, if any."""
        self.cache.close()
