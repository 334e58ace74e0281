"""`stratagem paper --data-wait MS`: the wait budget for `data:` inputs reaches `run_paper`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import strategy_kernel.paper as paper
from feeds.endpoints import ipc_endpoint
from stratagem.cli import main

ROOT = Path(__file__).resolve().parents[2]
RSI = ROOT / "examples" / "rsi-reversion.yaml"


def _paper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict[str, Any]:
    """Run `stratagem paper` with `run_paper` replaced by a recorder: no bar ever arrives."""
    seen: dict[str, Any] = {}

    def recorder(*args: Any, **kwargs: Any) -> tuple[None, paper.PaperStop]:
        seen.update(kwargs)
        return None, paper.PaperStop("idle", 0, 0, 0)

    monkeypatch.setattr(paper, "run_paper", recorder)
    code = main(
        [
            "paper",
            str(RSI),
            "--feed",
            ipc_endpoint(tmp_path / "md.sock"),
            "--kernel",
            ipc_endpoint(tmp_path / "ok.sock"),  # a named kernel: none is started here
            "--out",
            str(tmp_path / "out"),
            *extra,
        ]
    )
    seen["exit"] = code
    return seen


def test_data_wait_is_passed_to_run_paper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _paper(tmp_path, monkeypatch, "--data-wait", "150")
    assert seen["exit"] == 0 and seen["data_wait_ms"] == 150
    assert "no bar arrived" in capsys.readouterr().out


def test_without_data_wait_run_paper_gets_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _paper(tmp_path, monkeypatch)["data_wait_ms"] == paper.DATA_WAIT_MS


def test_a_negative_data_wait_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _paper(tmp_path, monkeypatch, "--data-wait", "-1")
    assert seen["exit"] == 2 and "data_wait_ms" not in seen
    assert "--data-wait must be 0 or more milliseconds, got -1" in capsys.readouterr().err
