"""The service side of the front door: read model, HTTP API, dashboard, alerts, Telegram bot."""

from __future__ import annotations

from stratagem.errors import StratagemError


class ServiceError(StratagemError):
    """Base for read-model, API, bot and settings errors (maps to 'bad input, exit 2')."""


__all__ = ["ServiceError"]
