"""Service sessions with `data:` inputs (other symbols' bars as DAG inputs), end to end: the runner
in-process, its order-kernel process, recorded bars on a ZeroMQ bus over ipc.

Each session writes the strategy log `run_backtest(..., data_bars=...)` writes, byte for byte up
to its stop record; a session that crashes mid-step restarts from its log and still ends with the
backtest's records (its data inputs resumed, nothing delivered twice); a silent input under
`hold` is missing once `data_wait_ms` is spent; a hot-swap that changes the inputs is refused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from artifacts.graph import check
from artifacts.io import loads
from artifacts.schema import Artifact
from feeds.bus import Publisher, bar_topic
from feeds.endpoints import ipc_endpoint
from feeds.schema import Bar
from feeds.synthetic import generate_bars
from stratagem.errors import StratagemError
from stratagem.service import ServiceError
from stratagem.service.control import ControlRequest
from stratagem.service.runner import Runner, RunnerError
from stratagem.service.session import SessionLoop
from stratagem.service.settings import (
    FeedSettings,
    RunnerSettings,
    ServiceSettings,
    StrategyEntry,
    load_settings,
)
from strategy_kernel.backtest import run_backtest
from strategy_kernel.log import read as read_strategy_log
from strategy_kernel.paper import RecordedFeed

START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000
BTC = bar_topic("BTC/USDT", "1h")
ETH = bar_topic("ETH/USDT", "1h")

HEAD = """schema: stratagem/v1
name: %(name)s
version: %(version)s
instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}
"""
WITH_DATA = (
    HEAD
    + """data:
  eth: {symbol: ETH/USDT, timeframe: 1h%(missing)s}
nodes:
  fast: {kind: indicator, fn: SMA, inputs: [close], params: {period: 5}}
  slow: {kind: indicator, fn: SMA, inputs: [close], params: {period: 20}}
  golden: {kind: cross, a: fast, b: slow, direction: above}
  eth_sma: {kind: indicator, fn: SMA, inputs: [eth.close], params: {period: 10}}
  eth_up: {kind: threshold, input: eth.close, op: ">", value: eth_sma}
  go: {kind: all, inputs: [golden, eth_up]}
entry: {when: go, side: long}
exit: {stop_loss: {pct: 2.0}, when: {node: eth.close, op: "<", value: eth_sma}}
risk: {sizing: {method: pct_equity, value: 50}}
"""
)
PLAIN = (
    HEAD
    + """nodes:
  fast: {kind: indicator, fn: SMA, inputs: [close], params: {period: 5}}
  slow: {kind: indicator, fn: SMA, inputs: [close], params: {period: 20}}
  golden: {kind: cross, a: fast, b: slow, direction: above}
