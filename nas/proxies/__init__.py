"""Zero-cost proxies: score an untrained network in seconds, higher = predicted better.

``compute_scores(factory, ["synflow", "nwot", ...], batch=...)`` builds the network, runs each shared pass once
and returns finite floats (``WORST_SCORE`` for a network whose output ignores its input). Proxies are looked up by
name (``list_proxies()``); ``needs_data(name)`` says whether one needs a labelled batch. See docs/proxies.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from nas.proxies.context import WORST_SCORE
from nas.proxies.registry import (
    PROXIES,
    ProxyInfo,
    get_proxy,
    list_proxies,
    needs_data,
    register_family,
    register_proxy,
)
from nas.proxies.scorer import compute_scores, score_model

if TYPE_CHECKING:
    from nas.spaces import Architecture


def score_architecture(
    arch: Architecture,
    names: Sequence[str],
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int],
    num_classes: int,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`compute_scores` for an architecture of a search space (built with ``arch.build``)."""
    shape = tuple(int(d) for d in input_shape)
    return compute_scores(
        lambda: arch.build(num_classes, shape), names, batch=batch, input_shape=shape, num_classes=num_classes,
        seed=seed,
    )


__all__ = [
    "PROXIES",
    "WORST_SCORE",
    "ProxyInfo",
    "compute_scores",
    "get_proxy",
    "list_proxies",
    "needs_data",
    "register_family",
    "register_proxy",
    "score_architecture",
    "score_model",
]
