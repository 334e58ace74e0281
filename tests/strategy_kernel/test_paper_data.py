"""Paper mode runs what the backtest runs: `data:` inputs from their own bus topics and several
artifacts on one account in lockstep, writing the backtest's logs byte for byte, also when an
input bar arrives late or never."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import check
from artifacts.io import loads
from artifacts.schema import Artifact
from feeds.bus import Publisher, Subscriber, bar_topic
from feeds.schema import Bar
from feeds.synthetic import generate_bars
from indicators.nodes import BarValues
from order_kernel.kernel import OrderKernel
from order_kernel.venues.sim import SimVenue
from strategy_kernel.backtest import instrument_spec, run_backtest
from strategy_kernel.errors import BacktestError
from strategy_kernel.multidata import DataFeed, LiveDataFeed
from strategy_kernel.paper import PaperStop, RecordedFeed, run_paper, run_portfolio_paper
from strategy_kernel.portfolio import AccountLimits, run_portfolio_backtest

START = 1_704_067_200_000_000_000
HOUR = 3_600_000_000_000
BTC = bar_topic("BTC/USDT", "1h")
ETH = bar_topic("ETH/USDT", "1h")

YAML = """schema: stratagem/v1
name: %(name)s
version: 1
instrument: {venue: sim, symbol: %(symbol)s, timeframe: 1h}
data:
  eth: {symbol: ETH/USDT, timeframe: %(tf)s%(missing)s}
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


def art(
    tf: str = "1h", missing: str = "", name: str = "btc-eth", symbol: str = "BTC/USDT"
) -> Artifact:
    extra = f", on_missing: {missing}" if missing else ""
    return loads(YAML % {"tf": tf, "missing": extra, "name": name, "symbol": symbol})


def bars(seed: int, n: int, tf: str = "1h", start: int = START) -> pl.DataFrame:
    return generate_bars(seed=seed, start_ns=start, n=n, timeframe=tf)


def sim_kernel(a: Artifact, session: str) -> OrderKernel:
    inst = instrument_spec(a)
    venue = SimVenue(slippage_ticks=a.backtest.slippage_ticks, seed=a.backtest.seed)
    return OrderKernel(session, {inst.symbol: inst}, venue)


def log_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _bar(row: tuple[int, float, float, float, float, float]) -> Bar:
    t, o, h, lo, c, v = row
    return Bar(ts_ns=t, open=o, high=h, low=lo, close=c, volume=v)


Script = list[tuple[str, tuple[int, float, float, float, float, float] | None]]


@contextlib.contextmanager
def scripted(
    endpoint: str, script: Script, pause: Callable[[int], float] | None = None
) -> Iterator[None]:
    """A publisher thread sending `script` ((topic, row) = a bar, (topic, None) = end of stream),
    with an optional pause (s) before message i: a late publisher."""

    def run() -> None:
        with Publisher(endpoint, session_id=1, sndhwm=0) as pub:
            pub.wait_for_subscribers(1, timeout_s=20)
            for i, (topic, row) in enumerate(script):
                if pause is not None and pause(i):
                    time.sleep(pause(i))
                if row is None:
                    pub.heartbeat()
                    pub.end(topic)
                else:
                    pub.publish(topic, _bar(row))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        t.join(timeout=30)


def rows(frame: pl.DataFrame) -> list[tuple[int, float, float, float, float, float]]:
    return frame.select("ts_ns", "open", "high", "low", "close", "volume").rows()


# ------------------------------------------------------------------ LiveDataFeed vs DataFeed


