"""Approve -> promote -> hot-swap, end to end: a review whose gates pass (stub model, real schema
and backtest gates), approved through the HTTP API while a real service runner trades v1 of the
artifact: the repository's head becomes v2, the session's strategy log shows the swap to v2,
and the approval's outcome says promoted + enforced. A review made against a head that moved
meanwhile is not promoted (reported); with no runner the promotion stands and the swap says
"no runner"; a reject does nothing further; `--on-approve record` only records."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from artifacts.io import content_hash, dumps, load, loads
from artifacts.schema import Artifact
from compiler.approvals import ServiceApprovals
from compiler.llm import LLMClient, LLMConfig
from compiler.loop import CompileLoop
from compiler.review import PaperRun, review
from compiler.stub_server import StubOpenAI, completion
from compiler.versioning import ArtifactRepo
from feeds.files import read_bars
from service.runner_util import DATA, REPO, TOKEN, RunnerProcess, settings_of, write_config
from stratagem.cli import main as cli_main
from stratagem.service import ServiceError, review_chain
from stratagem.service.api import create_app
from stratagem.service.settings import ReviewSettings, load_settings
from stratagem.service.state import ServiceState
from strategy_kernel.log import read as read_strategy_log

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = json.loads((REPO / "tests" / "compiler" / "fixtures" / "drafts.json").read_text())[
    "good"
]  # sma-trend v1: SMA 10/30 cross, BTC/USDT 1h
JUDGE_OK = completion(json.dumps({"approve": True, "reasons": ["fine"]}))
NAME = "sma-trend"


def _sma(fast: int, slow: int) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(json.dumps(GOOD))
    d["nodes"]["fast"]["params"]["period"] = fast
    d["nodes"]["slow"]["params"]["period"] = slow
    return d


def _paper_ok(artifact: Artifact, bars: pl.DataFrame, start: int) -> PaperRun:
    """The paper gate's replay is tested in tests/compiler; here it passes for both versions."""
    return PaperRun(bars.height, bars.height - start, 0.0, 1, 0, 0, 0, "end_of_stream")


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return read_bars(DATA).head(3000)


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    with StubOpenAI() as s:
        yield s


@pytest.fixture
def client(stub: StubOpenAI, tmp_path: Path) -> Iterator[LLMClient]:
    c = LLMClient(
        LLMConfig(base_url=stub.base_url, model="stub-model", timeout_s=2.0, max_retries=2,
                  backoff_s=0.5, log_path=str(tmp_path / "calls.sqlite")),
        sleep=lambda s: None,
    )  # fmt: skip
    yield c
    c.close()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ArtifactRepo]:
    r = ArtifactRepo(tmp_path / "repo")
    r.commit(loads(json.dumps(GOOD)), request="sma cross")
    yield r
    r.close()


class Reviews:
    """Builds reviews of `sma-trend` that pass schema, backtest and paper, waiting for approval."""

    def __init__(
        self, repo: ArtifactRepo, state: ServiceState, stub: StubOpenAI, client: LLMClient,
        bars: pl.DataFrame, run_dir: Path,
    ) -> None:  # fmt: skip
        self.repo, self.state, self.stub, self.client = repo, state, stub, client
        self.bars, self.run_dir = bars, run_dir
        run_dir.mkdir(exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"bars": 10, "metrics": {"sharpe": -1}}))

    def make(self, fast: int) -> tuple[str, Artifact]:
        self.stub.add({"body": completion(json.dumps(_sma(fast, 30)))}, {"body": JUDGE_OK})
        report = review(
            self.repo, NAME, self.run_dir, CompileLoop(self.client, plan=False), self.bars,
            paper_hours=48, paper_runner=_paper_ok, approvals=ServiceApprovals(self.state),
        )  # fmt: skip
        assert [g.status for g in report.gates] == ["passed", "passed", "passed", "pending"], [
            (g.name, g.detail) for g in report.gates
        ]
        assert report.review_id is not None and report.candidate is not None
        return report.review_id, report.candidate


def _steps(state: ServiceState) -> list[tuple[str, str, str]]:
    return [
        (r["approval_id"], r["step"], r["status"])
        for r in state.journal.records()
        if r["kind"] == "approval_step"
    ]


