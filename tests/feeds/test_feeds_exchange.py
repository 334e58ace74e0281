"""ccxt REST source against a local fake Binance: pagination, retries, resume, clear errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feeds.errors import ExchangeDataError, ExchangeError, ExchangeRetryError, SourceError
from feeds.exchange import CcxtClient, CcxtSource, RetryPolicy, make_exchange
from feeds.fake_exchange import FakeBinance, Fault
from feeds.lake import Lake
from feeds.schema import ASK, BID, Bar
from feeds.sources import Source, VirtualClock, create_source
from feeds.synthetic import generate_bars

H = 3_600_000_000_000
MS = 1_000_000
T0 = 1_703_980_800_000_000_000  # 2023-12-31T00:00Z: the series crosses a year boundary
N = 250
BARS = generate_bars(seed=5, start_ns=T0, n=N, timeframe="1h")
NOW_NS = T0 + N * H  # every bar closed
TRADES = [
    {
        "a": i,
        "p": f"{42000 + i % 7}.5",
        "q": "0.01",
        "f": i,
        "l": i,
        "T": T0 // MS + (i // 3) * 20_000,
        "m": i % 2 == 0,
        "M": True,
    }
    for i in range(600)  # 3 trades per 20 s, same millisecond: paging must not lose or repeat any
]
FUNDING = [
    {
        "symbol": "BTCUSDT",
        "fundingTime": T0 // MS + i * 8 * 3_600_000,
        "fundingRate": f"{0.0001 * (i % 3 - 1):.6f}",
        "markPrice": f"{42000 + i}.0",
    }
    for i in range(30)
]
OI = [
    {
        "symbol": "BTCUSDT",
        "sumOpenInterest": f"{1000 + i}.5",
        "sumOpenInterestValue": f"{(1000 + i) * 42000}",
        "timestamp": T0 // MS + i * 3_600_000,
    }
    for i in range(120)
]


class Sleeps:
    """Injected sleep: records delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(
        klines={("BTCUSDT", "1h"): BARS},
        futures_klines={("BTCUSDT", "1h"): BARS},
        trades={"BTCUSDT": TRADES},
        funding={"BTCUSDT": FUNDING},
        open_interest={"BTCUSDT": OI},
        now_ms=NOW_NS // MS,
    ) as server:
        yield server


def client_for(
    fake: FakeBinance,
    *,
    sleeps: Sleeps | None = None,
    attempts: int = 6,
    page_limit: int = 100,
    now_ns: int = NOW_NS,
    timeout_ms: int = 2000,
) -> CcxtClient:
    exchange = make_exchange("binance", api_url=fake.url, timeout_ms=timeout_ms, rate_limit_ms=0)
    return CcxtClient(
        exchange,
        retry=RetryPolicy(max_attempts=attempts, base_delay_s=1.0, factor=2.0, max_delay_s=10.0),
        sleep=sleeps if sleeps is not None else Sleeps(),
        now_ns=lambda: now_ns,
        page_limit=page_limit,
    )


