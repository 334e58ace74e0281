"""Replay a finished run and prove it reproduces byte for byte, or show the first divergence.

A run directory holds `run.json` (what was run: the artifact copy, the data file and its digest,
the date range) next to its logs. Replaying re-runs the same artifact on the same data into a
temporary directory and compares both logs record by record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from artifacts.graph import python_node_file
from artifacts.schema import Artifact, PythonNode
from strategy_kernel.errors import StrategyError

RUN_FILE = "run.json"
LOGS = ("strategy.log.jsonl", "orders.log")


class ReplayError(StrategyError):
    """The run directory cannot be replayed (missing files, data changed)."""


def data_digest(bars: pl.DataFrame) -> str:
    """sha256 over the bar columns' bytes: identifies the exact data a run saw."""
    h = hashlib.sha256()
    for col in ("ts_ns", "open", "high", "low", "close", "volume"):
        h.update(bars[col].to_numpy().tobytes())
    return h.hexdigest()


def funding_digest(funding: pl.DataFrame) -> str:
    """sha256 over the settlement times, rates and interval a run was charged."""
    h = hashlib.sha256()
    for col in ("ts_ns", "funding_rate", "interval_ns"):
        h.update(funding[col].to_numpy().tobytes())
    return h.hexdigest()


def write_run_file(
    out_dir: Path,
    *,
    artifact: Artifact,
    artifact_path: Path,
    data_path: Path,
    bars: pl.DataFrame,
    start_ns: int | None,
    end_ns: int | None,
    extra: dict[str, tuple[Path, pl.DataFrame]] | None = None,
    funding: tuple[Path, pl.DataFrame] | None = None,
) -> None:
    """Record what was run: a copy of the artifact (and its python node files) and the data digest.

    `extra` are the bars of the artifact's `data:` symbols ({symbol: (file, bars)}); `funding`
    the funding-rate file and its rows."""
    (out_dir / "artifact.yaml").write_bytes(artifact_path.read_bytes())
    for node in artifact.nodes.values():
        if isinstance(node, PythonNode):
            target = out_dir / node.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(python_node_file(node, artifact_path.parent), target)
    info = {
        "artifact": "artifact.yaml",
        "data": str(data_path.resolve()),
        "data_sha256": data_digest(bars),
        "bars": bars.height,
        "start_ns": start_ns,
        "end_ns": end_ns,
    }
    if extra:  # only when present, so runs without `data:` inputs keep their run.json
        info["data_inputs"] = {
            s: {"data": str(p.resolve()), "data_sha256": data_digest(df)}
            for s, (p, df) in sorted(extra.items())
        }
    if funding is not None:
        info["funding"] = {
            "data": str(funding[0].resolve()),
            "data_sha256": funding_digest(funding[1]),
        }
    (out_dir / RUN_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Divergence:
    log: str
    record: int  # 0-based record (line) index
    expected: str
    got: str


@dataclass(frozen=True)
class ReplayReport:
    run_dir: Path
    records: dict[str, int]
    divergence: Divergence | None

    @property
    def identical(self) -> bool:
        return self.divergence is None


def _records(path: Path) -> list[bytes]:
    if path.suffix == ".jsonl":
        return path.read_bytes().splitlines()
    from order_kernel.log import read

    return [
        f"#{e.index} {'in' if e.direction == 0 else 'out'} seq={e.seq} {e.message!r}".encode()
        for e in read(path)
    ]


def compare_logs(expected_dir: Path, got_dir: Path) -> tuple[dict[str, int], Divergence | None]:
    counts: dict[str, int] = {}
    for name in LOGS:
        a, b = _records(expected_dir / name), _records(got_dir / name)
        counts[name] = len(a)
        for i in range(max(len(a), len(b))):
            ra = a[i] if i < len(a) else b"<end of log>"
            rb = b[i] if i < len(b) else b"<end of log>"
            if ra != rb:
                return counts, Divergence(
                    name, i, ra.decode(errors="replace"), rb.decode(errors="replace")
                )
        if (expected_dir / name).read_bytes() != (got_dir / name).read_bytes():
            return counts, Divergence(name, len(a), "<bytes differ outside records>", "")
    return counts, None


def replay(run_dir: Path, data_override: Path | None = None) -> ReplayReport:
    """Re-run the run in `run_dir` and compare its logs with the recorded ones."""
    from artifacts.graph import check
    from artifacts.io import load_with_lines
    from feeds.files import read_bars
    from strategy_kernel.backtest import run_backtest

    info_path = run_dir / RUN_FILE
    if not info_path.exists():
        raise ReplayError(
            f"{run_dir}: no {RUN_FILE}; replay needs a directory written by `stratagem run`"
        )
    info: dict[str, Any] = json.loads(info_path.read_text())
    for name in LOGS:
        if not (run_dir / name).exists():
            raise ReplayError(f"{run_dir}: missing {name}; nothing to compare against")
    artifact_path = run_dir / info["artifact"]
    artifact, lines = load_with_lines(artifact_path)
    graph = check(artifact, str(artifact_path), lines)
    data_path = data_override or Path(info["data"])
    bars = read_bars(data_path, start_ns=info["start_ns"], end_ns=info["end_ns"])
    if data_digest(bars) != info["data_sha256"]:
        raise ReplayError(
            f"{data_path}: the bars differ from the ones the run saw (sha256 mismatch); "
            "pass the original file with --data"
        )
    data_bars: dict[str, pl.DataFrame] = {}
    for symbol, rec in sorted(info.get("data_inputs", {}).items()):
        aux = read_bars(Path(rec["data"]), start_ns=info["start_ns"], end_ns=info["end_ns"])
        if data_digest(aux) != rec["data_sha256"]:
            raise ReplayError(
                f"{rec['data']}: the {symbol} bars differ from the ones the run saw (sha256 "
                "mismatch); restore the original file"
            )
        data_bars[symbol] = aux
    funding = None
    if "funding" in info:
        from feeds.funding import read_funding

        rec = info["funding"]
        funding = read_funding(Path(rec["data"]))
        if funding_digest(funding) != rec["data_sha256"]:
            raise ReplayError(
                f"{rec['data']}: the funding rates differ from the ones the run was charged "
                "(sha256 mismatch); restore the original file"
            )
    with tempfile.TemporaryDirectory(prefix="stratagem-replay-") as tmp:
        run_backtest(
            artifact,
            graph,
            bars,
            out_dir=Path(tmp),
            base_dir=run_dir,
            data_bars=data_bars,
            funding=funding,
        )
        counts, div = compare_logs(run_dir, Path(tmp))
    return ReplayReport(run_dir, counts, div)
