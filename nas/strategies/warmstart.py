"""Warm starts from the zero-cost ranking, with the same rank aggregation the refresh's pre-filter uses."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nas.ensemble import rank_aggregate


def zero_cost_order(proxies: Mapping[str, np.ndarray]) -> np.ndarray:
    """Row indices best first by :func:`nas.ensemble.rank_aggregate` over the proxies, equally weighted.

    This is the function :func:`nas.prefilter.prefilter` ranks the refresh's pool with (the AZ-NAS log-rank sum,
    Lee & Ham, CVPR 2024), so a table benchmark warm-starts exactly as a refresh does. Higher = better for every
    proxy; NaN, inf and the proxies' worst score rank last.
    """
    if not proxies:
        raise ValueError("zero_cost_order needs at least one proxy column")
    return np.argsort(-rank_aggregate(dict(proxies)), kind="stable")
