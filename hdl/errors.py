"""The hdl package's exception hierarchy (hdl may import nothing of ours but order_kernel.spec)."""

from __future__ import annotations


class HdlError(Exception):
    """Base of every error raised by `hdl`; the CLI maps it to a non-zero exit with the message."""


class HdlConfigError(HdlError):
    """A generator parameter (slot count, field width, device) is out of range."""


class HdlToolError(HdlError):
    """An external tool (yosys, nextpnr) failed or produced a report we could not read."""


class HdlMismatchError(HdlError):
    """The HDL simulation and a reference model disagreed on an output or a slot."""