entry: {when: golden, side: long}
exit: {stop_loss: {pct: 2.0}, when: {node: fast, op: "<", value: slow}}
risk: {sizing: {method: pct_equity, value: 50}}
"""
)


def write_artifact(tmp: Path, name: str, text: str, **fields: str) -> tuple[Path, Artifact]:
    values = {"name": name, "version": "1", "missing": "", **fields}
    path = tmp / f"{name}-v{values['version']}.yaml"
    path.write_text(text % values)
    return path, loads(path.read_text())


def bars(seed: int, n: int) -> pl.DataFrame:
    return generate_bars(seed=seed, start_ns=START, n=n, timeframe="1h")


def settings(tmp: Path, strategies: dict[str, Path], **runner: Any) -> ServiceSettings:
    return ServiceSettings(
        runs_dir=tmp / "runs",
        db_path=tmp / "rm.sqlite",
        journal_path=tmp / "journal.jsonl",
        runner=RunnerSettings(
            name="t",
            state_dir=tmp / "state",
            strategies=[StrategyEntry(name=n, artifact=p) for n, p in strategies.items()],
            feed=FeedSettings(
                mode="bus", endpoint=ipc_endpoint(tmp / "md.sock"), idle_timeout_s=20
            ),
            health_interval_s=0.2,
            snapshot_every_bars=50,
            backoff_s=0.05,
            **runner,
        ),
    )


@contextlib.contextmanager
def service(cfg: ServiceSettings) -> Iterator[tuple[Runner, list[int]]]:
    """The runner in a thread of this process (so a test can reach its sessions); stopped and
    joined on the way out."""
    runner = Runner(cfg)
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(runner.run(install_signals=False)), daemon=True
    )
    thread.start()
    try:
        yield runner, codes
        thread.join(timeout=60)
        assert not thread.is_alive(), "the runner did not stop by itself"
    finally:
        runner.stopping.set()
        thread.join(timeout=60)


def merged(series: dict[str, pl.DataFrame]) -> list[tuple[str, Bar]]:
    """Bars as a live feed carries them (`RecordedFeed`'s order): by close time, the data topic
    before the instrument's at the same close."""
    out: list[tuple[int, int, str, Bar]] = []
    for topic, frame in series.items():
        for t, o, h, lo, c, v in frame.select(
            "ts_ns", "open", "high", "low", "close", "volume"
        ).rows():
            bar = Bar(ts_ns=t, open=o, high=h, low=lo, close=c, volume=v)
            out.append((t + HOUR, int(topic == BTC), topic, bar))
    out.sort(key=lambda x: x[:3])
    return [(topic, bar) for _, _, topic, bar in out]


def backtest_lines(
    tmp: Path, artifact: Artifact, btc: pl.DataFrame, eth: pl.DataFrame | None, run_id: str
) -> list[bytes]:
    out = tmp / f"bt-{run_id}"
    data = {"ETH/USDT": eth} if eth is not None else None
    result = run_backtest(
        artifact, check(artifact), btc, data_bars=data, out_dir=out, session_id=run_id
    )
    assert result.trades, "a run without trades would compare too little"
    return (out / "strategy.log.jsonl").read_bytes().splitlines()


def service_lines(tmp: Path, run_id: str) -> list[bytes]:
    return (tmp / "runs" / run_id / "strategy.log.jsonl").read_bytes().splitlines()


def assert_backtest_then_stop(got: list[bytes], want: list[bytes]) -> None:
    assert got[: len(want)] == want
    stop = msgspec.json.decode(got[len(want)])
    assert stop["kind"] == "control" and stop["action"] == "stop"
    assert stop["reason"] == "end_of_stream"


# -- the acceptance cases --------------------------------------------------------------------------
def test_two_sessions_one_with_a_data_input_write_the_backtest_logs(tmp_path: Path) -> None:
    data_path, with_data = write_artifact(tmp_path, "btceth", WITH_DATA)
    plain_path, plain = write_artifact(tmp_path, "sma", PLAIN)
    btc, eth = bars(1, 300), bars(2, 300)
    cfg = settings(tmp_path, {"btceth": data_path, "sma": plain_path})
    assert cfg.runner.feed.endpoint is not None
    feed = RecordedFeed(
        cfg.runner.feed.endpoint,
        {BTC: (btc, HOUR), ETH: (eth, HOUR)},
        [BTC],
        window=1 << 40,
        subscribers=2,
    )
    try:
        with service(cfg) as (runner, codes):
            feed.start()
        assert codes == [0] and not feed.error
    finally:
        feed.close()
    got = service_lines(tmp_path, "t-btceth")
    want = backtest_lines(tmp_path, with_data, btc, eth, "t-btceth")
    assert_backtest_then_stop(got, want)
    assert sum(b'"kind":"data_bar"' in line for line in want) == 300
    assert_backtest_then_stop(
        service_lines(tmp_path, "t-sma"), backtest_lines(tmp_path, plain, btc, None, "t-sma")
    )
    assert runner.sessions["btceth"].state == runner.sessions["sma"].state == "finished"


def _without_numbering(line: bytes) -> dict[str, Any]:
    """A record without what a restart renumbers: the hash chain, and the sequence numbers of
    the session's commands and the order kernel's events (its resend request takes one of
    each)."""
    rec: dict[str, Any] = msgspec.json.decode(line)
    rec.pop("n")
    rec.pop("prev")
    msg = rec.get("msg")
    if isinstance(msg, dict):
        msg.pop("seq", None)
        msg.pop("ref_seq", None)
    return rec


@pytest.mark.parametrize("feed_after", ["from_the_start", "the_rest_with_a_hole"])
def test_a_session_that_crashes_mid_step_restarts_and_ends_with_the_backtest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, feed_after: str
) -> None:
    """The session crashes in bar 120's step, after its data input's bar was delivered and
    logged; the restart cuts that unfinished step from the log, replays the rest (data bars
    included) and resubscribes. Then the feed either replays every bar from the start (what the
    run already stepped or delivered is dropped) or goes on from bar 120 without its ETH bar
    (the input resumes where the log left it: that bar is missing and held, as in the
    backtest). Either way the rest is stepped as the backtest steps it."""
    path, artifact = write_artifact(tmp_path, "btceth", WITH_DATA)
    btc, eth = bars(1, 240), bars(2, 240)
    crash_at = 120
    hole = START + crash_at * HOUR
    step = SessionLoop.step_prices
    crashed: list[int] = []

    def crashing(self: SessionLoop, bar: Any) -> None:
        if len(self.ts) == crash_at and not crashed:
            crashed.append(bar.ts_ns)
            raise RuntimeError("injected crash in the middle of a step")
        step(self, bar)

    monkeypatch.setattr(SessionLoop, "step_prices", crashing)
    cfg = settings(tmp_path, {"btceth": path})
    assert cfg.runner.feed.endpoint is not None
    script = merged({BTC: btc, ETH: eth})
    first_part = [x for x in script if x[1].ts_ns <= START + crash_at * HOUR]
    with (
        Publisher(cfg.runner.feed.endpoint, session_id=1, sndhwm=0) as pub,
        service(cfg) as (runner, codes),
    ):
        pub.wait_for_subscribers(1, timeout_s=30)
        for topic, bar in first_part:
            pub.publish(topic, bar)
        session = runner.sessions["btceth"]
        deadline = time.monotonic() + 30
        while not (session.restarts == 1 and session.state == "running"):
            assert time.monotonic() < deadline, session.health(time.monotonic())
            time.sleep(0.01)
        pub.wait_for_subscribers(2, timeout_s=30)  # the restarted session joined again
        if feed_after == "the_rest_with_a_hole":
            script = [x for x in script if x[1].ts_ns >= hole and (x[0], x[1].ts_ns) != (ETH, hole)]
            eth = eth.filter(pl.col("ts_ns") != hole)
        for topic, bar in script:
            pub.publish(topic, bar)
        pub.heartbeat()
        pub.end(ETH)
        pub.end(BTC)
    assert codes == [0] and crashed == [hole]
    if feed_after == "from_the_start":
        assert session.skipped_seen >= 2 * crash_at  # the replayed bars it had already
    got = service_lines(tmp_path, "t-btceth")
    controls = [msgspec.json.decode(x) for x in got if b'"kind":"control"' in x]
    assert [c["action"] for c in controls] == ["resend", "stop"]
    want = backtest_lines(tmp_path, artifact, btc, eth, "t-btceth")
    # the restart adds its resend request (a control record, the command, the order kernel's
    # answer) and so renumbers; the rest is the backtest's, record for record: same bars, same
    # data bars (each delivered once, none missing), same nodes, orders, fills and trades
    restart = (b'"kind":"control"', b'"type":"ResendRequest"', b'"command":"ResendRequest"')
    kept = [_without_numbering(x) for x in got if not any(k in x for k in restart)]
    assert kept[: len(want)] == [_without_numbering(x) for x in want]
    assert len(kept) - len(want) <= 2  # then only the stop's CancelAll and its answer
    assert sum(b'"kind":"data_bar"' in x for x in got) == eth.height
    assert sum(b'"kind":"data_missing"' in x for x in got) == 240 - eth.height
    assert list(read_strategy_log(tmp_path / "runs" / "t-btceth" / "strategy.log.jsonl"))


