"""Generate docs/indicators.md from the registry: ``python -m indicators.docs > docs/indicators.md``."""

from __future__ import annotations

import sys

from indicators.registry import ALIASES, EXCLUDED_TALIB, ParamSpec, get_indicator, list_indicators

_BENCH_MARKER = "<!-- benchmark -->"


def _fmt(v: float) -> str:
    if abs(v) >= 3.0e37:
        return "∞" if v > 0 else "-∞"
    return repr(v)


def _param(name: str, p: ParamSpec) -> str:
    return f"`{name}`={p.default!r} ({p.type.__name__}, {_fmt(p.min)}..{_fmt(p.max)})"


#: The regime node (`kind: regime`, indicators.nodes.VolatilityRegime / TrendRegime) is a signal-DAG
#: node, not a registry indicator; it is described here next to the indicators it complements.
_REGIME_SECTION: tuple[str, ...] = (
    "## Regime nodes (`kind: regime`)",
    "",
    "A signal-DAG node that classifies the market state on each bar into a float code, so rules",
    'can be gated by regime through existing nodes, e.g. `{kind: threshold, input: vol, op: "==",',
    "value: 2}`. `input` (default `close`) may be any float node, e.g. a `resample` for a",
    "higher-timeframe regime. See `examples/sma-regime.yaml`.",
    "",
    "- `method: volatility` (`lookback`, `window` = 100, `low_pct` = 33, `high_pct` = 67):",
    "  rv[t] = sample standard deviation (n - 1) of the last `lookback` log returns",
    "  ln(x[t] / x[t-1]); pr = 100 x (number of the `window - 1` previous rv values strictly",
    "  below rv[t]) / (window - 1); state 0 = low if pr <= `low_pct`, 2 = high if pr >= `high_pct`,",
    "  else 1 = normal. Constant prices (rv = 0, all tied) are low.",
    "- `method: trend` (`lookback`, `threshold` = 0.3): Kaufman's efficiency ratio",
    "  er = |x[t] - x[t-lookback]| / sum over the last `lookback` steps of |x[i] - x[i-1]|",
    "  (er = 0 when that path is 0); state 1 = up if er >= `threshold` and the change is > 0,",
    "  -1 = down if er >= `threshold` and the change is < 0, else 0 = range.",
    "- **Warm-up and NaN:** NaN while any value it uses is undefined: `lookback + window - 1` steps",
    "  (volatility) or `lookback` steps (trend) over a defined input; the graph's warm-up adds this",
    "  on the node's path. A non-positive price has no log return (NaN). Only bars <= t are used.",
    "- **Exactness:** the event-driven node and the fast path's vectorised loop sum in the same",
    "  order and give bit-identical codes (tests/strategy_kernel/test_regime.py, with numpy oracles",
    "  of both definitions). Per bar the work is O(lookback + window). Re-parameterising a strategy",
    "  by regime (other parameters per state) is not supported yet; gating is.",
)


