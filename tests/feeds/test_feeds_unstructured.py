"""RSS/Atom, JSONL posts and the webhook sink all yield strict UnstructuredItems."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.errors import UnstructuredError, WebhookError
from feeds.schema import UnstructuredItem
from feeds.unstructured import (
    WebhookSink,
    append_jsonl,
    match_symbols,
    parse_feed,
    parse_timestamp,
    read_feed,
    read_jsonl,
)

T_2024 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
SEC = 1_000_000_000
SECRET = "s3cret-s3cret-s3cret"

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Crypto Wire</title>
<item><title>BTC breaks &amp; holds 42k</title>
  <description>&lt;p&gt;Bitcoin (BTC) rallied; ETH lagged.&lt;/p&gt;</description>
  <link>https://example.test/a</link><guid>a-1</guid>
  <pubDate>Mon, 01 Jan 2024 00:00:00 +0000</pubDate></item>
<item><title>Fed minutes</title><description>Rates unchanged</description>
  <pubDate>Mon, 01 Jan 2024 07:30:00 -0500</pubDate></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Desk</title>
<entry><title>ETH upgrade</title><id>urn:1</id>
  <link rel="self" href="https://example.test/self"/><link href="https://example.test/eth"/>
  <published>2024-01-01T01:00:00Z</published><summary>Devs ship it</summary></entry>
<entry><title>No zone</title><updated>2024-01-01T02:00:00</updated>
  <content type="html">&lt;b&gt;bold&lt;/b&gt; move</content></entry>
</feed>"""


def test_rss_items() -> None:
    items = parse_feed(RSS, source="rss:wire", symbols=("BTC", "ETH", "SOL"))
    assert [i.ts_ns for i in items] == [T_2024, T_2024 + 12 * 3600 * SEC + 1800 * SEC]
    first = items[0]
    assert first.text == "BTC breaks & holds 42k\n\nBitcoin (BTC) rallied; ETH lagged."
    assert first.url == "https://example.test/a" and first.source == "rss:wire"
    assert first.symbols == ("BTC", "ETH")
    assert first.metadata == {
        "title": "BTC breaks & holds 42k",
        "guid": "a-1",
        "feed": "Crypto Wire",
    }
    assert items[1].url is None and items[1].symbols == ()


def test_atom_entries() -> None:
    items = parse_feed(ATOM.encode(), source="atom:desk")
    assert [i.ts_ns for i in items] == [T_2024 + 3600 * SEC, T_2024 + 7200 * SEC]
    assert items[0].url == "https://example.test/eth"  # the alternate link, not rel=self
    assert items[0].text == "ETH upgrade\n\nDevs ship it"
    assert items[1].text == "No zone\n\nbold move"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            RSS.replace("<pubDate>Mon, 01 Jan 2024 07:30:00 -0500</pubDate>", ""),
            "item 1 ('Fed minutes'): no <pubDate>",
        ),
        (
            RSS.replace("Mon, 01 Jan 2024 00:00:00 +0000", "yesterday"),
            "item 0 ('BTC breaks & holds 42k'): cannot read timestamp 'yesterday'",
        ),
        (
            ATOM.replace("<updated>2024-01-01T02:00:00</updated>", ""),
            "entry 1 ('No zone'): no <published> or <updated>",
        ),
        (RSS[:200], "feed.xml: not well-formed XML"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><rss/>', "DOCTYPE or entities are refused"),
        ("<html><body/></html>", "unknown feed format <html>"),
    ],
)
def test_bad_feeds_name_the_item(doc: str, message: str) -> None:
    with pytest.raises(UnstructuredError) as info:
        parse_feed(doc, source="rss:x", origin="feed.xml")
    assert message in str(info.value)


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_read_feed_from_file_and_url(tmp_path: Path, http_dir: str) -> None:
    (tmp_path / "wire.xml").write_text(RSS)
    from_file = read_feed(tmp_path / "wire.xml")
    from_url = read_feed(f"{http_dir}/wire.xml")
    assert from_file[0].source == "rss:wire.xml" and from_url[0].source == "rss:127.0.0.1"
    assert [i.text for i in from_file] == [i.text for i in from_url]
    with pytest.raises(UnstructuredError, match="cannot fetch feed"):
        read_feed(f"{http_dir}/missing.xml")
    with pytest.raises(UnstructuredError, match="cannot read feed file"):
        read_feed(tmp_path / "missing.xml")
    with pytest.raises(UnstructuredError, match="larger than 100 bytes"):
        read_feed(tmp_path / "wire.xml", max_bytes=100)


