"""In-process publish/subscribe for live updates (dashboard SSE, Telegram pushes).

Publishers may be any thread; each subscriber gets its own bounded asyncio queue on its own loop.
A slow subscriber loses its oldest updates rather than blocking the publisher (a dashboard is a
view, the logs stay the record).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Update:
    kind: str  # alert | fill | equity | run | approval | kill
    data: dict[str, Any]


class EventBus:
    def __init__(self, maxsize: int = 1000) -> None:
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Update]]] = []
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self.published = 0

    def subscribe(self) -> asyncio.Queue[Update]:
        """Call from the subscriber's running loop."""
        q: asyncio.Queue[Update] = asyncio.Queue(self._maxsize)
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue[Update]) -> None:
        with self._lock:
            self._subs = [(lp, s) for lp, s in self._subs if s is not q]

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        update = Update(kind, data)
        with self._lock:
            subs = list(self._subs)
            self.published += 1
        for loop, q in subs:
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(_put_dropping_oldest, q, update)


def _put_dropping_oldest(q: asyncio.Queue[Update], update: Update) -> None:
    if q.full():
        q.get_nowait()
    q.put_nowait(update)
