"""`stratagem data ...`: fetch, import, list, check, resample, fill gaps, tier and serve market
data; parse news feeds and run a webhook sink.

Every action raises :class:`feeds.errors.FeedError` (or :class:`stratagem.errors.StratagemError`
for argument combinations) on bad input; the front door prints them as ``error: ...`` lines and
exits with code 2. Progress bars (tqdm) appear only when stderr is a terminal and ``--quiet`` is
not given. Heavy imports (polars, ccxt, zmq) happen inside the actions so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stratagem.errors import StratagemError

__all__ = ["register"]

_WHAT = ("bars", "trades", "funding", "open-interest")


def _ns(text: str, flag: str) -> int:
    from feeds.errors import FeedError
    from feeds.synthetic import parse_start

    try:
        return parse_start(text)
    except FeedError:
        raise StratagemError(
            f"{flag} {text!r} is not a date: use ISO-8601, e.g. 2024-03-01 or 2024-03-01T12:00Z (UTC)"
        ) from None


def _fmt(ts_ns: int | None) -> str:
    from feeds.validate import format_ts

    return "-" if ts_ns is None else format_ts(ts_ns)


@contextmanager
def _progress(total: int | None, desc: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """Yields ``set_done(n)``; draws a tqdm bar on a terminal only."""
    from tqdm import tqdm

    with tqdm(
        total=total,
        unit="bar",
        desc=desc,
        file=sys.stderr,
        mininterval=0.2,
        disable=quiet or not sys.stderr.isatty(),
    ) as bar:

        def set_done(n: int) -> None:
            bar.update(n - bar.n)

        yield set_done


def _timeframe_of(ns: int) -> str:
    from feeds.schema import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_SECOND

    for unit, size in (
        ("w", 7 * NS_PER_DAY),
        ("d", NS_PER_DAY),
        ("h", NS_PER_HOUR),
        ("m", NS_PER_MINUTE),
        ("s", NS_PER_SECOND),
    ):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise StratagemError(f"bars are {ns} ns apart, not a whole number of seconds; pass --timeframe")


def _infer_timeframe(bars: Any) -> str:
    diffs = bars["ts_ns"].diff().drop_nulls()
    if diffs.len() == 0:
        raise StratagemError("cannot infer the timeframe from a single bar; pass --timeframe")
    return _timeframe_of(int(diffs.min()))


def _write_frame(df: Any, out: Path) -> None:
    """Atomic CSV/parquet write of any frame (trades, funding, flagged bars)."""
    from feeds.errors import FeedFileError
    from feeds.files import CSV_SUFFIXES, PARQUET_SUFFIXES, atomic_write

    suffix = out.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        atomic_write(out, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))
    elif suffix in CSV_SUFFIXES:
        atomic_write(out, lambda tmp: df.write_csv(tmp))
    else:
        raise FeedFileError(
            f"unsupported output type {out.suffix!r}", path=out, hint="use .csv or .parquet"
        )


# -- actions ---------------------------------------------------------------------------------
def cmd_fetch(args: argparse.Namespace) -> int:
    from feeds.exchange import CcxtClient, RetryPolicy, make_exchange
    from feeds.lake import Lake
    from feeds.schema import timeframe_to_ns

    start = _ns(args.start, "--from")
    end = _ns(args.end, "--to") if args.end else time.time_ns()
    if args.what == "bars" and not args.lake:
        raise StratagemError("fetching bars needs --lake ROOT (bars are stored in the lake)")
    if args.what != "bars" and not args.out:
        raise StratagemError(f"fetching {args.what} needs --out FILE (.parquet or .csv)")
    exchange = make_exchange(args.exchange, api_url=args.api_url, timeout_ms=args.timeout_ms)
    client = CcxtClient(
        exchange, retry=RetryPolicy(max_attempts=args.retries, base_delay_s=args.backoff)
    )
    if args.what == "bars":
        total = max(0, (end - start) // timeframe_to_ns(args.timeframe))
        with _progress(total, f"{args.symbol} {args.timeframe}", args.quiet) as done:
            report = client.download_bars(
                Lake(args.lake),
                args.symbol,
                args.timeframe,
                start,
                end,
                resume=not args.no_resume,
                progress=lambda n, _ts: done(n),
            )
        resumed = f"; resumed from {_fmt(report.resumed_from_ns)}" if report.resumed_from_ns else ""
        print(
            f"{report.venue} {args.symbol} {args.timeframe}: wrote {report.bars_written} bars "
            f"({_fmt(report.first_ts_ns)} .. {_fmt(report.last_ts_ns)}) in {report.pages} pages, "
            f"{report.retries} retries{resumed}"
        )
        return 0
    if args.what == "trades":
        df = client.fetch_trades(args.symbol, start, end)
    elif args.what == "funding":
        df = client.fetch_funding(args.symbol, start, end, interval=args.funding_interval)
    else:
        df = client.fetch_open_interest(args.symbol, args.timeframe, start, end)
    out = Path(args.out)
    _write_frame(df, out)
    print(f"{client.venue} {args.symbol}: wrote {df.height} {args.what} rows to {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from feeds.files import read_bars
    from feeds.lake import Lake
    from feeds.validate import check_bars

    bars = read_bars(args.file, on_duplicates=args.on_duplicates)
    lake = Lake(args.lake)
    written = lake.write(args.venue, args.symbol, args.timeframe, bars, mode=args.mode)
    series = lake.series_dir(args.venue, args.symbol, args.timeframe)
    print(
        f"imported {bars.height} bars into {series}: {written.inserted} new, "
        f"{written.replaced} replaced, years {', '.join(map(str, written.years))}"
    )
    report = check_bars(bars, args.timeframe)
    if report.gaps.count:
        print(
            f"warning: {report.gaps.count} gaps, {report.missing_bars} missing bars "
            f"(first at {report.gaps.describe()}); see `stratagem data gaps`",
            file=sys.stderr,
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import msgspec

    from feeds.lake import Lake

    entries = Lake(args.lake).catalog()
    if args.json:
        print(json.dumps(msgspec.to_builtins(entries), indent=2))
        return 0
    if not entries:
        print(f"{args.lake}: no series stored")
        return 0
    header = ("venue", "symbol", "tf", "first", "last", "bars", "years", "MB")
    rows = [
        (
            e.venue,
            e.symbol,
            e.timeframe,
            _fmt(e.first_ts_ns),
            _fmt(e.last_ts_ns),
            str(e.n_bars),
            f"{e.years[0]}-{e.years[-1]}" if len(e.years) > 1 else str(e.years[0]),
            f"{e.size_bytes / 1e6:.2f}",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from feeds.errors import BarDataError
    from feeds.files import parse_bars
    from feeds.validate import check_bars

    report = check_bars(parse_bars(args.file), args.timeframe)
    print(f"{args.file}: {report.summary()}")
    if not report.ok:
        raise BarDataError(
            "the file breaks the bar rules (see the report above)",
            path=args.file,
            hint="fix or delete the rows listed; `stratagem data import` refuses such files",
        )
    return 0


def cmd_resample(args: argparse.Namespace) -> int:
    from feeds.files import read_bars, write_bars
    from feeds.resample import resample_bars

    bars = read_bars(args.file)
    from_tf = args.timeframe or _infer_timeframe(bars)
    out = resample_bars(bars, from_tf, args.to, incomplete=args.incomplete)
    write_bars(out, args.out)
    print(f"resampled {bars.height} {from_tf} bars to {out.height} {args.to} bars in {args.out}")
    return 0


def cmd_gaps(args: argparse.Namespace) -> int:
    from feeds.files import read_bars
    from feeds.gaps import fill_gaps

    bars = read_bars(args.file)
    tf = args.timeframe or _infer_timeframe(bars)
    start = _ns(args.start, "--from") if args.start else None
    end = _ns(args.end, "--to") if args.end else None
    result = fill_gaps(bars, tf, args.policy, start_ns=start, end_ns=end, drop_period=args.period)
    print(f"{args.file}: {result.report.summary()}")
    if args.out:
        _write_frame(result.bars, Path(args.out))
        print(f"wrote {result.bars.height} bars to {args.out}")
    elif args.policy != "none":
        raise StratagemError(f"--policy {args.policy} needs --out FILE for the result")
    return 0


def cmd_tier(args: argparse.Namespace) -> int:
    from feeds.lake import Lake

    now = _ns(args.as_of, "--as-of") if args.as_of else time.time_ns()
    report = Lake(args.lake).tier(
        args.venue,
        args.symbol,
        args.timeframe,
        now_ns=now,
        keep_fine_days=args.keep_days,
        coarse_tf=args.coarse,
    )
    if report.coarse is None:
        print(f"nothing older than {_fmt(report.cutoff_ns)} in {args.timeframe}")
        return 0
    print(
        f"moved {report.fine_removed} {args.timeframe} bars before {_fmt(report.cutoff_ns)} to "
        f"{args.coarse} ({report.coarse.inserted} new, {report.coarse.replaced} replaced); "
        f"deleted years {list(report.years_deleted)}, rewrote {list(report.years_rewritten)}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from feeds.bus import bar_topic, serve_source
    from feeds.sources import FileSource, LakeSource, MonotonicClock, ReplaySource, Source

    if (args.file is None) == (args.lake is None):
        raise StratagemError("serve needs exactly one of --file FILE or --lake ROOT")
    inner: Source
    if args.file is not None:
        inner = FileSource(args.file)
    else:
        if not args.venue:
            raise StratagemError("serving from --lake needs --venue")
        inner = LakeSource(
            root=args.lake, venue=args.venue, symbol=args.symbol, timeframe=args.timeframe
        )
    source = ReplaySource(
        inner,
        timeframe=args.timeframe,
        speed=args.speed,
        clock=MonotonicClock() if args.speed else None,
    )
    start = _ns(args.start, "--from") if args.start else None
    end = _ns(args.end, "--to") if args.end else None
    topic = bar_topic(args.symbol, args.timeframe)
    print(f"serving {topic} on {args.endpoint}", file=sys.stderr, flush=True)
    n = serve_source(
        source,
        endpoint=args.endpoint,
        symbol=args.symbol,
        timeframe=args.timeframe,
        start_ns=start,
        end_ns=end,
        wait_subscribers=args.wait_subscribers,
        sndhwm=args.hwm,
    )
    print(f"published {n} bars on {topic}")
    return 0


def cmd_news(args: argparse.Namespace) -> int:
    from feeds.unstructured import append_jsonl, read_feed, read_jsonl

    symbols = tuple(s for s in (args.symbols or "").split(",") if s)
    src = str(args.input)
    jsonl = src.lower().endswith(".jsonl")
    items = read_jsonl(src) if jsonl else read_feed(src, symbols=symbols)
    if args.out:
        n = append_jsonl(items, args.out)
        print(f"appended {n} items to {args.out}")
    else:
        import msgspec

        for item in items:
            print(msgspec.json.encode(item).decode())
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    import os

    from feeds.unstructured import WebhookSink

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise StratagemError(
            f"set the shared secret in the environment variable {args.secret_env} "
            "(never on the command line, where other users can read it)"
        )
    sink = WebhookSink(args.out, secret=secret, host=args.host, port=args.port, source=args.source)
    print(f"accepting POST {sink.url} -> {args.out} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        sink.serve_forever()
    finally:
        sink.stop()
    return 0


# -- parser ----------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``data`` command group to the ``stratagem`` parser."""
    p = sub.add_parser(
        "data",
        help="market data: fetch, import, list, check, resample, gaps, tier, serve, news, webhook",
        description="Fetch, store, inspect, transform and serve market data (see docs/feeds.md).",
    )
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    q = actions.add_parser(
        "fetch",
        help="download history from an exchange (ccxt) into the lake, resuming",
        description="Download closed bars (into the lake) or trades / funding / open interest "
        "(into a file) from an exchange through ccxt's public REST API. Rate limits, 5xx and "
        "timeouts are retried with exponential backoff; an interrupted bar download resumes from "
        "the last stored bar when run again.",
    )
    q.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    q.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT or BTC/USDT:USDT")
    q.add_argument("--timeframe", default="1h", help="bar timeframe (default 1h)")
    q.add_argument("--from", dest="start", required=True, help="first time, ISO-8601 UTC")
    q.add_argument("--to", dest="end", help="end time (exclusive), ISO-8601 UTC (default: now)")
    q.add_argument("--lake", help="lake root for bars, e.g. data/lake")
    q.add_argument("--what", choices=_WHAT, default="bars", help="what to fetch (default bars)")
    q.add_argument("--out", help="output file for trades/funding/open-interest (.parquet/.csv)")
    q.add_argument("--funding-interval", default="8h", help="funding interval (default 8h)")
    q.add_argument("--api-url", help="replace the exchange's API host, e.g. a local test server")
    q.add_argument("--no-resume", action="store_true", help="re-fetch the whole range")
    q.add_argument("--retries", type=int, default=6, help="attempts per request (default 6)")
    q.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="first retry delay in seconds, doubled each retry (default 1)",
    )
    q.add_argument("--timeout-ms", type=int, default=10_000, help="HTTP timeout (default 10000)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_fetch)

    q = actions.add_parser(
        "import",
        help="validate a CSV/parquet bar file and store it in the lake",
        description="Read FILE with the strict bar rules (docs/feeds.md) and upsert it into the "
        "lake; only the year files it touches are rewritten, each atomically.",
    )
    q.add_argument("file", help="bar file (.csv or .parquet)")
    q.add_argument("--venue", required=True)
    q.add_argument("--symbol", required=True)
    q.add_argument("--timeframe", required=True)
    q.add_argument("--lake", required=True, help="lake root")
    q.add_argument("--mode", choices=("upsert", "append"), default="upsert")
    q.add_argument("--on-duplicates", choices=("error", "keep_last"), default="error")
    q.set_defaults(func=cmd_import)

    q = actions.add_parser(
        "list",
        help="list the series stored in a lake",
        description="Print the lake catalog: one line per stored series.",
    )
    q.add_argument("--lake", required=True, help="lake root")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)

    q = actions.add_parser(
        "check",
        help="report problems in a bar file (order, duplicates, values, OHLC, gaps)",
        description="Report every problem in FILE without stopping at the first. Exit 0 when "
        "the file is usable (gaps and zero volume are warnings), 2 when it breaks a rule.",
    )
    q.add_argument("file")
    q.add_argument("--timeframe", required=True)
    q.set_defaults(func=cmd_check)

    q = actions.add_parser(
        "resample",
        help="resample a bar file to a coarser timeframe (no look-ahead)",
        description="Aggregate FILE to --to bars: left-labelled, epoch-aligned buckets; "
        "incomplete buckets dropped unless --incomplete keep.",
    )
    q.add_argument("file")
    q.add_argument("--to", required=True, help="target timeframe, e.g. 4h")
    q.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    q.add_argument("--timeframe", help="source timeframe (default: smallest bar spacing)")
    q.add_argument("--incomplete", choices=("drop", "keep"), default="drop")
    q.set_defaults(func=cmd_resample)

    q = actions.add_parser(
        "gaps",
        help="report gaps, or fill (ffill, flagged) / drop incomplete periods",
        description="Report missing bars; with --policy ffill insert flat zero-volume bars "
        "flagged in a 'filled' column, with --policy drop remove periods with missing bars.",
    )
    q.add_argument("file")
    q.add_argument("--timeframe", help="bar timeframe (default: smallest bar spacing)")
    q.add_argument("--policy", choices=("none", "ffill", "drop"), default="none")
    q.add_argument("--period", default="1d", help="period dropped as a whole (default 1d)")
    q.add_argument("--from", dest="start", help="expected first bar time (ISO-8601 UTC)")
    q.add_argument("--to", dest="end", help="expected end (exclusive)")
    q.add_argument("--out", help="output file for ffill/drop")
    q.set_defaults(func=cmd_gaps)

    q = actions.add_parser(
        "tier",
        help="move old fine bars in the lake to a coarser series",
        description="Resample bars older than --keep-days into --coarse and remove them from "
        "the fine series (coarse written first: a crash never loses data).",
    )
    q.add_argument("--lake", required=True)
    q.add_argument("--venue", required=True)
    q.add_argument("--symbol", required=True)
    q.add_argument("--timeframe", required=True, help="the fine timeframe, e.g. 1m")
    q.add_argument("--coarse", default="1h", help="coarse timeframe (default 1h)")
    q.add_argument("--keep-days", type=int, default=90, help="days of fine data kept (default 90)")
    q.add_argument("--as-of", help="reference time instead of now (ISO-8601 UTC)")
    q.set_defaults(func=cmd_tier)

    q = actions.add_parser(
        "serve",
        help="publish bars on the ZeroMQ market-data bus",
        description="Publish a bar file or lake series on an XPUB socket, topic "
        "bar.<SYMBOL>.<TF>, with per-topic sequence numbers and heartbeats. Slow subscribers "
        "lose messages (and see the gap) instead of slowing the publisher.",
    )
    q.add_argument("--endpoint", required=True, help="ipc:///tmp/bars or tcp://127.0.0.1:5555")
    q.add_argument("--file", help="bar file to serve")
    q.add_argument("--lake", help="lake root to serve from (with --venue)")
    q.add_argument("--venue")
    q.add_argument("--symbol", required=True)
    q.add_argument("--timeframe", required=True)
    q.add_argument("--from", dest="start", help="first bar time (ISO-8601 UTC)")
    q.add_argument("--to", dest="end", help="end time (exclusive)")
    q.add_argument("--speed", type=float, help="x real time (default: as fast as possible)")
    q.add_argument("--wait-subscribers", type=int, default=0, help="wait for N subscribers")
    q.add_argument("--hwm", type=int, default=10_000, help="per-subscriber queue (messages)")
    q.set_defaults(func=cmd_serve)

    q = actions.add_parser(
        "news",
        help="parse an RSS/Atom feed (file or URL) or a JSONL posts file into items",
        description="Parse INPUT into UnstructuredItem JSON lines (printed, or appended to --out).",
    )
    q.add_argument("input", help="feed file, http(s) URL, or .jsonl posts file")
    q.add_argument("--symbols", help="comma-separated tickers to tag, e.g. BTC,ETH")
    q.add_argument("--out", help="append the items to this JSONL file")
    q.set_defaults(func=cmd_news)

    q = actions.add_parser(
        "webhook",
        help="run a webhook sink that appends authenticated JSON items to a JSONL file",
        description="Accept POST /webhook with one item or a list ({ts, text, url, symbols, "
        "metadata}); the shared secret comes from the environment and must be sent in the "
        "X-Webhook-Secret header or a 'secret' body field (TradingView alerts).",
    )
    q.add_argument("--out", required=True, help="JSONL file the items are appended to")
    q.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8787)
    q.add_argument("--source", default="webhook", help="source label of the items")
    q.add_argument(
        "--secret-env",
        default="STRATAGEM_WEBHOOK_SECRET",
        help="environment variable holding the secret",
    )
    q.set_defaults(func=cmd_webhook)
