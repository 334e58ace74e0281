"""Health rules, health alerts from the live refresh, the control protocol's bad input, and the
compiler's LLM calls in the read model."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.conftest import TOKEN
from service.runner_util import artifacts, settings_of, write_config
from stratagem.service import ServiceError
from stratagem.service.api import create_app
from stratagem.service.control import ControlRequest, decode_reply, encode, send_request
from stratagem.service.health import health_alerts, live_run_ids, read_health, summary
from stratagem.service.readmodel import load_llm_calls
from stratagem.service.runner import Runner
from stratagem.service.state import ServiceState

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _health(**over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "service": "t",
        "pid": 42,
        "state": "running",
        "updated_unix_ns": 1_000_000_000_000,
        "interval_s": 0.5,
        "stale_after_s": 10.0,
        "order_kernel": {"alive": True, "restarts": 0, "pid": 43},
        "feed": {"mode": "replay", "alive": True},
        "strategies": {
            "rsi": {
                "run_id": "t-rsi",
                "run_dir": "x",
                "state": "running",
                "restarts": 0,
                "last_bar_age_s": 0.1,
                "last_bar_ts_ns": 5,
                "snapshots": 1,
            },
        },
    }
    h.update(over)
    return h


def _write(path: Path, h: dict[str, Any]) -> Path:
    path.write_text(json.dumps(h))
    return path


def test_health_rules(tmp_path: Path) -> None:
    p = _write(tmp_path / "h.json", _health())
    fresh = read_health(p, now_unix_ns=1_000_000_000_000 + 100_000_000)
    assert fresh is not None and fresh["runner_alive"] is True
    assert summary(fresh)["ok"] is True and live_run_ids(fresh) == {"t-rsi"}
    assert health_alerts(fresh) == []
    # a runner that stopped writing is down: no live runs, one alert named by its pid
    old = read_health(p, now_unix_ns=1_000_000_000_000 + 10_000_000_000)
    assert old is not None and old["runner_alive"] is False and live_run_ids(old) == set()
    assert summary(old)["ok"] is False
    assert [a["alert_id"] for a in health_alerts(old)] == ["health:t:runner_down:42"]
    # order kernel down, a stale strategy, a restarted one, a failed one
    h = _health(
        order_kernel={"alive": False, "restarts": 2, "pid": 43},
        strategies={
            "a": {"run_id": "t-a", "state": "running", "restarts": 0, "last_bar_age_s": 11.0,
                  "last_bar_ts_ns": 7},
            "b": {"run_id": "t-b", "state": "failed", "restarts": 3, "error": "boom"},
        },
    )  # fmt: skip
    got = read_health(_write(tmp_path / "h2.json", h), now_unix_ns=1_000_000_000_000)
    assert got is not None
    kinds = {a["alert_id"]: a["alert_kind"] for a in health_alerts(got)}
    assert kinds == {
        "health:t:order_kernel:2": "kernel_disconnect",
        "health:t-a:stale:7": "stale_data",
        "health:t-b:restart:3": "strategy_restart",
        "health:t-b:failed": "strategy_failed",
    }
    problems = summary(got)["problems"]
    assert "order kernel down" in problems and any("no bar for 11" in x for x in problems)
    assert read_health(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text("{")
    assert read_health(tmp_path / "torn.json") is None


def test_live_refresh_raises_each_health_alert_once(state: ServiceState) -> None:
    hp = state.settings.runner.health_path()
    hp.parent.mkdir(parents=True, exist_ok=True)
    down = _health(updated_unix_ns=time.time_ns(), strategies={},
                   order_kernel={"alive": False, "restarts": 0, "pid": 9})  # fmt: skip
    _write(hp, down)
    assert state.refresh_live() == []
    state.refresh_live()  # the same episode: no second alert
    rows = state.query("SELECT * FROM alerts WHERE kind = 'kernel_disconnect'")
    assert [r["alert_id"] for r in rows] == ["health:t:order_kernel:0"]
    # journaled: survives a rebuild, and a new ServiceState does not raise it again
    state.rebuild()
    assert len(state.query("SELECT * FROM alerts WHERE kind = 'kernel_disconnect'")) == 1
    again = ServiceState(state.settings, clock=state.clock)
    again.refresh_live()
    kinds = [r["kind"] for r in again.journal.records()]
    assert kinds.count("service_alert") == 1
    again.conn.close()
    with TestClient(create_app(state)) as client:
        page = client.get("/partials/service").text
        assert (
            "Service <strong>t</strong>" in page and 'order kernel <span class="bad">down' in page
        )
        h = client.get("/health").json()
        assert h["ok"] is False and "order kernel down" in h["problems"]
        assert client.get("/api/v1/runner", headers=AUTH).json()["order_kernel"]["pid"] == 9


def test_control_protocol_refuses_bad_input(tmp_path: Path) -> None:
    arts = artifacts(tmp_path)
    cfg = write_config(tmp_path, {"rsi": arts["rsi"]}, bars_per_second=0)
    runner = Runner(settings_of(cfg))  # not started: no sessions yet
    for raw, needle in [
        (b"not json", "malformed request"),
        (b'{"request_id": 1, "action": "explode"}', "malformed request"),
        (b'{"request_id": 1, "action": "kill", "extra": 1}', "malformed request"),
    ]:
        reply = runner.handle_control(raw)
        assert reply.ok is False and needle in reply.detail
    reply = runner.handle_control(encode(ControlRequest(request_id=3, action="pause", scope="x")))
    assert reply.ok is False and "unknown scope 'x'" in reply.detail
    swap_all = runner.handle_control(encode(ControlRequest(request_id=4, action="swap")))
    assert swap_all.ok is False and "one strategy name" in swap_all.detail
    assert decode_reply(encode(reply)) == reply
    # nobody listening: None within the timeout, nothing queued for later
    t0 = time.monotonic()
    none = send_request(
        f"ipc://{tmp_path}/nobody.sock", ControlRequest(request_id=1, action="kill"), 0.2
    )
    assert none is None and time.monotonic() - t0 < 2


def _call_log(path: Path, *, conversation: bool) -> None:
    if not conversation:
        from compiler.llm import CallLog

        log = CallLog(path)
        for i in range(3):
            log.record(ts_utc=f"2026-11-25T10:00:0{i}Z", day="2026-11-25", role="author",
                       model="m", host_class="local", prompt_sha256=f"{i:064x}", attempt=1,
                       prompt_tokens=10 + i, completion_tokens=5, latency_ms=12.5, cost=0.001,
                       status="ok", error=None)  # fmt: skip
        log.close()
        return
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE llm_calls (id INTEGER PRIMARY KEY, ts_utc TEXT, day TEXT, role TEXT, "
        "model TEXT, host_class TEXT, prompt_sha256 TEXT, attempt INTEGER, prompt_tokens INTEGER, "
        "completion_tokens INTEGER, latency_ms REAL, cost REAL, status TEXT, error TEXT, "
        "conversation_id TEXT)"
    )
    db.execute(
        "INSERT INTO llm_calls VALUES (1, '2026-11-25T11:00:00Z', '2026-11-25', 'judge', 'm', "
        "'local', 'ab', 1, 7, 3, 9.0, 0.0, 'ok', NULL, 'conv-7')"
    )
    db.commit()
    db.close()


def test_llm_calls_in_the_read_model(tmp_path: Path, runs_copy: Path) -> None:
    from service.conftest import FakeClock, make_settings

    a, b = tmp_path / "llm_calls.sqlite", tmp_path / "chat" / "llm_calls.sqlite"
    b.parent.mkdir()
    _call_log(a, conversation=False)
    _call_log(b, conversation=True)
    settings = make_settings(tmp_path, runs_copy, llm_call_logs=[b, a, tmp_path / "none.sqlite"])
    st = ServiceState(settings, clock=FakeClock())
    st.rebuild()
    with TestClient(create_app(st)) as client:
        rows = client.get("/api/v1/llm-calls", headers=AUTH).json()
        assert [r["role"] for r in rows] == ["author"] * 3 + ["judge"]
        assert rows[0]["source"] == str(a) and rows[0]["prompt_tokens"] == 10
        conv = client.get("/api/v1/llm-calls?conversation_id=conv-7", headers=AUTH).json()
        assert len(conv) == 1 and conv[0]["source"] == str(b) and conv[0]["id"] == 1
        assert client.get("/api/v1/llm-calls").status_code == 401
    first = st.query("SELECT * FROM llm_calls ORDER BY source, id")
    st.rebuild()  # idempotent
    assert st.query("SELECT * FROM llm_calls ORDER BY source, id") == first
    st.conn.close()
    bad = tmp_path / "other.sqlite"
    sqlite3.connect(bad).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ServiceError, match="no llm_calls table"):
        load_llm_calls(bad)


def test_the_documented_service_toml_is_valid() -> None:
    import re
    import tomllib

    from service.runner_util import REPO
    from stratagem.service.settings import ServiceSettings

    doc = (REPO / "docs" / "service.md").read_text()
    match = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert match is not None
    settings = ServiceSettings.model_validate(tomllib.loads(match.group(1)))
    assert [s.name for s in settings.runner.strategies] == ["rsi", "sma"]
    assert settings.runner.on_stop == "cancel" and settings.runner.feed.mode == "replay"
