"""Unstructured sources -> :class:`~feeds.schema.UnstructuredItem`: RSS/Atom, JSONL posts, webhooks.

All three end in the same envelope (``source``, ``ts_ns`` UTC, ``text``, ``url``, ``symbols``,
``metadata``) that the sentiment node consumes. Parsing is strict: an item without a usable
time or text is an :class:`~feeds.errors.UnstructuredError` naming the file, the line (JSONL)
or the item number and title (feeds), never skipped silently.

* **RSS 2.0 / Atom 1.0** (:func:`parse_feed`, :func:`read_feed`): stdlib ``xml.etree``; documents
  with a DOCTYPE are refused (no entity expansion). RSS ``pubDate`` is RFC 822, Atom
  ``published``/``updated`` ISO 8601; a time without a zone is UTC. ``text`` is the title and the
  description/summary with HTML tags stripped.
* **JSONL posts** (:func:`read_jsonl`, :func:`append_jsonl`): one JSON object per line with
  ``text`` and exactly one of ``ts_ns`` (int ns) or ``ts`` (ISO 8601 string, or int ns);
  optional ``url``, ``symbols`` (list of strings), ``metadata`` (object of scalars), ``source``.
  Unknown fields are errors. :func:`append_jsonl` writes the canonical form, which reads back equal.
* **Webhook sink** (:class:`WebhookSink`): ``POST /webhook`` with one item or a list of items
  (same fields as JSONL); the shared secret comes in the ``X-Webhook-Secret`` header or a
  ``secret`` field of the body (TradingView alerts cannot set headers). A request is accepted
  or refused as a whole, and accepted items are appended (and fsynced) to a JSONL file.
"""

from __future__ import annotations

import email.utils
import hmac
import html
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from xml.etree import ElementTree as ET

import msgspec

from feeds.errors import UnstructuredError, WebhookAuthError, WebhookError
from feeds.http_server import BackgroundHTTPServer
from feeds.schema import UnstructuredItem

__all__ = [
    "WebhookSink",
    "append_jsonl",
    "item_from_mapping",
    "match_symbols",
    "parse_feed",
    "parse_timestamp",
    "read_feed",
    "read_jsonl",
]

_LOG = logging.getLogger("feeds.webhook")
_ATOM: Final = "{http://www.w3.org/2005/Atom}"
_TAG_RE: Final = re.compile(r"<[^>]+>")
_ITEM_FIELDS: Final = frozenset({"source", "ts", "ts_ns", "text", "url", "symbols", "metadata"})
_MIN_NS: Final = 10**17  # 1973-03-03 in ns: smaller integers are seconds or ms, not ns


