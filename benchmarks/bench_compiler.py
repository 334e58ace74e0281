"""Compiler benchmarks: drawings -> artifact throughput, and compile-loop time per iteration.

Baselines measured in the same run:
- drawings: loading and checking the same artifact from its YAML (`artifacts.io.loads` + `check`),
  i.e. what reading a hand-written artifact costs; the ratio says what drawing compilation adds;
- compile loop: one bare `run_backtest` of the draft on the same held-out window, the loop's
  largest single step; the loop's time excludes the model (time inside `LLMClient.complete`);
- review paper gate: one paper run replayed over the ZeroMQ bar bus (`compiler.review.replay_paper`
  -> `run_paper`, simulated venue) against `run_backtest` of the same artifact on the same bars.

Run: `python benchmarks/bench_compiler.py` (prints a markdown table).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from artifacts.graph import check
from artifacts.io import dumps, loads
from compiler.drawings_compile import compile_layout
from compiler.llm import LLMClient, LLMConfig
from compiler.loop import CompileLoop, CompileRequest, split_holdout
from compiler.stub_server import StubOpenAI, completion
from feeds.files import read_bars
from strategy_kernel.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = sorted((ROOT / "examples" / "drawings").glob("*.json"))
DATA = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"
DRAFT = json.loads((ROOT / "tests" / "compiler" / "fixtures" / "drafts.json").read_text())["good"]
OPTIONS: dict[str, dict[str, Any]] = {
    "levels-only.json": {"side": "long"},
}


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_drawings(rounds: int = 100) -> tuple[float, float]:
    texts = [(p.name, p.read_text()) for p in LAYOUTS]
    yamls = [
        dumps(compile_layout(t, "BTC/USDT", "1h", **OPTIONS.get(n, {})).artifact) for n, t in texts
    ]

    def compile_all() -> None:
        for _ in range(rounds):
            for n, t in texts:
                compile_layout(t, "BTC/USDT", "1h", **OPTIONS.get(n, {}))

    def load_all() -> None:
        for _ in range(rounds):
            for y in yamls:
                check(loads(y))

    n = rounds * len(texts)
    return n / best_of(compile_all, 3), n / best_of(load_all, 3)


def bench_loop(iterations: int = 10) -> tuple[float, float, float]:
    bars = read_bars(DATA).head(3000)
    approve = completion(json.dumps({"approve": True, "reasons": ["ok"]}))
    with StubOpenAI() as stub, tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(
            LLMConfig(base_url=stub.base_url, model="stub", log_path=f"{tmp}/calls.sqlite")
        )
        model_time = 0.0
        inner = client.complete

        def timed(*a: Any, **kw: Any) -> Any:
            nonlocal model_time
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                model_time += time.perf_counter() - t0

        client.complete = timed  # type: ignore[method-assign]
        loop = CompileLoop(client)
        req = CompileRequest(text="sma cross", symbol="BTC/USDT", timeframe="1h", bars=bars)
        per_iter = []
        for _ in range(iterations):
            stub.add({"body": completion(json.dumps(DRAFT))}, {"body": approve})
            model_time = 0.0
            t0 = time.perf_counter()
            result = loop.run(req)
            per_iter.append((time.perf_counter() - t0 - model_time, model_time))
        client.close()
    _, held = split_holdout(bars, 0.3)
    art = result.artifact
    graph = check(art)
    bt = best_of(lambda: run_backtest(art, graph, held), 5)
    loop_s = statistics.median(p[0] for p in per_iter)
    stub_s = statistics.median(p[1] for p in per_iter)
    return loop_s, bt, stub_s


def bench_paper(n_bars: int = 720) -> tuple[float, float]:
    from compiler.review import replay_paper

    art = loads(json.dumps(DRAFT))
    graph = check(art)
    bars = read_bars(DATA).head(3000).tail(n_bars)
    paper = best_of(lambda: replay_paper(art, bars, 30), 3)
    bt = best_of(lambda: run_backtest(art, graph, bars, session_id="paper-gate"), 3)
    return paper, bt


def main() -> None:
    comp, load = bench_drawings()
    loop_s, bt_s, stub_s = bench_loop()
    paper_s, paper_bt_s = bench_paper()
    print("| benchmark | value | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| drawings -> checked artifact | {comp:,.0f} layouts/s | load+check YAML: {load:,.0f}/s "
        f"| {comp / load:.2f}x |"
    )
    print(
        f"| compile loop, one iteration excl. model (draft -> checks -> 900-bar backtest -> judge) "
        f"| {loop_s * 1000:.1f} ms | bare backtest of the draft on the same window: {bt_s * 1000:.1f} ms "
        f"| {loop_s / bt_s:.2f}x |"
    )
    print(f"| (stub model round trips per iteration, 2 calls) | {stub_s * 1000:.1f} ms | - | - |")
    print(
        f"| review paper gate: one 720-bar (30-day) paper run replayed over the bar bus "
        f"| {paper_s * 1000:.1f} ms | run_backtest on the same bars: {paper_bt_s * 1000:.1f} ms "
        f"| {paper_s / paper_bt_s:.2f}x |"
    )


if __name__ == "__main__":
    main()
