"""A small Python API for notebooks and scripts: `import stratagem as sg`.

    art = sg.load("examples/sma-cross.yaml")
    bars = sg.bars(end="2024-06-01")
    bt = sg.backtest(art, bars)
    bt.metrics["sharpe"], bt.trades, bt.equity, bt.figure()
    run_dir = sg.run("examples/sma-cross.yaml", "runs/sma")   # a full run directory
    sg.replay(run_dir).identical
    sg.compare(bt, other_bt)                                  # metrics side by side

Everything here calls the same code as the CLI; heavy imports happen on first use so that
`import stratagem` stays fast.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from artifacts.schema import Artifact
    from strategy_kernel.backtest import BacktestResult
    from strategy_kernel.replay import ReplayReport

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"


def _ns(when: str | int | None) -> int | None:
    if when is None or isinstance(when, int):
        return when
    dt = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000


def load(path: str | Path) -> Artifact:
    """Load and check an artifact YAML (schema and DAG); errors name the file and line."""
    from artifacts.graph import check
    from artifacts.io import load_with_lines

    artifact, lines = load_with_lines(path)
    check(artifact, str(path), lines)
    return artifact


def bars(
    path: str | Path | None = None, start: str | int | None = None, end: str | int | None = None
) -> pl.DataFrame:
    """OHLCV bars from a CSV/parquet file (default: the bundled synthetic BTC/USDT 1h sample)."""
    from feeds.files import read_bars

    return read_bars(path or SAMPLE_DATA, start_ns=_ns(start), end_ns=_ns(end))


def indicator(data: pl.DataFrame, name: str, **params: Any) -> pl.DataFrame:
    """Batch indicator `name` (e.g. "RSI", period=14) over `data`: ts_ns plus its output column(s)."""
    import polars as pl

    from indicators.batch import compute

    cols: dict[str, Any] = {
        c: data[c].to_numpy()
        for c in ("open", "high", "low", "close", "volume")
        if c in data.columns
    }
    out = compute(name, cols, params)
    # One output -> a column named after the indicator; several -> "<name>.<output>".
    names = {k: name if len(out) == 1 else f"{name}.{k}" for k in out}
    return pl.DataFrame({"ts_ns": data["ts_ns"], **{names[k]: v for k, v in out.items()}})


def compile_drawings(
    layout: str | Path, symbol: str = "BTC/USDT", timeframe: str = "1h", **options: Any
) -> Artifact:
    """Compile a TradingView drawings export (offline, no LLM) into an artifact."""
    from compiler.drawings_compile import compile_layout
    from compiler.tradingview import read_layout

    return compile_layout(
        read_layout(layout), symbol, timeframe, source=str(layout), **options
    ).artifact


@dataclass
class Backtest:
    """A backtest result with notebook-friendly views (polars frames, a plotly figure)."""

    result: BacktestResult

    @property
    def name(self) -> str:
        return f"{self.result.artifact.name} v{self.result.artifact.version}"

    @property
    def metrics(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.result.metrics)

    @property
    def trades(self) -> pl.DataFrame:
        import polars as pl

        from strategy_kernel.report import trade_rows

        return pl.DataFrame(trade_rows(self.result))

    @property
    def equity(self) -> pl.DataFrame:
        import polars as pl

        r = self.result
        return pl.DataFrame({"ts_ns": r.ts_ns, "close": r.close, "equity": r.equity,
                             "position_lots": r.position})  # fmt: skip

    def figure(self) -> Any:
        """Equity curve as a plotly Figure (renders inline in Jupyter)."""
        import plotly.graph_objects as go

        eq = self.equity
        x = [datetime.fromtimestamp(t // 1_000_000_000, tz=UTC) for t in eq["ts_ns"].to_list()]
        fig = go.Figure(go.Scatter(x=x, y=eq["equity"].to_list(), name=self.name))
        fig.update_layout(title=f"equity: {self.name}", height=320, margin={"t": 40})
        return fig


def backtest(artifact: Artifact | str | Path, data: pl.DataFrame | None = None) -> Backtest:
    """Event-driven backtest in memory (no files written); `data` defaults to the sample bars."""
    from artifacts.graph import check
    from strategy_kernel.backtest import run_backtest

    base = None
    if isinstance(artifact, str | Path):
        base = Path(artifact).parent
        artifact = load(artifact)
    graph = check(artifact)
    return Backtest(
        run_backtest(artifact, graph, data if data is not None else bars(), base_dir=base)
    )


def run(
    artifact_path: str | Path,
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    plots: bool = False,
) -> Path:
    """`stratagem run` as a function: a full run directory (logs, run.json, reports) at `out_dir`."""
    from stratagem.run import run_backtest_cli

    with contextlib.redirect_stdout(io.StringIO()):
        run_backtest_cli(
            artifact_path=Path(artifact_path),
            data_path=Path(data) if data else SAMPLE_DATA,
            start_ns=_ns(start),
            end_ns=_ns(end),
            out_dir=Path(out_dir),
            as_json=True,
            plots=plots,
            quiet=True,
        )
    return Path(out_dir)


def replay(run_dir: str | Path) -> ReplayReport:
    """Re-run a run directory and compare its logs byte for byte (`.identical`, `.divergence`)."""
    from strategy_kernel.replay import replay as _replay

    return _replay(Path(run_dir))


def compare(*items: Backtest | str | Path) -> pl.DataFrame:
    """Metrics of several backtests or run directories side by side, one row per metric."""
    import json

    import polars as pl

    cols: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, Backtest):
            cols[item.name] = item.metrics
        else:
            doc = json.loads((Path(item) / "metrics.json").read_text(encoding="utf-8"))
            cols[Path(item).name] = doc["metrics"]
    keys = sorted({k for m in cols.values() for k in m})
    return pl.DataFrame(
        {"metric": keys, **{n: [_num(m.get(k)) for k in keys] for n, m in cols.items()}}
    )


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


def readmodel(runs_dir: str | Path, db_path: str | Path) -> sqlite3.Connection:
    """Rebuild the SQLite read model from the run directories under `runs_dir` and open it."""
    from stratagem.service.readmodel import connect, discover_runs, rebuild

    conn = connect(db_path)
    rebuild(conn, discover_runs(runs_dir))
    return conn


def scorecard(run_dir: str | Path) -> pl.DataFrame:
    """Per-node karma of one run: trades entered while the node was true and how they ended."""
    import polars as pl

    from stratagem.service.readmodel import load_run

    rows = load_run(Path(run_dir)).scores
    return pl.DataFrame(
        [{"node": r[1], "trades": r[2], "profitable": r[3], "pnl": r[4],
          "hit_rate_pct": 100.0 * r[3] / r[2] if r[2] else 0.0} for r in rows],
        schema={"node": pl.String, "trades": pl.Int64, "profitable": pl.Int64, "pnl": pl.Float64,
                "hit_rate_pct": pl.Float64},
    )  # fmt: skip


__all__ = [
    "Backtest",
    "backtest",
    "bars",
    "compare",
    "compile_drawings",
    "indicator",
    "load",
    "readmodel",
    "replay",
    "run",
    "scorecard",
]
