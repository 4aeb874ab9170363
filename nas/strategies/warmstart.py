"""Warm starts from the zero-cost ranking: order architectures by the mean rank of their proxy scores."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata


def zero_cost_order(proxies: Mapping[str, np.ndarray]) -> np.ndarray:
    """Row indices best first by mean rank over the proxies (higher score = better for every proxy).

    Rank aggregation is what training-free ensembles do (e.g. AZ-NAS): it needs no calibration and is immune to the
    proxies' wildly different scales. NaN scores rank last.
    """
    if not proxies:
        raise ValueError("zero_cost_order needs at least one proxy column")
    ranks = []
    for values in proxies.values():
        v = np.asarray(values, dtype=np.float64)
        v = np.where(np.isfinite(v), v, -np.inf)
        ranks.append(rankdata(v, method="average"))
    return np.argsort(-np.mean(ranks, axis=0), kind="stable")
