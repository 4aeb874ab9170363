"""Cost proxies: parameter count and FLOPs — the baselines every zero-cost proxy must beat.

Abdelfattah et al. (2021, "Zero-cost proxies for lightweight NAS") report both as surprisingly strong baselines
(Spearman ≈0.75 on NAS-Bench-201 CIFAR-10). They are costs, so they keep their true value even for a network
whose output ignores its input (budgets and pre-filters read them).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.proxies.context import ScoringContext, forward_input
from nas.proxies.registry import register_proxy


@register_proxy("params", needs_data=False, is_cost=True, paper="Abdelfattah et al. 2021 (baseline)")
def params(model: nn.Module, ctx: ScoringContext) -> float:
    """Number of trainable parameters."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


@register_proxy("flops", needs_data=False, is_cost=True, paper="Abdelfattah et al. 2021 (baseline)")
def flops(model: nn.Module, ctx: ScoringContext) -> float:
    """FLOPs of one forward pass for a single input, counted by ``torch.utils.flop_counter`` (eval mode)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(forward_input(torch.zeros(1, *ctx.input_shape), model))
    return float(counter.get_total_flops())
