"""The LLM client against the local stub: retries, faults, refusals, structured output, ceilings, log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import BaseModel

from compiler.errors import CostCeilingError, LLMError
from compiler.llm import (
    CallLog,
    LLMClient,
    LLMConfig,
    LLMOutputError,
    LLMRefusalError,
    endpoint_class,
    host_class,
    prompt_sha256,
)
from compiler.stub_server import StubOpenAI, completion

MSG = [{"role": "user", "content": "hello"}]


class Answer(BaseModel):
    side: str
    size: float


def test_retries_429_and_500_then_succeeds(stub: StubOpenAI, client: LLMClient) -> None:
    sleeps: list[float] = []
    client._sleep = sleeps.append
    stub.add({"status": 429, "body": {"error": {"message": "rate"}}}, {"status": 500, "body": {}})
    stub.reply(completion("ok", prompt_tokens=7, completion_tokens=3))
    reply = client.complete(MSG)
    assert reply.content == "ok" and (reply.prompt_tokens, reply.completion_tokens) == (7, 3)
    assert sleeps == [0.5, 1.0]  # exponential backoff
    rows = client.log.rows()
    assert [r["status"] for r in rows] == ["retryable", "retryable", "ok"]
    assert rows[0]["error"].startswith("HTTP 429")
    assert all(r["prompt_sha256"] == prompt_sha256(MSG) for r in rows)
    sent = stub.requests[-1]
    assert sent["model"] == "stub-model" and sent["seed"] == 0 and sent["temperature"] == 0.0


def test_gives_up_after_retries_with_the_last_error(stub: StubOpenAI, client: LLMClient) -> None:
    stub.add(*[{"status": 503, "body": {"error": {"message": "down"}}}] * 3)
    with pytest.raises(LLMError, match=r"failed 3 time\(s\).*503"):
        client.complete(MSG)


def test_timeout_is_retried(stub: StubOpenAI, tmp_path: Path) -> None:
    cfg = LLMConfig(
        base_url=stub.base_url, timeout_s=0.2, max_retries=1, log_path=str(tmp_path / "l.db")
    )
    c = LLMClient(cfg, sleep=lambda s: None)
    stub.add({"delay_s": 1.0, "body": completion("late")}, {"body": completion("on time")})
    try:
        assert c.complete(MSG).content == "on time"
        assert "Timeout" in c.log.rows()[0]["error"]
    finally:
        c.close()


def test_client_errors_are_not_retried(stub: StubOpenAI, client: LLMClient) -> None:
    stub.add({"status": 404, "body": {"error": {"message": "no such model"}}})
    with pytest.raises(LLMError, match=r"refused the request.*404"):
        client.complete(MSG)
    assert len(stub.requests) == 1


def test_refusal_is_an_error(stub: StubOpenAI, client: LLMClient) -> None:
    stub.reply(completion(None, refusal="I can't help with that"))
    with pytest.raises(LLMRefusalError, match="can't help"):
        client.complete(MSG)
    assert client.log.rows()[-1]["status"] == "refused"


def test_structured_output_validated(stub: StubOpenAI, client: LLMClient) -> None:
    stub.reply(completion('```json\n{"side": "long", "size": 1.5}\n```'))
    ans, _ = client.structured(MSG, Answer)
    assert ans == Answer(side="long", size=1.5)
    fmt = stub.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["title"] == "Answer"
    stub.reply(completion('{"side": "long", "size": "big"}'))
    with pytest.raises(LLMOutputError, match=r"\$\.size"):
        client.structured(MSG, Answer)
    stub.reply(completion('{"side": '))
    with pytest.raises(LLMOutputError, match="not valid JSON"):
        client.structured(MSG, Answer)


def test_malformed_http_body_is_a_clear_error(stub: StubOpenAI, client: LLMClient) -> None:
    stub.add({"raw": "this is not json"})
    with pytest.raises(LLMOutputError, match="not JSON"):
        client.complete(MSG)


def test_cost_ceilings_per_call_and_per_day(stub: StubOpenAI, tmp_path: Path) -> None:
    log = tmp_path / "l.db"
    base = dict(
        base_url=stub.base_url,
        log_path=str(log),
        prompt_price_per_1k=1.0,
        completion_price_per_1k=1.0,
        max_tokens=100,
    )
    c = LLMClient(LLMConfig(**base, max_cost_per_call=0.05), sleep=lambda s: None)
    with pytest.raises(CostCeilingError, match="max_cost_per_call"):
        c.complete(MSG)
    assert stub.requests == []  # refused before sending
    c.close()
    clock = lambda: 1_700_000_000 * 10**9  # noqa: E731
    c = LLMClient(LLMConfig(**base, max_cost_per_day=0.4), sleep=lambda s: None, clock_ns=clock)
    stub.reply(completion("a", prompt_tokens=200, completion_tokens=100))  # costs 0.3
    c.complete(MSG)
    with pytest.raises(
        CostCeilingError, match=r"daily ceiling reached: \$0.3000 spent on 2023-11-14"
    ):
        c.complete(MSG)
    assert len(stub.requests) == 1
    c.close()
    assert CallLog(log).spent_on("2023-11-14") == pytest.approx(0.3)


def test_api_key_never_logged(
    stub: StubOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_KEY", "sk-secret-123")
    c = LLMClient(
        LLMConfig(base_url=stub.base_url, api_key_env="STUB_KEY", log_path=str(tmp_path / "l.db"))
    )
    stub.reply(completion("x"))
    c.complete(MSG)
    c.close()
    assert b"sk-secret-123" not in (tmp_path / "l.db").read_bytes()
    assert "sk-secret-123" not in json.dumps(stub.requests)


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("http://127.0.0.1:8000/v1", "loopback"),
        ("http://localhost:11434/v1", "loopback"),
        ("http://10.1.2.3/v1", "private"),
        ("https://api.openai.com/v1", "api.openai.com"),
    ],
)
def test_host_class(url: str, cls: str) -> None:
    assert host_class(url) == cls


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("http://127.0.0.1:8000/v1", "local"),
        ("http://localhost:11434/v1", "local"),
        ("http://192.168.1.9:8000/v1", "local"),
        ("https://api.openai.com/v1", "openai"),
        ("https://litellm.example.com/v1", "proxy"),
        ("http://8.8.8.8/v1", "proxy"),
    ],
)
def test_endpoint_class_for_provenance(url: str, cls: str) -> None:
    assert endpoint_class(url) == cls


def test_calls_are_tagged_and_old_logs_gain_the_columns(
    stub: StubOpenAI, client: LLMClient, tmp_path: Path
) -> None:
    stub.add({"body": completion("a")}, {"body": completion("b")})
    client.complete(MSG)
    client.conversation_id, client.run_id = "chat-7", "runs/x"
    client.complete(MSG)
    rows = client.log.rows()
    assert [(r["conversation_id"], r["run_id"]) for r in rows] == [
        (None, None),
        ("chat-7", "runs/x"),
    ]
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute(
        "CREATE TABLE llm_calls (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_utc TEXT, day TEXT, "
        "role TEXT, model TEXT, host_class TEXT, prompt_sha256 TEXT, attempt INTEGER, "
        "prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL, cost REAL, "
        "status TEXT, error TEXT)"
    )
    db.execute("INSERT INTO llm_calls (day, cost) VALUES ('2026-01-01', 1.5)")
    db.commit()
    db.close()
    log = CallLog(old)
    try:
        assert log.spent_on("2026-01-01") == 1.5
        assert log.rows()[0]["conversation_id"] is None
        log.record(day="2026-01-01", cost=0.5, conversation_id="c")
        assert log.spent_on("2026-01-01") == 2.0 and log.rows()[1]["conversation_id"] == "c"
    finally:
        log.close()
