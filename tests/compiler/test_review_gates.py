"""The review gates end to end with the stub model: schema -> backtest -> paper (replayed over
the bar bus into `run_paper`, simulated venue) -> approval (the service's approvals store) ->
promotion as the new head version with every gate in its provenance."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from artifacts.graph import check
from artifacts.io import content_hash, load, loads
from artifacts.schema import Artifact
from compiler.approvals import ServiceApprovals
from compiler.llm import LLMClient
from compiler.loop import CompileLoop
from compiler.review import (
    PaperCriteria,
    PaperRun,
    ReviewError,
    decide,
    paper_gate,
    pending_reviews,
    promote,
    replay_paper,
    review,
)
from compiler.stub_server import StubOpenAI, completion
from compiler.versioning import ArtifactRepo
from stratagem.cli import main as cli_main
from stratagem.service.settings import ServiceSettings
from stratagem.service.state import ServiceState
from strategy_kernel.backtest import run_backtest
from tests.compiler._helpers import ROOT, fixture_json

GOOD = fixture_json("drafts.json")["good"]
APPROVE = completion(json.dumps({"approve": True, "reasons": ["fine"]}))


def _sma(fast: int, slow: int) -> dict[str, Any]:
    d = json.loads(json.dumps(GOOD))
    d["nodes"]["fast"]["params"]["period"] = fast
    d["nodes"]["slow"]["params"]["period"] = slow
    return d


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ArtifactRepo]:
    r = ArtifactRepo(tmp_path / "repo")
    r.commit(loads(json.dumps(GOOD)), request="sma cross")
    yield r
    r.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"bars": 10, "metrics": {"sharpe": -1.0}}))
    return d


def _settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(
        db_path=tmp_path / "svc" / "rm.sqlite",
        journal_path=tmp_path / "svc" / "journal.jsonl",
        runs_dir=tmp_path / "svc" / "runs",
    )


@pytest.fixture
def approvals(tmp_path: Path) -> Iterator[ServiceApprovals]:
    a = ServiceApprovals(ServiceState(_settings(tmp_path)))
    yield a
    a.close()


def test_replay_paper_equals_the_backtest_over_the_window(bars: pl.DataFrame) -> None:
    art = load(ROOT / "examples" / "rsi-reversion.yaml")
    fed = bars.tail(800)
    run = replay_paper(art, fed, 200)
    bt = run_backtest(art, check(art), fed, session_id="paper-gate")  # the oracle
    assert (run.bars, run.window_bars, run.feed_gaps, run.out_of_order) == (800, 600, 0, 0)
    assert run.stop_reason == "end_of_stream"
    assert run.pnl == pytest.approx(float(bt.equity[-1] - bt.equity[199]), abs=1e-6)
    window_ts = int(fed["ts_ns"][200])
    assert run.trades == sum(1 for t in bt.trades if t.entry_ts_ns >= window_ts) > 0
    with pytest.raises(ReviewError, match="nothing to paper trade"):
        replay_paper(art, fed, 800)


def _fake(runs: dict[str, PaperRun]) -> Any:
    def runner(artifact: Artifact, bars: pl.DataFrame, start: int) -> PaperRun:
        assert bars.height - start == 48  # 48 h of 1h bars after the warm-up prefix
        run = runs[artifact.name]
        return run if run.bars >= 0 else dataclasses.replace(run, bars=bars.height)

    return runner


def _run(**kw: Any) -> PaperRun:
    # bars=-1: the fake delivers every bar it was fed
    base = dict(bars=-1, window_bars=48, pnl=0.0, trades=1, refusals=0, feed_gaps=0,
                out_of_order=0, stop_reason="end_of_stream")  # fmt: skip
    return PaperRun(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cand", "cur", "status", "words"),
    [
        (_run(pnl=5.0), _run(pnl=5.0), "passed", "candidate PnL +5.00"),
        (_run(pnl=4.9), _run(pnl=5.0), "failed", "worse than the current version's +5.00"),
        (_run(refusals=6), _run(), "failed", "6 risk refusals in the window > 5 allowed"),
        (_run(feed_gaps=1), _run(), "failed", "candidate: the feed had 1 gap"),
        (_run(), _run(stop_reason="idle", bars=40), "failed", "current: the feed stopped (idle)"),
    ],
)
def test_paper_gate_criteria(
    bars: pl.DataFrame, cand: PaperRun, cur: PaperRun, status: str, words: str
) -> None:
    current = loads(json.dumps(GOOD))
    candidate = loads(json.dumps({**_sma(5, 30), "name": "cand"}))
    gate, info = paper_gate(
        candidate, current, bars.head(500), 48, _fake({"cand": cand, "sma-trend": cur})
    )
    assert (gate.name, gate.status) == ("paper", status) and words in gate.detail
    assert (
        info["window_bars"] == 48 and info["warmup_bars"] == 29
    )  # SMA 30: 29 bars before it has a value
    assert info["window_to_ns"] == int(bars["ts_ns"][499])


def test_paper_gate_needs_enough_recorded_bars(bars: pl.DataFrame) -> None:
    current = loads(json.dumps(GOOD))
    gate, info = paper_gate(current, current, bars.head(10), 24)
    assert gate.status == "failed" and "cannot cover 24 h" in gate.detail and info == {}
    gate, _ = paper_gate(
        current, current, bars.head(200), 24, criteria=PaperCriteria(min_pnl_edge=1.0)
    )
    assert gate.status == "failed" and "by more than 1" in gate.detail  # same PnL, edge asked


def test_review_waits_for_approval_then_promotes(
    repo: ArtifactRepo,
    run_dir: Path,
    stub: StubOpenAI,
    client: LLMClient,
    bars: pl.DataFrame,
    approvals: ServiceApprovals,
) -> None:
    stub.add({"body": completion(json.dumps(_sma(5, 30)))}, {"body": APPROVE})
    loop = CompileLoop(client, plan=False)
    report = review(repo, "sma-trend", run_dir, loop, bars, paper_hours=120, approvals=approvals)
    assert [(g.name, g.status) for g in report.gates] == [
        ("schema", "passed"),
        ("backtest", "passed"),
        ("paper", "passed"),
        ("approval", "pending"),
    ]
    rid = report.review_id
    assert rid is not None and not report.promotable
    assert report.paper["candidate"]["stop_reason"] == "end_of_stream"
    # the request sits in the service's approvals table, where the API and the bot read it
    row = approvals.state.approval(rid)
    assert row["status"] == "pending" and row["name"] == "sma-trend" and row["version"] == 2
    assert json.loads(row["payload"])["base_version"] == 1
    # nothing replaced the running version yet, and the pending review is not in git's way
    assert repo.head_artifact("sma-trend").version == 1  # type: ignore[union-attr]
    assert not repo.repo.is_dirty(untracked_files=True)
    assert pending_reviews(repo)[0]["status"] == "pending"
    with pytest.raises(ReviewError, match="is pending, not approved"):
        promote(repo, approvals, rid)
    # a person approves (here through the store, as the dashboard or the bot would)
    v = decide(repo, approvals, rid, approve=True, by="alice", note="looks good")
    assert v is not None and v.version == 2 and "promoted" in v.message
    head = repo.head_artifact("sma-trend")
    assert head is not None and head.version == 2
    assert content_hash(head) == content_hash(report.candidate)  # type: ignore[arg-type]
    prov = head.provenance
    assert [(g.name, g.status) for g in prov.gates] == [
        ("schema", "passed"),
        ("backtest", "passed"),
        ("paper", "passed"),
        ("approval", "passed"),
    ]
    assert prov.gates[3].detail == "approved by alice: looks good"
    assert prov.base_url_class == "local" and prov.model == "stub-model"
    assert prov.conversation_turn == 0 and prov.backtest is not None
    assert prov.backtest.window_to_ns == int(bars["ts_ns"][-1])
    trace = (repo.path / "sma-trend" / "trace.json").read_bytes()
    assert prov.trace_sha == hashlib.sha256(trace).hexdigest()
    rev = json.loads(trace)["review"]
    assert rev["approval"]["decided_by"] == "alice" and rev["paper"]["window_bars"] == 120
    assert approvals.state.approval(rid)["status"] == "approved"
    with pytest.raises(ReviewError, match="already promoted"):
        promote(repo, approvals, rid)
    with pytest.raises(ReviewError, match="no review 'nope'"):
        promote(repo, approvals, "nope")


def test_rejected_or_stale_reviews_are_never_promoted(
    repo: ArtifactRepo,
    run_dir: Path,
    stub: StubOpenAI,
    client: LLMClient,
    bars: pl.DataFrame,
    approvals: ServiceApprovals,
) -> None:
    loop = CompileLoop(client, plan=False)
    stub.add({"body": completion(json.dumps(_sma(5, 30)))}, {"body": APPROVE})
    first = review(repo, "sma-trend", run_dir, loop, bars, paper_hours=120, approvals=approvals)
    assert first.review_id is not None
    assert decide(repo, approvals, first.review_id, approve=False, by="bob", note="no") is None
    assert approvals.state.approval(first.review_id)["status"] == "rejected"
    assert repo.head_artifact("sma-trend").version == 1  # type: ignore[union-attr]
    with pytest.raises(ReviewError, match="already rejected"):
        decide(repo, approvals, first.review_id, approve=True, by="bob")
    with pytest.raises(ReviewError, match="is rejected, not approved"):
        promote(repo, approvals, first.review_id)
    # a review made against v1 cannot replace a head that moved on meanwhile
    stub.add({"body": completion(json.dumps(_sma(7, 30)))}, {"body": APPROVE})
    second = review(repo, "sma-trend", run_dir, loop, bars, paper_hours=120, approvals=approvals)
    assert second.review_id is not None and second.review_id != first.review_id
    repo.commit(loads(json.dumps(_sma(10, 40))), request="hand edit")
    with pytest.raises(ReviewError, match="the head is now v2: run the review again"):
        decide(repo, approvals, second.review_id, approve=True, by="carol")
    assert repo.head_artifact("sma-trend").nodes["slow"].params["period"] == 40  # type: ignore[union-attr]


def test_a_failed_paper_gate_asks_nobody(
    repo: ArtifactRepo,
    run_dir: Path,
    stub: StubOpenAI,
    client: LLMClient,
    bars: pl.DataFrame,
    approvals: ServiceApprovals,
) -> None:
    stub.add({"body": completion(json.dumps(_sma(15, 20)))}, {"body": APPROVE})
    report = review(
        repo, "sma-trend", run_dir, CompileLoop(client, plan=False), bars, paper_hours=48,
        approvals=approvals,
    )  # fmt: skip
    assert [(g.name, g.status) for g in report.gates] == [
        ("schema", "passed"),
        ("backtest", "passed"),
        ("paper", "failed"),
        ("approval", "skipped"),
    ]
    assert "worse than the current version's" in report.gates[2].detail
    assert report.review_id is None and pending_reviews(repo) == []
    assert approvals.state.query("SELECT count(*) AS n FROM approvals")[0]["n"] == 0


def test_review_cli_gates_approve_promote(
    repo: ArtifactRepo,
    run_dir: Path,
    stub: StubOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "bars.csv"
    from feeds.files import read_bars

    read_bars(ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv").head(3000).write_csv(data)
    config = tmp_path / "service.toml"
    s = _settings(tmp_path)
    config.write_text(f'db_path = "{s.db_path}"\njournal_path = "{s.journal_path}"\n')
    common = ["--repo", str(repo.path), "--config", str(config)]
    llm = ["--base-url", stub.base_url, "--model", "stub-model", "--llm-log",
           str(tmp_path / "calls.sqlite")]  # fmt: skip
    plan = completion(json.dumps({"steps": ["faster fast average"]}))  # the request is long
    stub.add({"body": plan}, {"body": completion(json.dumps(_sma(5, 30)))}, {"body": APPROVE})
    args = ["review", "sma-trend", "--run", str(run_dir), "--data", str(data),
            "--paper-hours", "120", *common, *llm]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "paper     passed" in out and "approval  pending" in out
    rid = out.split("\nreview ", 1)[1].split(":", 1)[0]
    assert cli_main(["review", "--list", *common]) == 0
    assert f"{rid}  sma-trend (of v1)  pending" in capsys.readouterr().out
    assert cli_main(["review", "--promote", rid, *common]) == 2  # not approved yet
    assert "not approved" in capsys.readouterr().err
    assert cli_main(["review", "--approve", rid, "--by", "dave", *common]) == 0
    assert "promoted: committed v2" in capsys.readouterr().out
    assert cli_main(["history", "sma-trend", "--repo", str(repo.path)]) == 0
    assert f"review {rid} promoted" in capsys.readouterr().out
    assert cli_main(["review", "--approve", rid, "--reject", rid, *common]) == 2
    assert cli_main(["review", *common]) == 2
    assert "review needs NAME and --run" in capsys.readouterr().err
