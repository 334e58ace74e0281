"""Review -> recompile gates, and the chat conversation API (no TTY needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from artifacts.io import content_hash, dump, loads
from compiler.chat import ChatSession, run_terminal
from compiler.errors import CompilerError
from compiler.llm import LLMClient
from compiler.loop import CompileLoop, backtest_summary, split_holdout
from compiler.review import _score, review, summarize_run
from compiler.stub_server import StubOpenAI, completion
from compiler.versioning import ArtifactRepo
from stratagem.cli import main as cli_main
from tests.compiler._helpers import fixture_json

DRAFTS = fixture_json("drafts.json")
APPROVE = completion(json.dumps({"approve": True, "reasons": ["fine"]}))


def _faster() -> dict[str, object]:
    d = json.loads(json.dumps(DRAFTS["good"]))
    d["nodes"]["fast"]["params"]["period"] = 5
    return d


@pytest.fixture
def repo(tmp_path: Path) -> ArtifactRepo:
    r = ArtifactRepo(tmp_path / "repo")
    r.commit(loads(json.dumps(DRAFTS["good"])), request="sma cross")
    return r


def test_summarize_run_reads_a_real_run(repo: ArtifactRepo, tmp_path: Path) -> None:
    art = tmp_path / "a.yaml"
    dump(repo.head_artifact("sma-trend"), art)  # type: ignore[arg-type]
    run_dir = tmp_path / "run"
    assert (
        cli_main(
            ["run", str(art), "--to", "2024-03-01", "--out", str(run_dir), "--quiet", "--no-plots"]
        )
        == 0
    )
    ev = summarize_run(run_dir)
    assert ev["artifact"]["name"] == "sma-trend" and ev["bars"] == 1440
    assert ev["metrics"]["trades"] == sum(ev["exit_reasons"].values())
    assert ev["log_records"]["bar"] == 1440
    with pytest.raises(CompilerError, match=r"no metrics.json"):
        summarize_run(tmp_path)


def test_review_gates_without_an_approvals_store(
    repo: ArtifactRepo, stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(
        json.dumps({"bars": 10, "metrics": {"sharpe": -1.0, "trades": 2}})
    )
    stub.add({"body": completion(json.dumps(_faster()))}, {"body": APPROVE})
    report = review(
        repo, "sma-trend", run_dir, CompileLoop(client, plan=False), bars, paper_hours=120
    )
    assert [g.name for g in report.gates] == ["schema", "backtest", "paper", "approval"]
    assert report.candidate is not None and report.candidate.version == 2
    _, held = split_holdout(bars, 0.3)
    current = repo.head_artifact("sma-trend")
    assert current is not None
    better = _score(backtest_summary(report.candidate, held)) > _score(
        backtest_summary(current, held)
    )
    assert better and report.gates[1].status == "passed"
    assert report.gates[2].status == "passed" and report.paper["window_bars"] == 120
    assert report.gates[3].status == "pending" and "no approvals store" in report.gates[3].detail
    assert not report.promotable and report.review_id is None
    assert "Review the running strategy" in stub.requests[0]["messages"][1]["content"]
    stub.add(*[{"body": completion("{nope")}] * 3)
    failed = review(repo, "sma-trend", run_dir, CompileLoop(client, plan=False), bars)
    assert failed.gates[0].status == "failed" and len(failed.compile_errors) == 3
    assert [g.status for g in failed.gates[1:]] == ["skipped"] * 3
    assert json.loads(json.dumps(failed.as_dict()))["candidate"] is None


def test_chat_session_propose_accept_reject(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame, tmp_path: Path
) -> None:
    repo = ArtifactRepo(tmp_path / "repo")
    chat = ChatSession(CompileLoop(client), repo, "BTC/USDT", "1h", bars, conversation_id="tg-42")
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))}, {"body": APPROVE})
    reply = chat.send("sma cross please")
    assert {r["conversation_id"] for r in client.log.rows()} == {"tg-42"}
    assert reply.result is not None and "+name: sma-trend" in reply.diff
    with pytest.raises(CompilerError, match="nothing to reject"):
        ChatSession(CompileLoop(client), repo, "BTC/USDT", "1h", bars).reject()
    v = chat.accept()
    assert v.version == 1 and repo.blame("sma-trend", "golden").turn == 0
    stub.add({"body": completion(json.dumps(_faster()))}, {"body": APPROVE})
    reply = chat.send("faster")
    assert "-      period: 10" in reply.diff and "+      period: 5" in reply.diff
    chat.accept()
    assert repo.blame("sma-trend", "fast").turn == 2 and repo.blame("sma-trend", "slow").turn == 0
    prov = repo.artifact_at("sma-trend", "2").provenance
    assert prov.conversation_turn == 2 and prov.base_url_class == "local"
    assert prov.backtest is not None and prov.backtest.bars == 900  # the held-out 30 %
    assert prov.parent == content_hash(repo.artifact_at("sma-trend", "1"))
    stub.add(*[{"body": completion("{")}] * 3)
    assert "compile failed" in chat.send("break it").text
    with pytest.raises(CompilerError, match="nothing to accept"):
        chat.accept()


def test_terminal_loop(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame, tmp_path: Path
) -> None:
    chat = ChatSession(CompileLoop(client), ArtifactRepo(tmp_path / "r"), "BTC/USDT", "1h", bars)
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))}, {"body": APPROVE})
    out = io.StringIO()
    run_terminal(chat, io.StringIO("/show\n/accept\nsma\n/reject\n/quit\nnot read\n"), out)
    text = out.getvalue()
    assert "(no artifact yet)" in text and "error: nothing to accept" in text
    assert "proposed sma-trend v1" in text and "rejected" in text
    assert len(stub.requests) == 2
