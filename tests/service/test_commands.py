"""`register(sub)` adds serve / bot / readmodel rebuild; rebuild works from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path

import pytest

from stratagem.commands_service import register
from stratagem.service.state import ServiceState


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratagem")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return parser


def test_register_adds_the_commands() -> None:
    p = _parser()
    a = p.parse_args(["serve", "--port", "0", "--runs", "r"])
    assert a.func.__name__ == "cmd_serve" and a.host == "127.0.0.1"
    b = p.parse_args(["bot", "--chat-repo", "repo", "--model", "m"])
    assert b.func.__name__ == "cmd_bot" and b.chat_repo == "repo"
    with pytest.raises(SystemExit):
        p.parse_args(["readmodel"])


def test_readmodel_rebuild_command(
    runs_copy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default journal path is relative
    db = tmp_path / "cli.sqlite"
    args = _parser().parse_args(
        ["readmodel", "rebuild", "--runs", str(runs_copy), "--db", str(db), "--json"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["imported"] == ["rsi-reversion-v3", "sma-cross-v1"]
    olog = runs_copy / "sma-cross-v1" / "orders.log"
    olog.write_bytes(olog.read_bytes()[:-1])
    args = _parser().parse_args(["readmodel", "rebuild", "--runs", str(runs_copy), "--db", str(db)])
    assert args.func(args) == 3
    text = capsys.readouterr().out
    assert "quarantined sma-cross-v1: order log" in text


def test_importing_a_new_run_pushes_its_alerts(
    state: ServiceState, runs_root: Path, tmp_path: Path
) -> None:
    async def go() -> list[str]:
        q = state.bus.subscribe()
        new = tmp_path / "sma-cross-v1-again"
        shutil.copytree(runs_root / "sma-cross-v1", new)
        fresh = await asyncio.to_thread(state.import_run, new)
        assert fresh and all(a["run_id"] == new.name for a in fresh)
        kinds = []
        while not q.empty():
            kinds.append((await q.get()).kind)
        again = await asyncio.to_thread(state.import_run, new)
        assert again == []  # nothing new the second time: no duplicate pushes
        return kinds

    kinds = asyncio.run(go())
    assert kinds[0] == "run" and kinds.count("alert") >= 1
