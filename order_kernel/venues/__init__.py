"""Venue adapters: where orders go. `SimVenue` (deterministic bar fills) for backtests/paper."""

from order_kernel.venues.sim import SimVenue

__all__ = ["SimVenue"]
