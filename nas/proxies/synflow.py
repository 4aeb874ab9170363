"""SynFlow (Tanaka et al., NeurIPS 2020, "Pruning neural networks without any data by iteratively conserving
synaptic flow"), used as a NAS proxy by Abdelfattah et al. (2021).

The network is linearised — every parameter replaced by its absolute value — and fed an all-ones input in double
precision (the product of many |w| overflows float32). With R = Σ f(1), the score is Σ_w |w ⊙ ∂R/∂w| over weight
tensors. Batch-norm runs in eval mode: at initialisation its running statistics are (0, 1), so it is the identity
up to its |affine| parameters, which is what SynFlow's data-free linear network needs; dropout is off.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.proxies.context import ScoringContext, weight_params
from nas.proxies.registry import register_proxy


@register_proxy("synflow", needs_data=False)
def synflow(model: nn.Module, ctx: ScoringContext) -> float:
    """Σ |θ ⊙ ∂R/∂θ| of the |θ|-linearised network on an all-ones input (double precision)."""
    model = model.double().eval()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    weights = weight_params(model)
    output = model(torch.ones((1, *ctx.input_shape), dtype=torch.float64))
    grads = torch.autograd.grad(output.sum(), weights, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64)
    for w, g in zip(weights, grads, strict=True):
        if g is not None:
            total += (w.detach() * g).abs().sum()
    return float(total)