def test_ohlcv_paginates_over_the_whole_range(fake: FakeBinance) -> None:
    client = client_for(fake)
    got = client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + N * H)
    assert_frame_equal(got, BARS)
    starts = [int(r.params["startTime"]) for r in fake.calls("/api/v3/klines")]
    assert starts == [(T0 + k * 100 * H) // MS for k in range(3)]  # 100 + 100 + 50 bars
    assert all(r.params["limit"] == "100" for r in fake.calls("/api/v3/klines"))


def test_ohlcv_respects_range_and_drops_the_forming_bar(fake: FakeBinance) -> None:
    client = client_for(fake, now_ns=T0 + 10 * H + H // 2)  # bar 10 is forming
    fake.now_ms = (T0 + 10 * H + H // 2) // MS
    got = client.fetch_ohlcv("BTC/USDT", "1h", T0 + 3 * H, T0 + 50 * H)
    assert got["ts_ns"].to_list() == [T0 + i * H for i in range(3, 10)]
    assert client.fetch_ohlcv("BTC/USDT", "1h", T0 + 3 * H + 1, T0 + 5 * H)["ts_ns"].to_list() == [
        T0 + 4 * H
    ]


def test_transient_errors_are_retried_with_exponential_backoff(fake: FakeBinance) -> None:
    sleeps = Sleeps()
    client = client_for(fake, sleeps=sleeps, timeout_ms=300)
    fake.inject(
        "/api/v3/klines",
        Fault(kind="status", status=429, retry_after_s=3),
        Fault(kind="status", status=503),
        Fault(kind="timeout", delay_s=0.6),
        Fault(kind="malformed"),
        Fault(kind="reset"),
    )
    got = client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + 20 * H)
    assert_frame_equal(got, BARS.head(20))
    # Retry-After: 3 beats the first backoff step; later steps double, capped at max_delay_s
    assert sleeps.delays == [3.0, 2.0, 4.0, 8.0, 10.0]
    assert [e.error for e in client.retries] == [
        "DDoSProtection",
        "OperationFailed",
        "RequestTimeout",
        "BadResponse",
        "NetworkError",
    ]
    assert [r.status for r in fake.calls("/api/v3/klines")] == [429, 503, 0, 200, 0, 200]


def test_malformed_json_is_never_read_as_an_empty_page(fake: FakeBinance) -> None:
    sleeps = Sleeps()
    client = client_for(fake, sleeps=sleeps, attempts=2)
    fake.inject("/api/v3/klines", Fault(kind="malformed"), Fault(kind="malformed"))
    with pytest.raises(ExchangeRetryError, match="malformed JSON") as info:
        client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + 20 * H)
    assert "gave up after 2 attempts; last error BadResponse" in str(info.value)
    assert sleeps.delays == [1.0]


def test_persistent_rate_limit_gives_a_clear_error(fake: FakeBinance) -> None:
    sleeps = Sleeps()
    client = client_for(fake, sleeps=sleeps, attempts=3)
    client.load_markets()
    fake.inject("/api/v3/klines", *[Fault(kind="status", status=429)] * 3)
    with pytest.raises(ExchangeRetryError) as info:
        client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + 20 * H)
    msg = str(info.value)
    assert msg.startswith(
        "binance fetch_ohlcv BTC/USDT 1h since 2023-12-31T00:00:00Z: gave up after 3"
    )
    assert "DDoSProtection" in msg and "429" in msg
    assert "fix: the exchange is rate-limiting" in msg
    assert sleeps.delays == [1.0, 2.0]


def test_permanent_errors_fail_at_once(fake: FakeBinance) -> None:
    sleeps = Sleeps()
    client = client_for(fake, sleeps=sleeps)
    with pytest.raises(ExchangeError, match="binance has no market 'ETH/USDT'") as info:
        client.fetch_ohlcv("ETH/USDT", "1h", T0, T0 + H)
    assert "BTC" not in (info.value.hint or "")
    with pytest.raises(ExchangeError, match=r"e\.g\. BTC/USDT, BTC/USDT:USDT"):
        client.market("BTC/EUR")
    with pytest.raises(ExchangeError, match="does not serve 7m candles") as info:
        client.fetch_ohlcv("BTC/USDT", "7m", T0, T0 + H)
    assert "1m, 3m, 5m" in str(info.value)
    fake.inject(
        "/api/v3/klines",
        Fault(
            kind="body",
            status=401,
            body='{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}',
        ),
    )
    with pytest.raises(ExchangeError, match="AuthenticationError"):
        client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + H)
    assert sleeps.delays == []
    with pytest.raises(ExchangeError, match="unknown exchange 'Binance'"):
        make_exchange("Binance")


