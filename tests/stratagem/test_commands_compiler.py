"""The compiler's CLI commands, registered on a private parser (cli.py adds the module later)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from artifacts.io import load
from compiler.stub_server import StubOpenAI, completion
from stratagem.commands_compiler import register
from stratagem.errors import StratagemError, user_error_types

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "examples" / "drawings" / "long-position-layout.json"
DRAFT = json.loads((ROOT / "tests" / "compiler" / "fixtures" / "drafts.json").read_text())["good"]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stratagem")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_compile_drawings_offline_with_backtest_and_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, repo = tmp_path / "a.yaml", tmp_path / "repo"
    assert (
        run(
            [
                "compile",
                "--drawings",
                str(LAYOUT),
                "--symbol",
                "BTC/USDT",
                "--timeframe",
                "1h",
                "--out",
                str(out),
                "--backtest",
                "--repo",
                str(repo),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert load(out).entry.side == "long"
    assert "total_return_pct" in captured.out and "committed tv-btc-usdt-1h v1" in captured.out
    assert "warning:" in captured.err and "LineToolCallout" in captured.err
    assert run(["compile", "--drawings", str(LAYOUT), "--repo", str(repo), "--out", str(out)]) == 0
    capsys.readouterr()
    assert run(["history", "--repo", str(repo)]) == 0
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()] == ["v2", "v1"]
    assert run(["blame", "--repo", str(repo), "tv-btc-usdt-1h", "entry_4"]) == 0
    assert "turn 0, v1" in capsys.readouterr().out
    assert run(["diff", "--repo", str(repo), "tv-btc-usdt-1h"]) == 0
    assert "+version: 2" in capsys.readouterr().out
    assert (
        run(
            [
                "checkout",
                "--repo",
                str(repo),
                "tv-btc-usdt-1h",
                "1",
                "--out",
                str(tmp_path / "v1.yaml"),
            ]
        )
        == 0
    )
    assert load(tmp_path / "v1.yaml").version == 1


def test_compile_bad_layout_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"type": "LineToolHorzLine", "points": [{"price": "x"}]}]')
    with pytest.raises(user_error_types()) as err:
        run(["compile", "--drawings", str(bad), "--side", "long"])
    assert "$[0].points[0].price" in str(err.value)
    with pytest.raises(StratagemError, match="needs one of"):
        run(["compile"])


def test_compile_proposal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({
        "symbol": "BTC/USDT", "side": "short", "risk_pct": 0.5, "entry": 50000, "stop_loss": 51000,
        "take_profit": [{"price": 48000, "size_pct": 100}], "horizon": "24h", "confidence": 0.4,
        "rationale": "failed breakout",
    }))  # fmt: skip
    assert run(["compile", "--proposal", str(p), "--out", str(tmp_path / "o.yaml")]) == 0
    assert load(tmp_path / "o.yaml").name == "oneshot-btc-usdt-short"


def test_compile_prompt_and_chat_against_stub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approve = completion(json.dumps({"approve": True, "reasons": ["ok"]}))
    with StubOpenAI([{"body": completion(json.dumps(DRAFT))}, {"body": approve}]) as stub:
        repo = tmp_path / "repo"
        llm = ["--base-url", stub.base_url, "--llm-log", str(tmp_path / "calls.db")]
        assert (
            run(
                [
                    "compile",
                    "--prompt",
                    "sma cross",
                    "--repo",
                    str(repo),
                    "--out",
                    str(tmp_path / "x.yaml"),
                    *llm,
                ]
            )
            == 0
        )
        assert "committed sma-trend v1" in capsys.readouterr().out
        stub.add({"body": completion(json.dumps(DRAFT))}, {"body": approve})
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO("faster please\n/accept\n/quit\n"))
        assert run(["chat", "--repo", str(repo), "--name", "sma-trend", *llm]) == 0
        out = capsys.readouterr().out
        assert "proposed sma-trend v2" in out and "committed v2" in out and "+version: 2" in out


def test_review_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default service state (approvals) goes to ./runs
    faster = json.loads(json.dumps(DRAFT))
    faster["nodes"]["fast"]["params"]["period"] = 5
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"bars": 5, "metrics": {"sharpe": 0.1}}))
    with StubOpenAI([{"body": completion(json.dumps(DRAFT))}]) as stub:
        repo = tmp_path / "repo"
        llm = ["--base-url", stub.base_url, "--llm-log", str(tmp_path / "calls.db"), "--no-judge"]
        assert (
            run(
                [
                    "compile",
                    "--prompt",
                    "sma",
                    "--repo",
                    str(repo),
                    "--out",
                    str(tmp_path / "x.yaml"),
                    *llm,
                ]
            )
            == 0
        )
        plan = {"steps": ["speed up the fast average"]}
        stub.add({"body": completion(json.dumps(plan))}, {"body": completion(json.dumps(faster))})
        code = run(
            [
                "review",
                "sma-trend",
                "--repo",
                str(repo),
                "--run",
                str(run_dir),
                "--out",
                str(tmp_path / "r.json"),
                *llm,
            ]
        )
        out = capsys.readouterr().out
        report = json.loads((tmp_path / "r.json").read_text())
        statuses = [g["status"] for g in report["gates"]]
        assert statuses[0] == "passed", report["compile_errors"]
        assert code == (3 if "failed" in statuses else 0)
        assert "schema    passed" in out and "approval" in out
        assert (tmp_path / "runs").is_dir()  # kept in the test's directory, not the repo's