def test_jsonl_posts(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(
        '{"ts": "2024-01-01T00:00:00Z", "text": "BTC to the moon", "symbols": ["BTC"]}\n'
        "\n"
        '{"ts_ns": 1704067201000000000, "text": "meh", "url": "https://x.test", '
        '"metadata": {"author": "a", "likes": 3}, "source": "x:feed"}\n'
    )
    items = read_jsonl(path)
    assert items == [
        UnstructuredItem(
            source="jsonl:posts.jsonl", ts_ns=T_2024, text="BTC to the moon", symbols=("BTC",)
        ),
        UnstructuredItem(
            source="x:feed",
            ts_ns=T_2024 + SEC,
            text="meh",
            url="https://x.test",
            metadata={"author": "a", "likes": 3},
        ),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"ts": "2024-01-01", "text": "x"', "line 2: invalid JSON"),
        ('{"ts": "2024-01-01", "text": "x", "author": "a"}', "line 2: unknown field 'author'"),
        (
            '{"ts": 1704067200, "text": "x"}',
            "line 2: integer timestamp 1704067200 is not in nanoseconds",
        ),
        ('{"text": "x"}', "line 2: needs exactly one of 'ts' and 'ts_ns'"),
        ('{"ts": "2024-01-01", "text": "  "}', "line 2: 'text' is empty"),
        ('{"ts": "2024-01-01", "text": 5}', "line 2: Expected `str`, got `int` - at `$.text`"),
        ('{"ts_ns": "1704067200000000000", "text": "x"}', "line 2: 'ts_ns' must be an integer"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
    ],
)
def test_bad_jsonl_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text('{"ts": "2024-01-01", "text": "ok"}\n' + line + "\n")
    with pytest.raises(UnstructuredError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_timestamps() -> None:
    assert parse_timestamp("2024-01-01T02:00:00+02:00", "x") == T_2024
    assert parse_timestamp("2024-01-01 00:00:00.5", "x") == T_2024 + SEC // 2
    assert parse_timestamp(T_2024, "x") == T_2024
    with pytest.raises(UnstructuredError, match="timestamp must be"):
        parse_timestamp(True, "x")
    assert match_symbols("ETHBTC and sol, SOL!", ("BTC", "SOL", "ETH")) == ("SOL",)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=8))
_items = st.builds(
    UnstructuredItem,
    source=st.text(min_size=1, max_size=10),
    ts_ns=st.integers(10**17, 2**62),
    text=st.text(min_size=1, max_size=40).filter(str.strip),
    url=st.none() | st.text(max_size=10),
    symbols=st.lists(st.text(min_size=1, max_size=5), max_size=3).map(tuple),
    metadata=st.dictionaries(st.text(max_size=5), _scalar, max_size=3),
)


@settings(max_examples=50)
@given(st.lists(_items, max_size=5))
def test_jsonl_round_trip(items: list[UnstructuredItem]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.jsonl"
        append_jsonl(items[:2], path)
        append_jsonl(items[2:], path)
        assert read_jsonl(path) == items


def _post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_webhook_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "alerts.jsonl"
    item = {"ts": "2024-01-01T00:00:00Z", "text": "long BTC", "symbols": ["BTC"]}
    with WebhookSink(out, secret=SECRET, source="webhook:tv", max_body=2000) as sink:
        assert _post(sink.url, json.dumps(item).encode(), {"X-Webhook-Secret": SECRET}) == (
            200,
            {"accepted": 1},
        )
        body_secret = [{**item, "text": "short ETH"}, {**item, "text": "flat"}]
        status, reply = _post(sink.url, json.dumps({**body_secret[0], "secret": SECRET}).encode())
        assert (status, reply) == (200, {"accepted": 1})
        status, _ = _post(sink.url, json.dumps(body_secret).encode(), {"X-Webhook-Secret": SECRET})
        assert status == 200
        before = out.read_bytes()
        assert _post(sink.url, json.dumps(item).encode(), {"X-Webhook-Secret": "nope"})[0] == 401
        assert _post(sink.url, json.dumps(item).encode())[0] == 401
        status, reply = _post(
            sink.url, json.dumps([item, {"text": "no time"}]).encode(), {"X-Webhook-Secret": SECRET}
        )
        assert status == 400 and "item 1: needs exactly one of 'ts' and 'ts_ns'" in str(
            reply["error"]
        )
        assert _post(sink.url, b"{not json", {"X-Webhook-Secret": SECRET})[0] == 400
        assert _post(sink.url, b"x" * 5000, {"X-Webhook-Secret": SECRET})[0] == 413
        assert _post(sink.url.replace("/webhook", "/other"), b"{}")[0] == 404
        assert out.read_bytes() == before  # refused requests wrote nothing
        assert (sink.accepted, sink.rejected) == (4, 5)
    stored = read_jsonl(out)
    assert [i.text for i in stored] == ["long BTC", "short ETH", "short ETH", "flat"]
    assert {i.source for i in stored} == {"webhook:tv"}
    assert SECRET not in out.read_text() and SECRET not in caplog.text
    assert "wrong or missing secret" in caplog.text
    with pytest.raises(WebhookError, match="at least 16 characters"):
        WebhookSink(out, secret="short")
