"""Service settings: one TOML file plus environment overrides, secrets held as `SecretStr`.

Secrets (API tokens, the webhook secret, the bot token) are never printed: `SecretStr` hides them
in reprs, and `redacted()` is what the service logs at start-up.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from feeds.endpoints import ipc_endpoint
from stratagem.service import ServiceError


class RateLimit(BaseModel):
    """Token bucket per API token: `burst` requests at once, refilled at `per_second`."""

    model_config = ConfigDict(extra="forbid")
    burst: int = Field(default=60, ge=1)
    per_second: float = Field(default=10.0, gt=0)


class AlertThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_drawdown_pct: float = Field(default=10.0, gt=0)
    stale_bar_factor: float = Field(default=3.0, gt=1)
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)


SESSION_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}$"


class StrategyEntry(BaseModel):
    """One artifact the runner trades: `name` is its handle (control scope, session, run id)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=SESSION_NAME)
    artifact: Path


class FeedSettings(BaseModel):
    """Where bars come from: `replay` publishes a bar file on the bus, `bus` subscribes to a
    running publisher (`stratagem data serve`, `python -m feeds.bus serve`)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["replay", "bus"] = "replay"
    data: Path | None = None  # replay: CSV or parquet bars
    endpoint: str | None = None  # bus: required; replay: default ipc://<state_dir>/feed.sock
    bars_per_second: float = Field(default=200.0, ge=0)  # replay pace; 0 = no pause
    start_ns: int | None = None
    end_ns: int | None = None
    idle_timeout_s: float = Field(default=30.0, gt=0)  # a strategy stops after this silence


class LiveVenueSettings(BaseModel):
    """`[runner.venue]` for live trading: the order kernel routes orders through ccxt.

    No secrets here: `credentials` is "env" or the path of the encrypted credentials file
    (`order_kernel.credentials`)."""

    model_config = ConfigDict(extra="forbid")
    exchange: str = Field(min_length=1)
    sandbox: bool = False
    credentials: str = "env"
    credentials_name: str | None = None
    poll_interval_ms: int = Field(default=1000, ge=10)
    timeout_ms: int = Field(default=10_000, ge=10)
    api_url: str | None = None  # a local fake exchange in tests


class RunnerSettings(BaseModel):
    """`stratagem service run`: one order kernel, one feed, a strategy kernel per artifact."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="svc", pattern=SESSION_NAME)
    state_dir: Path = Path("runs/.service")
    strategies: list[StrategyEntry] = Field(default_factory=list)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    on_stop: Literal["cancel", "keep"] = "cancel"
    mode: Literal["paper", "live"] = "paper"  # live: orders go to [runner.venue] (needs --live)
    venue: LiveVenueSettings | None = None
    control_endpoint: str | None = None  # default ipc://<state_dir>/control.sock
    control_timeout_s: float = Field(default=5.0, gt=0)
    snapshot_every_bars: int = Field(default=25, ge=1)  # metrics/equity written every N bars
    snapshot_interval_s: float = Field(
        default=2.0, ge=0
    )  # ...or after a bar this long after the last
    max_restarts: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=10.0, ge=0)
    health_interval_s: float = Field(default=0.5, gt=0)
    stale_after_s: float = Field(default=10.0, gt=0)  # health: no bar for this long = stale
    fsync: Literal["always", "batch", "never"] = "batch"
    risk_limits: Path | None = None
    kernel_timeout_ms: int = Field(default=5000, ge=10)  # per order-kernel reply, then resend
    kernel_attempts: int = Field(default=3, ge=1)  # then the session crashes and is restarted
    #: how long (ms) a bar waits for the bars of its `data:` inputs before they count as missing
    data_wait_ms: int = Field(default=2000, ge=0)

    def control(self) -> str:
        return self.control_endpoint or ipc_endpoint(self.state_dir / "control.sock")

    def health_path(self) -> Path:
        return self.state_dir / "health.json"


OnApprove = Literal["record", "promote", "promote_and_swap"]


class ReviewSettings(BaseModel):
    """`[review]`: what approving a reviewed revision does after the decision is recorded.

    `promote_and_swap` (default) is DESIGN's pipeline, "... -> human approval -> hot-swap": the
    person approves the revision *replacing the running version*, every automated gate already
    passed, promotion still refuses a head that moved, and the session still refuses a swap it
    cannot carry state across (instrument, side, `data:` inputs). `promote` commits the new
    head version and leaves the swap to `stratagem service swap`; `record` only records.
    """

    model_config = ConfigDict(extra="forbid")
    on_approve: OnApprove = "promote_and_swap"


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db_path: Path = Path("runs/readmodel.sqlite")
    runs_dir: Path = Path("runs")
    journal_path: Path = Path("runs/service.journal.jsonl")
    api_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    webhook_secret: SecretStr = SecretStr("")
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    telegram_token: SecretStr = SecretStr("")
    telegram_chat_ids: list[int] = Field(default_factory=list)
    telegram_base_url: str = "https://api.telegram.org/bot"
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)
    #: compiler call logs (`llm_calls.sqlite`) folded into the read model's `llm_calls` table
    llm_call_logs: list[Path] = Field(default_factory=list)
    #: seconds between live refreshes of running paper runs into the read model (0 = off)
    live_refresh_s: float = Field(default=2.0, ge=0)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by '***' (for logs)."""
        data = self.model_dump(mode="json")
        data["api_tokens"] = {k: "***" for k in sorted(self.api_tokens)}
        for key in ("webhook_secret", "telegram_token"):
            data[key] = "***" if getattr(self, key).get_secret_value() else ""
        return data


#: Environment variables that override the file (tokens as `name=token,name2=token2`).
ENV_KEYS = {
    "STRATAGEM_API_TOKENS": "api_tokens",
    "STRATAGEM_WEBHOOK_SECRET": "webhook_secret",
    "STRATAGEM_TELEGRAM_TOKEN": "telegram_token",
    "STRATAGEM_TELEGRAM_CHAT_IDS": "telegram_chat_ids",
    "STRATAGEM_DB": "db_path",
    "STRATAGEM_RUNS_DIR": "runs_dir",
}


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> ServiceSettings:
    """Read `path` (TOML, optional) and apply `STRATAGEM_*` overrides from `env` (default os.environ)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ServiceError(
                f"{path}: settings file not found; create it or drop --config"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ServiceError(f"{path}: not valid TOML ({exc})") from None
    for var, key in ENV_KEYS.items():
        value = env.get(var)
        if value is None:
            continue
        if key == "api_tokens":
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                raise ServiceError(f"{var}: expected name=token[,name=token...]")
            data[key] = {p[0].strip(): p[1].strip() for p in pairs}
        elif key == "telegram_chat_ids":
            try:
                data[key] = [int(x) for x in value.split(",") if x.strip()]
            except ValueError:
                raise ServiceError(f"{var}: expected comma-separated integer chat ids") from None
        else:
            data[key] = value
    try:
        return ServiceSettings.model_validate(data)
    except ValidationError as exc:
        where = str(path) if path is not None else "settings"
        # pydantic echoes input values; drop them so a mistyped secret is not printed.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ServiceError(f"{where}: {problems}") from None
