"""Shared fixtures: two real backtest run directories (made once per session) and a service."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from stratagem.service.settings import (
    AlertThresholds,
    RateLimit,
    RunnerSettings,
    ServiceSettings,
)
from stratagem.service.state import ServiceState

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data" / "btcusdt-1h-synthetic.csv"
TOKEN = "tok-alice-0123456789"
OTHER_TOKEN = "tok-bob-9876543210"
WEBHOOK_SECRET = "hook-s3cret-value"


class FakeClock:
    """A settable clock (ns) for deterministic journal timestamps."""

    def __init__(self, start_ns: int = 1_735_689_600_000_000_000) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        self.now += 1_000_000_000
        return self.now


def _run(artifact: str, out: Path) -> Path:
    from stratagem.run import run_backtest_cli

    with contextlib.redirect_stdout(io.StringIO()):
        run_backtest_cli(
            artifact_path=REPO / "examples" / artifact,
            data_path=DATA,
            start_ns=None,
            end_ns=1_714_521_600_000_000_000,  # 2024-05-01: ~2,900 bars keeps this fast
            out_dir=out,
            as_json=True,
            plots=False,
            quiet=True,
        )
    return out


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _run("sma-cross.yaml", root / "sma-cross-v1")
    _run("rsi-reversion.yaml", root / "rsi-reversion-v3")
    return root


@pytest.fixture
def runs_copy(runs_root: Path, tmp_path: Path) -> Path:
    """A private copy of the run directories that a test may damage."""
    dst = tmp_path / "runs"
    shutil.copytree(runs_root, dst)
    return dst


def make_settings(tmp_path: Path, runs: Path, **over: object) -> ServiceSettings:
    base: dict[str, object] = {
        "db_path": tmp_path / "rm.sqlite",
        "runs_dir": runs,
        "journal_path": tmp_path / "service.journal.jsonl",
        "api_tokens": {"alice": SecretStr(TOKEN), "bob": SecretStr(OTHER_TOKEN)},
        "webhook_secret": SecretStr(WEBHOOK_SECRET),
        "rate_limit": RateLimit(burst=1000, per_second=1000.0),
        "alerts": AlertThresholds(max_drawdown_pct=5.0),
        # no runner listens here: control requests answer "not acknowledged" quickly
        "runner": RunnerSettings(state_dir=tmp_path / "svc", control_timeout_s=0.3),
    }
    base.update(over)
    return ServiceSettings.model_validate(base)


@pytest.fixture
def state(tmp_path: Path, runs_copy: Path) -> Iterator[ServiceState]:
    s = ServiceState(make_settings(tmp_path, runs_copy), clock=FakeClock())
    s.rebuild()
    yield s
    s.conn.close()
