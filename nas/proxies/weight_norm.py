"""``l2_norm``: the summed L2 norm of every weight tensor at initialisation, as NASLib defines it.

White et al. (NASLib, "A deeper look at zero-cost proxies", 2022) use it as a sanity baseline: it mostly counts
how many (and how large) layers a network has, so it tracks size like ``params``.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.proxies.context import ScoringContext, weight_params
from nas.proxies.registry import register_proxy


@register_proxy("l2_norm", needs_data=False, paper="White et al. 2022 (NASLib)")
def l2_norm(model: nn.Module, ctx: ScoringContext) -> float:
    """Σ over weight tensors of ‖W‖₂ (Frobenius norm per tensor, summed)."""
    with torch.no_grad():
        return float(sum(w.detach().double().norm() for w in weight_params(model)))
