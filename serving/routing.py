"""Which variant answers a request: a weighted split, sticky on a request key.

A key hashes to a fixed point ``u`` in [0, 1); the challenger answers when ``u < weight``. The same key always lands
on the same variant for a given weight, and raising the weight only moves callers from champion to challenger
(never back and forth), which keeps each caller's experience consistent during a ramp-up.
"""

from __future__ import annotations

import hashlib
import random

from monitoring.vocabulary import CHALLENGER, CHAMPION

__all__ = ["CHALLENGER", "CHAMPION", "choose_variant", "key_point"]


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
