"""GraSP (Wang et al., ICLR 2020, "Picking winning tickets before training by preserving gradient flow"), summed
over weight tensors as a NAS proxy by Abdelfattah et al. (2021).

score = Σ −θ ⊙ (H g), with g = ∂L/∂θ and H the Hessian of the mean cross-entropy L on the batch (the MSE for a
regression target, :func:`nas.proxies.data_pass.task_loss`), computed as a
Hessian-gradient product (double backward) on its own copy of the network in proxy mode (batch-norm on batch
statistics, dropout off). Temperature 1, as Abdelfattah et al. use it.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.proxies.context import WORST_SCORE, ScoringContext, forward_input, proxy_mode, weight_params
from nas.proxies.data_pass import task_loss
from nas.proxies.registry import register_proxy


@register_proxy("grasp", needs_data=True, paper="Wang et al. 2020")
def grasp(model: nn.Module, ctx: ScoringContext) -> float:
    """Σ −θ ⊙ Hg (how removing θ would change the gradient flow)."""
    x, y = ctx.require_batch("grasp")
    model = proxy_mode(model)
    weights = weight_params(model)
    loss = task_loss(model(forward_input(x, model)), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    pairs = [(w, g) for w, g in zip(weights, grads, strict=True) if g is not None]
    if not pairs or all(not bool(g.detach().any()) for _, g in pairs):
        return WORST_SCORE
    flow = sum((g.detach() * g).sum() for _, g in pairs)
    hg = torch.autograd.grad(flow, [w for w, _ in pairs], allow_unused=True)
    total = torch.zeros((), dtype=torch.float64)
    for (w, _), h in zip(pairs, hg, strict=True):
        if h is not None:
            total -= (w.detach().double() * h.detach().double()).sum()
    return float(total)