def _utc_ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def parse_timestamp(value: object, what: str) -> int:
    """ns UTC from an int (must already be ns) or an ISO-8601 string (no zone = UTC)."""
    if isinstance(value, bool):
        raise UnstructuredError(f"{what}: timestamp must be an ISO string or int ns, got {value!r}")
    if isinstance(value, int):
        if abs(value) < _MIN_NS:
            raise UnstructuredError(
                f"{what}: integer timestamp {value} is not in nanoseconds",
                hint="integer times are ns since 1970 UTC; multiply seconds by 1e9 (ms by 1e6) "
                "or send an ISO string like 2024-01-01T12:00:00Z",
            )
        return value
    if isinstance(value, str):
        try:
            return _utc_ns(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise UnstructuredError(
        f"{what}: cannot read timestamp {value!r}",
        hint="use ISO 8601 such as 2024-01-01T12:00:00Z (no zone means UTC) or int ns",
    )


def match_symbols(text: str, symbols: Sequence[str]) -> tuple[str, ...]:
    """The given symbols (e.g. ``BTC``, ``ETH``) mentioned as whole words in ``text``, in the
    order given; a case-sensitive match, because tickers are upper case and words are not."""
    return tuple(
        s for s in symbols if re.search(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", text)
    )


def _plain(text: str | None) -> str:
    return " ".join(html.unescape(_TAG_RE.sub(" ", text or "")).split())


def _child_text(elem: ET.Element, *names: str) -> str | None:
    for name in names:
        child = elem.find(name)
        if child is not None and (child.text or "").strip():
            return (child.text or "").strip()
    return None


def parse_feed(
    data: bytes | str,
    *,
    source: str,
    origin: str = "<feed>",
    symbols: Sequence[str] = (),
) -> list[UnstructuredItem]:
    """Items of an RSS 2.0 or Atom 1.0 document, in document order.

    ``source`` labels the items (e.g. ``rss:coindesk``); ``origin`` (file or URL) labels errors;
    ``symbols`` are tagged on items that mention them (:func:`match_symbols`).
    """
    raw = data.encode() if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw[:4096].upper() or b"<!ENTITY" in raw.upper():
        raise UnstructuredError(
            "feeds with a DOCTYPE or entities are refused",
            path=origin,
            hint="RSS and Atom need neither; check that the URL serves a feed",
        )
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise UnstructuredError(
            f"not well-formed XML: {exc}",
            path=origin,
            hint="check that the file or URL is an RSS or Atom feed",
        ) from exc
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise UnstructuredError("RSS document without <channel>", path=origin)
        feed_title = _child_text(channel, "title") or ""
        out = []
        for i, item in enumerate(channel.findall("item")):
            title = _child_text(item, "title") or ""
            where = f"item {i} ({title[:60]!r})"
            when = _child_text(item, "pubDate", "{http://purl.org/dc/elements/1.1/}date")
            if when is None:
                raise UnstructuredError(
                    f"{where}: no <pubDate>",
                    path=origin,
                    hint="every item needs a publication time",
                )
            try:
                ts_ns = _utc_ns(email.utils.parsedate_to_datetime(when))
            except (TypeError, ValueError):
                ts_ns = parse_timestamp(when, where)  # dc:date is ISO 8601
            text = "\n\n".join(
                t for t in (_plain(title), _plain(_child_text(item, "description"))) if t
            )
            out.append(
                _item(
                    source,
                    ts_ns,
                    text,
                    _child_text(item, "link"),
                    symbols,
                    where,
                    origin,
                    {"title": title, "guid": _child_text(item, "guid"), "feed": feed_title},
                )
            )
        return out
    if root.tag == f"{_ATOM}feed":
        feed_title = _child_text(root, f"{_ATOM}title") or ""
        out = []
        for i, entry in enumerate(root.findall(f"{_ATOM}entry")):
            title = _child_text(entry, f"{_ATOM}title") or ""
            where = f"entry {i} ({title[:60]!r})"
            when = _child_text(entry, f"{_ATOM}published", f"{_ATOM}updated")
            if when is None:
                raise UnstructuredError(
                    f"{where}: no <published> or <updated>",
                    path=origin,
                    hint="every entry needs a time",
                )
            ts_ns = parse_timestamp(when, where)
            link = None
            for candidate in entry.findall(f"{_ATOM}link"):
                if candidate.get("rel", "alternate") == "alternate":
                    link = candidate.get("href")
                    break
            body = _child_text(entry, f"{_ATOM}summary", f"{_ATOM}content")
            text = "\n\n".join(t for t in (_plain(title), _plain(body)) if t)
            out.append(
                _item(
                    source,
                    ts_ns,
                    text,
                    link,
                    symbols,
                    where,
                    origin,
                    {"title": title, "guid": _child_text(entry, f"{_ATOM}id"), "feed": feed_title},
                )
            )
        return out
    raise UnstructuredError(
        f"unknown feed format <{root.tag}>",
        path=origin,
        hint="only RSS 2.0 (<rss>) and Atom 1.0 (<feed>) are read",
    )


def _item(
    source: str,
    ts_ns: int,
    text: str,
    url: str | None,
    symbols: Sequence[str],
    where: str,
    origin: str,
    metadata: Mapping[str, str | None],
) -> UnstructuredItem:
    if not text:
        raise UnstructuredError(f"{where}: no title or text", path=origin)
    return UnstructuredItem(
        source=source,
        ts_ns=ts_ns,
        text=text,
        url=url,
        symbols=match_symbols(text, symbols),
        metadata={k: v for k, v in metadata.items() if v},
    )


def read_feed(
    location: str | os.PathLike[str],
    *,
    source: str | None = None,
    symbols: Sequence[str] = (),
    timeout_s: float = 10.0,
    max_bytes: int = 10_000_000,
) -> list[UnstructuredItem]:
    """Read an RSS/Atom feed from a file or an ``http(s)://`` URL (``source`` defaults to
    ``rss:<file name or host>``)."""
    loc = os.fspath(location)
    if loc.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(loc, timeout=timeout_s) as resp:
                data = resp.read(max_bytes + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise UnstructuredError(
                f"cannot fetch feed: {exc}", path=loc, hint="check the URL and the network"
            ) from exc
        label = source or f"rss:{urllib.parse.urlsplit(loc).hostname}"
    else:
        try:
            data = Path(loc).read_bytes()
        except OSError as exc:
            raise UnstructuredError(f"cannot read feed file: {exc.strerror}", path=loc) from exc
        label = source or f"rss:{Path(loc).name}"
    if len(data) > max_bytes:
        raise UnstructuredError(
            f"feed larger than {max_bytes} bytes",
            path=loc,
            hint="raise max_bytes if this feed really is that large",
        )
    return parse_feed(data, source=label, origin=loc, symbols=symbols)


def item_from_mapping(obj: object, *, default_source: str, where: str) -> UnstructuredItem:
    """One JSON object (JSONL line, webhook item) -> item; errors name ``where`` and the field."""
    if not isinstance(obj, dict):
        raise UnstructuredError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _ITEM_FIELDS)
    if unknown:
        raise UnstructuredError(
            f"{where}: unknown field {unknown[0]!r}",
            hint=f"allowed fields are {', '.join(sorted(_ITEM_FIELDS))}; put extras in metadata",
        )
    if ("ts" in obj) == ("ts_ns" in obj):
        raise UnstructuredError(
            f"{where}: needs exactly one of 'ts' and 'ts_ns'",
            hint='e.g. "ts": "2024-01-01T12:00:00Z"',
        )
    if "ts_ns" in obj and not (
        isinstance(obj["ts_ns"], int) and not isinstance(obj["ts_ns"], bool)
    ):
        raise UnstructuredError(f"{where}: 'ts_ns' must be an integer (ns since 1970 UTC)")
    ts_ns = parse_timestamp(obj["ts_ns"] if "ts_ns" in obj else obj["ts"], where)
    fields = {k: v for k, v in obj.items() if k not in ("ts", "ts_ns")}
    fields.setdefault("source", default_source)
    if isinstance(fields.get("symbols"), list):
        fields["symbols"] = tuple(fields["symbols"])
    try:
        item = msgspec.convert({**fields, "ts_ns": ts_ns}, UnstructuredItem)
    except msgspec.ValidationError as exc:
        raise UnstructuredError(
            f"{where}: {exc}", hint="see feeds.schema.UnstructuredItem"
        ) from exc
    if not item.text.strip():
        raise UnstructuredError(f"{where}: 'text' is empty")
    return item


def read_jsonl(
    path: str | os.PathLike[str], *, source: str | None = None
) -> list[UnstructuredItem]:
    """Items of a JSONL posts file (blank lines skipped); errors name the 1-based line."""
    p = Path(path)
    label = source or f"jsonl:{p.name}"
    try:
        # JSONL lines end at "\n" only: str.splitlines() would also split inside strings at
        # U+0085, U+2028 and friends, which JSON leaves unescaped.
        lines = p.read_bytes().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnstructuredError(
            f"cannot read posts file: {exc}", path=p, hint="posts files are UTF-8 JSON lines"
        ) from exc
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnstructuredError(
                f"line {n}: invalid JSON: {exc.msg} at column {exc.colno}",
                path=p,
                hint="one JSON object per line",
            ) from exc
        try:
            items.append(item_from_mapping(obj, default_source=label, where=f"line {n}"))
        except UnstructuredError as exc:
            raise UnstructuredError(exc.message, path=p, hint=exc.hint) from exc
    return items


def append_jsonl(items: Iterable[UnstructuredItem], path: str | os.PathLike[str]) -> int:
    """Append items in canonical form (one JSON object per line), flushed and fsynced."""
    encoded = [msgspec.json.encode(item) + b"\n" for item in items]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "ab") as fh:
        fh.write(b"".join(encoded))
        fh.flush()
        os.fsync(fh.fileno())
    return len(encoded)


class WebhookSink:
    """A tiny HTTP endpoint that appends authenticated JSON items to a JSONL file.

    ``POST /webhook`` -> 200 ``{"accepted": n}``; 401 wrong/missing secret; 413 body over
    ``max_body`` bytes; 400 malformed JSON or item (the message names the item and field);
    404/405 elsewhere. Refusals are logged (``feeds.webhook``) without the secret.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        source: str = "webhook",
        max_body: int = 65_536,
    ) -> None:
        if len(secret) < 16:
            raise WebhookError(
                "the webhook secret must be at least 16 characters",
                hint="generate one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'",
            )
        self.path = Path(path)
        self._secret = secret.encode()
        self.source = source
        self.max_body = max_body
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._http = BackgroundHTTPServer(host, port, self._handler())

    @property
    def url(self) -> str:
        """``http://host:port/webhook``."""
        return self._http.base_url + "/webhook"

    def start(self) -> WebhookSink:
        """Serve in a background thread."""
        self._http.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (the CLI); stop with Ctrl-C."""
        self._http.server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.stop()

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def handle(self, body: bytes, header_secret: str | None) -> list[UnstructuredItem]:
        """Authenticate and parse one request body (all items or none); raises WebhookError."""
        if len(body) > self.max_body:
            raise WebhookError(f"body of {len(body)} bytes is over the {self.max_body} byte limit")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WebhookError(f"body is not JSON: {exc}") from exc
        secret = header_secret
        if isinstance(payload, dict) and "secret" in payload:
            secret = str(payload.pop("secret"))
        if secret is None or not hmac.compare_digest(secret.encode(), self._secret):
            raise WebhookAuthError("wrong or missing secret")
        raw_items = payload if isinstance(payload, list) else [payload]
        if not raw_items:
            raise WebhookError("no items in the body")
        return [
            item_from_mapping(obj, default_source=self.source, where=f"item {i}")
            for i, obj in enumerate(raw_items)
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # refusals are logged below, without bodies or secrets

            def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(405, {"error": "use POST"})

            def do_POST(self) -> None:
                if self.path.split("?")[0] != "/webhook":
                    self._reply(404, {"error": "unknown path; POST to /webhook"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > sink.max_body:
                    self.close_connection = True
                    self._refuse(
                        413, f"body of {length} bytes is over the {sink.max_body} byte limit"
                    )
                    return
                body = self.rfile.read(length)
                try:
                    items = sink.handle(body, self.headers.get("X-Webhook-Secret"))
                except UnstructuredError as exc:
                    self._refuse(401 if isinstance(exc, WebhookAuthError) else 400, str(exc))
                    return
                with sink._lock:
                    append_jsonl(items, sink.path)
                    sink.accepted += len(items)
                self._reply(200, {"accepted": len(items)})

            def _refuse(self, status: int, message: str) -> None:
                with sink._lock:
                    sink.rejected += 1
                _LOG.warning(
                    "webhook refused (%d) from %s: %s", status, self.client_address[0], message
                )
                self._reply(status, {"error": message})

        return Handler
