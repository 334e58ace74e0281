"""Backtest outputs a person reads: trade list, metrics, equity/drawdown and trades-on-price plots."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from strategy_kernel.backtest import BacktestResult
from strategy_kernel.metrics import drawdown


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trade_rows(result: BacktestResult) -> list[dict[str, Any]]:
    """Trades in quote currency and prices, one dict per round trip."""
    unit, tick = result.unit_value, result.price_increment
    rows = []
    for t in result.trades:
        rows.append(
            {
                "trade_id": t.trade_id,
                "side": t.side,
                "entry_time": _iso(t.entry_ts_ns),
                "exit_time": _iso(t.exit_ts_ns),
                "qty": t.entry_qty * (unit / tick),
                "entry_price": round(t.entry_cost / t.entry_qty * tick, 10)
                if t.entry_qty
                else None,
                "exit_price": round(t.exit_cost / t.exit_qty * tick, 10) if t.exit_qty else None,
                "stop": t.stop_price * tick if t.stop_price is not None else None,
                "pnl": round(t.pnl * unit, 10),
                "fees": round(t.fees * unit, 10),
                "exit_reason": t.exit_reason,
                "bars_held": t.exit_bar - t.entry_bar,
            }
        )
    return rows


def write_reports(
    result: BacktestResult, out_dir: Path, *, png: bool = True, html: bool = True
) -> dict[str, Path]:
    """Write trades.csv, equity.csv, metrics.json and the plots; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    rows = trade_rows(result)
    p = out_dir / "trades.csv"
    with p.open("w", newline="") as fh:
        fields = list(rows[0]) if rows else ["trade_id"]
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    paths["trades"] = p
    p = out_dir / "equity.csv"
    dd = drawdown(result.equity)
    with p.open("w", newline="") as fh:
        w2 = csv.writer(fh)
        w2.writerow(["ts_ns", "time", "close", "equity", "drawdown_pct", "position_lots"])
        for i in range(len(result.ts_ns)):
            w2.writerow(
                [
                    int(result.ts_ns[i]),
                    _iso(int(result.ts_ns[i])),
                    repr(float(result.close[i])),
                    repr(float(result.equity[i])),
                    repr(float(dd[i] * 100)),
                    int(result.position[i]),
                ]
            )
    paths["equity"] = p
    p = out_dir / "metrics.json"
    p.write_text(json.dumps(summary(result), indent=2, sort_keys=True) + "\n")
    paths["metrics"] = p
    if png:
        paths["png"] = plot_png(result, out_dir / "report.png")
    if html:
        paths["html"] = plot_html(result, out_dir / "report.html")
    return paths


def summary(result: BacktestResult) -> dict[str, Any]:
    a = result.artifact
    return {
        "artifact": {"name": a.name, "version": a.version, "content_hash": result.artifact_hash},
        "bars": len(result.ts_ns),
        "from": _iso(int(result.ts_ns[0])),
        "to": _iso(int(result.ts_ns[-1])),
        "metrics": result.metrics.as_dict(),
        "refusals": len(result.refusals),
        "data_gaps": result.data_gaps,
        "strategy_log_head": result.strategy_log_head,
        "order_state_digest": result.order_state_digest,
    }


def _markers(result: BacktestResult) -> dict[str, tuple[list[int], list[float]]]:
    """Entry/exit marker positions (bar index, price) by kind."""
    idx = {int(t): i for i, t in enumerate(result.ts_ns)}
    tick = result.price_increment
    out: dict[str, tuple[list[int], list[float]]] = {
        "long entry": ([], []),
        "short entry": ([], []),
        "exit": ([], []),
    }
    for t in result.trades:
        if t.entry_qty and t.entry_ts_ns in idx:
            key = f"{t.side} entry"
            out[key][0].append(idx[t.entry_ts_ns])
            out[key][1].append(t.entry_cost / t.entry_qty * tick)
        if t.exit_qty and t.exit_ts_ns in idx:
            out["exit"][0].append(idx[t.exit_ts_ns])
            out["exit"][1].append(t.exit_cost / t.exit_qty * tick)
    return out