def test_a_silent_input_under_hold_is_missing_after_the_budget(tmp_path: Path) -> None:
    """ETH stops after 150 bars without ending its stream: each later BTC bar waits
    data_wait_ms, then the session holds and logs data_missing, as the backtest does with the
    ETH bars cut there. Meanwhile a hot-swap that would change the inputs is refused."""
    path, artifact = write_artifact(tmp_path, "btceth", WITH_DATA, missing=", on_missing: hold")
    changed, _ = write_artifact(
        tmp_path, "btceth", WITH_DATA, version="2", missing=", on_missing: error"
    )
    btc, eth = bars(1, 175), bars(2, 175)
    cfg = settings(tmp_path, {"btceth": path}, data_wait_ms=60)
    assert cfg.runner.feed.endpoint is not None
    cut = START + 150 * HOUR
    script = [x for x in merged({BTC: btc, ETH: eth}) if x[0] == BTC or x[1].ts_ns < cut]
    with (
        Publisher(cfg.runner.feed.endpoint, session_id=1, sndhwm=0) as pub,
        service(cfg) as (runner, codes),
    ):
        pub.wait_for_subscribers(1, timeout_s=30)
        t0 = time.monotonic()
        for topic, bar in script:
            pub.publish(topic, bar)
        pub.heartbeat()
        pub.end(BTC)  # ETH never ends: it just goes quiet
        session = runner.sessions["btceth"]
        while session.bars < 160 and session.alive():
            time.sleep(0.01)
        reply = runner.handle_control(
            msgspec.json.encode(
                ControlRequest(request_id=7, action="swap", scope="btceth", artifact=str(changed))
            )
        )
        assert not reply.ok
        assert "keeps the data inputs" in reply.errors["btceth"]
    elapsed = time.monotonic() - t0
    assert codes == [0]
    assert elapsed >= 25 * 0.06  # it really waited for each of the 25 bars
    got = service_lines(tmp_path, "t-btceth")
    assert_backtest_then_stop(
        got, backtest_lines(tmp_path, artifact, btc, eth.head(150), "t-btceth")
    )
    assert sum(b'"kind":"data_missing"' in line for line in got) == 25


