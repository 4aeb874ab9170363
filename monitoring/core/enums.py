"""The rollout and registry vocabulary as enums: phases, modes, verdicts, interval outcomes and decisions.

They are ``StrEnum``: a member *is* its string (``Phase.SPLIT == "split"``), so records, JSON, tags and the
prediction log keep the spelling they always had, while code names the values once instead of repeating literals
across the planes.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How the gateway treats the challenger: a weighted share of callers, or a mirrored copy of every call."""

    SPLIT = "split"
    SHADOW = "shadow"


class Phase(StrEnum):
    """Where a rollout is. Active phases steer traffic; terminal ones are decided."""

    SHADOW = "shadow"
    SPLIT = "split"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"

    @property
    def active(self) -> bool:
        return self in ACTIVE_PHASES

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


ACTIVE_PHASES: tuple[Phase, ...] = (Phase.SHADOW, Phase.SPLIT, Phase.PAUSED)
TERMINAL_PHASES: tuple[Phase, ...] = (Phase.PROMOTED, Phase.ROLLED_BACK)


class VerdictKind(StrEnum):
    """The judge's answer for one window."""

    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NODATA = "nodata"


class Outcome(StrEnum):
    """What one judged interval does to the rollout (the rollout rule's input)."""

    PASS = "pass"
    FAIL = "fail"
    HOLD = "hold"


class Decision(StrEnum):
    """How a challenger's rollout (or refresh) ended, as recorded on its model version."""

    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABANDONED = "abandoned"


class Actor(StrEnum):
    """Who wrote a rollout event."""

    CONTROLLER = "controller"
    OPERATOR = "operator"
    REFRESH = "refresh"
