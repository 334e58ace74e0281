"""Artifacts under git: every compile is a commit with the artifact, its provenance and tool trace.

Layout in the repository, per strategy name:
`<name>/artifact.yaml` (canonical YAML), `<name>/provenance.json` (model, endpoint host class,
prompt and tool-trace hashes, parent version, backtest summary), `<name>/trace.json` (the full
conversation and tool trace) and `<name>/blame.json` (node -> the conversation turn and version
that created it; unchanged nodes keep their origin across versions).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from artifacts.errors import ArtifactError
from artifacts.io import content_hash, dumps, loads, to_data
from artifacts.schema import Artifact
from compiler.errors import VersioningError


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
        prov = dict(provenance or {})
        prov.update(
            {
                "artifact_sha": sha,
                "version": artifact.version,
                "parent_version": prev.version if prev is not None else None,
                "parent_commit": prev_commit,
            }
        )
        trace_text = json.dumps(trace or {}, sort_keys=True, indent=1) + "\n"
        files = {
            "artifact.yaml": dumps(artifact),
            "provenance.json": json.dumps(prov, sort_keys=True, indent=1) + "\n",
            "trace.json": trace_text,
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
