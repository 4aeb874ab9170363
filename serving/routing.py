"""Which variant answers a request: the split (mode and weight) the rollout record sets, applied as a weighted split
sticky on a request key.

A key hashes to a fixed point ``u`` in [0, 1); the challenger answers when ``u < weight``. The same key always lands
on the same variant for a given weight, and raising the weight only moves callers from champion to challenger
(never back and forth), which keeps each caller's experience consistent during a ramp-up.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitoring.core.enums import Mode
from monitoring.vocabulary import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from monitoring.rollout_store import Rollout

__all__ = ["CHALLENGER", "CHAMPION", "NEUTRAL", "Split", "choose_variant", "key_point", "split_of"]


def key_point(key: str) -> float:
    """A stable, uniform point in [0, 1) for ``key`` (BLAKE2b, so it does not depend on PYTHONHASHSEED)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def choose_variant(weight: float, key: str | None, rng: random.Random | None = None) -> str:
    """``challenger`` with probability ``weight`` (deterministic per ``key`` when one is given)."""
    if weight <= 0.0:
        return CHAMPION
    if weight >= 1.0:
        return CHALLENGER
    point = key_point(key) if key else (rng or random).random()
    return CHALLENGER if point < weight else CHAMPION


@dataclass(frozen=True)
class Split:
    """How the challenger takes part now: ``mode`` and, in split mode, its share of callers."""

    mode: Mode
    weight: float

    @property
    def neutral(self) -> bool:
        """No caller reaches the challenger and nothing is mirrored to it (the state after every rollout)."""
        return self.mode == Mode.SPLIT and self.weight <= 0.0

    @property
    def effective_weight(self) -> float:
        """The challenger's share of callers (0 in shadow mode: it only gets copies)."""
        return 0.0 if self.mode == Mode.SHADOW else self.weight


NEUTRAL = Split(Mode.SPLIT, 0.0)


def split_of(rollout: Rollout | None, default: Split, started_at: float, seen_before: bool) -> Split:
    """The split a worker applies given the newest rollout record: an active rollout's (a controller's or an
    operator's manual one), :data:`NEUTRAL` after one ended, and the configured ``default`` only while no record
    exists or the newest one ended before this worker started and it had seen none (a restart does not undo the
    start-up settings with an old record)."""
    if rollout is None:
        return default
    if rollout.active:
        return Split(Mode(rollout.mode), float(rollout.weight))
    if seen_before or rollout.updated_at >= started_at:
        return NEUTRAL
    return default