def test_bad_rows_are_named(fake: FakeBinance) -> None:
    client = client_for(fake)
    fake.inject(
        "/api/v3/klines", Fault(kind="body", body='[[1703980800000, "1", "2", "0.5", null, "3"]]')
    )
    with pytest.raises(ExchangeDataError, match=r"row 0: close is missing"):
        client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + H)
    fake.inject("/api/v3/klines", Fault(kind="body", body='{"unexpected": true}'))
    with pytest.raises(ExchangeError):
        client.fetch_ohlcv("BTC/USDT", "1h", T0, T0 + H)


def test_download_resumes_after_an_interrupted_run(fake: FakeBinance, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    sleeps = Sleeps()
    client = client_for(fake, sleeps=sleeps, attempts=2)
    client.load_markets()
    # page 1 ok, page 2 fails twice -> the run aborts after storing page 1
    calls_before = len(fake.calls("/api/v3/klines"))

    original = client.exchange.fetch_ohlcv
    pages = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        pages["n"] += 1
        if pages["n"] == 2:
            fake.inject(
                "/api/v3/klines", Fault(kind="status", status=503), Fault(kind="status", status=503)
            )
        return original(*args, **kwargs)

    client.exchange.fetch_ohlcv = flaky  # type: ignore[method-assign]
    seen: list[int] = []
    with pytest.raises(ExchangeRetryError, match="gave up after 2 attempts"):
        client.download_bars(
            lake,
            "BTC/USDT",
            "1h",
            T0,
            T0 + N * H,
            flush_bars=1,
            progress=lambda n, _: seen.append(n),
        )
    stored = lake.read("binance", "BTC/USDT", "1h")
    assert_frame_equal(stored, BARS.head(100))
    assert seen == [100]
    assert len(fake.calls("/api/v3/klines")) - calls_before == 3

    client.exchange.fetch_ohlcv = original  # type: ignore[method-assign]
    report = client.download_bars(lake, "BTC/USDT", "1h", T0, T0 + N * H)
    assert report.resumed_from_ns == T0 + 99 * H
    assert report.first_ts_ns == T0 + 99 * H and report.last_ts_ns == T0 + (N - 1) * H
    assert report.bars_written == N - 99 and report.pages == 2
    assert_frame_equal(lake.read("binance", "BTC/USDT", "1h"), BARS)
    assert [e.years for e in lake.catalog()] == [(2023, 2024)]
    # a third run has nothing new: one request for the last stored bar
    again = client.download_bars(lake, "BTC/USDT", "1h", T0, T0 + N * H)
    assert again.bars_written == 1 and again.pages == 1
    assert_frame_equal(lake.read("binance", "BTC/USDT", "1h"), BARS)


def test_download_without_resume_and_bad_range(fake: FakeBinance, tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    client = client_for(fake)
    client.download_bars(lake, "BTC/USDT", "1h", T0 + 10 * H, T0 + 20 * H)
    report = client.download_bars(lake, "BTC/USDT", "1h", T0, T0 + 20 * H, resume=False)
    assert report.resumed_from_ns is None and report.bars_written == 20
    with pytest.raises(SourceError, match="empty range"):
        client.download_bars(lake, "BTC/USDT", "1h", T0, T0)


def test_trades_page_through_windows_without_loss_or_repeats(fake: FakeBinance) -> None:
    client = client_for(fake, page_limit=50)
    end = T0 + 2 * H + 30 * 60_000 * MS
    got = client.fetch_trades("BTC/USDT", T0, end)
    # ccxt orders trades by (timestamp, id as text) within a page
    want = sorted((t for t in TRADES if t["T"] * MS < end), key=lambda t: (t["T"], str(t["a"])))
    assert got["trade_id"].to_list() == [str(t["a"]) for t in want]
    assert got["ts_ns"].to_list() == [t["T"] * MS for t in want]
    assert set(got["side"].to_list()) == {BID, ASK}
    assert got.filter(pl.col("trade_id") == "0")["side"][0] == ASK  # buyer is maker -> sell
    for call in fake.calls("/api/v3/aggTrades"):
        assert int(call.params["endTime"]) - int(call.params["startTime"]) < 3_600_000


def test_funding_and_open_interest(fake: FakeBinance) -> None:
    client = client_for(fake, page_limit=7)
    funding = client.fetch_funding("BTC/USDT:USDT", T0, T0 + 240 * H)
    assert funding["ts_ns"].to_list() == [r["fundingTime"] * MS for r in FUNDING]
    assert funding["funding_rate"].to_list() == [float(r["fundingRate"]) for r in FUNDING]
    assert funding["mark_price"][3] == 42003.0 and set(funding["interval_ns"]) == {8 * H}
    assert len(fake.calls("/fapi/v1/fundingRate")) >= 30 // 7
    oi = client.fetch_open_interest("BTC/USDT:USDT", "1h", T0 + 10 * H, T0 + 100 * H)
    assert oi["ts_ns"].to_list() == [T0 + i * H for i in range(10, 100)]
    assert oi["open_interest"][0] == 1010.5 and oi["open_interest_value"][0] == 1010 * 42000


def test_instrument_metadata(fake: FakeBinance) -> None:
    client = client_for(fake)
    spot = client.instrument("BTC/USDT")
    assert (spot.kind, spot.price_increment, spot.size_increment) == ("spot", "0.01", "0.00001")
    assert client.instrument("BTC/USDT:USDT").kind == "perp"


class FakeTimeClock(VirtualClock):
    """Virtual time that also moves the fake exchange's clock, with a publication lag."""

    def __init__(self, start_ns: int, fake: FakeBinance, lag_ns: int) -> None:
        super().__init__(start_ns)
        self.fake, self.lag_ns = fake, lag_ns
        self.wakeups: list[int] = []
        self._sync()

    def _sync(self) -> None:
        self.fake.now_ms = (self.now_ns() - self.lag_ns) // MS

    async def sleep_until(self, ts_ns: int) -> None:
        self.wakeups.append(ts_ns)
        await super().sleep_until(ts_ns)
        self._sync()


def test_live_polling_yields_each_closed_bar_once(fake: FakeBinance) -> None:
    # the exchange publishes a bar 3 s after its close; we poll 2 s after: one re-poll per bar
    clock = FakeTimeClock(T0 + 5 * H + 60 * 10**9, fake, lag_ns=3 * 10**9 + H)
    exchange = make_exchange("binance", api_url=fake.url, rate_limit_ms=0)
    client = CcxtClient(exchange, now_ns=clock.now_ns, sleep=Sleeps())
    source = CcxtSource(client, symbol="BTC/USDT", timeframe="1h", clock=clock)

    async def run() -> list[Bar]:
        return [bar async for bar in source.stream(end_ns=T0 + 9 * H)]

    bars = asyncio.run(run())
    # the fake's "forming bar" is the one containing its (lagged) now; bar 4 closed at 5h
    assert [b.ts_ns for b in bars] == [T0 + i * H for i in range(4, 9)]
    assert [b.close for b in bars] == BARS["close"].to_list()[4:9]
    assert clock.wakeups[:2] == [T0 + 6 * H + 2 * 10**9, T0 + 6 * H + 4 * 10**9]


def test_live_source_from_registry(fake: FakeBinance) -> None:
    clock = VirtualClock(T0 + 20 * H)
    source = create_source(
        "ccxt", exchange="binance", symbol="BTC/USDT", timeframe="1h", clock=clock, api_url=fake.url
    )
    assert isinstance(source, Source)
    assert source.fetch(T0, T0 + 3 * H)["ts_ns"].to_list() == [T0, T0 + H, T0 + 2 * H]
    assert source.fetch(T0 + 17 * H)["ts_ns"].to_list() == [T0 + i * H for i in (17, 18, 19)]

    async def first_two() -> list[Bar]:
        out: list[Bar] = []
        async for bar in source.stream(T0 + 18 * H):
            out.append(bar)
            if len(out) == 2:
                break
        return out

    assert [b.ts_ns for b in asyncio.run(first_two())] == [T0 + 18 * H, T0 + 19 * H]
    with pytest.raises(SourceError, match="needs a start time"):
        source.fetch()