def plot_png(result: BacktestResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = result.ts_ns.astype("datetime64[ns]")
    overlays, panels = split_indicators(result)
    n = 3 + len(panels)
    fig, axes = plt.subplots(
        n,
        1,
        figsize=(12, 9 + 1.6 * len(panels)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, *([1.2] * len(panels)), 2, 1]},
    )
    ax_p, ax_e, ax_d = axes[0], axes[-2], axes[-1]
    for name in overlays:
        ax_p.plot(times, result.node_series[name], lw=0.8, label=name)
    for ax, name in zip(axes[1:-2], panels, strict=True):
        ax.plot(times, result.node_series[name], lw=0.8, color="#7b3294")
        ax.set_ylabel(name)
    a = result.artifact
    ax_p.set_title(f"{a.name} v{a.version} on {a.instrument.symbol} {a.instrument.timeframe}")
    ax_p.plot(times, result.close, lw=0.7, color="#444", label="close")
    styles = {
        "long entry": ("^", "#1a9850"),
        "short entry": ("v", "#d73027"),
        "exit": ("x", "#2c7bb6"),
    }
    for name, (ix, px) in _markers(result).items():
        if ix:
            marker, color = styles[name]
            ax_p.scatter(
                times[np.array(ix)], px, marker=marker, color=color, s=28, label=name, zorder=3
            )
    for t in result.trades:
        if not t.entry_qty:
            continue
        span = (times[min(t.entry_bar, len(times) - 1)], times[min(t.exit_bar, len(times) - 1)])
        if t.stop_price is not None:
            ax_p.hlines(
                t.stop_price * result.price_increment, *span, colors="#d73027", lw=0.9, alpha=0.7
            )
        for target in t.targets:
            ax_p.hlines(target * result.price_increment, *span, colors="#1a9850", lw=0.9, alpha=0.7)
    ax_p.legend(loc="upper left", fontsize=8)
    ax_p.set_ylabel("price")
    ax_e.plot(times, result.equity, color="#2c7bb6", lw=1)
    ax_e.set_ylabel("equity")
    dd = drawdown(result.equity) * 100
    ax_d.fill_between(times, dd, 0, color="#d73027", alpha=0.4)
    ax_d.set_ylabel("drawdown %")
    m = result.metrics
    fig.text(
        0.01,
        0.005,
        f"return {m.total_return_pct:.2f}%  maxDD {m.max_drawdown_pct:.2f}%  Sharpe {_f(m.sharpe)}  "
        f"trades {m.trades}  win {_f(m.win_rate_pct)}%  PF {_f(m.profit_factor)}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def split_indicators(result: BacktestResult, max_panels: int = 2) -> tuple[list[str], list[str]]:
    """Recorded float nodes drawn on the price (same scale as the close) or in panels of their own."""
    overlays: list[str] = []
    panels: list[str] = []
    price = float(np.nanmedian(result.close))
    for name, series in result.node_series.items():
        if np.isnan(series).all():
            continue
        level = float(np.nanmedian(np.abs(series)))
        if price > 0 and 0.5 <= level / price <= 2.0:
            overlays.append(name)
        elif len(panels) < max_panels:
            panels.append(name)
    return overlays, panels


def _f(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def plot_html(result: BacktestResult, path: Path) -> Path:
    """Interactive report; plotly.js is written once beside it (no network needed to view)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    times = [_iso(int(t)) for t in result.ts_ns]
    overlays, panels = split_indicators(result)
    rows = 3 + len(panels)
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        row_heights=[0.5, *([0.12] * len(panels)), 0.25, 0.13],
    )
    for name in overlays:
        fig.add_trace(
            go.Scatter(x=times, y=result.node_series[name], name=name, line={"width": 1}), 1, 1
        )
    for k, name in enumerate(panels, start=2):
        fig.add_trace(
            go.Scatter(x=times, y=result.node_series[name], name=name, line={"width": 1}), k, 1
        )
    fig.add_trace(
        go.Scatter(x=times, y=result.close, name="close", line={"width": 1, "color": "#444"}), 1, 1
    )
    styles = {
        "long entry": ("triangle-up", "#1a9850"),
        "short entry": ("triangle-down", "#d73027"),
        "exit": ("x", "#2c7bb6"),
    }
    for name, (ix, px) in _markers(result).items():
        if ix:
            sym, color = styles[name]
            fig.add_trace(
                go.Scatter(
                    x=[times[i] for i in ix],
                    y=px,
                    mode="markers",
                    name=name,
                    marker={"symbol": sym, "color": color, "size": 9},
                ),
                1,
                1,
            )
    fig.add_trace(
        go.Scatter(x=times, y=result.equity, name="equity", line={"color": "#2c7bb6"}), rows - 1, 1
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=drawdown(result.equity) * 100,
            name="drawdown %",
            fill="tozeroy",
            line={"color": "#d73027"},
        ),
        rows,
        1,
    )
    a, mt = result.artifact, result.metrics
    fig.update_layout(
        title=f"{a.name} v{a.version} — return {mt.total_return_pct:.2f}%, max DD {mt.max_drawdown_pct:.2f}%, "
        f"{mt.trades} trades",
        height=850,
        template="plotly_white",
    )
    fig.write_html(path, include_plotlyjs="directory", full_html=True)
    return path