def render(benchmark_table: str = "") -> str:
    """The whole markdown page (deterministic: sorted names, no timestamps)."""
    lines = [
        "# Indicators",
        "",
        "Generated from `indicators.registry` by `python -m indicators.docs`; do not edit by hand",
        "(`tests/indicators/test_docs.py` fails when this file is stale).",
        "",
        "## Conventions",
        "",
        "- `compute(name, columns, params)` (batch) and `make_stream(name, params)` / `run_stream(...)`",
        "  (streaming) take the same names and parameters. TA-Lib's `timeperiod` is called `period`;",
        "  every other parameter keeps its TA-Lib name.",
        "- Single-output indicators have one output called `value`; multi-output ones keep TA-Lib's",
        "  output names. All outputs are float64 (integer TA-Lib outputs such as candlestick",
        "  patterns are converted).",
        "- **Warm-up** is the number of leading NaN bars of every output with default parameters,",
        "  equal to TA-Lib's lookback (unstable period 0, EMA seeded by the SMA of its first values).",
        "- **NaN / inf input:** the first bar where an input the indicator reads is not finite makes",
        "  every output NaN from that bar on, in batch and streaming alike (`nan_policy='raise'` in",
        "  `compute` raises `IndicatorInputError` instead). `Stream.reset()` / `restore()` recover.",
        "- **Streaming equality:** every streaming output equals its batch twin (TA-Lib where it",
        "  exists) on every bar including the NaN warm-up. The contract is 1e-9 relative with an",
        "  absolute floor of 1e-9 x the largest |value| of that output in the series; with the",
        "  pinned TA-Lib 0.8.1 build the outputs are in fact bit-identical (tested with hypothesis",
        "  on random walks, constants, ulp-flat series, huge jumps, tiny and huge prices, 20k-bar",
        "  series): the kernels copy TA-Lib's arithmetic, including where its build fuses a",
        "  multiply-add (EMA, Wilder/ATR, MACD signal, BBANDS upper band with unequal deviations),",
        "  re-anchors running sums (WMA every 8 x period bars, VAR/BBANDS/ZSCORE when stale) or",
        "  scales by 1/period (RSI).",
        "- **0/0 rules (flat windows), as TA-Lib 0.8.1:** RSI is 0 when gain + loss is exactly 0;",
        "  STOCH/STOCHRSI %K and WILLR are 0 when the window's range is within 1e-14 x",
        "  (|highest| + |lowest|); CCI is 0 when price - mean or the mean deviation is within",
        "  1e-14 x |mean|; MFI counts no flow for a typical-price move within 1e-14 of the prices",
        "  and is 0 for a window without flow; ADX/DI are 0 when the true-range sum is exactly 0;",
        "  ZSCORE is 0 when VAR is 0 (VAR floors to 0 below 1e-12 of its mean square); NATR is 0",
        "  when the close is exactly 0.",
        "- **TA-Lib quirks reproduced:** period-1 PLUS_DI/MINUS_DI are fractions, not percent;",
        "  NATR with period 1 is the raw true range (not normalised). Streaming BBANDS, STOCH and",
        "  STOCHRSI implement the SMA smoothing (matype 0) only (`make_stream` says so and names",
        "  the fix).",
        "- **Complexity:** streaming updates are O(1); rolling max/min (STOCH, STOCHRSI, WILLR,",
        "  DONCHIAN) use a monotonic deque (amortised O(1)); WMA, BBANDS and ZSCORE re-anchor their",
        "  running sums from the window now and then (O(period) at most every 8-32 x period bars,",
        "  or when cancellation threatens: amortised O(1)); CCI recomputes its mean deviation over",
        "  the window every bar (O(period)), exactly as TA-Lib does.",
        "- **Extras:** VWAP resets every `anchor_bars` bars (0 = never; anchor at a timestamp with",
        "  `Stream.reset()`), NaN until the session has traded volume. ICHIMOKU's spans are shifted",
        "  forward by `displacement` (no look-ahead; the chikou span is omitted because it is",
        "  look-ahead by definition). PIVOTS sessions are blocks of `period` bars from the first",
        "  bar, each using the previous block. ZSCORE = (close - SMA) / sqrt(VAR) (population",
        "  variance, TA-Lib's SMA and VAR). REALVOL = sqrt(bars_per_year x mean of squared log returns).",
        "",
        "## Aliases",
        "",
    ]
    lines += [f"- `{a}` -> `{t}`" for a, t in sorted(ALIASES.items())]
    lines += [
        "",
        "## Registry",
        "",
        "| name | group | inputs | params | outputs | warm-up | streaming |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in list_indicators():
        spec = get_indicator(name)
        params = "<br>".join(_param(k, p) for k, p in spec.params.items()) or "-"
        lines.append(
            f"| {name} | {spec.group} | {', '.join(spec.inputs)} | {params} | "
            f"{', '.join(spec.outputs)} | {spec.warmup()} | {'yes' if spec.streaming else 'no'} |"
        )
    lines += ["", "## TA-Lib functions not registered", ""]
    lines += [f"- `{n}`: {why}" for n, why in sorted(EXCLUDED_TALIB.items())]
    lines += ["", *_REGIME_SECTION]
    lines += ["", "## Benchmark", "", _BENCH_MARKER]
    if benchmark_table:
        lines += ["", benchmark_table.rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the page; keeps a benchmark table already present in docs/indicators.md if given."""
    table = ""
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as fh:
            text = fh.read()
        if _BENCH_MARKER in text:
            table = text.split(_BENCH_MARKER, 1)[1].strip()
    sys.stdout.write(render(table))


if __name__ == "__main__":
    main()
