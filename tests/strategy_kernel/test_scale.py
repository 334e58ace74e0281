"""Scale-in / scale-out: adds and partial exits, long and short, exits resized by amend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.errors import ArtifactGraphError, ArtifactSchemaError
from artifacts.graph import SignalGraph, check
from artifacts.io import loads, to_data
from artifacts.schema import Artifact
from feeds.synthetic import generate_bars
from order_kernel import messages as m
from order_kernel.kernel import OrderKernel
from order_kernel.venues.sim import SimVenue
from strategy_kernel.backtest import instrument_spec, run_backtest
from strategy_kernel.fastpath import fast_backtest

START = 1_704_067_200_000_000_000


def scaled(
    base: Artifact, side: str = "long", add_pct: float = 50, out_pct: float = 40
) -> Artifact:
    d: dict[str, Any] = to_data(base)
    long = side == "long"
    d["nodes"]["rsi"] = {
        "kind": "indicator",
        "fn": "RSI",
        "inputs": ["close"],
        "params": {"period": 14},
    }
    d["entry"]["side"] = side
    d["entry"]["when"] = "golden" if long else "death"
    d["entry"]["scale_in"] = [
        {
            "when": {"node": "close", "op": ">" if long else "<", "value": "fast"},
            "size_pct": add_pct,
            "max_adds": 2,
        }
    ]
    d["exit"] = {
        "stop_loss": {"pct": 3.0},
        "when": "death" if long else "golden",
        "take_profit": [{"pct": 4, "size_pct": 50}, {"pct": 8, "size_pct": 50}],
        "scale_out": [
            {
                "when": {"node": "rsi", "op": ">" if long else "<", "value": 70 if long else 30},
                "size_pct": out_pct,
            }
        ],
    }
    d["risk"] = {"sizing": {"method": "pct_equity", "value": 30}, "max_position_pct": 100}
    return Artifact.model_validate(d)


class CheckingKernel:
    """The real order kernel; before every bar, the exits must match the open position."""

    def __init__(self, art: Artifact) -> None:
        inst = instrument_spec(art)
        self.symbol = inst.symbol
        self.ok = OrderKernel("bt", {inst.symbol: inst}, SimVenue())
        self.checked = 0
        self.max_pos = 0

    def handle(self, cmd: m.Command) -> list[m.Event]:
        if isinstance(cmd, m.MarketBar):
            self._check()
        return self.ok.handle(cmd)

    def _check(self) -> None:
        pos = abs(self.ok.position(self.symbol).qty)
        self.max_pos = max(self.max_pos, pos)
        stops = [o for o in self.ok.open_orders() if o.client_order_id.endswith(".sl")]
        targets = [o for o in self.ok.open_orders() if ".tp" in o.client_order_id]
        if pos == 0:
            return
        adds = sum(
            o.qty - o.filled_qty for o in self.ok.open_orders() if ".add" in o.client_order_id
        )
        assert len(stops) == 1, "an open position has exactly one working stop"
        # the stop covers the position plus an add that is on its way (sized before it fills)
        assert stops[0].qty - stops[0].filled_qty == pos + adds, (stops[0], pos, adds)
        assert sum(o.qty - o.filled_qty for o in targets) <= pos
        self.checked += 1


@pytest.mark.parametrize("side", ["long", "short"])
def test_stop_always_covers_the_position_and_every_amend_is_accepted(
    side: str, sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    a = scaled(sma_artifact[0], side)
    ck = CheckingKernel(a)
    res = run_backtest(a, check(a), sample_bars.head(3000), kernel=ck, out_dir=tmp_path)
    assert ck.checked > 100 and len(res.trades) > 10
    recs = [json.loads(x) for x in (tmp_path / "strategy.log.jsonl").read_text().splitlines()]
    actions = [r["action"] for r in recs if r["kind"] == "decision"]
    assert actions.count("scale_add") > 10 and actions.count("scale_out") > 5
    assert actions.count("resize_stop") > 10 and actions.count("resize_target") > 10
    cmds = [r["msg"] for r in recs if r["kind"] == "command"]
    events = [r["msg"] for r in recs if r["kind"] == "event"]
    amends = [c for c in cmds if c["type"] == "AmendOrder"]
    assert len(amends) == sum(1 for e in events if e["type"] == "AmendAccepted")
    # exits are moved in place, never cancelled and re-sent by the strategy
    assert not [
        c for c in cmds if c["type"] == "SubmitOrder" and c["client_order_id"].endswith(".sl")
    ]
    assert not res.refusals
    sign = 1 if side == "long" else -1
    assert np.all(sign * res.position >= 0), "scaling never flips the position"
    assert any(t.entry_qty > t.planned_qty for t in res.trades), "adds raise the filled qty"
    assert any("out" in t.exit_reason for t in res.trades)
    for t in res.trades:
        assert t.entry_qty == t.exit_qty
    final = res.equity[-1] - a.backtest.initial_equity
    if res.position[-1] == 0:
        assert abs(final - sum(t.pnl for t in res.trades) * res.unit_value) < 1e-6


@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    side=st.sampled_from(["long", "short"]),
    add=st.floats(10, 150),
    out=st.floats(5, 90),
)
def test_scaling_invariants_on_random_data(
    seed: int, side: str, add: float, out: float, sma_artifact: tuple[Artifact, SignalGraph]
) -> None:
    a = scaled(sma_artifact[0], side, add, out)
    bars = generate_bars(seed=seed, start_ns=START, n=1200, timeframe="1h")
    ck = CheckingKernel(a)
    res = run_backtest(a, check(a), bars, kernel=ck)
    assert not [r for r in res.refusals if str(r["rule"]).startswith("order_kernel")]
    for t in res.trades:
        assert t.entry_qty == t.exit_qty
    # the position cap (100 % of equity) bounds every add
    close_max = float(bars["close"].max())  # type: ignore[arg-type]
    assert ck.max_pos * 0.0001 * float(bars["close"].min()) <= 1.05 * res.equity.max()  # type: ignore[arg-type]
    assert close_max > 0


def test_no_scaling_when_max_adds_used_up(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    a = scaled(sma_artifact[0])
    run_backtest(a, check(a), sample_bars.head(3000), out_dir=tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "strategy.log.jsonl").read_text().splitlines()]
    per_trade: dict[str, int] = {}
    outs: dict[str, int] = {}
    for r in recs:
        if r["kind"] == "command" and r["msg"]["type"] == "SubmitOrder":
            cid = r["msg"]["client_order_id"]
            trade, _, kind = cid.partition(".")
            if kind.startswith("add"):
                per_trade[trade] = per_trade.get(trade, 0) + 1
            if kind.startswith("out"):
                outs[trade] = outs.get(trade, 0) + 1
    assert per_trade and max(per_trade.values()) <= 2
    assert outs and max(outs.values()) == 1


def test_fast_path_scales_trade_for_trade(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame
) -> None:
    a = scaled(sma_artifact[0])
    bars = sample_bars.head(1500)
    ev, fp = run_backtest(a, check(a), bars), fast_backtest(a, check(a), bars)
    assert fp.trades == ev.trades and any("out" in t.exit_reason for t in ev.trades)
    assert np.array_equal(fp.equity, ev.equity) and np.array_equal(fp.position, ev.position)


def _yaml(extra_entry: str = "", extra_exit: str = "") -> str:
    return (
        "schema: stratagem/v1\nname: v\nversion: 1\n"
        "instrument: {venue: sim, symbol: BTC/USDT, timeframe: 1h}\n"
        "nodes:\n  up: {kind: rising, input: close}\n"
        f"entry:\n  when: up\n  side: long\n{extra_entry}"
        f"exit:\n  stop_loss: {{pct: 2}}\n{extra_exit}"
    )


def test_schema_and_graph_errors_name_the_field_and_line() -> None:
    with pytest.raises(ArtifactSchemaError) as e:
        loads(_yaml(extra_exit="  scale_out: [{when: up, size_pct: 100}]\n"), "s.yaml")
    assert "s.yaml:12: exit.scale_out[0].size_pct:" in str(e.value)
    with pytest.raises(ArtifactSchemaError, match=r"entry.scale_in\[0\].max_adds"):
        loads(_yaml(extra_entry="  scale_in: [{when: up, size_pct: 50, max_adds: 0}]\n"))
    art = loads(_yaml(extra_entry="  scale_in:\n    - {when: upp, size_pct: 50}\n"), "s.yaml")
    with pytest.raises(ArtifactGraphError) as g:
        from artifacts.io import loads_with_lines

        _, lines = loads_with_lines(
            _yaml(extra_entry="  scale_in:\n    - {when: upp, size_pct: 50}\n")
        )
        check(art, "s.yaml", lines)
    assert "s.yaml:11: entry.scale_in[0].when: unknown node or column 'upp'" in str(g.value)
    assert "did you mean 'up'" in str(g.value)


def test_existing_artifacts_hash_and_dump_are_unchanged(
    rsi_artifact: tuple[Artifact, SignalGraph],
) -> None:
    data = to_data(rsi_artifact[0])
    assert "scale_in" not in data["entry"] and "scale_out" not in data["exit"]
    assert "portfolio" not in data["risk"]


def test_hot_swap_adds_scale_rules_to_an_open_trade(
    sma_artifact: tuple[Artifact, SignalGraph], sample_bars: pl.DataFrame, tmp_path: Path
) -> None:
    """A new version with scale rules applies them to the position already open (no teardown)."""
    plain = sma_artifact[0]
    base = run_backtest(plain, check(plain), sample_bars.head(1500))
    t = base.trades[1]
    swap_at = t.entry_bar + 1  # the position is open after this bar's close
    d: dict[str, Any] = to_data(scaled(plain))
    d["version"] = 2
    d["exit"] = {**to_data(plain)["exit"], "scale_out": d["exit"]["scale_out"]}
    d["exit"]["scale_out"][0]["when"] = {"node": "close", "op": ">", "value": 0}  # at once
    new = Artifact.model_validate(d)
    res = run_backtest(
        plain, check(plain), sample_bars.head(1500), swaps=[(swap_at, new)], out_dir=tmp_path
    )
    recs = [json.loads(x) for x in (tmp_path / "strategy.log.jsonl").read_text().splitlines()]
    outs = [r for r in recs if r.get("action") == "scale_out"]
    assert outs and outs[0]["ts_ns"] > sample_bars["ts_ns"][swap_at]
    assert res.trades[1].trade_id == t.trade_id and "out" in res.trades[1].exit_reason
