"""The compiler's error hierarchy: each message says what was wrong, where, and how to fix it.

`CompilerError` derives from the front door's `StratagemError`, so the CLI maps every compiler
failure to "bad input, exit 2" with the message shown, never a traceback.
"""

from __future__ import annotations

from stratagem.errors import StratagemError


class CompilerError(StratagemError):
    """Base of every error the strategy compiler raises."""


class DrawingError(CompilerError):
    """A TradingView layout/drawing that cannot be read; names the JSON path of the bad part."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.reason = message
        super().__init__(f"{source}: {path}: {message}")


class DrawingCompileError(CompilerError):
    """Drawings were read but do not make a strategy (e.g. a long position with its stop above entry)."""


class LLMError(CompilerError):
    """The model endpoint failed after retries, refused, or answered with something unusable."""


class CostCeilingError(LLMError):
    """A per-call or per-day cost ceiling would be exceeded: the loop stops before spending more."""


class ToolError(CompilerError):
    """A tool call had bad arguments or could not run; the message is fed back to the model."""


class CompileFailedError(CompilerError):
    """The compile loop gave up: every attempt failed validation, or the judge vetoed."""

    def __init__(self, message: str, attempts: list[str]) -> None:
        self.attempts = attempts
        lines = [message] + [f"  attempt {i + 1}: {a}" for i, a in enumerate(attempts)]
        super().__init__("\n".join(lines))


class VersioningError(CompilerError):
    """The artifact repository is missing, dirty in a way we cannot handle, or has no such version."""
