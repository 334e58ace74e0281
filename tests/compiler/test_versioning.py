"""Artifacts in git: commits with provenance and trace, history, diff, checkout, blame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts.io import content_hash, load
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
    assert (
        first["model"] == "m" and first["backtest"] == {"trades": 3} and first["trace_sha"] == "t"
    )
    assert json.loads(repo._read_at(v1.commit, "rsi-reversion", "trace.json") or "{}") == {
        "messages": ["hi"]
    }
    assert not repo.repo.is_dirty(untracked_files=True)


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
