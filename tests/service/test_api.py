"""HTTP API: endpoints over the read model, auth, rate limits, bad input, secrets never leaked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.conftest import OTHER_TOKEN, TOKEN, WEBHOOK_SECRET, FakeClock, make_settings
from stratagem.service.api import create_app
from stratagem.service.ratelimit import TokenBucket
from stratagem.service.readmodel import dump
from stratagem.service.settings import RateLimit
from stratagem.service.state import ServiceState

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Monotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def client(state: ServiceState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as c:
        yield c


def _all_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_read_endpoints(client: TestClient) -> None:
    runs = client.get("/api/v1/runs", headers=AUTH).json()
    assert {r["run_id"] for r in runs} == {"sma-cross-v1", "rsi-reversion-v3"}
    detail = client.get("/api/v1/runs/sma-cross-v1", headers=AUTH).json()
    assert detail["metrics"]["trades"] == detail["n_trades"] > 0
    trades = client.get("/api/v1/runs/sma-cross-v1/trades", headers=AUTH).json()
    assert len(trades) == detail["n_trades"] and trades[0]["nodes"] == ["golden"]
    page = client.get("/api/v1/runs/sma-cross-v1/trades?limit=2&offset=1", headers=AUTH).json()
    assert [t["trade_id"] for t in page] == [t["trade_id"] for t in trades[1:3]]
    orders = client.get("/api/v1/runs/rsi-reversion-v3/orders", headers=AUTH).json()
    working = client.get("/api/v1/runs/rsi-reversion-v3/orders?open_only=true", headers=AUTH).json()
    assert len(working) < len(orders)
    fills = client.get("/api/v1/runs/sma-cross-v1/fills", headers=AUTH).json()
    assert len(fills) == detail["n_fills"] and fills[0]["price"] > 0
    pos = client.get("/api/v1/runs/sma-cross-v1/positions", headers=AUTH).json()
    assert pos[0]["symbol"] == "BTC/USDT"
    eq = client.get("/api/v1/runs/sma-cross-v1/equity?every=100", headers=AUTH).json()
    assert len(eq) == (detail["bars"] + 99) // 100 and eq[0]["equity"] == 10000.0
    sc = client.get("/api/v1/runs/rsi-reversion-v3/scorecard", headers=AUTH).json()
    assert sc and all(0 <= s["hit_rate_pct"] <= 100 for s in sc)
    arts = client.get("/api/v1/artifacts", headers=AUTH).json()
    one = client.get(f"/api/v1/artifacts/{arts[0]['content_hash']}", headers=AUTH).json()
    assert "schema: stratagem/v1" in one["yaml"]
    alerts = client.get("/api/v1/alerts?kind=drawdown", headers=AUTH).json()
    assert alerts and all(a["kind"] == "drawdown" for a in alerts)
    assert client.get("/api/v1/runs/nope", headers=AUTH).status_code == 404
    assert client.get("/api/v1/artifacts/nope", headers=AUTH).status_code == 404
    assert client.get("/health").json() == {"ok": True, "runner": None}
    assert "No service runner" in client.get("/partials/service").text


def test_openapi_documents_bearer_auth(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/api/v1/runs", "/api/v1/kill", "/api/v1/approvals/{approval_id}/approve",
                 "/webhooks/tradingview"):  # fmt: skip
        assert path in doc["paths"], path
    assert "/partials/runs" not in doc["paths"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ],
    ids=["missing", "wrong", "wrong-scheme", "suffix", "prefix"],
)
def test_bad_tokens_get_401_and_are_logged_without_the_token(
    client: TestClient, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.INFO)
    r = client.post("/api/v1/kill", headers=headers, json={"reason": "x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/kill", headers=AUTH).json() == []  # never acted on
    text = _all_text(caplog)
    assert "rejected POST /api/v1/kill" in text
    assert TOKEN not in text and TOKEN not in r.text and "wrong-token" not in text


def test_no_configured_tokens_refuses_everyone(tmp_path: Path, runs_copy: Path) -> None:
    st_ = ServiceState(make_settings(tmp_path, runs_copy, api_tokens={}), clock=FakeClock())
    with TestClient(create_app(st_)) as c:
        r = c.get("/api/v1/runs", headers=AUTH)
    assert r.status_code == 401 and "no API tokens" in r.json()["detail"]


def test_rate_limit_per_token_with_injected_clock(tmp_path: Path, runs_copy: Path) -> None:
    clock = Monotonic()
    settings = make_settings(tmp_path, runs_copy, rate_limit=RateLimit(burst=3, per_second=0.5))
    st_ = ServiceState(settings, clock=FakeClock())
    with TestClient(create_app(st_, monotonic=clock)) as c:
        codes = [c.get("/api/v1/runs", headers=AUTH).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/api/v1/runs", headers=AUTH)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        # another token has its own bucket
        assert (
            c.get("/api/v1/runs", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).status_code
            == 200
        )
        clock.t += 2.0
        assert c.get("/api/v1/runs", headers=AUTH).status_code == 200
        assert c.get("/api/v1/runs", headers=AUTH).status_code == 429


@given(
    st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=60),
    st.integers(1, 5),
    st.floats(0.1, 10.0),
)
def test_token_bucket_never_allows_more_than_burst_plus_refill(
    steps: list[float], burst: int, rate: float
) -> None:
    now = [0.0]
    b = TokenBucket(burst, rate, lambda: now[0])
    allowed = 0
    for dt in steps:
        now[0] += dt
        if b.take("k") == 0.0:
            allowed += 1
    assert allowed <= burst + rate * now[0] + 1e-9
    # deterministic: the same sequence gives the same decisions
    now2 = [0.0]
    b2 = TokenBucket(burst, rate, lambda: now2[0])
    again = 0
    for dt in steps:
        now2[0] += dt
        again += b2.take("k") == 0.0
    assert again == allowed


def test_approvals_flow(client: TestClient, state: ServiceState) -> None:
    r = client.post("/api/v1/approvals", headers=AUTH,
                    json={"name": "rsi-reversion", "version": 4, "summary": "tighter stop",
                          "payload": {"gates": ["schema: passed"]}})  # fmt: skip
    assert r.status_code == 201
    aid = r.json()["approval_id"]
    pending = client.get("/api/v1/approvals?status=pending", headers=AUTH).json()
    assert [p["approval_id"] for p in pending] == [aid]
    ok = client.post(f"/api/v1/approvals/{aid}/approve", headers=AUTH, json={"note": "looks good"})
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    assert ok.json()["decided_by"] == "api:alice"
    again = client.post(f"/api/v1/approvals/{aid}/reject", headers=AUTH, json={})
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    assert client.post("/api/v1/approvals/none/approve", headers=AUTH, json={}).status_code == 404
    # the decision survives a rebuild from the logs + journal
    before = dump(state.conn)
    state.rebuild()
    assert dump(state.conn)["approvals"] == before["approvals"]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"note": 5}', b'{"note": "x", "extra": 1}', b"[1,2]"],
    ids=["malformed", "wrong-type", "unknown-field", "not-object"],
)
def test_bad_bodies_get_422_and_change_nothing(
    client: TestClient, state: ServiceState, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    caplog.set_level(logging.INFO)
    aid = state.request_approval("x", 1, "s", {})["approval_id"]
    r = client.post(f"/api/v1/approvals/{aid}/approve", headers={**AUTH, "Content-Type": "application/json"},
                    content=body)  # fmt: skip
    assert r.status_code == 422
    assert state.approval(aid)["status"] == "pending"
    assert "invalid request" in _all_text(caplog)
    k = client.post(
        "/api/v1/kill", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert k.status_code == 422
    assert state.query("SELECT * FROM control_requests") == []


def test_kill_switch_without_a_runner_is_recorded_not_acknowledged(
    client: TestClient, state: ServiceState
) -> None:
    r = client.post(
        "/api/v1/kill", headers=AUTH, json={"scope": "all", "flatten": True, "reason": "test"}
    )
    assert r.status_code == 202
    body = r.json()
    assert body["recorded"] is True and body["enforced"] is False
    assert body["acknowledged"] is False and "not yet acknowledged" in body["note"]
    rows = client.get("/api/v1/kill", headers=AUTH).json()
    assert rows[0]["requested_by"] == "api:alice" and rows[0]["flatten"] == 1
    assert rows[0]["state"] == "recorded"
    assert [r["kind"] for r in state.journal.records()] == ["control_requested"]


def _hook(client: TestClient, payload: object, **headers: str) -> object:
    return client.post("/webhooks/tradingview", content=json.dumps(payload), headers=headers)


def test_webhook_accepts_the_right_secret(client: TestClient) -> None:
    r = _hook(client, {"secret": WEBHOOK_SECRET, "ticker": "BTCUSDT", "message": "RSI < 30"})
    assert r.status_code == 202  # type: ignore[attr-defined]
    alerts = client.get("/api/v1/alerts?kind=webhook", headers=AUTH).json()
    assert alerts[0]["message"] == "[BTCUSDT] RSI < 30"
    r2 = client.post("/webhooks/tradingview", content=b"plain text alert",
                     headers={"X-Stratagem-Secret": WEBHOOK_SECRET})  # fmt: skip
    assert r2.status_code == 202
    all_alerts = json.dumps(client.get("/api/v1/alerts", headers=AUTH).json())
    assert WEBHOOK_SECRET not in all_alerts


@pytest.mark.parametrize(
    ("payload", "headers", "status"),
    [
        ({"secret": "wrong", "message": "buy"}, {}, 401),
        ({"message": "buy"}, {}, 401),
        ({"passphrase": WEBHOOK_SECRET + "x", "message": "buy"}, {}, 401),
        ({"message": "buy"}, {"X-Stratagem-Secret": "nope"}, 401),
    ],
    ids=["wrong", "missing", "wrong-passphrase", "wrong-header"],
)
def test_webhook_wrong_secret_is_refused_logged_not_acted_on(
    client: TestClient,
    state: ServiceState,
    caplog: pytest.LogCaptureFixture,
    payload: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    caplog.set_level(logging.INFO)
    r = _hook(client, payload, **headers)
    assert r.status_code == status  # type: ignore[attr-defined]
    assert state.query("SELECT * FROM alerts WHERE kind = 'webhook'") == []
    text = _all_text(caplog) + r.text  # type: ignore[attr-defined]
    assert "rejected POST /webhooks/tradingview" in text
    assert WEBHOOK_SECRET not in text and "nope" not in text.replace("no", "")


def test_webhook_bad_bodies(client: TestClient, state: ServiceState) -> None:
    big = json.dumps({"secret": WEBHOOK_SECRET, "message": "x" * 70_000}).encode()
    assert client.post("/webhooks/tradingview", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(80):
            yield b"x" * 1024

    assert client.post("/webhooks/tradingview", content=chunks()).status_code == 413
    bad = client.post(
        "/webhooks/tradingview", content=b'{"secret": "' + WEBHOOK_SECRET.encode() + b'",'
    )
    assert bad.status_code == 422 and WEBHOOK_SECRET not in bad.text
    assert state.query("SELECT * FROM alerts WHERE kind = 'webhook'") == []


def test_oversize_api_body_is_413(tmp_path: Path, runs_copy: Path) -> None:
    st_ = ServiceState(make_settings(tmp_path, runs_copy, max_body_bytes=1024), clock=FakeClock())
    with TestClient(create_app(st_)) as c:
        r = c.post("/api/v1/kill", headers=AUTH, json={"reason": "y" * 2000})
    assert r.status_code == 413
    assert st_.query("SELECT * FROM control_requests") == []


def test_webhook_disabled_without_a_secret(tmp_path: Path, runs_copy: Path) -> None:
    from pydantic import SecretStr

    st_ = ServiceState(
        make_settings(tmp_path, runs_copy, webhook_secret=SecretStr("")), clock=FakeClock()
    )
    with TestClient(create_app(st_)) as c:
        r = c.post("/webhooks/tradingview", content=b'{"secret": "", "message": "x"}')
    assert r.status_code == 503


def test_settings_redact_secrets(tmp_path: Path, runs_copy: Path) -> None:
    from stratagem.service.settings import load_settings

    s = make_settings(tmp_path, runs_copy)
    text = json.dumps(s.redacted()) + repr(s)
    assert TOKEN not in text and WEBHOOK_SECRET not in text
    env = {"STRATAGEM_API_TOKENS": "ci=abc123,ops=def456", "STRATAGEM_TELEGRAM_CHAT_IDS": "1,2"}
    loaded = load_settings(None, env)
    assert loaded.api_tokens["ops"].get_secret_value() == "def456"
    assert loaded.telegram_chat_ids == [1, 2]
    from stratagem.service import ServiceError

    with pytest.raises(ServiceError, match="name=token"):
        load_settings(None, {"STRATAGEM_API_TOKENS": "justatoken"})
    cfg = tmp_path / "s.toml"
    cfg.write_text("webhook_secret = 5\n")
    with pytest.raises(ServiceError, match="webhook_secret") as err:
        load_settings(cfg, {})
    assert "5" not in str(err.value).replace(str(cfg), "")
