"""Artifacts under git: every compile is a commit with the artifact, its provenance and tool trace.

Layout in the repository, per strategy name:
`<name>/artifact.yaml` (canonical YAML), `<name>/provenance.json` (model, endpoint host class,
prompt and tool-trace hashes, parent version, backtest summary), `<name>/trace.json` (the full
conversation and tool trace) and `<name>/blame.json` (node -> the conversation turn and version
that created it; unchanged nodes keep their origin across versions).

Every commit also stamps the artifact's typed `provenance` (schema fields, outside the content
hash): `base_url_class`, `trace_sha` (sha256 of the committed `trace.json` bytes, so anyone can
verify it with `sha256sum`), the held-out `backtest` summary, the `conversation_turn`, the
review `gates` and the `parent` (content hash of the previous version).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from artifacts.errors import ArtifactError
from artifacts.io import content_hash, dumps, loads, to_data
from artifacts.schema import Artifact, Provenance, ProvenanceBacktest, ProvenanceGate
from compiler.errors import VersioningError


def trace_text(trace: dict[str, Any] | None) -> str:
    """The canonical text of a tool trace, exactly as committed to `trace.json`."""
    return json.dumps(trace or {}, sort_keys=True, indent=1) + "\n"


def trace_sha256(trace: dict[str, Any] | None) -> str:
    """sha256 of the committed trace file's bytes (`provenance.trace_sha`)."""
    return hashlib.sha256(trace_text(trace).encode("utf-8")).hexdigest()


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def provenance_backtest(summary: dict[str, Any] | None) -> ProvenanceBacktest | None:
    """The schema's backtest summary from a metrics/summary dict (non-finite numbers become None)."""
    if not summary:
        return None
    window_from, window_to = summary.get("window_from_ns"), summary.get("window_to_ns")
    return ProvenanceBacktest(
        window_from_ns=int(window_from) if isinstance(window_from, int) else None,
        window_to_ns=int(window_to) if isinstance(window_to, int) else None,
        bars=int(summary["bars"]) if isinstance(summary.get("bars"), int) else None,
        trades=int(summary["trades"]) if isinstance(summary.get("trades"), int) else None,
        total_return_pct=_finite(summary.get("total_return_pct")),
        sharpe=_finite(summary.get("sharpe")),
        max_drawdown_pct=_finite(summary.get("max_drawdown_pct")),
    )


def stamp_provenance(
    artifact: Artifact,
    info: dict[str, Any],
    *,
    trace_sha: str,
    parent: str | None,
) -> Artifact:
    """The artifact with its typed provenance filled from `info` (what the compile knew)."""
    old = artifact.provenance
    base_url_class = info.get("base_url_class") or old.base_url_class
    if base_url_class is None:
        base_url_class = "none" if (info.get("model") or old.model) is None else None
    turn = info.get("conversation_turn")
    gates = info.get("gates")
    updates: dict[str, Any] = {
        "model": info.get("model") or old.model,
        "prompt_sha": info.get("prompt_sha") or old.prompt_sha,
        "parent": old.parent or parent,
        "base_url_class": base_url_class,
        "trace_sha": trace_sha,
        "conversation_turn": int(turn) if isinstance(turn, int) else old.conversation_turn,
        "backtest": provenance_backtest(info.get("backtest")) or old.backtest,
        "gates": [ProvenanceGate.model_validate(g) for g in gates] if gates else old.gates,
    }
    if info.get("compiler"):
        updates["compiler"] = info["compiler"]
    prov = Provenance.model_validate({**old.model_dump(), **updates})
    return artifact.model_copy(update={"provenance": prov})


@dataclass(frozen=True)
class Version:
    commit: str
    version: int
    artifact_sha: str
    message: str
    parent_commit: str | None


@dataclass(frozen=True)
class BlameEntry:
    node: str
    turn: int
    version: int
    request: str
    commit: str | None


