"""The service runner end to end: real processes (runner, order kernel), ZeroMQ over ipc, SQLite.

Covers: a multi-strategy run to the end of a replayed feed (the strategy log is the backtest's,
byte for byte, up to the stop record); restart recovery from the logs; kill / pause / resume /
hot-swap from the HTTP API, enforced and visible in the order kernel's log; SIGTERM by policy;
live metrics in the read model while the run goes on; the supervisor restarting a session that
crashed because the order kernel stopped answering.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from artifacts.graph import check
from artifacts.io import load_with_lines
from feeds.files import read_bars
from order_kernel import messages as m
from order_kernel.log import IN
from order_kernel.log import read as read_order_log
from service.runner_util import (
    DATA,
    END_NS,
    TOKEN,
    RunnerProcess,
    artifacts,
    settings_of,
    wait_for,
    write_config,
)
from stratagem.cli import main
from stratagem.service.api import create_app
from stratagem.service.state import ServiceState
from strategy_kernel.backtest import run_backtest
from strategy_kernel.log import read as read_strategy_log

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return list(read_strategy_log(run_dir / "strategy.log.jsonl"))


def _inbound(run_dir: Path) -> list[m.AnyMessage]:
    return [
        e.message
        for e in read_order_log(run_dir / "orders.log")
        if e.direction == IN and e.message is not None
    ]


def test_two_strategies_to_the_end_then_recover_on_restart(tmp_path: Path) -> None:
    arts = artifacts(tmp_path)
    cfg = write_config(tmp_path, {"rsi": arts["rsi"], "sma": arts["sma"]}, bars_per_second=0)
    with RunnerProcess(cfg) as runner:
        assert runner.wait(90) == 0, runner.output()
    runs = tmp_path / "runs"
    for name in ("t-rsi", "t-sma"):
        for f in ("strategy.log.jsonl", "orders.log", "artifact.yaml", "run.json", "equity.csv",
                  "metrics.json", "trades.csv", "account.csv"):  # fmt: skip
            assert (runs / name / f).is_file(), f"{name}/{f}"
    # orders.log is the order kernel's own session log (hard link), not a copy
    assert (runs / "t-rsi" / "orders.log").samefile(
        tmp_path / "state" / "order-kernel" / "logs" / "t-rsi.log"
    )

    # the service's strategy log is the backtest's, byte for byte, up to the stop record
    artifact, lines = load_with_lines(arts["rsi"])
    bars = read_bars(DATA, end_ns=END_NS)
    bt = run_backtest(artifact, check(artifact, "rsi", lines), bars, out_dir=tmp_path / "bt",
                      session_id="t-rsi")  # fmt: skip
    expected = (tmp_path / "bt" / "strategy.log.jsonl").read_bytes().splitlines()
    got = (runs / "t-rsi" / "strategy.log.jsonl").read_bytes().splitlines()
    assert got[: len(expected)] == expected
    stop = json.loads(got[len(expected)])
    assert stop["kind"] == "control" and stop["action"] == "stop"
    assert stop["reason"] == "end_of_stream" and stop["on_stop"] == "cancel"
    assert isinstance(_inbound(runs / "t-rsi")[-1], m.CancelAll)  # policy: cancel working orders
    metrics = json.loads((runs / "t-rsi" / "metrics.json").read_text())["metrics"]
    assert metrics["trades"] == bt.metrics.trades > 0
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert summary["order_kernel_exit"] == 0
    assert {s["state"] for s in summary["strategies"].values()} == {"finished"}

    # the read model imports service runs like any run directory
    state = ServiceState(settings_of(cfg))
    report = state.rebuild()
    assert report["imported"] == ["t-rsi", "t-sma"] and not report["quarantined"]
    row = state.run("t-rsi")
    assert row["status"] == "ok" and json.loads(row["metrics_json"])["trades"] == bt.metrics.trades
    state.conn.close()

    # a second start recovers both sessions from their logs (verified by replay) and goes on
    before = got
    with RunnerProcess(cfg) as runner:
        assert runner.wait(90) == 0, runner.output()
        out = runner.output()
    assert "recovered session 't-rsi'" in out and "rsi: recovered from" in out
    after = (runs / "t-rsi" / "strategy.log.jsonl").read_bytes().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)
    assert _records(runs / "t-rsi")[-1]["kind"] in ("command", "event", "control")

    # a damaged log is never traded on: that session fails at once (no restarts), the other runs
    log = runs / "t-sma" / "strategy.log.jsonl"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0x01
    log.write_bytes(bytes(data))
    with RunnerProcess(cfg) as runner:
        assert runner.wait(90) == 1, runner.output()
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    sma = summary["strategies"]["sma"]
    assert sma["state"] == "failed" and sma["restarts"] == 0
    assert "cannot be recovered from a damaged log" in sma["error"]
    assert summary["strategies"]["rsi"]["state"] == "finished"


def test_kill_pause_resume_swap_from_the_api_are_enforced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arts = artifacts(tmp_path)
    cfg = write_config(tmp_path, {"rsi": arts["rsi"], "sma": arts["sma"]}, bars_per_second=50)
    runs = tmp_path / "runs"
    with RunnerProcess(cfg) as runner:
        runner.wait_bars(60)
        state = ServiceState(runner.settings)
        client = TestClient(create_app(state))

        # health: the runner and each component, no auth needed, no paths or endpoints shown
        h = client.get("/health").json()
        assert h["ok"] is True, h
        assert h["runner"]["order_kernel"]["alive"] is True
        assert set(h["runner"]["strategies"]) == {"rsi", "sma"}
        assert "endpoint" not in json.dumps(h["runner"]["order_kernel"])

        # live metrics: the runs are in the read model while they are being written
        assert sorted(state.refresh_live()) == ["t-rsi", "t-sma"]
        live = {r["run_id"]: r for r in client.get("/api/v1/runs", headers=AUTH).json()}
        assert live["t-rsi"]["status"] == "live" and live["t-rsi"]["bars"] >= 60
        assert "sharpe" in live["t-rsi"]["metrics"]
        n_eq = len(client.get("/api/v1/runs/t-rsi/equity", headers=AUTH).json())
        assert n_eq >= 60

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = client.post(path, headers=AUTH, json=body)
            assert r.status_code == 202, r.text
            out: dict[str, Any] = r.json()
            assert out["enforced"] is True and out["acknowledged"] is True, out
            return out

        post("/api/v1/pause", {"scope": "rsi", "reason": "news"})
        swap = post("/api/v1/swap", {"name": "rsi", "artifact": str(arts["rsi_v2"])})
        assert swap["applied"] == ["rsi"]
        # the CLI goes through the same journal and control socket
        assert main(["service", "resume", "--scope", "rsi", "--config", str(cfg), "--json"]) == 0
        assert main(["service", "status", "--config", str(cfg), "--json"]) == 0
        status = json.loads(capsys.readouterr().out.split("\n}\n", 1)[1])
        assert status["ok"] is True and status["control"] is True
        assert client.post("/api/v1/kill", json={"scope": "sma"}).status_code == 401
        post("/api/v1/kill", {"scope": "sma", "reason": "test kill"})
        bad = client.post("/api/v1/pause", headers=AUTH, json={"scope": "nope"}).json()
        assert bad["enforced"] is False and "unknown scope" in bad["note"]

        h2 = runner.wait_bars(runner.health()["strategies"]["sma"]["bars"] + 40)  # type: ignore[index]
        assert h2["strategies"]["sma"]["killed"] is True
        assert h2["strategies"]["rsi"]["paused"] is False
        assert h2["strategies"]["rsi"]["artifact"] == "rsi-reversion v2"  # the swapped-in version
        page = client.get("/partials/service").text  # the dashboard's "Running strategies"
        assert '<span class="bad">killed</span>' in page and ">rsi</a>" in page
        state.refresh_live()
        n_eq2 = len(client.get("/api/v1/runs/t-rsi/equity", headers=AUTH).json())
        assert n_eq2 > n_eq  # the account snapshots keep coming

        # Ctrl-C: the process group gets SIGINT; the order kernel (its own group) keeps serving
        # until the sessions stopped by policy (on_stop = cancel)
        kernel_pid = h2["order_kernel"]["pid"]
        assert runner.proc is not None
        assert os.getpgid(kernel_pid) != os.getpgid(runner.proc.pid)
        runner.ctrl_c()
        assert runner.wait(60) == 0, runner.output()

        rows = client.get("/api/v1/control", headers=AUTH).json()
        assert [(r["action"], r["scope"], r["state"]) for r in rows] == [
            ("pause", "rsi", "enforced"),
            ("swap", "rsi", "enforced"),
            ("resume", "rsi", "enforced"),
            ("kill", "sma", "enforced"),
            ("pause", "nope", "refused"),
        ]
        # after the run: a strict import, status ok; both rsi versions are known artifacts
        state.refresh_live()
        assert state.run("t-rsi")["status"] == "ok" and state.run("t-sma")["status"] == "ok"
        versions = client.get("/api/v1/artifacts", headers=AUTH).json()
        assert [(a["name"], a["version"]) for a in versions if a["name"] == "rsi-reversion"] == [
            ("rsi-reversion", 1),
            ("rsi-reversion", 2),
        ]
        state.conn.close()

    # the order kernel's log: the kill switch, then no new order from that session
    sma_in = _inbound(runs / "t-sma")
    k = next(i for i, msg in enumerate(sma_in) if isinstance(msg, m.KillSwitch))
    assert sma_in[k].reason == "test kill"  # type: ignore[union-attr]
    after_kill = {type(msg).__name__ for msg in sma_in[k + 1 :]}
    assert after_kill <= {"MarketBar", "CancelAll"}, after_kill
    assert "MarketBar" in after_kill  # bars still flowed (a flatten would fill)

    # rsi: pause, swap (state carried over), resume, stop, in that order, in its own log
    recs = _records(runs / "t-rsi")
    controls = [r["action"] for r in recs if r["kind"] == "control"]
    assert controls == ["pause", "swap", "resume", "stop"]
    reparam = next(r for r in recs if r["kind"] == "reparam")
    assert (reparam["old_version"], reparam["new_version"]) == (1, 2)
    assert "rsi" in reparam["cold"] and reparam["carried"] == []  # everything downstream of rsi
    swapped = next(r for r in recs if r["kind"] == "control" and r["action"] == "swap")
    assert (runs / "t-rsi" / swapped["artifact"]).read_text() == arts["rsi_v2"].read_text()
    pause_at = next(r["n"] for r in recs if r.get("action") == "pause")
    resume_at = next(r["n"] for r in recs if r.get("action") == "resume")
    entries = [
        r for r in recs
        if r["kind"] == "command" and r["msg"]["type"] == "SubmitOrder" and pause_at < r["n"] < resume_at
    ]  # fmt: skip
    assert entries == []  # paused: nothing opened
    assert isinstance(_inbound(runs / "t-rsi")[-1], m.CancelAll)
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert summary["strategies"]["rsi"]["stop_reason"] == "stopped"


def test_supervisor_restarts_a_session_when_the_order_kernel_stops_answering(
    tmp_path: Path,
) -> None:
    arts = artifacts(tmp_path)
    cfg = write_config(
        tmp_path, {"rsi": arts["rsi"]}, bars_per_second=100, kernel_timeout_ms=150,
        kernel_attempts=1, backoff_s=0.1, backoff_max_s=0.4, max_restarts=50,
    )  # fmt: skip
    with RunnerProcess(cfg) as runner:
        h = runner.wait_bars(40)
        pid = h["order_kernel"]["pid"]
        os.kill(pid, signal.SIGSTOP)  # the kernel hangs: replies time out, the session crashes
        try:
            wait_for(
                lambda: (
                    (runner.health() or {}).get("strategies", {}).get("rsi", {}).get("restarts")
                ),
                20,
                "a restart",
            )
            time.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert runner.wait(90) == 0, runner.output()
        out = runner.output()
    assert "session rsi crashed" in out and "rsi: recovered from" in out
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    rsi = summary["strategies"]["rsi"]
    assert rsi["restarts"] >= 1 and rsi["state"] == "finished"
    # nothing lost or doubled: each entry order accepted at most once, logs verify, import ok
    accepted = [
        e.message.client_order_id
        for e in read_order_log(tmp_path / "runs" / "t-rsi" / "orders.log")
        if isinstance(e.message, m.OrderAccepted)
    ]
    assert len(accepted) == len(set(accepted))
    state = ServiceState(settings_of(cfg))
    assert state.rebuild()["quarantined"] == {}
    alerts = state.query("SELECT * FROM alerts WHERE kind = 'strategy_restart'")
    assert alerts == []  # alerts from health come from the live refresh, not from a rebuild
    state.conn.close()


def test_runner_refuses_clashing_instruments(tmp_path: Path) -> None:
    from stratagem.service.runner import Runner, RunnerError

    arts = artifacts(tmp_path)
    spot = tmp_path / "sma-spot.yaml"
    spot.write_text(arts["sma"].read_text().replace("kind: perp", "kind: spot"))
    cfg = write_config(tmp_path, {"rsi": arts["rsi"], "sma": spot}, bars_per_second=0)
    with pytest.raises(RunnerError, match="one order kernel has one instrument table"):
        Runner(settings_of(cfg))


@pytest.mark.slow  # three runner processes (~15 s on a loaded 2-core box)
def test_a_killed_runner_takes_its_order_kernel_down_and_a_new_one_recovers(
    tmp_path: Path,
) -> None:
    arts = artifacts(tmp_path)
    cfg = write_config(tmp_path, {"rsi": arts["rsi"]}, bars_per_second=50)  # 744 bars: 15 s
    with RunnerProcess(cfg) as runner:
        h = runner.wait_bars(60)
        kernel_pid = h["order_kernel"]["pid"]
        # a second runner on the same state_dir is refused (one writer per session log)
        with RunnerProcess(cfg) as second:
            assert second.wait(60) == 2
            assert "another runner holds" in second.output()
        assert runner.proc is not None and runner.proc.poll() is None, runner.output()
        runner.signal(signal.SIGKILL)  # mid-run (the feed has not ended)
        runner.wait(10)

        def kernel_gone() -> bool:
            try:
                os.kill(kernel_pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(kernel_gone, 10, "the orphaned order kernel to exit")
    bars_before = len([r for r in _records(tmp_path / "runs" / "t-rsi") if r["kind"] == "bar"])
    cfg = write_config(tmp_path, {"rsi": arts["rsi"]}, bars_per_second=0)  # the rest at full speed
    with RunnerProcess(cfg) as runner:
        assert runner.wait(90) == 0, runner.output()
        assert "rsi: recovered from" in runner.output(), runner.output()
    recs = _records(tmp_path / "runs" / "t-rsi")
    bars = [r["ts_ns"] for r in recs if r["kind"] == "bar"]
    assert len(bars) == 744 > bars_before, (len(bars), bars_before)
    assert bars == sorted(set(bars))  # each bar exactly once
    resend = next(r for r in recs if r["kind"] == "control" and r["action"] == "resend")
    assert resend["begin_seq"] >= 1
    state = ServiceState(settings_of(cfg))
    assert state.rebuild()["quarantined"] == {}
    row = state.run("t-rsi")
    assert row["status"] == "ok" and row["bars"] == 744
    state.conn.close()
