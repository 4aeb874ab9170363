"""SynFlow (Tanaka et al., NeurIPS 2020, "Pruning neural networks without any data by iteratively conserving
synaptic flow"), used as a NAS proxy by Abdelfattah et al. (ICLR 2021, "Zero-cost proxies for lightweight NAS").

As Abdelfattah et al. compute it (their ``synflow`` measure, ``bn=False``), on the proxy's own copy of the network:

1. batch-norm is *removed*: every batch-norm layer passes its input through unchanged (neither batch nor running
   statistics, no affine), which is what makes the network linear in its input;
2. every parameter and buffer is replaced by its absolute value (Tanaka et al.'s linearisation: with non-negative
   weights and a non-negative input every ReLU is the identity);
3. the network runs in float64 (products of many |w| overflow float32 on deep networks) on a single all-ones input
   ``1`` of the network's input shape; R = Σ f(1) (the sum of the logits);
4. score = Σ_θ |θ ⊙ ∂R/∂θ| over the weight tensors (conv and linear weights, the classifier head included; biases
   and batch-norm affines are left out, as both papers score the prunable weights only).

Dropout is off. A network cut off from its input scores ``WORST_SCORE`` in the scorer (Abdelfattah et al.'s code
gives it 0, also the bottom of any ranking).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.proxies.context import ScoringContext, hooks_removed_after, weight_params
from nas.proxies.registry import register_proxy

_NORM = (nn.modules.batchnorm._BatchNorm,)


def _pass_through(_module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> torch.Tensor:
    """A forward hook that replaces a batch-norm layer's output by its input (the layer is removed)."""
    return args[0]


@register_proxy("synflow", needs_data=False, paper="Tanaka et al. 2020; Abdelfattah et al. 2021")
def synflow(model: nn.Module, ctx: ScoringContext) -> float:
    """Σ |θ ⊙ ∂R/∂θ| of the |θ|-linearised, batch-norm-free network on an all-ones input (float64)."""
    model = model.double().eval()  # eval: dropout off; batch-norm is bypassed below either way
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    weights = weight_params(model)
    with hooks_removed_after() as handles:
        handles += [m.register_forward_hook(_pass_through) for m in model.modules() if isinstance(m, _NORM)]
        output = model(torch.ones((1, *ctx.input_shape), dtype=torch.float64))
    grads = torch.autograd.grad(output.sum(), weights, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64)
    for w, g in zip(weights, grads, strict=True):
        if g is not None:
            total += (w.detach() * g).abs().sum()
    return float(total)
