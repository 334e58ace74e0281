"""Score cache of the sentiment node: a bounded in-memory LRU in front of an optional SQLite file.

Keys are ``sha256(scorer fingerprint + NUL + text)``, so one file can serve several models and a
changed model (new weights, label map or max length) never reads an old model's scores. Scores are
stored as IEEE doubles (SQLite REAL), so a cached score is bit-identical to the one computed:
a replay that reads the cache reproduces the live run's floats exactly.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from indicators.sentiment_errors import SentimentCacheError

__all__ = ["CacheStats", "ScoreCache", "cache_key"]

_SQLITE_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's default variable limit


def cache_key(fingerprint: str, text: str) -> str:
    """The cache key of ``text`` under the scorer identified by ``fingerprint`` (hex sha256)."""
    h = hashlib.sha256()
    h.update(fingerprint.encode("ascii"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", errors="surrogatepass"))
    return h.hexdigest()


@dataclass
class CacheStats:
    """Counters that make the cache observable (tests, benchmarks, the dashboard)."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    evictions: int = 0


class ScoreCache:
    """Bounded LRU (``max_entries``; 0 disables it) plus an optional SQLite file at ``path``.

    Lookups try memory, then disk (promoting disk hits into memory); ``put_many`` writes both.
    """

    def __init__(self, max_entries: int = 100_000, path: str | Path | None = None) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise SentimentCacheError(
                f"cache_size must be an integer >= 0, got {max_entries!r}; "
                "use 0 to disable the in-memory cache"
            )
        self.max_entries = max_entries
        self.path = None if path is None else Path(path)
        self.stats = CacheStats()
        self._memory: OrderedDict[str, float] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = self._open(self.path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        if not path.parent.is_dir():
            raise SentimentCacheError(
                f"sentiment cache file {str(path)!r}: directory {str(path.parent)!r} does not "
                "exist; create it or point cache_path somewhere writable"
            )
        try:
            db = sqlite3.connect(str(path))
            db.execute(
                "CREATE TABLE IF NOT EXISTS sentiment_scores "
                "(key TEXT PRIMARY KEY NOT NULL, score REAL NOT NULL) WITHOUT ROWID"
            )
            db.commit()
        except sqlite3.Error as exc:
            raise SentimentCacheError(
                f"sentiment cache file {str(path)!r} cannot be used as an SQLite database ({exc}); "
                "delete it or choose another cache_path"
            ) from exc
        return db

    def __len__(self) -> int:
        """Entries held in memory (the disk file may hold more)."""
        return len(self._memory)

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        """Cached scores for those ``keys`` that have one; updates hit/miss counters."""
        found: dict[str, float] = {}
        missing: list[str] = []
        for key in keys:
            value = self._memory.get(key)
            if value is None:
                missing.append(key)
            else:
                self._memory.move_to_end(key)
                found[key] = value
                self.stats.memory_hits += 1
        if missing and self._db is not None:
            from_disk = self._read_disk(missing)
            self.stats.disk_hits += len(from_disk)
            self._remember(from_disk.items())
            found.update(from_disk)
        self.stats.misses += sum(1 for k in missing if k not in found)
        return found

    def put_many(self, scores: Mapping[str, float]) -> None:
        """Store freshly computed scores in memory and, if configured, on disk (one transaction)."""
        self._remember(scores.items())
        if self._db is not None and scores:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO sentiment_scores (key, score) VALUES (?, ?)",
                        sorted(scores.items()),
                    )
            except sqlite3.Error as exc:
                raise SentimentCacheError(
                    f"cannot write to sentiment cache file {str(self.path)!r} ({exc}); "
                    "check the disk and file permissions"
                ) from exc

    def _remember(self, items: Iterable[tuple[str, float]]) -> None:
        if self.max_entries == 0:
            return
        for key, value in items:
            self._memory[key] = value
            self._memory.move_to_end(key)
            if len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)
                self.stats.evictions += 1

    def _read_disk(self, keys: Sequence[str]) -> dict[str, float]:
        assert self._db is not None
        out: dict[str, float] = {}
        try:
            for start in range(0, len(keys), _SQLITE_CHUNK):
                chunk = list(keys[start : start + _SQLITE_CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, score FROM sentiment_scores WHERE key IN ({marks})", chunk
                )
                out.update((str(k), float(v)) for k, v in rows)
        except sqlite3.Error as exc:
            raise SentimentCacheError(
                f"cannot read sentiment cache file {str(self.path)!r} ({exc}); "
                "delete it to rebuild the cache"
            ) from exc
        return out

    def close(self) -> None:
        """Close the SQLite file (the in-memory part stays usable)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
