"""Tools: typed arguments, observations, the nodes they stand for, deterministic S/R, honest sentiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.graph import check
from artifacts.schema import (
    Artifact,
    DrawingLevelNode,
    FibLevelNode,
    IndicatorNode,
    SentimentNode,
    TrendLineNode,
    ZoneNode,
)
from compiler.errors import ToolError
from compiler.tools import (
    SentimentSetup,
    ToolContext,
    ToolSession,
    cluster_levels,
    openai_tools,
    read_items,
)
from compiler.tradingview import read_layout
from indicators.sentiment import LexiconScorer, align_sentiment
from strategy_kernel.backtest import run_backtest
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


def _news(path: Path, bars: pl.DataFrame) -> Path:
    """Stored items inside the bars' range: bullish early, bearish later, some for other coins."""
    t = [int(x) for x in bars["ts_ns"].to_list()]
    words = [
        ("BTC rally record gains, strong bullish surge", ["BTC/USDT"]),
        ("ETH crash and fraud lawsuit", ["ETH/USDT"]),
        ("BTC beats expectations, upgrade and growth", ["BTC/USDT"]),
        ("markets calm", []),
        ("BTC plunge, hack, bearish losses and fear", ["BTC/USDT"]),
        ("BTC weak, misses, downgrade", ["BTC/USDT"]),
    ]
    rows = [
        {"source": "rss:x", "ts_ns": t[100 + 150 * i] + 1, "text": text, "symbols": sym}
        for i, (text, sym) in enumerate(words)
    ]
    path.write_text("\n".join(json.dumps(r) for r in reversed(rows)) + "\n")  # any file order
    return path


def test_news_sentiment_never_fakes_a_score(bars: pl.DataFrame, tmp_path: Path) -> None:
    news = _news(tmp_path / "news.jsonl", bars)
    s = ToolSession(ToolContext("BTC/USDT", "1h", bars, news_path=news))
    with pytest.raises(ToolError, match=r"6 stored item.*no sentiment model"):
        s.call("fetch_news_sentiment", {})
    s.ctx.news_path = None
    with pytest.raises(ToolError, match="no stored news"):
        s.call("fetch_news_sentiment", {})
    s.ctx.news_path, s.ctx.sentiment = news, SentimentSetup("lexicon")
    with pytest.raises(
        ToolError, match=r"none of the 6 stored item.*tagged \['BTC/USDT', 'ETH/USDT'\]"
    ):
        s.call("fetch_news_sentiment", {"symbols": ["SOL/USDT"]})
    news.write_text('{"source": "x"}\n')
    with pytest.raises(ToolError, match=r"news.jsonl:1"):
        s.call("fetch_news_sentiment", {})
    s.ctx.sentiment = SentimentSetup("model", model_dir="nowhere", base_dir=tmp_path)
    news = _news(news, bars)
    with pytest.raises(ToolError, match="does not exist"):
        s.call("fetch_news_sentiment", {})
    with pytest.raises(ToolError, match="bad arguments"):
        s.call("fetch_news_sentiment", {"policy": "ewm", "half_life_bars": -1})


