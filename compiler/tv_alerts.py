"""TradingView webhook alerts: check the shared secret, parse the body, make a news-style item.

TradingView cannot set request headers, so its alert message carries the secret in the JSON body
(`"secret"` or `"passphrase"`); callers that can (our own widget, a proxy) may send it in a
header instead. The secret is compared in constant time and never copied into the item, the
metadata or an error message. The HTTP endpoint itself lives in the front door; this is the
parser it calls.
"""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from typing import Any, Final

from compiler.errors import CompilerError
from feeds.schema import UnstructuredItem

MAX_ALERT_BYTES: Final = 64 * 1024
_SECRET_KEYS: Final = ("secret", "passphrase")


class AlertError(CompilerError):
    """A webhook alert that is refused: too large, unauthenticated or malformed."""


class AlertAuthError(AlertError):
    """Missing or wrong shared secret (the message never includes either secret)."""


def _time_ns(value: object) -> int | None:
    """TradingView's `{{time}}`/`{{timenow}}` (ISO 8601) or epoch seconds/ms."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
        return int(v * 1_000_000) if v > 1e11 else int(v * 1_000_000_000)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return None


def parse_alert(
    body: bytes | str,
    *,
    secret: str,
    received_ts_ns: int,
    header_secret: str | None = None,
) -> UnstructuredItem:
    """Authenticate and parse one alert into an `UnstructuredItem` (source `webhook:tradingview`)."""
    if not secret:
        raise AlertError("no webhook secret is configured: refusing every alert until one is set")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > MAX_ALERT_BYTES:
        raise AlertError(f"alert body is {len(raw)} bytes; the limit is {MAX_ALERT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AlertError(f"alert body is not UTF-8 (byte {exc.start})") from None
    data: dict[str, Any] | None = None
    if text.lstrip().startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AlertError(
                f"alert body looks like JSON but is not ({exc.msg} at line {exc.lineno} column "
                f"{exc.colno}); check the alert message template"
            ) from None
        data = loaded if isinstance(loaded, dict) else None
    given = header_secret
    if data is not None:
        for key in _SECRET_KEYS:
            if isinstance(data.get(key), str):
                given = given or data[key]
    if given is None or not hmac.compare_digest(given.encode(), secret.encode()):
        raise AlertAuthError(
            'alert refused: missing or wrong shared secret (put it in the alert JSON as "secret")'
        )
    if data is None:
        return UnstructuredItem(
            source="webhook:tradingview", ts_ns=received_ts_ns, text=text.strip()
        )
    fields = {k: v for k, v in data.items() if k not in _SECRET_KEYS}
    ticker = fields.get("ticker") or fields.get("symbol")
    ts = _time_ns(fields.get("timenow")) or _time_ns(fields.get("time")) or received_ts_ns
    message = fields.get("message") or fields.get("text")
    metadata = {
        k: v
        for k, v in sorted(fields.items())
        if isinstance(v, str | int | float | bool) or v is None
    }
    return UnstructuredItem(
        source="webhook:tradingview",
        ts_ns=ts,
        text=str(message) if message is not None else json.dumps(fields, sort_keys=True),
        symbols=(str(ticker),) if ticker else (),
        metadata=metadata,
    )
