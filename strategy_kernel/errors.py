"""Errors of the strategy kernel that mean "the input cannot run", mapped to exit code 2 by the CLI."""

from __future__ import annotations


class StrategyError(Exception):
    """Base of the strategy kernel's user-facing errors."""


class BacktestError(StrategyError):
    """The backtest cannot run on this data (e.g. too few bars for the warm-up)."""
