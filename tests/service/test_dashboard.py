"""Dashboard in real headless Chromium: page renders, is readable on a phone, SSE updates arrive."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.browser import CHROMIUM, Browser
from service.conftest import WEBHOOK_SECRET
from stratagem.service.api import create_app
from stratagem.service.dashboard import equity_svg
from stratagem.service.serving import BackgroundServer
from stratagem.service.state import ServiceState

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="chromium is not installed (apt-get install chromium)"
)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    return w, h


@needs_chromium
def test_dashboard_in_headless_chromium(state: ServiceState, tmp_path: Path) -> None:
    app = create_app(state)
    browser = Browser(tmp_path / "profile")
    try:
        with BackgroundServer(app) as url:
            browser.open(url + "/")
            # every partial swapped in (htmx ran, served from our static files, no CDN)
            browser.wait_for("document.querySelector('#scorecard table') !== null")
            browser.wait_for("document.querySelector('#equity svg polyline') !== null")
            browser.wait_for("document.body.innerText.includes('sma-cross-v1')")
            text = browser.eval("document.body.innerText")
            for needle in ("Runs", "Equity", "Open orders", "Recent fills", "Alerts",
                           "Signal scorecard", "was_oversold", "drawdown"):  # fmt: skip
                assert needle in text, needle
            # landmarks and labels
            assert (
                browser.eval("document.querySelectorAll('header, nav, main, footer').length") == 4
            )
            assert browser.eval("document.documentElement.lang") == "en"
            label = browser.eval("document.querySelector('#equity svg').getAttribute('aria-label')")
            assert label.startswith("Equity of rsi-reversion-v3: from 10,000.00")
            # phone width: nothing wider than the viewport except inside scroll containers
            assert browser.eval("document.documentElement.scrollWidth") <= 390
            shot = browser.screenshot(tmp_path / "dashboard.png")
            w, h = _png_size(shot)
            assert w == 390 and h > 844
            # SSE: wait for the page's stream, then make a change and see it arrive in the DOM
            browser.wait_for("document.querySelector('[sse-connect]') !== null")
            for _ in range(200):
                if state.bus.subscribers:
                    break
                browser.eval("1")
            assert state.bus.subscribers >= 1
            r = httpx.post(
                url + "/webhooks/tradingview",
                content=json.dumps(
                    {
                        "secret": WEBHOOK_SECRET,
                        "ticker": "ETHUSDT",
                        "message": "breakout above 4000",
                    }
                ),
            )
            assert r.status_code == 202
            browser.wait_for("document.body.innerText.includes('breakout above 4000')", timeout=10)
            status = browser.eval("document.getElementById('live-status').innerText")
            assert "alerts" in status
            browser.screenshot(tmp_path / "dashboard-after-alert.png")
            browser.close()  # before the server stops, so its event stream ends cleanly
    finally:
        browser.close()
    keep = Path("/tmp/stratagem-dashboard.png")
    shutil.copy(tmp_path / "dashboard.png", keep)


def test_partials_escape_untrusted_text(state: ServiceState) -> None:
    from feeds.schema import UnstructuredItem

    state.record_webhook(
        UnstructuredItem(source="webhook:tradingview", ts_ns=1, text="<script>alert(1)</script>")
    )
    with TestClient(create_app(state)) as c:
        html = c.get("/partials/alerts").text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_equity_svg_is_bounded_and_labelled() -> None:
    pts = [(i * 3_600_000_000_000, 10_000.0 + (i % 50) - i * 0.01) for i in range(10_000)]
    svg = equity_svg(pts, max_points=400)
    n = svg.split('points="')[1].split('"')[0].count(",")
    assert n <= 402
    assert 'role="img"' in svg and "aria-label=" in svg
    assert "no data" in equity_svg([])


def test_static_htmx_is_vendored_with_its_licence() -> None:
    from stratagem.service.dashboard import STATIC_DIR

    head = (STATIC_DIR / "htmx.min.js").read_text()[:200]
    assert "htmx.org 2.0.11" in head and "0BSD" in head
    assert "Zero-Clause BSD" in (STATIC_DIR / "htmx.LICENSE").read_text()
    assert (STATIC_DIR / "sse.LICENSE").is_file()
