"""The front door's error hierarchy: every package-local base maps to 'bad input, exit 2'."""

from __future__ import annotations


class StratagemError(Exception):
    """Base for errors raised by the `stratagem` front door itself (configuration, arguments)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Package-local error bases that mean "your input is wrong" (imported lazily: fast --help)."""
    from artifacts.errors import ArtifactError
    from feeds.errors import FeedError
    from hdl.errors import HdlError
    from indicators.errors import IndicatorError
    from order_kernel.errors import OrderKernelError
    from strategy_kernel.errors import StrategyError
    from strategy_kernel.log import LogCorruptError

    return (
        StratagemError,
        ArtifactError,
        FeedError,
        HdlError,
        IndicatorError,
        OrderKernelError,
        StrategyError,
        LogCorruptError,
    )


def format_user_error(exc: BaseException) -> str:
    """`error: ...` lines; multi-problem artifact errors list one problem per line."""
    text = str(exc).strip() or type(exc).__name__
    return "\n".join(f"error: {line}" for line in text.splitlines())
