"""Context assembly: priority trimming to a budget, reproducible, and honest about what was cut."""

from __future__ import annotations

from artifacts.io import load
from compiler.context import Turn, build_context
from compiler.tradingview import read_layout
from tests.compiler._helpers import DRAWINGS, ROOT


def _ctx(budget: int, turns: int = 30) -> object:
    return build_context(
        request="make it tighter",
        budget_tokens=budget,
        conversation=[
            Turn("user" if i % 2 == 0 else "assistant", f"message {i} " * 10) for i in range(turns)
        ],
        drawings=read_layout(DRAWINGS / "long-position-layout.json"),
        market_summary={"last_close": 1.0, "bars": 100},
        current=load(ROOT / "examples" / "rsi-reversion.yaml"),
        last_backtest={"trades": 3},
    )


def test_everything_fits_with_a_big_budget() -> None:
    c = _ctx(100_000)
    assert c.dropped == []  # type: ignore[attr-defined]
    assert c.kept == [
        "current_artifact",
        "last_backtest",
        "drawings",
        "market",
        "conversation",
        "request",
    ]  # type: ignore[attr-defined]
    assert c.text.endswith("## Request\nmake it tighter")  # type: ignore[attr-defined]


def test_trimming_drops_low_priority_first_and_oldest_turns() -> None:
    full = _ctx(100_000)
    small = _ctx(900)
    assert small.tokens <= 950  # type: ignore[attr-defined]
    assert "current_artifact" in small.kept and "request" in small.kept  # type: ignore[attr-defined]
    assert 0 < small.conversation_turns_kept < 30  # type: ignore[attr-defined]
    assert "message 29" in small.text and "message 0 " not in small.text  # type: ignore[attr-defined]
    assert "omitted to fit" in small.text  # type: ignore[attr-defined]
    tiny = _ctx(10)
    assert tiny.kept == ["request"]  # type: ignore[attr-defined]
    assert full.text != small.text  # type: ignore[attr-defined]


def test_reproducible() -> None:
    assert _ctx(700).text == _ctx(700).text  # type: ignore[attr-defined]
