"""TradingView webhook alerts: shared secret, parsing, limits; the secret never leaks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.tv_alerts import MAX_ALERT_BYTES, AlertAuthError, AlertError, parse_alert

SECRET = "s3cr3t-value"


def test_json_alert_becomes_an_item() -> None:
    body = json.dumps(
        {
            "secret": SECRET,
            "ticker": "BTCUSDT",
            "action": "buy",
            "close": 65000.5,
            "timenow": "2024-06-01T12:00:00Z",
            "message": "breakout",
        }
    )
    item = parse_alert(body, secret=SECRET, received_ts_ns=1)
    assert item.source == "webhook:tradingview" and item.text == "breakout"
    assert item.symbols == ("BTCUSDT",) and item.ts_ns == 1_717_243_200 * 10**9
    assert item.metadata["action"] == "buy" and item.metadata["close"] == 65000.5
    assert SECRET not in repr(item)


def test_plain_text_needs_a_header_secret() -> None:
    with pytest.raises(AlertAuthError):
        parse_alert("BTC crossed 60k", secret=SECRET, received_ts_ns=5)
    item = parse_alert(b"BTC crossed 60k", secret=SECRET, received_ts_ns=5, header_secret=SECRET)
    assert (item.text, item.ts_ns, item.symbols) == ("BTC crossed 60k", 5, ())


@pytest.mark.parametrize(
    ("body", "err", "words"),
    [
        (json.dumps({"secret": "nope", "ticker": "X"}), AlertAuthError, "wrong shared secret"),
        (json.dumps({"ticker": "X"}), AlertAuthError, "missing"),
        ('{"secret": ', AlertError, "looks like JSON"),
        (b"\xff\xfe", AlertError, "not UTF-8"),
        ("x" * (MAX_ALERT_BYTES + 1), AlertError, "limit"),
    ],
)
def test_refused_alerts(body: str | bytes, err: type[Exception], words: str) -> None:
    with pytest.raises(err, match=words) as info:
        parse_alert(body, secret=SECRET, received_ts_ns=0)
    assert SECRET not in str(info.value)


def test_no_configured_secret_refuses_everything() -> None:
    with pytest.raises(AlertError, match="no webhook secret"):
        parse_alert(json.dumps({"secret": ""}), secret="", received_ts_ns=0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzzed_bodies_never_crash_or_pass_without_the_secret(body: bytes | str) -> None:
    with pytest.raises(AlertError):
        parse_alert(body, secret=SECRET, received_ts_ns=0)
