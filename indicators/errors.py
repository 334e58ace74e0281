"""Exception hierarchy of the indicators package: one base, one class per kind of mistake."""

from __future__ import annotations


class IndicatorError(Exception):
    """Base of every error raised by `indicators`; the front door maps it to a user message."""


class UnknownIndicatorError(IndicatorError, KeyError):
    """An indicator name that is not in the registry (the message lists close matches)."""

    def __str__(self) -> str:
        # KeyError would otherwise repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class IndicatorParamError(IndicatorError, ValueError):
    """A parameter that is unknown, of the wrong type or outside its allowed range."""


class IndicatorInputError(IndicatorError, ValueError):
    """Input columns that are missing, misaligned or contain values the indicator cannot use."""


class StreamStateError(IndicatorError, ValueError):
    """A snapshot that does not belong to the stream it is restored into."""


class StreamingUnsupportedError(IndicatorError):
    """A streaming implementation was requested for an indicator (or parameter set) without one."""
