"""The strategy state machine as data: IDLE -> LOOKING -> ENTERED -> MANAGING -> EXITED -> LOOKING."""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class Phase(IntEnum):
    IDLE = 0  # warming up: not every node has a value yet
    LOOKING = 1  # flat, watching the entry condition
    ENTERED = 2  # entry order working, no fill yet
    MANAGING = 3  # position open, exits working
    EXITED = 4  # position closed this bar; bookkeeping, then LOOKING


class Trigger(IntEnum):
    WARMED_UP = 0
    ENTRY_SENT = 1
    ENTRY_FILLED = 2  # first (possibly partial) fill of the entry
    ENTRY_ENDED = 3  # entry cancelled, expired, rejected or denied without any fill
    FLAT = 4  # position back to zero
    NEXT_BAR = 5


PHASE_TABLE: Final[dict[tuple[Phase, Trigger], Phase]] = {
    (Phase.IDLE, Trigger.WARMED_UP): Phase.LOOKING,
    (Phase.LOOKING, Trigger.ENTRY_SENT): Phase.ENTERED,
    (Phase.ENTERED, Trigger.ENTRY_FILLED): Phase.MANAGING,
    (Phase.ENTERED, Trigger.ENTRY_ENDED): Phase.LOOKING,
    (Phase.MANAGING, Trigger.ENTRY_FILLED): Phase.MANAGING,  # further partial fills of the entry
    (Phase.MANAGING, Trigger.FLAT): Phase.EXITED,
    (Phase.EXITED, Trigger.NEXT_BAR): Phase.LOOKING,
}


class PhaseError(RuntimeError):
    """A trigger arrived that the strategy state machine does not allow: a kernel bug, never ignored."""


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    try:
        return PHASE_TABLE[(phase, trigger)]
    except KeyError:
        raise PhaseError(f"strategy phase {phase.name} does not accept {trigger.name}") from None
