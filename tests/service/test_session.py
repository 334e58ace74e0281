"""A strategy session's controls and recovery, in-process (the order kernel as an object): pause
keeps managing exits, kill blocks the strategy and flattens, and replaying a session's log
rebuilds its state exactly (or refuses a log that was tampered with)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from artifacts.graph import check
from artifacts.io import load_with_lines
from feeds.files import read_bars
from indicators.nodes import BarValues
from order_kernel.kernel import OrderKernel
from order_kernel.venues.sim import SimVenue
from service.runner_util import DATA, END_NS, artifacts
from stratagem.service.session import (
    SessionError,
    SessionLog,
    SessionLoop,
    apply_control,
    decision_ts,
    replay_session,
)
from strategy_kernel.backtest import instrument_spec, log_run_header
from strategy_kernel.engine import StrategyKernel
from strategy_kernel.log import read as read_strategy_log

SESSION = "t-rsi"


class Harness:
    """A session as the runner drives it, minus the sockets: bars in, control records applied."""

    def __init__(self, art: Path, run_dir: Path, ok: OrderKernel | None = None) -> None:
        artifact, lines = load_with_lines(art)
        self.artifact, self.graph = artifact, check(artifact, str(art), lines)
        self.art, self.run_dir = art, run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ok = ok or self.order_kernel()
        self.sk = self.make_kernel()
        self.sk.log = SessionLog(run_dir / "strategy.log.jsonl", "0" * 64, 0)
        self.loop = SessionLoop(
            self.sk, self.ok, artifact, instrument_spec(artifact), 3_600 * 10**9
        )

    def order_kernel(self) -> OrderKernel:
        inst = instrument_spec(self.artifact)
        bt = self.artifact.backtest
        return OrderKernel(SESSION, {inst.symbol: inst},
                           SimVenue(slippage_ticks=bt.slippage_ticks, seed=bt.seed))  # fmt: skip

    def make_kernel(self) -> StrategyKernel:
        return StrategyKernel(
            self.artifact, self.graph, session_id=SESSION, timeframe_ns=3_600 * 10**9,
            base_dir=self.art.parent,
        )  # fmt: skip

    def bars(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            if self.sk.log.count == 0:
                log_run_header(self.sk.log, self.artifact, row[0], SESSION)
            self.loop.step_prices(BarValues(*row))

    def control(self, action: str, **fields: Any) -> None:
        ts = decision_ts(self.loop)
        self.sk.log.append("control", ts, action=action, **fields)
        cmds, force = apply_control(self.sk, self.loop, {"action": action, "ts_ns": ts, **fields},
                                    self.run_dir)  # fmt: skip
        self.loop.deliver(cmds, force=force)

    def records(self) -> list[dict[str, Any]]:
        assert isinstance(self.sk.log, SessionLog)
        self.sk.log.flush()
        return list(read_strategy_log(self.run_dir / "strategy.log.jsonl"))


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    """Harness factory; closes every log at teardown (also when the test fails)."""
    made: list[Harness] = []

    def make(art: Path, run_dir: Path) -> Harness:
        made.append(Harness(art, run_dir))
        return made[-1]

    yield make
    for h in made:
        h.sk.log.close()


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    bars = read_bars(DATA, end_ns=END_NS)
    cols = [bars[c].to_list() for c in ("ts_ns", "open", "high", "low", "close", "volume")]
    return list(zip(*cols, strict=True))


def _first_open(h: Harness, rows: list[tuple[Any, ...]]) -> int:
    for i, row in enumerate(rows):
        h.bars([row])
        if h.sk.position != 0:
            return i
    raise AssertionError("the strategy never opened a position on these bars")


def test_pause_blocks_entries_but_exits_are_still_managed(
    tmp_path: Path, rows: list[tuple[Any, ...]], harness: Callable[..., Harness]
) -> None:
    h = harness(artifacts(tmp_path)["rsi"], tmp_path / "run")
    i = _first_open(h, rows)
    trades_before = len(h.sk.trades)
    h.control("pause", request_id=1, by="test", reason="")
    n_pause = h.sk.log.count
    h.bars(rows[i + 1 :])
    recs = h.records()[n_pause:]
    submits = [r for r in recs if r["kind"] == "command" and r["msg"]["type"] == "SubmitOrder"]
    assert submits == []  # nothing opened while paused...
    assert any(r["kind"] == "decision" and r.get("action") == "skip_entry" for r in recs)
    assert len(h.sk.trades) == trades_before + 1 and h.sk.position == 0  # ...the open one closed
    h.control("resume", request_id=2, by="test", reason="")
    assert h.sk.paused is False


def test_kill_flattens_and_drops_every_strategy_command(
    tmp_path: Path, rows: list[tuple[Any, ...]], harness: Callable[..., Harness]
) -> None:
    h = harness(artifacts(tmp_path)["rsi"], tmp_path / "run")
    i = _first_open(h, rows)
    assert h.sk.position > 0
    h.control("kill", request_id=1, by="test", reason="halt", flatten=True)
    assert h.ok.kill_switch_active
    h.bars(rows[i + 1 : i + 300])
    assert h.sk.position == 0  # the flatten order filled on the next bar
    recs = h.records()
    k = next(r["n"] for r in recs if r["kind"] == "command" and r["msg"]["type"] == "KillSwitch")
    later = [r for r in recs if r["n"] > k]
    fills = [r for r in later if r["kind"] == "event" and r["msg"]["type"] == "OrderFilled"]
    assert [f["msg"]["client_order_id"] for f in fills] == [
        f"kill.{recs[k]['msg']['seq']}.BTC/USDT"
    ]
    assert [r for r in later if r["kind"] == "command"] == []  # no decision after the kill
    assert any(r.get("action") == "skip_entry" for r in later)  # entries it would have made

    # without flatten the position stays; the strategy's exit decisions are dropped, not sent
    h2 = harness(artifacts(tmp_path)["rsi"], tmp_path / "run2")
    j = _first_open(h2, rows)
    pos = h2.sk.position
    h2.control("kill", request_id=1, by="test", reason="halt", flatten=False)
    h2.bars(rows[j + 1 : j + 300])
    assert h2.sk.position == pos and h2.loop.dropped > 0
    k2 = next(
        r["n"] for r in h2.records() if r["kind"] == "command" and r["msg"]["type"] == "KillSwitch"
    )
    decided = [r for r in h2.records() if r["n"] > k2 and r["kind"] == "command"]
    assert len(decided) == h2.loop.dropped  # logged as decided, none reached the order kernel


def test_replay_rebuilds_the_session_exactly_and_refuses_a_tampered_log(
    tmp_path: Path, rows: list[tuple[Any, ...]], harness: Callable[..., Harness]
) -> None:
    arts = artifacts(tmp_path)
    h = harness(arts["rsi"], tmp_path / "run")
    h.bars(rows[:150])
    h.control("pause", request_id=1, by="t", reason="")
    h.bars(rows[150:200])
    rel = "artifacts/rsi-v2.yaml"
    (tmp_path / "run" / "artifacts").mkdir()
    (tmp_path / "run" / rel).write_text(arts["rsi_v2"].read_text())
    h.control("swap", request_id=2, by="t", reason="", artifact=rel, content_hash="x", version=2)
    h.control("resume", request_id=3, by="t", reason="")
    h.bars(rows[200:400])
    h.records()
    path = tmp_path / "run" / "strategy.log.jsonl"

    # the replay needs no order kernel: events come from the log
    rec = replay_session(path, h.make_kernel, h.order_kernel(), tmp_path / "run", [])
    assert rec.extra_lines == [] and rec.sk.log.head == h.sk.log.head
    assert rec.sk.artifact.version == 2 and rec.sk.paused is False
    assert (rec.sk.position, rec.sk.seq, rec.sk.phase) == (h.sk.position, h.sk.seq, h.sk.phase)
    assert rec.sk.equity() == h.sk.equity() and len(rec.loop.ts) == 400
    assert rec.last_event_seq == max(r["msg"]["seq"] for r in h.records() if r["kind"] == "event")
    assert {k: str(v) for k, v in rec.sk.dag.values.items()} == {
        k: str(v) for k, v in h.sk.dag.values.items()
    }  # indicator state carried exactly (str: NaN == NaN)

    lines = path.read_bytes().splitlines()
    j = next(i for i, line in enumerate(lines) if b'"kind":"bar"' in line and i > 100)
    bad = lines[j].replace(b'"c":', b'"c":1')
    tampered = tmp_path / "tampered" / "strategy.log.jsonl"
    tampered.parent.mkdir()
    tampered.write_bytes(b"\n".join([*lines[:j], bad, *lines[j + 1 :]]) + b"\n")
    with pytest.raises(Exception, match=r"hash chain|does not reproduce"):
        replay_session(tampered, h.make_kernel, h.order_kernel(), tmp_path / "run", [])


def test_replay_refuses_a_log_the_kernel_would_not_write(
    tmp_path: Path, rows: list[tuple[Any, ...]], harness: Callable[..., Harness]
) -> None:
    """A re-chained log (valid hashes) whose decisions differ is caught by the replay itself."""
    import hashlib

    h = harness(artifacts(tmp_path)["rsi"], tmp_path / "run")
    h.bars(rows[:300])
    recs = h.records()
    lines = (tmp_path / "run" / "strategy.log.jsonl").read_bytes().splitlines()
    target = next(r["n"] for r in recs if r["kind"] == "phase")
    out: list[bytes] = []
    old_prev = new_prev = ""
    for i, line in enumerate(lines):
        if old_prev:  # re-chain: this record points at the edited one's new hash
            line = line.replace(old_prev.encode(), new_prev.encode())
        if i == target:
            line = line.replace(b'"why":"', b'"why":"edited ')
        old_prev = hashlib.sha256(lines[i]).hexdigest()
        new_prev = hashlib.sha256(line).hexdigest()
        out.append(line)
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"\n".join(out) + b"\n")
    assert len(list(read_strategy_log(forged))) == len(recs)  # the chain itself verifies
    with pytest.raises(SessionError, match=rf"forged.jsonl:{target + 1}: replaying"):
        replay_session(forged, h.make_kernel, h.order_kernel(), tmp_path / "run", [])