def test_approve_promotes_and_hot_swaps_the_running_session(
    tmp_path: Path, repo: ArtifactRepo, stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    v1 = tmp_path / "sma-trend-v1.yaml"
    shutil.copyfile(repo.path / NAME / "artifact.yaml", v1)
    cfg = write_config(tmp_path, {"sma": v1}, bars_per_second=50)
    state = ServiceState(settings_of(cfg))
    assert state.settings.review.on_approve == "promote_and_swap"  # the default
    reviews = Reviews(repo, state, stub, client, bars, tmp_path / "evidence")
    rid, candidate = reviews.make(5)
    stale, _ = reviews.make(7)  # also made against v1: stale once `rid` is promoted
    api = TestClient(create_app(state))
    with RunnerProcess(cfg) as runner:
        runner.wait_bars(40)
        r = api.post(f"/api/v1/approvals/{rid}/approve", headers=AUTH, json={"note": "ship"})
        assert r.status_code == 200, r.text
        row = r.json()
        assert row["status"] == "approved" and row["decided_by"] == "api:trader"
        promoted, swap = row["outcome"]["promote"], row["outcome"]["swap"]
        assert (promoted["status"], promoted["version"], promoted["ok"]) == ("promoted", 2, True)
        assert (swap["status"], swap["enforced"], swap["sessions"]) == ("enforced", True, ["sma"])
        head = repo.head_artifact(NAME)
        assert head is not None and head.version == 2
        assert content_hash(head) == content_hash(candidate) == promoted["artifact_sha"]
        assert promoted["commit"] == repo.history(NAME)[0].commit

        # a review made against v1 cannot replace v2: approved (recorded), not promoted, said so
        r2 = api.post(f"/api/v1/approvals/{stale}/approve", headers=AUTH, json={}).json()
        assert r2["status"] == "approved"
        assert r2["outcome"]["promote"]["status"] == "refused"
        assert "the head is now v2: run the review again" in r2["outcome"]["promote"]["detail"]
        assert r2["outcome"]["swap"]["status"] == "skipped" and not r2["outcome"]["swap"]["ok"]
        assert repo.head_artifact(NAME).version == 2  # type: ignore[union-attr]

        # a swap the session refuses (here: the entry side changes) is reported, not hidden
        short = loads(json.dumps({**_sma(5, 30), "version": 3,
                                  "entry": {**GOOD["entry"], "side": "short"}}))  # fmt: skip
        other = state.request_approval(NAME, 3, "hand-made", {})["approval_id"]
        text = dumps(short)
        refused = review_chain.swap_to(
            state, other, review_chain.Promoted(NAME, 3, content_hash(short), text), "test"
        )["outcome"]["swap"]
        assert (refused["status"], refused["ok"], refused["enforced"]) == ("refused", False, False)
        assert "keeps the instrument and the entry side" in refused["detail"]
        runner.ctrl_c()
        assert runner.wait(60) == 0, runner.output()

    # the session's own log: the swap, acknowledged at a bar, to exactly the promoted version
    recs = list(read_strategy_log(tmp_path / "runs" / "t-sma" / "strategy.log.jsonl"))
    swaps = [r for r in recs if r["kind"] == "control" and r["action"] == "swap"]
    assert len(swaps) == 1 and swaps[0]["version"] == 2
    assert swaps[0]["content_hash"] == content_hash(candidate)
    assert f"review {rid} approved" in swaps[0]["reason"]
    staged = load(tmp_path / "runs" / "t-sma" / swaps[0]["artifact"])
    assert content_hash(staged) == content_hash(candidate)
    reparam = next(r for r in recs if r["kind"] == "reparam")
    assert (reparam["old_version"], reparam["new_version"]) == (1, 2)

    # the approval record, the control requests and the dashboard's alerts all say what happened
    listed = {a["approval_id"]: a for a in api.get("/api/v1/approvals", headers=AUTH).json()}
    assert listed[rid]["outcome"]["swap"]["enforced"] is True
    assert listed[stale]["outcome"]["promote"]["ok"] is False
    controls = api.get("/api/v1/control", headers=AUTH).json()
    assert [(c["action"], c["scope"], c["state"]) for c in controls] == [
        ("swap", "sma", "enforced"),
        ("swap", "sma", "refused"),
    ]
    alerts = {a["alert_id"]: a for a in api.get("/api/v1/alerts", headers=AUTH).json()}
    assert alerts[f"approval:{rid}:swap"]["severity"] == "info"
    assert alerts[f"approval:{stale}:promote"]["severity"] == "warning"
    assert "run the review again" in alerts[f"approval:{stale}:promote"]["message"]
    assert _steps(state) == [
        (rid, "promote", "promoted"), (rid, "swap", "enforced"),
        (stale, "promote", "refused"), (stale, "swap", "skipped"), (other, "swap", "refused"),
    ]  # fmt: skip
    state.conn.close()


def test_no_runner_reject_and_record_only(
    tmp_path: Path,
    repo: ArtifactRepo,
    stub: StubOpenAI,
    client: LLMClient,
    bars: pl.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, {}, bars_per_second=100)
    state = ServiceState(settings_of(cfg))
    reviews = Reviews(repo, state, stub, client, bars, tmp_path / "evidence")
    rejected, _ = reviews.make(5)
    api = TestClient(create_app(state))

    # reject: recorded, nothing else (no promotion, no swap, no step records)
    r = api.post(f"/api/v1/approvals/{rejected}/reject", headers=AUTH, json={"note": "no"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert r.json()["outcome"] is None
    assert repo.head_artifact(NAME).version == 1  # type: ignore[union-attr]
    assert _steps(state) == [] and state.query("SELECT * FROM control_requests") == []

    # `--on-approve record` (CLI): recorded, the promotion skipped and said how to do it
    recorded, _ = reviews.make(5)
    common = ["--repo", str(repo.path), "--config", str(cfg)]
    assert cli_main(["review", "--approve", recorded, "--on-approve", "record", *common]) == 0
    out = capsys.readouterr().out
    assert (
        f"promote: skipped - on_approve = record: promote with `stratagem review --promote {recorded}`"
        in out
    )
    assert repo.head_artifact(NAME).version == 1  # type: ignore[union-attr]
    assert cli_main(["review", "--on-approve", "promote", *common]) == 2  # needs --approve
    assert "--on-approve goes with --approve ID" in capsys.readouterr().err

    # no runner: promoted (the head is v2), the swap reports "no runner", nothing was sent
    rid, candidate = reviews.make(5)
    row = api.post(f"/api/v1/approvals/{rid}/approve", headers=AUTH, json={}).json()
    assert row["outcome"]["promote"]["status"] == "promoted"
    swap = row["outcome"]["swap"]
    assert (swap["status"], swap["enforced"], swap["ok"]) == ("no runner", False, True)
    assert "no service runner" in swap["detail"] and "v2 is the head" in swap["detail"]
    head = repo.head_artifact(NAME)
    assert head is not None and content_hash(head) == content_hash(candidate)
    assert state.query("SELECT * FROM control_requests") == []
    assert not (tmp_path / "state" / "promoted").exists()  # nothing staged for a runner
    # the review recorded-only earlier is now stale (v1 -> v2): promoting it is refused
    assert cli_main(["review", "--promote", recorded, *common]) == 2
    assert "the head is now v2" in capsys.readouterr().err
    assert _steps(state) == [
        (recorded, "promote", "skipped"), (rid, "promote", "promoted"), (rid, "swap", "no runner"),
    ]  # fmt: skip
    # a rebuilt read model shows the same approvals and alerts (all from the journal)
    before = state.query("SELECT * FROM alerts ORDER BY alert_id")
    state.rebuild(tmp_path / "runs")
    assert state.query("SELECT * FROM alerts ORDER BY alert_id") == before
    assert state.approval(rid)["outcome"]["swap"]["status"] == "no runner"
    state.conn.close()


def test_on_approve_setting_is_validated(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[review]\non_approve = "promote"\n')
    assert load_settings(cfg, env={}).review == ReviewSettings(on_approve="promote")
    cfg.write_text('[review]\non_approve = "yolo"\n')
    with pytest.raises(ServiceError, match=r"review\.on_approve: Input should be 'record'"):
        load_settings(cfg, env={})
