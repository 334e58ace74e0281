"""`stratagem data ...` through the real front door (exit codes, `error:` lines, outputs)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import stratagem.cli as cli
from feeds.bus import BarEvent, EndOfStream, Subscriber
from feeds.fake_exchange import FakeBinance, Fault
from feeds.files import read_bars, write_bars
from feeds.lake import Lake
from feeds.resample import resample_bars
from feeds.synthetic import generate_bars
from feeds.unstructured import read_jsonl
from stratagem.commands_data import _progress

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"
T0 = 1_704_067_200_000_000_000
H = 3_600_000_000_000
MS = 1_000_000
BARS = generate_bars(seed=11, start_ns=T0, n=300, timeframe="1h")
TRADES = [
    {
        "a": i,
        "p": "42000.5",
        "q": "0.5",
        "f": i,
        "l": i,
        "T": T0 // MS + i * 60_000,
        "m": False,
        "M": True,
    }
    for i in range(120)
]


@pytest.fixture(autouse=True)
def wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wire the data commands into the front door as the lead will in COMMAND_MODULES."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("stratagem.commands_data",))


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(klines={("BTCUSDT", "1h"): BARS}, trades={"BTCUSDT": TRADES}) as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["data", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for action in ("fetch", "import", "list", "check", "resample", "gaps", "tier", "serve", "news"):
        assert action in text
    with pytest.raises(SystemExit):
        cli.main(["data", "fetch", "--help"])
    assert "--api-url" in capsys.readouterr().out


def test_fetch_into_lake_then_resume_and_list(
    fake: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    args = [
        "data",
        "fetch",
        "--exchange",
        "binance",
        "--symbol",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-11",
        "--lake",
        str(lake),
        "--api-url",
        fake.url,
    ]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.strip() == (
        "binance BTC/USDT 1h: wrote 240 bars (2024-01-01T00:00:00Z .. 2024-01-10T23:00:00Z) "
        "in 1 pages, 0 retries"
    )
    assert_frame_equal(Lake(lake).read("binance", "BTC/USDT", "1h"), BARS.head(240))
    code, out, _ = run(capsys, *args[:-6], "--to", "2024-01-12", *args[-4:])
    assert code == 0
    assert "wrote 25 bars" in out and "resumed from 2024-01-10T23:00:00Z" in out
    code, out, _ = run(capsys, "data", "list", "--lake", str(lake))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["venue", "symbol", "tf", "first", "last", "bars", "years", "MB"]
    assert lines[1].split()[:6] == [
        "binance",
        "BTC-USDT",
        "1h",
        "2024-01-01T00:00:00Z",
        "2024-01-11T23:00:00Z",
        "264",
    ]
    code, out, _ = run(capsys, "data", "list", "--lake", str(lake), "--json")
    assert json.loads(out)[0]["n_bars"] == 264


def test_fetch_errors_exit_2(
    fake: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "data",
        "fetch",
        "--exchange",
        "binance",
        "--symbol",
        "BTC/USDT",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        "--api-url",
        fake.url,
    ]
    fake.inject("/api/v3/klines", *[Fault(kind="status", status=429)] * 2)
    code, out, err = run(capsys, *base, "--lake", str(tmp_path), "--retries", "2", "--backoff", "0")
    assert code == 2 and out == ""
    assert err.startswith(
        "error: binance fetch_ohlcv BTC/USDT 1h since 2024-01-01T00:00:00Z: "
        "gave up after 2 attempts"
    )
    code, _, err = run(capsys, *base)
    assert (code, err.strip()) == (
        2,
        "error: fetching bars needs --lake ROOT (bars are stored in the lake)",
    )
    code, _, err = run(capsys, *base[:-4], "--to", "yesterday", "--lake", str(tmp_path))
    assert code == 2 and "error: --to 'yesterday' is not a date" in err
    code, _, err = run(capsys, *base[:5], "DOGE/USDT", *base[6:], "--lake", str(tmp_path))
    assert code == 2 and "error: binance has no market 'DOGE/USDT'" in err


def test_fetch_trades_to_file(
    fake: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "trades.parquet"
    code, out, err = run(
        capsys,
        "data",
        "fetch",
        "--exchange",
        "binance",
        "--symbol",
        "BTC/USDT",
        "--what",
        "trades",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-01T01:30",
        "--out",
        str(out_file),
        "--api-url",
        fake.url,
    )
    assert code == 0, err
    trades = pl.read_parquet(out_file)
    assert trades.height == 90 and out.strip().endswith(f"wrote 90 trades rows to {out_file}")


def test_import_check_resample_gaps_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    code, out, _ = run(
        capsys,
        "data",
        "import",
        str(SAMPLE),
        "--venue",
        "sim",
        "--symbol",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--lake",
        str(lake),
    )
    assert code == 0 and "imported 9000 bars" in out and "9000 new, 0 replaced" in out
    assert_frame_equal(Lake(lake).read("sim", "BTC/USDT", "1h"), read_bars(SAMPLE))

    code, out, _ = run(capsys, "data", "check", str(SAMPLE), "--timeframe", "1h")
    assert code == 0 and "9000 bars of 1h" in out and "OK" in out

    out_4h = tmp_path / "4h.csv"
    code, out, _ = run(capsys, "data", "resample", str(SAMPLE), "--to", "4h", "--out", str(out_4h))
    assert code == 0 and "resampled 9000 1h bars to 2250 4h bars" in out
    assert_frame_equal(read_bars(out_4h), resample_bars(read_bars(SAMPLE), "1h", "4h"))

    holes = tmp_path / "holes.csv"
    write_bars(BARS.filter(~pl.int_range(pl.len()).is_in([3, 4])), holes)
    filled = tmp_path / "filled.parquet"
    code, out, _ = run(
        capsys, "data", "gaps", str(holes), "--policy", "ffill", "--out", str(filled)
    )
    assert code == 0 and "1 gap(s), 2 missing 1h bar(s); policy ffill: filled 2" in out
    assert pl.read_parquet(filled)["filled"].sum() == 2
    code, _, err = run(capsys, "data", "gaps", str(holes), "--policy", "drop")
    assert code == 2 and "needs --out" in err

    code, out, _ = run(
        capsys,
        "data",
        "tier",
        "--lake",
        str(lake),
        "--venue",
        "sim",
        "--symbol",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--coarse",
        "1d",
        "--keep-days",
        "30",
        "--as-of",
        "2025-01-01",
    )
    assert code == 0 and "to 1d" in out
    assert Lake(lake).read("sim", "BTC/USDT", "1d").height > 300


def test_bad_files_exit_2_with_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "ts_ns,open,high,low,close,volume\n"
        f"{T0},10,11,9,10,1\n{T0 + H},10,9,8,10,1\n{T0 + H},10,11,9,10,1\n"
    )
    code, out, err = run(capsys, "data", "check", str(bad), "--timeframe", "1h")
    assert code == 2
    assert "duplicates:    1 (first at 2024-01-01T01:00:00Z)" in out
    assert "bad OHLC:      1 (first at 2024-01-01T01:00:00Z)" in out
    assert err.strip().startswith(f"error: {bad}: the file breaks the bar rules")
    code, _, err = run(
        capsys,
        "data",
        "import",
        str(bad),
        "--venue",
        "sim",
        "--symbol",
        "X",
        "--timeframe",
        "1h",
        "--lake",
        str(tmp_path / "lake"),
    )
    assert code == 2 and err.startswith(f"error: {bad}, row 1 (line 3)")
    assert not (tmp_path / "lake").exists()


def test_serve_publishes_to_a_subscriber(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bars.parquet"
    write_bars(BARS.head(40), data)
    endpoint = f"ipc://{tmp_path}/serve.sock"
    result: dict[str, int] = {}
    with Subscriber(endpoint, ["bar.BTC-USDT.1h"]) as sub:
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "code",
                cli.main(
                    [
                        "data",
                        "serve",
                        "--endpoint",
                        endpoint,
                        "--file",
                        str(data),
                        "--symbol",
                        "BTC/USDT",
                        "--timeframe",
                        "1h",
                        "--wait-subscribers",
                        "1",
                    ]
                ),
            )
        )
        thread.start()
        events: list[object] = []
        while not (events and isinstance(events[-1], EndOfStream)):
            event = sub.recv(10_000)
            assert event is not None
            events.append(event)
        thread.join(timeout=10)
    assert result["code"] == 0
    assert [e.bar.close for e in events if isinstance(e, BarEvent)] == BARS["close"].to_list()[:40]
    assert "published 40 bars on bar.BTC-USDT.1h" in capsys.readouterr().out


def test_news(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "wire.xml"
    feed.write_text(
        "<rss><channel><title>W</title><item><title>BTC up</title>"
        "<pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate></item></channel></rss>"
    )
    out = tmp_path / "items.jsonl"
    code, text, _ = run(
        capsys, "data", "news", str(feed), "--symbols", "BTC,ETH", "--out", str(out)
    )
    assert code == 0 and "appended 1 items" in text
    (item,) = read_jsonl(out)
    assert (item.ts_ns, item.symbols, item.source) == (T0, ("BTC",), "rss:wire.xml")
    feed.write_text("<rss><channel><item><title>x</title></item></channel></rss>")
    code, _, err = run(capsys, "data", "news", str(feed))
    assert code == 2 and "item 0 ('x'): no <pubDate>" in err


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, quiet, shown in (
        (Tty(), False, True),
        (io.StringIO(), False, False),
        (Tty(), True, False),
    ):
        monkeypatch.setattr("sys.stderr", stream)
        with _progress(10, "x", quiet) as done:
            done(4)
            done(10)
        assert ("10/10" in stream.getvalue()) is shown


def test_webhook_needs_a_secret_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATAGEM_WEBHOOK_SECRET", raising=False)
    code, _, err = run(capsys, "data", "webhook", "--out", str(tmp_path / "a.jsonl"), "--port", "0")
    assert code == 2 and "STRATAGEM_WEBHOOK_SECRET" in err
    monkeypatch.setenv("STRATAGEM_WEBHOOK_SECRET", "short")
    code, _, err = run(capsys, "data", "webhook", "--out", str(tmp_path / "a.jsonl"), "--port", "0")
    assert code == 2 and "at least 16 characters" in err
