"""`stratagem sweep`: parse parameter axes, run the sweep or walk-forward, print and save results."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from artifacts.graph import check
from artifacts.io import load_with_lines
from feeds.files import read_bars
from stratagem.errors import StratagemError
from strategy_kernel.sweep import SweepResult, combinations, parse_axis, sweep, walk_forward


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:,.3f}"
    return "n/a" if v is None else str(v)


def _print_results(results: list[SweepResult], objective: str, top: int = 10) -> None:
    ranked = sorted(results, key=lambda r: (-r.objective(objective), r.index))
    paths = list(results[0].params)
    metrics = list(dict.fromkeys([objective, "total_return_pct", "max_drawdown_pct", "sharpe"]))
    header = [*paths, *metrics, "trades"]
    rows = [
        [
            *(_fmt(r.params[p]) for p in paths),
            *(_fmt(r.metrics.get(m)) for m in metrics),
            str(r.trades),
        ]
        for r in ranked[:top]
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(f"\ntop {len(rows)} of {len(ranked)} by {objective}:")
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r, row in zip(ranked, rows, strict=False):
        line = "  " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))
        print(line + (f"  error: {r.error}" if r.error else ""))


def _write_csv(results: list[SweepResult], path: Path) -> None:
    metric_names = sorted({k for r in results for k in r.metrics})
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        params = list(results[0].params)
        w.writerow(
            ["index", *params, *metric_names, "trades", "engine", "strategy_log_head", "error"]
        )
        for r in results:
            w.writerow(
                [
                    r.index,
                    *(r.params[p] for p in params),
                    *(r.metrics.get(m) for m in metric_names),
                    r.trades,
                    r.engine,
                    r.strategy_log_head,
                    r.error or "",
                ]
            )


def run_sweep_cli(args: argparse.Namespace, default_data: Path) -> int:
    artifact_path = Path(args.artifact)
    artifact, lines = load_with_lines(artifact_path)
    check(artifact, str(artifact_path), lines)
    data_path = Path(args.data) if args.data else default_data
    bars = read_bars(data_path, start_ns=args.start, end_ns=args.end)
    from stratagem.portfolio_cli import parse_bars_options
    from stratagem.run import data_inputs

    extra = data_inputs(artifact, parse_bars_options(args.bars), data_path, args.start, args.end)
    funding = None
    if args.funding:
        from feeds.funding import read_funding
        from strategy_kernel.backtest import funding_schedule

        funding = read_funding(Path(args.funding))
        funding_schedule(artifact, bars, funding)  # refuse a spot artifact before any run
    axes = [parse_axis(spec) for spec in args.param]
    combos = combinations(axes, random_n=args.random, seed=args.seed)
    if args.workers < 1:
        raise StratagemError("--workers must be at least 1")
    show = not args.quiet and not args.json and sys.stderr.isatty()
    common = {
        "executor": args.executor,
        "workers": args.workers,
        "address": args.address,
        "engine": args.engine,
        "data_bars": {sym: df for sym, (_, df) in extra.items()} if artifact.data else None,
        "funding": funding,
    }
    if args.walk_forward:
        try:
            train, test = (int(x) for x in args.walk_forward.split(":"))
        except ValueError:
            raise StratagemError(
                f"--walk-forward {args.walk_forward!r}: write TRAIN:TEST in bars, e.g. 4000:1000"
            ) from None
        folds_n = max(0, (bars.height - train) // test) if test > 0 else 0
        with tqdm(
            total=folds_n * len(combos),
            unit="run",
            desc="walk-forward",
            disable=not show,
            file=sys.stderr,
        ) as bar:
            folds = walk_forward(
                artifact,
                bars,
                combos,
                train_bars=train,
                test_bars=test,
                objective=args.objective,
                progress=bar.update,
                **common,
            )
        rows = [
            {
                "train": f.train_range,
                "test": f.test_range,
                "best_params": f.best_params,
                "train_objective": f.train_objective,
                "test_metrics": f.test_result.metrics,
                "test_trades": f.test_result.trades,
            }
            for f in folds
        ]
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True, default=str))
        else:
            print(
                f"\nwalk-forward: {len(folds)} folds, train {train} bars, test {test} bars, objective {args.objective}"
            )
            for f in folds:
                m = f.test_result.metrics
                print(
                    f"  test bars {f.test_range[0]:>6}-{f.test_range[1]:<6} best {f.best_params}  "
                    f"test {args.objective} {_fmt(m.get(args.objective))}  return % {_fmt(m.get('total_return_pct'))}"
                )
        return 0
    with tqdm(
        total=len(combos), unit="run", desc="sweep", disable=not show, file=sys.stderr
    ) as bar:
        results = sweep(artifact, bars, combos, progress=bar.update, **common)
    if args.out:
        _write_csv(results, Path(args.out))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "params": r.params,
                        "metrics": r.metrics,
                        "trades": r.trades,
                        "engine": r.engine,
                        "error": r.error,
                    }
                    for r in results
                ],
                indent=2,
                sort_keys=True,
            )
        )
    else:
        _print_results(results, args.objective)
        engines = sorted({r.engine for r in results})
        print(f"engine: {', '.join(engines)} (--engine {args.engine})")
        if args.out:
            print(f"\nall {len(results)} results in {args.out}")
    return 0