def test_run_paper_with_several_artifacts_serves_their_data_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stratagem run A.yaml B.yaml --paper --bars ETH/USDT=FILE` (`run_service_paper_cli`): the
    recorded instrument and input bars go on a bus, each session logs what its backtest logs."""
    from feeds.files import read_bars
    from stratagem.run import run_service_paper_cli

    data_path, with_data = write_artifact(tmp_path, "btceth", WITH_DATA)
    plain_path, plain = write_artifact(tmp_path, "sma", PLAIN)
    bars(1, 200).write_csv(tmp_path / "btc.csv")
    bars(2, 200).write_csv(tmp_path / "eth.csv")
    code = run_service_paper_cli(
        artifact_paths=[data_path, plain_path],
        data_path=tmp_path / "btc.csv",
        bars_files={"ETH/USDT": tmp_path / "eth.csv"},
        start_ns=None,
        end_ns=None,
        out_dir=tmp_path / "paper",
        as_json=True,
    )
    assert code == 0, capsys.readouterr()
    btc, eth = read_bars(tmp_path / "btc.csv"), read_bars(tmp_path / "eth.csv")
    for run_id, artifact, inputs in (
        ("paper-btceth-v1", with_data, eth),
        ("paper-sma-v1", plain, None),
    ):
        got = (tmp_path / "paper" / run_id / "strategy.log.jsonl").read_bytes().splitlines()
        assert_backtest_then_stop(got, backtest_lines(tmp_path, artifact, btc, inputs, run_id))
    with pytest.raises(
        StratagemError, match=r"--bars for DOGE/USDT: no artifact has a `data:` input"
    ):
        run_service_paper_cli(
            artifact_paths=[data_path, plain_path],
            data_path=tmp_path / "btc.csv",
            bars_files={"DOGE/USDT": tmp_path / "eth.csv"},
            start_ns=None,
            end_ns=None,
            out_dir=tmp_path / "paper2",
            as_json=True,
        )


def test_on_missing_error_stops_the_session_naming_the_bar(tmp_path: Path) -> None:
    path, _ = write_artifact(tmp_path, "btceth", WITH_DATA, missing=", on_missing: error")
    btc, eth = bars(1, 60), bars(2, 60)
    hole = START + 40 * HOUR
    cfg = settings(tmp_path, {"btceth": path}, data_wait_ms=50)
    feed = RecordedFeed(
        ipc_endpoint(tmp_path / "md.sock"),
        {BTC: (btc, HOUR), ETH: (eth.filter(pl.col("ts_ns") != hole), HOUR)},
        [BTC],
        window=1 << 40,
    )
    try:
        with service(cfg) as (runner, codes):
            feed.start()
    finally:
        feed.close()
    assert codes == [1]  # a failed session fails the service
    session = runner.sessions["btceth"]
    assert session.state == "failed" and session.restarts == 0 and session.bars == 40
    assert f"no ETH/USDT 1h bar closes at ts {hole + HOUR}" in session.error
    recs = list(read_strategy_log(tmp_path / "runs" / "t-btceth" / "strategy.log.jsonl"))
    stop = next(r for r in recs if r["kind"] == "control")
    assert stop["action"] == "stop" and stop["reason"] == "data_missing"
    assert not any(r["kind"] == "data_missing" for r in recs)


def _kernel_of(artifact: Artifact) -> Any:
    from strategy_kernel.engine import StrategyKernel

    return lambda: StrategyKernel(artifact, check(artifact), session_id="s", timeframe_ns=HOUR)


def test_replay_feeds_the_data_records_back_and_finds_where_each_input_stood(
    tmp_path: Path,
) -> None:
    """`replay_session` on logs that end inside a step: after its data records only (cut: the
    step is redone), or after the order kernel's answer to its bar (kept: not delivered twice)."""
    from order_kernel.kernel import OrderKernel
    from order_kernel.venues.sim import SimVenue
    from stratagem.service.session import cut_unfinished_data_step, replay_session
    from strategy_kernel.backtest import instrument_spec

    _, artifact = write_artifact(tmp_path, "btceth", WITH_DATA)
    btc, eth = bars(1, 150), bars(2, 150)
    full = backtest_lines(tmp_path, artifact, btc, eth, "s")
    inst = instrument_spec(artifact)
    ok = OrderKernel("s", {inst.symbol: inst}, SimVenue(slippage_ticks=0, seed=1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "strategy.log.jsonl"

    def replay(lines: list[bytes]) -> Any:
        path.write_bytes(b"".join(x + b"\n" for x in lines))
        cut = cut_unfinished_data_step(path)
        return cut, replay_session(path, _kernel_of(artifact), ok, run_dir, [])

    kinds = [msgspec.json.decode(x)["kind"] for x in full]
    cut, rec = replay(full)
    assert cut == 0 and not rec.data_done and rec.extra_lines == []
    last_eth = int(eth["ts_ns"][-1])
    assert rec.data_seen == {"eth": (START, last_eth)} and len(rec.loop.ts) == 150

    # the log ends after a step's data record: cut, the step will deliver it again
    i = next(i for i in range(100, len(kinds)) if kinds[i] == "data_bar")
    cut, rec = replay(full[: i + 1])
    assert cut == 1 and not rec.data_done
    assert path.read_bytes().splitlines() == full[:i]
    before = max(k for k in range(i) if kinds[k] == "data_bar")  # the last one kept
    assert rec.data_seen["eth"][1] == msgspec.json.decode(full[before])["ts_ns"]

    # ...or after the order kernel's answer to the bar: the data part is done
    j = next(j for j in range(1, len(kinds)) if kinds[j - 1] == "data_bar" and kinds[j] == "event")
    cut, rec = replay(full[: j + 1])
    assert cut == 0 and rec.data_done
    assert rec.data_seen["eth"][1] == msgspec.json.decode(full[j - 1])["ts_ns"]


# -- configuration -------------------------------------------------------------------------------
def test_data_wait_ms_is_read_from_the_service_config(tmp_path: Path) -> None:
    cfg = tmp_path / "service.toml"
    cfg.write_text("[runner]\ndata_wait_ms = 250\n")
    assert load_settings(cfg, env={}).runner.data_wait_ms == 250
    assert load_settings(None, env={}).runner.data_wait_ms == 2000
    cfg.write_text("[runner]\ndata_wait_ms = -1\n")
    with pytest.raises(ServiceError, match=r"runner\.data_wait_ms"):
        load_settings(cfg, env={})


def test_a_replay_feed_cannot_serve_a_data_input(tmp_path: Path) -> None:
    path, _ = write_artifact(tmp_path, "btceth", WITH_DATA)
    data = tmp_path / "btc.csv"
    bars(1, 30).write_csv(data)
    cfg = settings(tmp_path, {"btceth": path})
    cfg.runner.feed = FeedSettings(data=data, bars_per_second=0)
    with pytest.raises(RunnerError, match=r"reads data\.eth \(bar\.ETH-USDT\.1h\).*feed\.mode"):
        Runner(cfg)
