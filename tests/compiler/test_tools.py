"""Tools: typed arguments, observations, the nodes they stand for, deterministic S/R, honest sentiment."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.schema import (
    Artifact,
    DrawingLevelNode,
    FibLevelNode,
    IndicatorNode,
    TrendLineNode,
    ZoneNode,
)
from compiler.errors import ToolError
from compiler.tools import (
    ToolContext,
    ToolSession,
    cluster_levels,
    openai_tools,
)
from compiler.tradingview import read_layout
from tests.compiler._helpers import DRAWINGS


@pytest.fixture
def session(bars: pl.DataFrame) -> ToolSession:
    layout = read_layout(DRAWINGS / "long-position-layout.json")
    return ToolSession(ToolContext("BTC/USDT", "1h", bars, drawings=layout))


def test_openai_tool_definitions() -> None:
    tools = openai_tools()
    names = [t["function"]["name"] for t in tools]
    assert names == [
        "query_chart", "compute_indicator", "detect_sr_levels", "fetch_news_sentiment",
        "annotate_drawing", "compose_signal_node", "emit_strategy",
    ]  # fmt: skip
    emit = tools[-1]["function"]["parameters"]
    assert "name" in emit["properties"] and "entry" in emit["required"]
    assert "retest" in json.dumps(tools[4]["function"]["parameters"]["properties"]["mode"])


def test_query_chart_sees_only_its_bars(session: ToolSession, bars: pl.DataFrame) -> None:
    obs = session.call("query_chart", {"last_n": 2}).observation
    assert obs["bars"] == bars.height and obs["last_close"] == pytest.approx(bars["close"][-1])
    assert len(obs["last_bars"]) == 2
    with pytest.raises(ToolError, match="stands for no node"):
        session.call("query_chart", {}).to_executable_node()
    with pytest.raises(ToolError, match="no bars"):
        session.call("query_chart", {"start": "2030-01-01"})


def test_compute_indicator_and_chaining(session: ToolSession) -> None:
    out = session.call(
        "compute_indicator", {"node_id": "rsi", "fn": "rsi", "params": {"period": 14}}
    )
    node = out.to_executable_node()
    assert isinstance(node, IndicatorNode) and node.fn == "RSI"
    assert 0 <= out.observation["last"] <= 100 and out.observation["warmup_bars"] == 14
    sm = session.call(
        "compute_indicator",
        {"node_id": "rsi_sma", "fn": "SMA", "inputs": ["rsi"], "params": {"period": 5}},
    )
    assert sm.observation["last"] is not None
    for args, words in [
        ({"node_id": "x", "fn": "NOPE"}, "unknown indicator|NOPE"),
        ({"node_id": "x", "fn": "SMA", "inputs": ["ghost"]}, "ghost"),
        ({"node_id": "Bad Id", "fn": "SMA"}, "not a valid node id"),
        ({"node_id": "x", "fn": "SMA", "params": {"period": -3}}, "period"),
    ]:
        with pytest.raises(ToolError, match=words):
            session.call("compute_indicator", args)
    assert [e.ok for e in session.trace] == [True, True, False, False, False, False]


def test_detect_sr_levels_is_deterministic(session: ToolSession) -> None:
    a = session.call("detect_sr_levels", {"max_levels": 4}).observation
    b = session.call("detect_sr_levels", {"max_levels": 4}).observation
    assert a == b and len(a["levels"]) == 4
    prices = [lv["price"] for lv in a["levels"]]
    assert prices == sorted(prices)
    assert isinstance(session.nodes["sr_0"], DrawingLevelNode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(100, 200), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_clustering_ignores_input_order(prices: list[float], rnd: object) -> None:
    shuffled = list(prices)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert cluster_levels(prices, 50) == cluster_levels(shuffled, 50)
    assert sum(n for _, n in cluster_levels(prices, 50)) == len(prices)


def test_annotate_drawing(session: ToolSession) -> None:
    zone = session.call("annotate_drawing", {"drawing_index": 1, "node_id": "box"})
    node = zone.to_executable_node()
    assert isinstance(node, ZoneNode) and (node.low, node.high) == (49500.0, 50500.0)
    lvl = session.call(
        "annotate_drawing", {"drawing_index": 4, "node_id": "entry_lvl", "mode": "retest"}
    )
    entry = lvl.to_executable_node()
    assert isinstance(entry, DrawingLevelNode) and (entry.price, entry.mode) == (52000.0, "retest")
    tl = session.call("annotate_drawing", {"drawing_index": 3, "node_id": "tl", "mode": "break_up"})
    line = tl.to_executable_node()
    assert isinstance(line, TrendLineNode) and line.mode == "break_up" and line.extend == "right"
    assert line.p1.ts_ns() == 1_704_067_200 * 10**9
    fib = session.call("annotate_drawing", {"drawing_index": 2, "node_id": "fib"})
    assert set(fib.nodes) == {"fib_0", "fib_0_382", "fib_0_618", "fib_1"}
    f618 = fib.nodes["fib_0_618"]
    assert isinstance(f618, FibLevelNode) and f618.price() == pytest.approx(45134.78028)
    with pytest.raises(ToolError, match="out of range"):
        session.call("annotate_drawing", {"drawing_index": 99, "node_id": "x"})


def test_compose_and_emit(session: ToolSession) -> None:
    session.call("compute_indicator", {"node_id": "rsi", "fn": "RSI", "params": {"period": 14}})
    with pytest.raises(ToolError, match="unknown node"):
        session.call(
            "compose_signal_node",
            {
                "node_id": "oversold",
                "node": {"kind": "threshold", "input": "rsii", "op": "<", "value": 30},
            },
        )
    with pytest.raises(ToolError, match=r"node.threshold.op"):
        session.call(
            "compose_signal_node",
            {
                "node_id": "oversold",
                "node": {"kind": "threshold", "input": "rsi", "op": "<<", "value": 30},
            },
        )
    session.call(
        "compose_signal_node",
        {
            "node_id": "oversold",
            "node": {"kind": "threshold", "input": "rsi", "op": "<", "value": 30},
        },
    )
    with pytest.raises(ToolError, match="type mismatch"):
        session.call("emit_strategy", {"name": "x", "entry": {"when": "rsi", "side": "long"}})
    with pytest.raises(ToolError, match="side"):
        session.call("emit_strategy", {"name": "x", "entry": {"when": "oversold", "side": "up"}})
    out = session.call(
        "emit_strategy",
        {
            "name": "rsi-low",
            "entry": {"when": "oversold", "side": "long"},
            "exit": {"stop_loss": {"pct": 2}},
        },
    )
    art = out.to_executable_node()
    assert isinstance(art, Artifact) and art.instrument.symbol == "BTC/USDT"
    assert session.artifact is art
    with pytest.raises(ToolError, match="not valid JSON"):
        session.call("emit_strategy", "{oops")
    with pytest.raises(ToolError, match="unknown tool"):
        session.call("place_order", "{}")


def test_news_sentiment_never_fakes_a_score(bars: pl.DataFrame, tmp_path: Path) -> None:
    news = tmp_path / "news.jsonl"
    items = [
        {"source": "rss:x", "ts_ns": 2, "text": "BTC rallies", "symbols": ["BTC"]},
        {"source": "rss:x", "ts_ns": 1, "text": "ETH dips", "symbols": ["ETH"]},
        {"source": "rss:x", "ts_ns": 3, "text": "markets calm"},
    ]
    news.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    s = ToolSession(ToolContext("BTC/USDT", "1h", bars, news_path=news))
    with pytest.raises(ToolError, match=r"2 stored item.*no sentiment model"):
        s.call("fetch_news_sentiment", {})
    s.ctx.sentiment_model = lambda text: 0.5 if "rallies" in text else 0.0
    obs = s.call("fetch_news_sentiment", {}).observation
    assert obs["items"] == 2 and obs["mean_score"] == 0.25

    class Batch:
        def score(self, texts: list[str]) -> list[float]:
            return [-1.0 for _ in texts]

    s.ctx.sentiment_model = Batch()
    assert s.call("fetch_news_sentiment", {}).observation["mean_score"] == -1.0
    s.ctx.sentiment_model = lambda text: 3.0
    with pytest.raises(ToolError, match="outside"):
        s.call("fetch_news_sentiment", {})
    news.write_text('{"source": "x"}\n')
    with pytest.raises(ToolError, match=r"news.jsonl:1"):
        s.call("fetch_news_sentiment", {})
