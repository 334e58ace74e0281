"""Artifacts in git: commits with provenance and trace, history, diff, checkout, blame."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from artifacts.errors import ArtifactError
from artifacts.io import content_hash, dumps, load, loads
from artifacts.schema import OneShot, Provenance, ProvenanceBacktest, ProvenanceGate
from compiler.errors import VersioningError
from compiler.versioning import ArtifactRepo
from tests.compiler._helpers import ROOT

RSI = ROOT / "examples" / "rsi-reversion.yaml"


def _repo(tmp_path: Path) -> ArtifactRepo:
    repo = ArtifactRepo(tmp_path / "arts")
    with repo.repo.config_writer() as cw:
        cw.set_value("user", "name", "test")
        cw.set_value("user", "email", "test@example.invalid")
    return repo


def test_commit_history_diff_checkout_blame(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    v1_art = load(RSI)
    v1 = repo.commit(
        v1_art,
        trace={"messages": ["hi"]},
        provenance={
            "model": "m",
            "host_class": "loopback",
            "prompt_sha": "p",
            "trace_sha": "t",
            "backtest": {"trades": 3},
        },
        node_turns={"rsi": 0, "rsi_prev": 0, "was_oversold": 0, "turning_up": 0, "entry_ok": 0},
        request="buy oversold RSI",
    )
    nodes = dict(v1_art.nodes)
    from artifacts.schema import ThresholdNode

    nodes["was_oversold"] = ThresholdNode(kind="threshold", input="rsi_prev", op="<", value=25)
    v2_art = v1_art.model_copy(update={"nodes": nodes})
    v2 = repo.commit(v2_art, node_turns={"was_oversold": 2}, request="make oversold 25")
    assert (v1.version, v2.version) == (1, 2) and v2.parent_commit == v1.commit
    hist = repo.history("rsi-reversion")
    assert [h.version for h in hist] == [2, 1] and hist[1].artifact_sha == content_hash(v1_art)
    assert repo.names() == ["rsi-reversion"]
    d = repo.diff("rsi-reversion")
    assert "-    value: 30.0" in d and "+    value: 25.0" in d and "-version: 1" in d
    out = tmp_path / "old.yaml"
    assert repo.checkout("rsi-reversion", "1", out).version == 1
    assert load(out).nodes["was_oversold"].value == 30  # type: ignore[union-attr]
    assert repo.artifact_at("rsi-reversion", v2.commit[:8]).version == 2
    b = repo.blame("rsi-reversion", "was_oversold")
    assert (b.turn, b.version, b.request, b.commit) == (2, 2, "make oversold 25", v2.commit)
    b = repo.blame("rsi-reversion", "rsi")
    assert (b.turn, b.version, b.commit) == (0, 1, v1.commit)
    prov = json.loads((repo.path / "rsi-reversion" / "provenance.json").read_text())
    assert prov["parent_commit"] == v1.commit and prov["parent_version"] == 1
    first = json.loads(repo._read_at(v1.commit, "rsi-reversion", "provenance.json") or "{}")
    trace_bytes = (repo._read_at(v1.commit, "rsi-reversion", "trace.json") or "").encode()
    assert first["model"] == "m" and first["backtest"] == {"trades": 3}
    # the trace hash is computed from the committed file, whatever the caller claimed
    assert first["trace_sha"] == hashlib.sha256(trace_bytes).hexdigest() != "t"
    assert json.loads(trace_bytes) == {"messages": ["hi"]}
    assert not repo.repo.is_dirty(untracked_files=True)
    # the typed provenance in the committed artifact says the same, outside the content hash
    p1 = repo.artifact_at("rsi-reversion", "1").provenance
    assert p1.trace_sha == first["trace_sha"] and p1.model == "m" and p1.prompt_sha == "p"
    assert p1.backtest is not None and p1.backtest.trades == 3 and p1.backtest.sharpe is None
    assert p1.base_url_class is None  # a model without an endpoint class is not guessed
    assert repo.artifact_at("rsi-reversion", "1").nodes == v1_art.nodes
    assert hist[1].artifact_sha == content_hash(repo.artifact_at("rsi-reversion", "1"))
    p2 = repo.artifact_at("rsi-reversion", "2").provenance
    assert p2.base_url_class == "none" and p2.parent == content_hash(v1_art)  # no model: none


def test_typed_provenance_and_one_shot_schema(tmp_path: Path) -> None:
    art = load(RSI)
    assert art.provenance.trace_sha is None and art.one_shot is None  # old artifacts still load
    stamped = art.model_copy(
        update={
            "provenance": Provenance(
                base_url_class="local",
                trace_sha="a" * 64,
                conversation_turn=3,
                backtest=ProvenanceBacktest(trades=2, sharpe=1.5, window_from_ns=0),
                gates=[ProvenanceGate(name="paper", status="passed", detail="ok")],
            )
        }
    )
    assert content_hash(stamped) == content_hash(art)  # provenance never changes behaviour
    again = loads(dumps(stamped))
    assert again.provenance == stamped.provenance
    with pytest.raises(ArtifactError, match="trace_sha"):
        loads(dumps(art).replace("compiler: hand-written", "compiler: x\n  trace_sha: nothex"))
    with pytest.raises(ArtifactError, match="sharpe"):
        loads(dumps(stamped).replace("sharpe: 1.5", "sharpe: .nan"))
    one = art.model_copy(
        update={"one_shot": OneShot(created_at="2024-01-01T00:00:00Z", expires_at=2 * 10**18)}
    )
    assert one.one_shot is not None and one.one_shot.created_at == 1_704_067_200 * 10**9
    assert content_hash(one) != content_hash(art)  # the expiry acts: it is in the hash
    assert loads(dumps(one)).one_shot == one.one_shot
    with pytest.raises(ArtifactError, match="cannot expire before it exists"):
        loads(dumps(one).replace("expires_at: 2000000000000000000", "expires_at: 5"))
    with pytest.raises(ArtifactError, match="no time zone"):
        loads(
            dumps(one).replace(
                "expires_at: 2000000000000000000", "expires_at: '2030-01-01T00:00:00'"
            )
        )
    iso = loads(
        dumps(one).replace(
            "expires_at: 2000000000000000000", "expires_at: '2024-01-02T00:00:00.5+01:00'"
        )
    )
    assert (
        iso.one_shot is not None
        and iso.one_shot.expires_at == (1_704_067_200 + 86_400 - 3_600) * 10**9 + 500_000_000
    )


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(VersioningError, match="not an artifact repository"):
        ArtifactRepo(tmp_path / "none", create=False)
    repo = _repo(tmp_path)
    assert repo.history("x") == []
    repo.commit(load(RSI))
    with pytest.raises(VersioningError, match="no strategy named"):
        repo.history("nope")
    with pytest.raises(VersioningError, match="no version 7"):
        repo.artifact_at("rsi-reversion", "7")
    with pytest.raises(VersioningError, match="no node 'ghost'"):
        repo.blame("rsi-reversion", "ghost")
    with pytest.raises(VersioningError, match="unknown revision"):
        repo.artifact_at("rsi-reversion", "zzzzzzzzz")
    assert repo.diff("rsi-reversion") == ""


def test_offline_compiles_commit_typed_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stratagem.cli import main

    repo_dir = tmp_path / "arts"
    layout = ROOT / "examples" / "drawings" / "long-position-layout.json"
    args = ["compile", "--drawings", str(layout), "--repo", str(repo_dir), "--backtest",
            "--out", str(tmp_path / "d.yaml")]  # fmt: skip
    assert main(args) == 0
    with ArtifactRepo(repo_dir, create=False) as repo:
        (name,) = repo.names()
        prov = repo.artifact_at(name, "1").provenance
        trace = (repo.path / name / "trace.json").read_bytes()
    assert prov.base_url_class == "none" and prov.model is None  # no model was involved
    assert prov.trace_sha == hashlib.sha256(trace).hexdigest()
    assert prov.backtest is not None and prov.backtest.bars == 9000  # the bundled sample
    assert prov.backtest.window_from_ns == 1_704_067_200 * 10**9  # 2024-01-01, the first bar
    proposal = tmp_path / "p.json"
    proposal.write_text(
        json.dumps(
            {"symbol": "BTC/USDT", "side": "long", "risk_pct": 1, "entry": 42000,
             "stop_loss": 41000, "take_profit": [{"price": 44000, "size_pct": 100}],
             "horizon": "24h", "confidence": 0.5, "rationale": "test",
             "created_at": "2024-01-01T00:00:00Z"}
        )
    )  # fmt: skip
    capsys.readouterr()
    assert main(["compile", "--proposal", str(proposal), "--out", str(tmp_path / "p.yaml")]) == 0
    assert "one-shot: no entry from 2024-01-02T00:00:00Z on" in capsys.readouterr().err
    one = load(tmp_path / "p.yaml").one_shot
    assert one is not None and one.expires_at - one.created_at == 24 * 3_600 * 10**9
