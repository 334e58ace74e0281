"""Errors of the sentiment node, all under the indicators package's :class:`IndicatorError`."""

from __future__ import annotations

from indicators.errors import IndicatorError, StreamStateError

__all__ = [
    "SentimentCacheError",
    "SentimentConfigError",
    "SentimentError",
    "SentimentInputError",
    "SentimentModelError",
    "SentimentStateError",
]


class SentimentError(IndicatorError):
    """Base of every sentiment-node error."""


class SentimentConfigError(SentimentError, ValueError):
    """A parameter (backend, label map, batch size, half-life...) that is missing or invalid."""


class SentimentModelError(SentimentError):
    """The local model cannot be loaded: missing directory/files, missing library, bad labels."""


class SentimentCacheError(SentimentError):
    """The on-disk score cache cannot be opened, read or written."""


class SentimentInputError(SentimentError, ValueError):
    """Items or bar timestamps the series cannot use (e.g. a bar close that goes backwards)."""


class SentimentStateError(SentimentError, StreamStateError):
    """A snapshot that does not belong to this series (other scorer, other parameters)."""
