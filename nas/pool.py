"""Candidate pools: many sampled architectures, each network function at most once.

A pool is what the zero-cost pre-filter scores. Two strings of a space that compute the same function (same
canonical form) would cost two scorings and could both land in the top-k, so pools are unique by canonical form.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nas.spaces.base import Architecture, SearchSpace


def dedupe_canonical(archs: Iterable[Architecture]) -> list[Architecture]:
    """The canonical forms of ``archs`` in first-seen order, each once."""
    out: list[Architecture] = []
    seen: set[str] = set()
    for arch in archs:
        canonical = arch.space.canonicalize(arch)
        if canonical.string not in seen:
            seen.add(canonical.string)
            out.append(canonical)
    return out


def sample_pool(space: SearchSpace, n: int, seed: int = 0, *, max_draws: int | None = None) -> list[Architecture]:
    """Up to ``n`` unique canonical architectures drawn with ``default_rng(seed)``.

    A finite space may hold fewer than ``n`` different networks (NB201: 15,625 strings, fewer functions); the
    pool then stops when ``max_draws`` samples (default ``20 * n``) found nothing new, so it never loops forever.
    """
    if n < 1:
        raise ValueError(f"a pool needs n >= 1 architectures, got {n}")
    rng = np.random.default_rng(seed)
    limit = max_draws if max_draws is not None else 20 * n
    out: list[Architecture] = []
    seen: set[str] = set()
    draws = 0
    while len(out) < n and draws < limit:
        draws += 1
        canonical = space.canonicalize(space.sample(rng))
        if canonical.string not in seen:
            seen.add(canonical.string)
            out.append(canonical)
    return out