def test_news_sentiment_is_the_sentiment_node(bars: pl.DataFrame, tmp_path: Path) -> None:
    news = _news(tmp_path / "news.jsonl", bars)
    s = ToolSession(
        ToolContext("BTC/USDT", "1h", bars, news_path=news, sentiment=SentimentSetup("lexicon"))
    )
    out = s.call("fetch_news_sentiment", {"node_id": "mood", "half_life_bars": 48})
    node = out.to_executable_node()
    assert isinstance(node, SentimentNode) and node.backend == "lexicon"
    assert (node.symbols, node.policy, node.half_life_bars) == (["BTC/USDT"], "ewm", 48.0)
    obs = out.observation
    assert obs["items_visible"] == 6 and obs["items_used"] == 4  # ETH and untagged left out
    # the oracle: the sentiment package's batch helper over the same items and bar closes
    items = read_items(news)
    closes = (bars["ts_ns"] + 3_600 * 10**9).to_numpy()
    want = align_sentiment(
        LexiconScorer(), items, closes, symbols=["BTC/USDT"], policy="ewm", half_life_bars=48.0
    )
    got = s.series["mood"]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=0)
    assert np.isnan(got[:100]).all() and not np.isnan(got[101])  # nothing before the first item
    assert obs["bars_with_value"] == int((~np.isnan(got)).sum())
    assert obs["last"] == round(float(got[-1]), 6) < 0 < obs["max"]  # bearish news came last
    assert [i["text"][:3] for i in obs["items"]] == ["BTC"] * 4
    # the node is usable: compose on it, emit, backtest the artifact with the node in the DAG
    s.call("compose_signal_node", {"node_id": "calm", "node": {"kind": "threshold",
                                   "input": "mood", "op": ">", "value": -0.2}})  # fmt: skip
    s.call("compute_indicator", {"node_id": "mood_avg", "fn": "SMA", "inputs": ["mood"],
                                 "params": {"period": 3}})  # fmt: skip
    assert np.isfinite(s.series["mood_avg"][-1])  # chained on the sentiment series
    art = s.call(
        "emit_strategy",
        {"name": "mood", "entry": {"when": "calm", "side": "long"},
         "exit": {"stop_loss": {"pct": 2}}},
    ).to_executable_node()  # fmt: skip
    assert isinstance(art, Artifact) and art.nodes["mood"] == node
    run_backtest(art, check(art), bars.tail(300))


def _tiny_model(path: Path) -> Path:
    """A 1-layer BERT (hidden 16), seeded, saved with its tokenizer: no hub, no download."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path.mkdir(parents=True)
    words = "btc rally record gains strong bullish surge beats upgrade growth plunge hack bearish"
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words.split()]))
    tokenizer = transformers.BertTokenizer(vocab=str(vocab))
    config = transformers.BertConfig(
        vocab_size=5 + len(words.split()), hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
        initializer_range=0.3, num_labels=3,
        id2label={0: "positive", 1: "negative", 2: "neutral"},
        label2id={"positive": 0, "negative": 1, "neutral": 2},
    )  # fmt: skip
    torch.manual_seed(11)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_news_sentiment_with_a_tiny_local_model(bars: pl.DataFrame, tmp_path: Path) -> None:
    from indicators.sentiment import SentimentModel
    from indicators.sentiment_model import directory_digest

    model_dir = _tiny_model(tmp_path / "models" / "tiny")
    news = _news(tmp_path / "news.jsonl", bars)
    setup = SentimentSetup("model", model_dir="models/tiny", base_dir=tmp_path)
    s = ToolSession(ToolContext("BTC/USDT", "1h", bars, news_path=news, sentiment=setup))
    node = s.call("fetch_news_sentiment", {"policy": "ffill"}).to_executable_node()
    assert isinstance(node, SentimentNode) and node.model_dir == "models/tiny"
    assert node.model_revision == directory_digest(model_dir)  # the files are pinned
    model = SentimentModel(model_dir, cache_size=0)
    try:
        closes = (bars["ts_ns"] + 3_600 * 10**9).to_numpy()
        want = align_sentiment(
            model, read_items(news), closes, symbols=["BTC/USDT"], policy="ffill"
        )
    finally:
        model.close()
    got = s.series["news_sentiment"]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert (got[~np.isnan(got)] == want[~np.isnan(want)]).all()  # bit for bit
    assert len(set(got[~np.isnan(got)].tolist())) == 4  # four BTC items, four distinct scores
    pinned = SentimentSetup("model", model_dir="models/tiny", base_dir=tmp_path,
                            model_revision="0" * 64)  # fmt: skip
    s.ctx.sentiment = pinned
    with pytest.raises(ToolError, match="pinned"):
        s.call("fetch_news_sentiment", {})
