"""A 50-node signal DAG: incremental bar-by-bar evaluation against the vectorised evaluation.

The artifact has 50 nodes: 20 streaming indicators (SMA/EMA/RSI/ATR of varied periods), 15
thresholds, 8 crosses, 5 logic nodes and 2 levels. The baseline is the fast path's vectorised
`evaluate` of the same graph over the same bars, measured in the same run.

    python benchmarks/bench_dag.py [--bars 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

from artifacts.graph import check
from artifacts.io import loads
from feeds.synthetic import generate_bars
from indicators.nodes import BarValues
from strategy_kernel.dag import DagEvaluator
from strategy_kernel.fastpath_dag import evaluate


def fifty_node_artifact() -> str:
    nodes: dict[str, dict[str, object]] = {}
    fns = ["SMA", "EMA", "RSI", "ATR"]
    for i in range(20):
        fn = fns[i % 4]
        node: dict[str, object] = {"kind": "indicator", "fn": fn, "params": {"period": 5 + 3 * i}}
        if fn != "ATR":
            node["inputs"] = ["close"]
        nodes[f"ind{i}"] = node
    for i in range(15):
        src = f"ind{i}"
        rhs: object = (
            50 if nodes[src]["fn"] == "RSI" else ("close" if nodes[src]["fn"] != "ATR" else 500.0)
        )
        nodes[f"th{i}"] = {"kind": "threshold", "input": src, "op": ">", "value": rhs}
    for i in range(8):
        nodes[f"x{i}"] = {
            "kind": "cross",
            "a": f"ind{4 * (i % 5)}",
            "b": f"ind{4 * (i % 5) + 1}",
            "direction": "above",
        }
    for i in range(4):
        nodes[f"all{i}"] = {"kind": "all", "inputs": [f"th{3 * i}", f"th{3 * i + 1}", f"x{i}"]}
    nodes["any0"] = {"kind": "any", "inputs": [f"all{i}" for i in range(4)]}
    nodes["lvl0"] = {
        "kind": "drawing_level",
        "price": 45000.0,
        "tolerance_bps": 20,
        "mode": "break_up",
    }
    nodes["lvl1"] = {"kind": "zone", "low": 40000.0, "high": 42000.0, "mode": "touch"}
    doc = {
        "schema": "stratagem/v1",
        "name": "dag50",
        "version": 1,
        "instrument": {"venue": "sim", "symbol": "BTC/USDT", "timeframe": "1h"},
        "nodes": nodes,
        "entry": {"when": "any0", "side": "long"},
    }
    assert len(nodes) == 50
    return yaml.safe_dump(doc, sort_keys=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    art = loads(fifty_node_artifact())
    graph = check(art)
    bars = generate_bars(seed=5, start_ns=1_704_067_200_000_000_000, n=args.bars, timeframe="1h")
    rows = [
        BarValues(*r)
        for r in bars.select(["ts_ns", "open", "high", "low", "close", "volume"]).iter_rows()
    ]
    evaluate(art, graph, bars.head(300))  # compile out of the timing
    warm = DagEvaluator(art, graph)
    for r in rows[:300]:
        warm.on_bar(r)
    inc, vec, evals = [], [], 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        evaluate(art, graph, bars)
        vec.append(time.perf_counter() - t)
        ev = DagEvaluator(art, graph)
        t = time.perf_counter()
        for r in rows:
            ev.on_bar(r)
        inc.append(time.perf_counter() - t)
        evals = ev.evaluations
    v, i = float(np.median(vec)), float(np.median(inc))
    print(f"\n50-node DAG, {args.bars:,} bars, median of {args.repeat}\n")
    print("| evaluation | seconds | bars/s | node updates/s | x vectorised |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| vectorised (fast path `evaluate`, baseline) | {v:.3f} | {args.bars / v:,.0f} | {50 * args.bars / v:,.0f} | 1.00 |"
    )
    print(
        f"| incremental bar by bar (`DagEvaluator`) | {i:.3f} | {args.bars / i:,.0f} | {evals / i:,.0f} | {v / i:.3f} |"
    )
    print(
        f"\nincremental evaluation ran {evals:,} node updates of {50 * args.bars:,} possible ({evals / (50 * args.bars):.0%})"
    )


if __name__ == "__main__":
    main()
