"""The strategy log: append-only JSON lines, each carrying the hash of the previous line.

Every input bar, node value change, decision, refusal, command and event is one record, so a
run can be audited and replayed. JSON keeps it greppable; keys are sorted and floats written
as their shortest round-trip form (msgspec), NaN/inf as null, so the same run gives the same bytes. A torn tail or an edited line
breaks the chain and `verify` names the line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

GENESIS = "0" * 64
_sha256 = hashlib.sha256


#: Sorted keys make records independent of dict insertion order; msgspec writes NaN/inf as null.
_encoder = msgspec.json.Encoder(order="sorted")
#: For the per-bar records below, whose fields are declared in sorted order already.
_plain = msgspec.json.Encoder()


class _BarRecord(msgspec.Struct):
    """The "bar" record with its keys declared in sorted order: the same bytes as the sorted
    dict `append` would encode, without building and sorting a dict on every bar."""

    c: Any
    h: Any
    kind: str
    l: Any  # noqa: E741
    n: int
    o: Any
    prev: str
    ts_ns: int
    v: Any


class _NodesRecord(msgspec.Struct):
    """The "nodes" record (node values that changed on a bar), keys in sorted order."""

    kind: str
    n: int
    prev: str
    ts_ns: int
    values: dict[str, Any]


class StrategyLog:
    """Writes records to `path` (or only hashes them when path is None, e.g. in sweeps)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._fh: IO[bytes] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        self.head = GENESIS
        self.count = 0

    def append(self, kind: str, ts_ns: int, **fields: Any) -> None:
        # `fields` is this call's own dict: completed in place (a field named n or prev wins,
        # as it did when they were merged into a new dict); keys are sorted by the encoder.
        fields.setdefault("n", self.count)
        fields.setdefault("prev", self.head)
        fields["ts_ns"] = ts_ns
        fields["kind"] = kind
        self._chain(_encoder.encode(fields))

    def append_bar(self, ts_ns: int, o: Any, h: Any, l: Any, c: Any, v: Any) -> None:  # noqa: E741
        """`append("bar", ts_ns, o=o, h=h, l=l, c=c, v=v)`, byte for byte, on the per-bar path."""
        line = _plain.encode(_BarRecord(c, h, "bar", l, self.count, o, self.head, ts_ns, v))
        self.head = _sha256(line).hexdigest()  # _chain() inlined: this runs once per bar
        self.count += 1
        if self._fh is not None:
            self._fh.write(line + b"\n")

    def append_nodes(self, ts_ns: int, values: dict[str, Any]) -> None:
        """`append("nodes", ts_ns, values=values)`, byte for byte (`values` keys sorted)."""
        line = _encoder.encode(_NodesRecord("nodes", self.count, self.head, ts_ns, values))
        self.head = _sha256(line).hexdigest()  # _chain() inlined: this runs on most bars
        self.count += 1
        if self._fh is not None:
            self._fh.write(line + b"\n")

    def _chain(self, line: bytes) -> None:
        self.head = _sha256(line).hexdigest()
        self.count += 1
        if self._fh is not None:
            self._fh.write(line + b"\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None

    def __enter__(self) -> StrategyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogCorruptError(Exception):
    """The log's hash chain is broken or its tail is torn; the run must be quarantined."""


@dataclass(frozen=True)
class LogReport:
    path: Path
    records: int
    head: str


def read(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a verified log (raises LogCorruptError at the first bad line)."""
    p = Path(path)
    prev = GENESIS
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                raise LogCorruptError(
                    f"{p}:{lineno}: torn tail (line not terminated): the run was interrupted"
                )
            line = raw[:-1]
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LogCorruptError(f"{p}:{lineno}: not JSON ({exc.msg})") from None
            if record.get("prev") != prev or record.get("n") != lineno - 1:
                raise LogCorruptError(
                    f"{p}:{lineno}: hash chain broken (expected prev {prev[:12]}..., n {lineno - 1}): "
                    "the log was edited or records are missing"
                )
            prev = hashlib.sha256(line).hexdigest()
            yield record


def verify(path: str | Path) -> LogReport:
    n = 0
    head = GENESIS
    p = Path(path)
    for record in read(p):
        n += 1
        head = record["prev"]
    if n:
        with p.open("rb") as fh:
            last = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        head = hashlib.sha256(last).hexdigest()
    return LogReport(p, n, head)
