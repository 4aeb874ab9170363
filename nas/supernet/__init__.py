"""Weight sharing and differentiable search: one set of weights for every architecture of a space.

- :mod:`nas.supernet.cell` — the NAS-Bench-201 supernet: each candidate operation of each edge holds its weights
  once; a sub-network is one operation per edge (a path), a DARTS network is a softmax mixture of all of them.
- :mod:`nas.supernet.spos` — single-path one-shot training (Guo et al. 2020) with strict fairness (Chu et al. 2021)
  and per-sub-network batch-norm recalibration.
- :mod:`nas.supernet.evaluator` — :class:`SupernetEvaluator`, the ``Evaluator`` seam at fidelity ``supernet``: any
  strategy ranks sub-networks by validation accuracy with inherited weights, in milliseconds.
- :mod:`nas.supernet.darts` — DARTS (Liu et al. 2019), first and second order, with the DARTS+ early stop and the
  DARTS-PT perturbation-based selection against the collapse to parameter-free operations.
- :mod:`nas.supernet.elastic` — a Once-for-All elastic MLP (Cai et al. 2020): progressive shrinking over depth and
  width, then the best sub-network under a latency budget, extracted as an ordinary ``MLPNetwork``.
- :mod:`nas.supernet.plots` — PNG plots of the training histories (matplotlib, imported lazily).
"""

from __future__ import annotations

from nas.supernet.cell import NB201Supernet, SuperCell, SuperEdge
from nas.supernet.darts import DartsConfig, DartsResult, darts_search
from nas.supernet.elastic import ElasticConfig, ElasticMLP, LatencyPick, OnceForAll, pick_for_latency
from nas.supernet.evaluator import SupernetEvaluator
from nas.supernet.plots import plot_darts_alphas, plot_supernet_history
from nas.supernet.spos import SPOSConfig, recalibrate_bn

__all__ = [
    "DartsConfig",
    "DartsResult",
    "ElasticConfig",
    "ElasticMLP",
    "LatencyPick",
    "NB201Supernet",
    "OnceForAll",
    "SPOSConfig",
    "SuperCell",
    "SuperEdge",
    "SupernetEvaluator",
    "darts_search",
    "pick_for_latency",
    "plot_darts_alphas",
    "plot_supernet_history",
    "recalibrate_bn",
]