@settings(max_examples=25, deadline=None)
@given(
    tf=st.sampled_from(["15m", "1h", "4h"]),
    offset=st.integers(-8, 8),
    n=st.integers(5, 60),
    holes=st.lists(st.integers(0, 59), max_size=6),
    missing=st.sampled_from(["", "hold", "error"]),
)
def test_live_feed_answers_what_the_backtest_feed_answers(
    tf: str, offset: int, n: int, holes: list[int], missing: str
) -> None:
    """Bars pushed as they close (the last moment paper mode could have them) give the same
    deliveries, missing-bar holds and errors as DataFeed with every bar known in advance."""
    a = art(tf=tf, missing=missing)
    tf_ns = {"15m": HOUR // 4, "1h": HOUR, "4h": 4 * HOUR}[tf]
    aux = bars(2, n, tf, START + offset * tf_ns)
    aux = aux.filter(~pl.int_range(pl.len()).is_in(holes))
    if aux.height == 0:
        return
    try:
        ref = DataFeed(a, {"ETH/USDT": aux}, HOUR)
    except BacktestError:  # too holed to tell its timeframe: the backtest refuses it up front
        return
    live = LiveDataFeed(a, HOUR)
    topic = bar_topic("ETH/USDT", tf)
    queue = [BarValues(*r) for r in rows(aux)]
    for i in range(80):
        t = START + i * HOUR
        while queue and queue[0].ts_ns + tf_ns <= t + HOUR:
            assert live.push(topic, queue.pop(0)) == []
        try:
            want = ref.due(t)
        except BacktestError as exc:
            with pytest.raises(BacktestError) as got:
                live.due(t)
            assert str(got.value) == str(exc) and "data.eth: no ETH/USDT" in str(exc)
            return
        assert live.due(t) == want


def test_awaited_names_inputs_with_a_bar_due_and_not_yet_in() -> None:
    a = art(tf="4h")
    live = LiveDataFeed(a, HOUR)
    topic = bar_topic("ETH/USDT", "4h")
    assert live.topics == [topic]
    # before any bar: the epoch-aligned 4h grid; START is midnight, so 4h bars close at 04:00 ...
    assert live.awaited(START) == []  # decision 01:00: no 4h bar closes then
    assert live.awaited(START + 3 * HOUR) == ["eth"]  # decision 04:00
    first = BarValues(START, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert live.push(topic, first) == []
    assert live.awaited(START + 3 * HOUR) == []  # its close (04:00) is the decision: in
    assert live.awaited(START + 7 * HOUR) == ["eth"]
    assert live.push(topic, first) == ["eth"]  # the same bar again: out of order, refused
    live.end(topic)
    assert live.awaited(START + 7 * HOUR) == []  # ended: never waited for again


# ------------------------------------------------------------------ run_paper with data inputs


def _paper(
    a: Artifact,
    tmp_path: Path,
    script: Script,
    *,
    pause: Callable[[int], float] | None = None,
    data_wait_ms: int = 10_000,
) -> tuple[Path, PaperStop]:
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    out = tmp_path / "paper"
    with (
        Subscriber(endpoint, [BTC, ETH], rcvhwm=0) as sub,
        scripted(endpoint, script, pause),
    ):
        _res, stop = run_paper(
            a,
            check(a),
            sub,
            sim_kernel(a, "bt"),
            out_dir=out,
            session_id="bt",
            idle_timeout_ms=20_000,
            data_wait_ms=data_wait_ms,
        )
    return out / "strategy.log.jsonl", stop


def _interleave(btc: pl.DataFrame, eth: pl.DataFrame, eth_after: bool) -> Script:
    """Both series bar by bar; ETH's bar before BTC's of the same hour, or after (late)."""
    out: Script = []
    for b, e in zip(rows(btc), rows(eth), strict=False):
        pair = [(ETH, e), (BTC, b)]
        out += reversed(pair) if eth_after else pair
    out += [(ETH, None), (BTC, None)]
    return out


@pytest.mark.parametrize("eth_after", [False, True], ids=["in-order", "input-late"])
def test_paper_with_a_data_input_logs_the_backtest_bytes(tmp_path: Path, eth_after: bool) -> None:
    """Input-late: every ETH bar is published after the BTC bar that must see it; the session
    waits for it (data_wait_ms) and the log is still the backtest's."""
    a = art()
    btc, eth = bars(1, 400), bars(2, 400)
    bt = run_backtest(a, check(a), btc, data_bars={"ETH/USDT": eth}, out_dir=tmp_path / "bt")
    assert bt.trades
    log, stop = _paper(a, tmp_path, _interleave(btc, eth, eth_after))
    assert stop.reason == "end_of_stream" and stop.bars == 400
    assert log_bytes(log) == log_bytes(tmp_path / "bt" / "strategy.log.jsonl")


def test_a_missing_input_bar_is_held_and_logged_as_in_the_backtest(tmp_path: Path) -> None:
    a = art()
    btc, eth = bars(1, 200), bars(2, 200)
    holed = eth.filter(pl.int_range(pl.len()) != 120)
    run_backtest(a, check(a), btc, data_bars={"ETH/USDT": holed}, out_dir=tmp_path / "bt")
    want = log_bytes(tmp_path / "bt" / "strategy.log.jsonl")
    assert b'"kind":"data_missing"' in want
    gone = int(eth["ts_ns"][120])
    script = [
        x for x in _interleave(btc, eth, True) if x[0] == BTC or x[1] is None or x[1][0] != gone
    ]
    log, _stop = _paper(a, tmp_path, script)
    assert log_bytes(log) == want


def test_an_input_that_goes_silent_is_missing_once_the_budget_is_spent(tmp_path: Path) -> None:
    """ETH stops after 150 bars without ending its stream: each later BTC bar waits
    data_wait_ms, then holds and logs data_missing, as the backtest does with the ETH bars cut."""
    a = art()
    btc, eth = bars(1, 175), bars(2, 175)
    run_backtest(a, check(a), btc, data_bars={"ETH/USDT": eth.head(150)}, out_dir=tmp_path / "bt")
    cut = int(eth["ts_ns"][150])
    script = [x for x in _interleave(btc, eth, False) if x[0] == BTC or (x[1] and x[1][0] < cut)]
    t0 = time.monotonic()
    log, _stop = _paper(a, tmp_path, script, data_wait_ms=20)
    assert time.monotonic() - t0 >= 25 * 0.02  # it really waited for each of the 25 bars
    got = log_bytes(log)
    assert got == log_bytes(tmp_path / "bt" / "strategy.log.jsonl")
    assert got.count(b'"kind":"data_missing"') == 25


def test_on_missing_error_stops_the_paper_run(tmp_path: Path) -> None:
    a = art(missing="error")
    btc, eth = bars(1, 60), bars(2, 60)
    gone = int(eth["ts_ns"][30])
    script = [
        x for x in _interleave(btc, eth, False) if x[0] == BTC or x[1] is None or x[1][0] != gone
    ]
    with pytest.raises(BacktestError, match=r"data.eth: no ETH/USDT 1h bar closes at ts"):
        _paper(a, tmp_path, script)


def test_a_coarser_input_on_a_live_bus(tmp_path: Path) -> None:
    """A 4h input published by the recorded feed (merged by close time): same bytes."""
    a = art(tf="4h")
    btc, eth4 = bars(1, 400), bars(3, 100, "4h")
    run_backtest(a, check(a), btc, data_bars={"ETH/USDT": eth4}, out_dir=tmp_path / "bt")
    topic4 = bar_topic("ETH/USDT", "4h")
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    feed = RecordedFeed(endpoint, {BTC: (btc, HOUR), topic4: (eth4, 4 * HOUR)}, [BTC], window=50)
    with Subscriber(endpoint, [BTC, topic4], rcvhwm=0) as sub:
        feed.start()
        try:
            _res, stop = run_paper(
                a, check(a), sub, sim_kernel(a, "bt"), out_dir=tmp_path / "paper",
                session_id="bt", on_bar=feed.ack, idle_timeout_ms=20_000,
            )  # fmt: skip
        finally:
            feed.close()
    assert feed.error == "" and stop.reason == "end_of_stream" and stop.bars == 400
    assert log_bytes(tmp_path / "paper" / "strategy.log.jsonl") == log_bytes(
        tmp_path / "bt" / "strategy.log.jsonl"
    )


def test_the_subscriber_must_receive_the_input_topics(tmp_path: Path) -> None:
    a = art()
    with (
        Subscriber(f"ipc://{tmp_path / 'md.sock'}", [BTC]) as sub,
        pytest.raises(BacktestError, match=r"does not receive bar\.ETH-USDT\.1h"),
    ):
        run_paper(a, check(a), sub, sim_kernel(a, "bt"), out_dir=None)


# ------------------------------------------------------------------ portfolio in lockstep


def _always(name: str, symbol: str, side: str, pct: float, hold: int) -> Artifact:
    return Artifact.model_validate(
        {
            "schema": "stratagem/v1",
            "name": name,
            "version": 1,
            "instrument": {"venue": "sim", "symbol": symbol, "timeframe": "1h"},
            "nodes": {"any_time": {"kind": "time_window"}},
            "entry": {"when": "any_time", "side": side},
            "exit": {"time_exit": f"{hold} bars"},
            "risk": {"sizing": {"method": "pct_equity", "value": pct}, "max_position_pct": 500},
            "backtest": {"initial_equity": 10_000},
        }
    )


def _portfolio_case() -> tuple[list[Artifact], dict[str, pl.DataFrame], AccountLimits]:
    arts = [
        _always("a-btc", "BTC/USDT", "long", 40, 5),
        art(name="b-sol", symbol="SOL/USDT"),
        _always("c-eth", "ETH/USDT", "short", 30, 3),
    ]
    data = {
        "BTC/USDT": bars(1, 300),
        "SOL/USDT": bars(4, 250, start=START + 20 * HOUR),  # starts and ends inside the others
        "ETH/USDT": bars(2, 300),
    }
    return arts, data, AccountLimits(max_concurrent_positions=2, max_exposure_pct=60)


def _compare_portfolio_dirs(bt: Path, paper: Path, names: list[str]) -> None:
    assert log_bytes(paper / "portfolio.log.jsonl") == log_bytes(bt / "portfolio.log.jsonl")
    for n in names:
        assert log_bytes(paper / n / "strategy.log.jsonl") == log_bytes(
            bt / n / "strategy.log.jsonl"
        ), n


def test_portfolio_paper_in_lockstep_logs_the_backtest_bytes(tmp_path: Path) -> None:
    arts, data, limits = _portfolio_case()
    bt = run_portfolio_backtest(arts, data, account=limits, out_dir=tmp_path / "bt")
    assert bt.refusals and max(bt.open_positions) == 2  # the limits really bind
    sol = bar_topic("SOL/USDT", "1h")
    series = {
        BTC: (data["BTC/USDT"], HOUR),
        ETH: (data["ETH/USDT"], HOUR),
        sol: (data["SOL/USDT"], HOUR),
    }
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    feed = RecordedFeed(endpoint, series, [BTC, ETH, sol], window=100)
    with Subscriber(endpoint, [BTC, ETH, sol], rcvhwm=0) as sub:
        feed.start()
        try:
            res, stop = run_portfolio_paper(
                arts, sub, {a.name: sim_kernel(a, a.name) for a in arts}, account=limits,
                out_dir=tmp_path / "paper", on_step=feed.ack, idle_timeout_ms=20_000,
            )  # fmt: skip
        finally:
            feed.close()
    assert stop.reason == "end_of_stream" and stop.bars == bt.ts_ns.shape[0]
    assert res is not None and res.refusals == bt.refusals
    assert np.array_equal(res.equity, bt.equity) and np.array_equal(res.ts_ns, bt.ts_ns)
    assert res.portfolio_log_head == bt.portfolio_log_head
    _compare_portfolio_dirs(tmp_path / "bt", tmp_path / "paper", [a.name for a in arts])


def test_portfolio_paper_waits_for_a_late_instrument_and_drops_a_too_late_one(
    tmp_path: Path,
) -> None:
    """Two publishers' worth of disorder on one socket: ETH's bar of each hour comes after
    BTC's next bar. Within bar_wait_ms the lockstep waits and logs the backtest's bytes."""
    arts = [
        _always("a-btc", "BTC/USDT", "long", 40, 5),
        _always("c-eth", "ETH/USDT", "long", 40, 3),
    ]
    data = {"BTC/USDT": bars(1, 120), "ETH/USDT": bars(2, 120)}
    limits = AccountLimits(max_concurrent_positions=1)
    run_portfolio_backtest(arts, data, account=limits, out_dir=tmp_path / "bt")
    b, e = rows(data["BTC/USDT"]), rows(data["ETH/USDT"])
    script: Script = [(BTC, b[0])]
    for i in range(1, 120):
        script += [(BTC, b[i]), (ETH, e[i - 1])]
    script += [(ETH, e[119]), (BTC, None), (ETH, None)]
    endpoint = f"ipc://{tmp_path / 'md.sock'}"

    def paper(out: Path, bar_wait_ms: int, pause: Callable[[int], float] | None) -> PaperStop:
        with Subscriber(endpoint, [BTC, ETH], rcvhwm=0) as sub, scripted(endpoint, script, pause):
            return run_portfolio_paper(
                arts, sub, {a.name: sim_kernel(a, a.name) for a in arts}, account=limits,
                out_dir=out, bar_wait_ms=bar_wait_ms, idle_timeout_ms=20_000,
            )[1]  # fmt: skip

    paper(tmp_path / "paper", 10_000, None)
    _compare_portfolio_dirs(tmp_path / "bt", tmp_path / "paper", ["a-btc", "c-eth"])
    # the publisher stalls 2 s before ETH's bar of hour 60, with a 250 ms budget: hours 60 and
    # 61 (BTC's bar 61 is already in) step without ETH, whose bars 60 and 61 are then out of
    # order (logged, ignored); the run goes on
    late = script.index((ETH, e[60]))
    stop = paper(tmp_path / "late", 250, lambda i: 2.0 if i == late else 0.0)
    assert stop.out_of_order == 2
    eth_log = log_bytes(tmp_path / "late" / "c-eth" / "strategy.log.jsonl")
    assert eth_log.count(b'"kind":"feed_out_of_order"') == 2
    assert eth_log.count(b'"kind":"bar"') == 118
    btc_log = log_bytes(tmp_path / "late" / "a-btc" / "strategy.log.jsonl")
    assert btc_log.count(b'"kind":"bar"') == 120


def test_gaps_in_the_recorded_instrument_bars_are_logged_as_the_backtest_does(
    tmp_path: Path,
) -> None:
    """Replaying a recorded file with gaps: `data_gaps` (from check_data) is logged after the
    header, and the bars step over the gap the same way."""
    from strategy_kernel.backtest import check_data

    a = art()
    btc = bars(1, 300).filter(~pl.int_range(pl.len()).is_in([100, 101, 200]))
    eth = bars(2, 300)
    run_backtest(a, check(a), btc, data_bars={"ETH/USDT": eth}, out_dir=tmp_path / "bt")
    gaps = check_data(a, btc)
    assert gaps is not None and gaps["missing_bars"] == 3
    endpoint = f"ipc://{tmp_path / 'md.sock'}"
    feed = RecordedFeed(endpoint, {BTC: (btc, HOUR), ETH: (eth, HOUR)}, [BTC])
    with Subscriber(endpoint, [BTC, ETH], rcvhwm=0) as sub:
        feed.start()
        try:
            res, stop = run_paper(
                a, check(a), sub, sim_kernel(a, "bt"), out_dir=tmp_path / "paper",
                session_id="bt", on_bar=feed.ack, data_gaps=gaps, idle_timeout_ms=20_000,
            )  # fmt: skip
        finally:
            feed.close()
    assert stop.bars == 297 and res is not None and res.data_gaps == gaps
    got = log_bytes(tmp_path / "paper" / "strategy.log.jsonl")
    assert got.count(b'"kind":"data_gaps"') == 1
    assert got == log_bytes(tmp_path / "bt" / "strategy.log.jsonl")
