"""TradingView layout parsing: every accepted shape, tolerance, warnings, and errors with paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import DrawingError
from compiler.tradingview import DEFAULT_FIB_LEVELS, parse_layout, read_layout
from tests.compiler._helpers import DRAWINGS


def _src(tool: str, points: list[dict[str, Any]], **state: Any) -> dict[str, Any]:
    return {"type": tool, "id": tool[-4:], "state": state, "points": points}


def test_full_layout_maps_supported_tools_and_warns_on_unknown() -> None:
    layout = read_layout(DRAWINGS / "long-position-layout.json")
    kinds = [d.kind for d in layout.drawings]
    assert kinds == ["hline", "rectangle", "fib", "trendline", "long_position"]
    assert layout.symbol == "BINANCE:BTCUSDT" and layout.interval == "60"
    assert len(layout.warnings) == 1 and "LineToolCallout" in layout.warnings[0]
    assert "sources[6]" in layout.warnings[0]
    pos = layout.drawings[-1]
    assert (pos.entry, pos.stop, pos.target) == (52000.0, 50500.0, 55000.0)


def test_content_string_and_explicit_position_prices() -> None:
    layout = read_layout(DRAWINGS / "short-position-saved.json")
    short = layout.drawings[0]
    assert short.kind == "short_position"
    assert (short.entry, short.stop, short.target) == (67000.0, 69500.0, 64000.0)
    assert short.path == "$.content.charts[0].panes[0].sources[1]"


def test_fib_levels_follow_tradingview_orientation() -> None:
    src = _src(
        "LineToolFibRetracement",
        [{"time_t": 1, "price": 100.0}, {"time_t": 2, "price": 200.0}],
        level1={"coeff": 0, "visible": True},
        level2={"coeff": 0.5, "visible": True},
        level3={"coeff": 0.618, "visible": False},
        level4={"coeff": 1, "visible": True},
    )
    d = parse_layout([src]).drawings[0]
    # level 0 sits at the end point, level 1 at the start point
    assert d.levels == ((0.0, 200.0), (0.5, 150.0), (1.0, 100.0))
    default = parse_layout([_src("LineToolFibRetracement", src["points"])]).drawings[0]
    assert tuple(c for c, _ in default.levels) == DEFAULT_FIB_LEVELS


def test_unknown_fields_versions_and_studies_are_tolerated() -> None:
    data = {
        "version": 99,
        "whatever": {"x": 1},
        "charts": [
            {
                "panes": [
                    {
                        "sources": [
                            {"type": "Study", "state": {}},
                            {
                                "type": "LineToolHorzLine",
                                "newField": [1, 2],
                                "state": {"future": True},
                                "points": [
                                    {"time_t": 5, "price": "101.5", "offset": 0, "extra": 1}
                                ],
                            },
                        ]
                    }
                ]
            }
        ],
    }
    layout = parse_layout(json.dumps(data))
    assert [d.points[0].price for d in layout.drawings] == [101.5]
    assert layout.warnings == []


def test_hidden_drawings_and_millisecond_times_warn() -> None:
    layout = parse_layout(
        {
            "drawings": [
                _src("LineToolHorzLine", [{"time": 1_700_000_000_000, "price": 10.0}]),
                _src("LineToolHorzLine", [{"time": 1, "price": 11.0}], visible=False),
            ]
        }
    )
    assert layout.drawings[0].points[0].time_s == 1_700_000_000
    assert any("milliseconds" in w for w in layout.warnings)
    assert any("hidden" in w and "$.drawings[1]" in w for w in layout.warnings)


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ("{not json", "$", "not valid JSON"),
        ('"text"', "$", "JSON object or a list"),
        (
            {"charts": [{"panes": [{"sources": [{"state": {}}]}]}]},
            "$.charts[0].panes[0].sources[0].type",
            "missing drawing type",
        ),
        ([_src("LineToolHorzLine", [{"time_t": 1, "price": -5}])], "$[0].points[0].price", "> 0"),
        (
            [_src("LineToolHorzLine", [{"time_t": 1, "price": "abc"}])],
            "$[0].points[0].price",
            "expected a number",
        ),
        ([_src("LineToolHorzLine", [{"time_t": 1}])], "$[0].points[0].price", "missing price"),
        ([_src("LineToolTrendLine", [{"time_t": 1, "price": 5.0}])], "$[0].points", "at least 2"),
        (
            [_src("LineToolRiskRewardLong", [{"time_t": 1, "price": 5.0}])],
            "$[0].state",
            "stopLevel",
        ),
        ([{"type": "LineToolHorzLine", "points": "x"}], "$[0].points", "list of points"),
        ([7], "$[0]", "JSON object"),
        ({"charts": [{"panes": "nope"}]}, "$.charts[0].panes", "list of panes"),
        ({"content": "{bad"}, "$.content", "not valid JSON"),
        ({"foo": 1}, "$", "no drawings found"),
    ],
)
def test_malformed_input_names_the_path(data: Any, path: str, words: str) -> None:
    with pytest.raises(DrawingError) as err:
        parse_layout(data, "layout.json")
    assert err.value.path == path
    assert words in str(err.value) and str(err.value).startswith("layout.json: ")


def test_missing_file_is_a_drawing_error(tmp_path: Any) -> None:
    with pytest.raises(DrawingError, match="file not found"):
        read_layout(tmp_path / "nope.json")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_tools = st.sampled_from(
    [
        "LineToolHorzLine",
        "LineToolRectangle",
        "LineToolFibRetracement",
        "LineToolRiskRewardShort",
        "LineToolFoo",
        "Study",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"type": _tools, "state": _json, "points": _json}), max_size=4)
)
def test_fuzzed_layouts_parse_or_fail_with_a_drawing_error(sources: list[dict[str, Any]]) -> None:
    try:
        layout = parse_layout({"sources": sources})
    except DrawingError as exc:
        assert exc.path.startswith("$.sources[")
        return
    for d in layout.drawings:
        assert all(p.price > 0 for p in d.points)
    unknown = sum(1 for s in sources if s["type"] == "LineToolFoo")
    assert sum("LineToolFoo" in w for w in layout.warnings) == unknown


def test_line_tools_state_maps_and_pairs() -> None:
    hline = {"type": "LineToolHorzLine", "points": [{"time_t": 1, "price": 10.0}]}
    as_map = parse_layout({"lineToolsState": {"sources": {"abc": hline, "gone": None}}})
    assert [d.path for d in as_map.drawings] == ["$.lineToolsState.sources.abc"]
    assert as_map.warnings == ["$.lineToolsState.sources.gone: skipped a removed drawing (null)"]
    pairs = parse_layout({"sources": [["abc", hline], ["def", hline]]})
    assert [d.path for d in pairs.drawings] == ["$.sources[0]", "$.sources[1]"]
