"""Live mode of the service runner: the order kernel is configured to route through ccxt, and
real money needs both `mode = "live"` in the config and `--live` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifacts.io import load
from order_kernel.config import CcxtVenueConfig, parse_config
from stratagem.cli import main
from stratagem.service.runner import RunnerError, kernel_toml
from stratagem.service.settings import FeedSettings, LiveVenueSettings, RunnerSettings

REPO = Path(__file__).resolve().parents[2]
RSI = REPO / "examples" / "rsi-reversion.yaml"


def _live(**changes: object) -> RunnerSettings:
    base: dict[str, object] = {
        "mode": "live",
        "venue": LiveVenueSettings(
            exchange="binance", credentials="keys.enc", api_url="http://127.0.0.1:9"
        ),
        "feed": FeedSettings(mode="bus", endpoint="ipc:///tmp/md.sock"),
    }
    base.update(changes)
    return RunnerSettings.model_validate(base)


def test_live_kernel_config_routes_through_ccxt() -> None:
    text = kernel_toml([("rsi", load(RSI))], _live())
    cfg = parse_config(text)
    assert isinstance(cfg.venue, CcxtVenueConfig) and cfg.live
    assert cfg.venue.exchange == "binance" and cfg.venue.api_url == "http://127.0.0.1:9"
    assert Path(cfg.venue.credentials).is_absolute()  # resolved where the service was started
    assert [i.symbol for i in cfg.instruments] == ["BTC/USDT"]
    paper = parse_config(kernel_toml([("rsi", load(RSI))], RunnerSettings()))
    assert not paper.live and not isinstance(paper.venue, CcxtVenueConfig)


def test_live_needs_a_venue_and_a_live_feed() -> None:
    with pytest.raises(RunnerError, match=r"\[runner.venue\]"):
        kernel_toml([("rsi", load(RSI))], _live(venue=None))
    with pytest.raises(RunnerError, match="historical prices"):
        kernel_toml([("rsi", load(RSI))], _live(feed=FeedSettings(mode="replay")))


def test_live_needs_the_config_and_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "svc.toml"
    body = f'[runner]\nstate_dir = "{tmp_path / "state"}"\n'
    cfg.write_text(body + 'mode = "live"\n')
    assert main(["service", "run", "--config", str(cfg)]) == 2
    assert "--live was not given" in capsys.readouterr().err
    cfg.write_text(body)
    assert main(["service", "run", "--config", str(cfg), "--live"]) == 2
    assert "mode = 'paper'" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before anything was started
