"""Zen-score (Lin et al., ICCV 2021, "Zen-NAS: a zero-shot NAS for high-performance image recognition").

On its own copy of the network, re-initialised as the paper prescribes (conv/linear weights ~ N(0, 1), biases 0,
batch-norm affine reset) and run in float32, the paper's precision (batch-norm on batch statistics renormalises
every layer, so nothing overflows):

    Zen = log E_{x,ε} ‖f(x) − f(x + αε)‖_F + Σ_i log σ̄_i,     x, ε ~ N(0, I), α = 0.01,

where f is the pre-global-pooling feature map and σ̄_i = sqrt(mean over channels of the mini-batch variance) of
the i-th batch-norm layer's input (the factor batch-norm divided out). The pre-pooling map is the input of the
last global/average pooling module the network calls; networks without one use the input of their last linear
layer. Data-free: it needs the input shape only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.proxies.context import FEATURE_LAYERS, WORST_SCORE, ScoringContext, hooks_removed_after, proxy_mode
from nas.proxies.registry import register_proxy

ZEN_ALPHA = 0.01
ZEN_SAMPLES = 16
_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _reinitialise(model: nn.Module, ctx: ScoringContext) -> None:
    gen = ctx.generator(offset=31)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FEATURE_LAYERS):
                module.weight.normal_(0.0, 1.0, generator=gen)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()


@register_proxy("zen", needs_data=False, paper="Lin et al. 2021")
def zen(model: nn.Module, ctx: ScoringContext) -> float:
    """log E‖f(x) − f(x+αε)‖ + Σ log σ̄_BN with Gaussian weights and inputs."""
    model = proxy_mode(model.float())
    _reinitialise(model, ctx)
    pools = [m for m in model.modules() if isinstance(m, _POOLS)]
    taps = pools or [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not taps:
        return WORST_SCORE
    captured: list[torch.Tensor] = []
    bn_logs: list[float] = []
    record_bn = [True]

    def tap(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])

    def bn_scale(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if record_bn[0]:
            var = args[0].double().transpose(0, 1).reshape(args[0].shape[1], -1).var(1, correction=0)
            bn_logs.append(0.5 * math.log(float(var.mean())) if float(var.mean()) > 0 else -math.inf)

    x = ctx.gaussian(ZEN_SAMPLES, offset=11, dtype=torch.float32)
    noise = ctx.gaussian(ZEN_SAMPLES, offset=13, dtype=torch.float32)
    with hooks_removed_after() as handles, torch.no_grad():
        handles += [m.register_forward_pre_hook(tap) for m in taps]
        handles += [
            m.register_forward_pre_hook(bn_scale)
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        model(x)
        clean = captured[-1]
        record_bn[0] = False
        captured.clear()
        model(x + ZEN_ALPHA * noise)
        perturbed = captured[-1]
    delta = (clean - perturbed).double().reshape(ZEN_SAMPLES, -1).norm(dim=1).mean()
    if not float(delta) > 0:
        return WORST_SCORE
    return math.log(float(delta)) + sum(bn_logs)
