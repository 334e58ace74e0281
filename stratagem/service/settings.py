"""Service settings: one TOML file plus environment overrides, secrets held as `SecretStr`.

Secrets (API tokens, the webhook secret, the bot token) are never printed: `SecretStr` hides them
in reprs, and `redacted()` is what the service logs at start-up.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

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