class ArtifactRepo:
    """A git repository of artifacts (created on first use, with a local committer identity)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if (self.path / ".git").is_dir():
            self.repo = git.Repo(self.path)
        elif create:
            self.path.mkdir(parents=True, exist_ok=True)
            self.repo = git.Repo.init(self.path)
        else:
            raise VersioningError(
                f"{self.path}: not an artifact repository (no .git); run a compile to create it"
            )
        with self.repo.config_reader() as cr:
            has_name = cr.has_option("user", "name")
        if not has_name:
            with self.repo.config_writer() as cw:
                cw.set_value("user", "name", "stratagem compiler")
                cw.set_value("user", "email", "compiler@stratagem.invalid")

    def close(self) -> None:
        """Stop git's helper processes (cat-file); the repository can still be reopened."""
        repo = getattr(self, "repo", None)
        if repo is not None:
            repo.close()

    def __enter__(self) -> ArtifactRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # git's persistent cat-file processes must be reaped, not left to the interpreter's GC
        self.close()

    def _file(self, name: str, leaf: str) -> Path:
        return self.path / name / leaf

    def _read_at(self, rev: str, name: str, leaf: str) -> str | None:
        try:
            blob = self.repo.commit(rev).tree / f"{name}/{leaf}"
        except (KeyError, ValueError, git.BadName):
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8")

    def head_artifact(self, name: str) -> Artifact | None:
        path = self._file(name, "artifact.yaml")
        return loads(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None

    def commit(
        self,
        artifact: Artifact,
        *,
        trace: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        node_turns: dict[str, int] | None = None,
        request: str = "",
        message: str | None = None,
    ) -> Version:
        """Write and commit one version; the previous version's commit becomes the parent."""
        name = artifact.name
        prev = self.head_artifact(name)
        prev_commit = self._last_commit(name)
        if prev is not None and artifact.version <= prev.version:
            artifact = artifact.model_copy(update={"version": prev.version + 1})
        old_blame = self._blame_map(name)
        prev_nodes = to_data(prev)["nodes"] if prev is not None else {}
        new_nodes = to_data(artifact)["nodes"]
        blame: dict[str, dict[str, Any]] = {}
        for node_id, node in new_nodes.items():
            if prev_nodes.get(node_id) == node and node_id in old_blame:
                blame[node_id] = old_blame[node_id]
            else:
                turn = (node_turns or {}).get(node_id, 0)
                blame[node_id] = {"turn": turn, "version": artifact.version, "request": request}
        sha = content_hash(artifact)
        text = trace_text(trace)
        t_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        artifact = stamp_provenance(
            artifact,
            dict(provenance or {}),
            trace_sha=t_sha,
            parent=content_hash(prev) if prev is not None else None,
        )
        prov = dict(provenance or {})
        prov.update(
            {
                "artifact_sha": sha,
                "version": artifact.version,
                "parent_version": prev.version if prev is not None else None,
                "parent_commit": prev_commit,
                "trace_sha": t_sha,
                "base_url_class": artifact.provenance.base_url_class,
            }
        )
        files = {
            "artifact.yaml": dumps(artifact),
            "provenance.json": json.dumps(prov, sort_keys=True, indent=1, default=str) + "\n",
            "trace.json": text,
            "blame.json": json.dumps(blame, sort_keys=True, indent=1) + "\n",
        }
        (self.path / name).mkdir(parents=True, exist_ok=True)
        for leaf, text in files.items():
            self._file(name, leaf).write_text(text, encoding="utf-8")
        self.repo.index.add([f"{name}/{leaf}" for leaf in files])
        msg = (
            message
            or f"{name} v{artifact.version}: {request.strip().splitlines()[0][:60] if request.strip() else 'compiled'}"
        )
        msg += f"\n\nartifact-sha: {sha}\nversion: {artifact.version}\n"
        c = self.repo.index.commit(msg)
        return Version(c.hexsha, artifact.version, sha, msg.splitlines()[0], prev_commit)

    def _last_commit(self, name: str) -> str | None:
        if not self.repo.head.is_valid():
            return None
        commits = list(self.repo.iter_commits(paths=f"{name}/artifact.yaml", max_count=1))
        return commits[0].hexsha if commits else None

    def _blame_map(self, name: str, rev: str | None = None) -> dict[str, dict[str, Any]]:
        if rev is None:
            path = self._file(name, "blame.json")
            text = path.read_text(encoding="utf-8") if path.is_file() else None
        else:
            text = self._read_at(rev, name, "blame.json")
        return json.loads(text) if text else {}

    def history(self, name: str) -> list[Version]:
        """Versions of one strategy, newest first."""
        if not self.repo.head.is_valid():
            return []
        out = []
        for c in self.repo.iter_commits(paths=f"{name}/artifact.yaml"):
            prov = json.loads(self._read_at(c.hexsha, name, "provenance.json") or "{}")
            message = c.message if isinstance(c.message, str) else c.message.decode()
            out.append(
                Version(
                    c.hexsha,
                    int(prov.get("version", 0)),
                    str(prov.get("artifact_sha", "")),
                    message.splitlines()[0],
                    prov.get("parent_commit"),
                )
            )
        if not out:
            raise VersioningError(
                f"no strategy named {name!r} in {self.path}; see `stratagem history`"
            )
        return out

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.path.glob("*/artifact.yaml"))

    def resolve(self, name: str, ref: str) -> str:
        """A commit sha from a version number (`3`, `v3`), a commit prefix, or HEAD~n."""
        text = ref[1:] if ref.startswith("v") and ref[1:].isdigit() else ref
        if text.isdigit() and len(text) < 7:
            for v in self.history(name):
                if v.version == int(text):
                    return v.commit
            raise VersioningError(
                f"{name} has no version {text}; versions: {[v.version for v in self.history(name)]}"
            )
        try:
            return self.repo.commit(ref).hexsha
        except (git.BadName, ValueError):
            raise VersioningError(
                f"unknown revision {ref!r}: give a version number or a commit"
            ) from None

    def artifact_at(self, name: str, ref: str) -> Artifact:
        sha = self.resolve(name, ref)
        text = self._read_at(sha, name, "artifact.yaml")
        if text is None:
            raise VersioningError(f"{name} does not exist at {ref}")
        try:
            return loads(text, f"{name}@{ref}")
        except ArtifactError as exc:
            raise VersioningError(f"{name}@{ref} does not load: {exc}") from None

    def diff(self, name: str, a: str | None = None, b: str | None = None) -> str:
        """Unified diff of the canonical YAML between two versions (default: previous -> latest)."""
        hist = self.history(name)
        if a is None:
            if len(hist) < 2:
                return ""
            a = hist[1].commit
        b = b or hist[0].commit
        ta, tb = dumps(self.artifact_at(name, a)), dumps(self.artifact_at(name, b))
        return "".join(
            difflib.unified_diff(
                ta.splitlines(keepends=True),
                tb.splitlines(keepends=True),
                f"{name}@{a[:10]}",
                f"{name}@{b[:10]}",
            )
        )

    def checkout(self, name: str, ref: str, out: str | Path) -> Artifact:
        """Write a past version's artifact to `out` (the repository itself is not changed)."""
        artifact = self.artifact_at(name, ref)
        Path(out).write_text(dumps(artifact), encoding="utf-8")
        return artifact

    def blame(self, name: str, node: str) -> BlameEntry:
        """The conversation turn (and version, commit) that created `node` as it is now."""
        entries = self._blame_map(name)
        if node not in entries:
            raise VersioningError(f"{name} has no node {node!r}; nodes: {sorted(entries)}")
        e = entries[node]
        commit = next((v.commit for v in self.history(name) if v.version == e["version"]), None)
        return BlameEntry(
            node, int(e["turn"]), int(e["version"]), str(e.get("request", "")), commit
        )
