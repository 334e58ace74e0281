"""The compile loop end to end against the stub server: recover, fail loudly, judge veto, planner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from artifacts.graph import check
from artifacts.schema import SentimentNode
from compiler.errors import CompileFailedError, CostCeilingError
from compiler.llm import LLMClient, LLMConfig
from compiler.loop import CompileLoop, CompileRequest, Gates, direction_problems
from compiler.stub_server import StubOpenAI, completion, load_script
from compiler.tools import SentimentSetup
from compiler.versioning import trace_sha256
from tests.compiler._helpers import FIXTURES, fixture_json

DRAFTS = fixture_json("drafts.json")
APPROVE = completion(json.dumps({"approve": True, "reasons": ["fine"]}))


def _req(bars: pl.DataFrame, **kw: Any) -> CompileRequest:
    return CompileRequest(
        text="long on a fast/slow SMA cross, 2% stop",
        symbol="BTC/USDT",
        timeframe="1h",
        bars=bars,
        **kw,
    )


def test_recovers_from_malformed_and_wrong_drafts(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.add(*load_script(FIXTURES / "recover_after_bad_drafts.json"))
    result = CompileLoop(client, max_attempts=3).run(_req(bars, turn=4))
    a = result.artifact
    check(a)
    assert a.name == "sma-trend" and a.version == 1 and a.entry.when == "golden"
    assert len(result.attempts) == 2
    assert "not a valid artifact" in result.attempts[0]
    assert "fastt" in result.attempts[1] and "did you mean 'fast'" in result.attempts[1]
    # the precise error went back to the model
    fed_back = [m["content"] for m in stub.requests[1]["messages"] if m["role"] == "user"]
    assert "not a valid artifact" in fed_back[-1]
    assert result.verdict is not None and result.verdict.approve
    assert result.backtest["trades"] >= 1 and result.backtest["bars"] == 900
    assert result.node_turns == {"fast": 4, "slow": 4, "golden": 4}
    assert a.provenance.model == "stub-model" and a.provenance.prompt_sha == result.prompt_sha
    # typed provenance: endpoint class, the trace hash, the turn and the held-out window
    assert a.provenance.base_url_class == "local" and a.provenance.conversation_turn == 4
    assert a.provenance.trace_sha == result.trace_sha == trace_sha256(result.trace)
    bt = a.provenance.backtest
    assert bt is not None and (bt.bars, bt.trades) == (900, result.backtest["trades"])
    assert (bt.window_from_ns, bt.window_to_ns) == (
        int(bars["ts_ns"][2100]),
        int(bars["ts_ns"][-1]),
    )
    assert result.provenance()["base_url_class"] == "local"
    assert a.provenance.tools == [
        "query_chart",
        "compute_indicator",
        "compute_indicator",
        "compose_signal_node",
        "emit_strategy",
    ]
    # tools saw only the in-sample part (the held-out window stays unseen)
    tool_msgs = [m for m in stub.requests[3]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_msgs[0]["content"])["bars"] == 2100
    assert [r["role"] for r in client.log.rows()] == ["author"] * 4 + ["judge"]


def test_fails_loudly_after_n_attempts(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.add(*[{"body": completion("{broken")}] * 2)
    with pytest.raises(CompileFailedError) as err:
        CompileLoop(client, max_attempts=2).run(_req(bars))
    assert len(err.value.attempts) == 2
    assert "after 2 attempt(s); nothing was emitted" in str(err.value)
    assert "attempt 2:" in str(err.value)


def test_judge_veto_then_revision(stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame) -> None:
    good = json.dumps(DRAFTS["good"])
    veto = completion(json.dumps({"approve": False, "reasons": ["no take-profit ladder"]}))
    stub.add({"body": completion(good)}, {"body": veto}, {"body": completion(good)}, {"body": veto})
    with pytest.raises(CompileFailedError, match="judge veto: no take-profit ladder"):
        CompileLoop(client, max_attempts=2).run(_req(bars))
    assert "The judge vetoed" in stub.requests[2]["messages"][-1]["content"]


def test_refusal_and_bad_judge_end_the_compile(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.reply(completion(None, refusal="no trading advice"))
    with pytest.raises(CompileFailedError, match="refused"):
        CompileLoop(client).run(_req(bars))
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))}, {"body": completion("yes!")})
    with pytest.raises(CompileFailedError, match="judge gave no usable verdict"):
        CompileLoop(client).run(_req(bars))


def test_backtest_gate_and_direction_sanity_feed_back(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    nostop = dict(DRAFTS["good"], exit={})
    never = dict(DRAFTS["good"])
    never["nodes"] = dict(
        never["nodes"], golden={"kind": "threshold", "input": "fast", "op": ">", "value": 1e9}
    )
    stub.add(
        {"body": completion(json.dumps(nostop))},
        {"body": completion(json.dumps(never))},
        {"body": completion(json.dumps(DRAFTS["good"]))},
    )
    result = CompileLoop(client, judge=False).run(_req(bars))
    assert "exit.stop_loss: missing" in result.attempts[0]
    assert "0 trade(s) on the held-out window" in result.attempts[1]
    assert result.verdict is None


def test_planner_for_large_requests(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    plan = {
        "steps": ["compute SMAs", "cross"],
        "side": "long",
        "signals": ["sma"],
        "risk_notes": "2%",
    }
    stub.add(
        {"body": completion(json.dumps(plan))},
        {"body": completion(json.dumps(DRAFTS["good"]))},
        {"body": APPROVE},
    )
    result = CompileLoop(client, plan=True).run(_req(bars))
    assert result.plan is not None and result.plan.side == "long"
    assert "Plan from the planner" in stub.requests[1]["messages"][1]["content"]
    assert stub.requests[0]["messages"][0]["content"].startswith("You are the planner")
    assert stub.requests[2]["messages"][0]["content"].startswith("You are the judge")


def test_revision_bumps_version_and_records_parent(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))}, {"body": APPROVE})
    first = CompileLoop(client).run(_req(bars)).artifact
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))}, {"body": APPROVE})
    second = (
        CompileLoop(client).run(_req(bars, current=first, last_backtest={"trades": 3})).artifact
    )
    assert second.version == 2 and second.provenance.parent is not None
    assert "## Current artifact" in stub.requests[-2]["messages"][1]["content"]


def test_cost_ceiling_stops_the_loop(stub: StubOpenAI, bars: pl.DataFrame, tmp_path: Any) -> None:
    cfg = LLMConfig(
        base_url=stub.base_url,
        log_path=str(tmp_path / "l.db"),
        prompt_price_per_1k=10.0,
        max_cost_per_call=0.01,
    )
    c = LLMClient(cfg)
    try:
        with pytest.raises(CostCeilingError, match="max_cost_per_call"):
            CompileLoop(c).run(_req(bars))
    finally:
        c.close()
    assert stub.requests == []


def test_direction_problems_for_order_templates() -> None:
    from artifacts.io import loads

    bad = dict(
        DRAFTS["good"],
        entry={"when": "golden", "side": "long", "order": {"type": "limit", "offset_ticks": 5}},
    )
    assert any("wrong side" in p for p in direction_problems(loads(json.dumps(bad))))
    stop = dict(
        DRAFTS["good"],
        entry={"when": "golden", "side": "short", "order": {"type": "stop", "offset_ticks": 5}},
    )
    assert any("below" in p for p in direction_problems(loads(json.dumps(stop))))
    assert direction_problems(loads(json.dumps(DRAFTS["good"]))) == []
    assert Gates().holdout_fraction == 0.3


def test_tool_call_errors_are_fed_back(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.add(
        {
            "body": completion(
                tool_calls=[
                    ("place_order", {"side": "buy"}),
                    ("compute_indicator", '{"node_id": "fast", "fn": '),
                    (
                        "compute_indicator",
                        {"node_id": "fast", "fn": "SMA", "params": {"period": 0}},
                    ),
                ]
            )
        },
        {"body": completion(tool_calls=[("query_chart", {})])},
        {"body": completion(tool_calls=[("query_chart", {})])},
        {"body": completion(json.dumps(DRAFTS["good"]))},
        {"body": APPROVE},
    )
    result = CompileLoop(client, max_tool_rounds=2).run(_req(bars))
    errors = [
        json.loads(m["content"])["error"]
        for m in stub.requests[1]["messages"]
        if m["role"] == "tool"
    ]
    assert "unknown tool 'place_order'" in errors[0]
    assert "not valid JSON" in errors[1]
    assert "period" in errors[2]
    assert result.attempts == [
        "no draft after 2 tool rounds: call emit_strategy with what you have"
    ]
    assert result.trace["tool_calls"][0]["ok"] is False
    assert result.artifact.provenance.tools == ["query_chart", "query_chart"]


def test_structured_drafts_send_the_artifact_schema(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame
) -> None:
    stub.add({"body": completion(json.dumps(DRAFTS["good"]))})
    CompileLoop(client, judge=False, structured_drafts=True).run(_req(bars))
    fmt = stub.requests[0]["response_format"]
    assert fmt["json_schema"]["name"] == "stratagem_artifact"
    assert "nodes" in fmt["json_schema"]["schema"]["properties"]
    assert len(stub.requests[0]["tools"]) == 7


def test_a_sentiment_node_from_stored_news_reaches_the_artifact(
    stub: StubOpenAI, client: LLMClient, bars: pl.DataFrame, tmp_path: Path
) -> None:
    news = tmp_path / "news.jsonl"
    ts = bars["ts_ns"].to_list()
    rows = [
        {"source": "rss:a", "ts_ns": ts[i] + 7, "symbols": ["BTC/USDT"],
         "text": "BTC rally strong gains" if i % 2 else "BTC crash fear losses"}
        for i in range(50, 3000, 100)
    ]  # fmt: skip
    news.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sma = {"fn": "SMA", "inputs": ["close"]}
    stub.add(
        {
            "body": completion(
                tool_calls=[
                    ("fetch_news_sentiment", {"node_id": "mood", "half_life_bars": 12}),
                    ("compute_indicator", {"node_id": "fast", **sma, "params": {"period": 10}}),
                    ("compute_indicator", {"node_id": "slow", **sma, "params": {"period": 30}}),
                    (
                        "compose_signal_node",
                        {
                            "node_id": "golden",
                            "node": {
                                "kind": "cross",
                                "a": "fast",
                                "b": "slow",
                                "direction": "above",
                            },
                        },
                    ),
                    (
                        "compose_signal_node",
                        {
                            "node_id": "bullish",
                            "node": {"kind": "threshold", "input": "mood", "op": ">", "value": 0.5},
                        },
                    ),
                    (
                        "compose_signal_node",
                        {"node_id": "go", "node": {"kind": "any", "inputs": ["golden", "bullish"]}},
                    ),
                ]
            )
        },
        {
            "body": completion(
                tool_calls=[
                    (
                        "emit_strategy",
                        {
                            "name": "mood-cross",
                            "entry": {"when": "go", "side": "long"},
                            "exit": {"stop_loss": {"pct": 2}, "take_profit": [{"r": 2}]},
                        },
                    )
                ]
            )
        },
        {"body": APPROVE},
    )
    req = _req(bars, turn=1, news_path=news, sentiment=SentimentSetup("lexicon"))
    result = CompileLoop(client).run(req)
    mood = result.artifact.nodes["mood"]
    assert isinstance(mood, SentimentNode) and mood.backend == "lexicon"
    assert mood.symbols == ["BTC/USDT"] and mood.half_life_bars == 12
    assert "fetch_news_sentiment" in result.artifact.provenance.tools
    assert result.node_turns["mood"] == 1
    obs = json.loads(
        next(m for m in stub.requests[1]["messages"] if m["role"] == "tool")["content"]
    )
    assert obs["items_visible"] == 21 and obs["items_used"] == 21  # in-sample news only
    assert obs["bars"] == 2100
