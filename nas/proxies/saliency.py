"""Gradient saliency proxies over the shared data pass, as Abdelfattah et al. (ICLR 2021, "Zero-cost proxies for
lightweight NAS") define them for NAS — each summed over all weight tensors of the network:

- ``snip`` (Lee et al., ICLR 2019, "SNIP: single-shot network pruning"): Σ |θ ⊙ ∂L/∂θ|.
- ``grad_norm``: Σ over weight tensors of ‖∂L/∂θ‖₂.
- ``plain`` (Mozer & Smolensky 1989, as in Abdelfattah et al.): Σ θ ⊙ ∂L/∂θ.
- ``fisher`` (Theis et al. 2018, "Faster gaze prediction with dense networks and Fisher pruning"; Turner et al.,
  ICLR 2020, "BlockSwap"): per channel c of every conv/linear output a, ½·mean_n (Σ_spatial a ⊙ ∂L/∂a)², summed.

L is the mean cross-entropy of the batch. If every weight gradient is zero the network cannot learn from this
batch, so these proxies return the worst score.
"""

from __future__ import annotations

import torch

from nas.proxies.context import WORST_SCORE, ScoringContext
from nas.proxies.data_pass import DataRecord
from nas.proxies.registry import register_proxy


@register_proxy("snip", needs_data=True, family="data", paper="Lee et al. 2019")
def snip(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ |θ ⊙ ∂L/∂θ| (connection sensitivity)."""
    if record.grads_all_zero:
        return WORST_SCORE
    return float(sum((w * g).abs().sum() for w, g in zip(record.weights, record.grads, strict=True)))


@register_proxy("grad_norm", needs_data=True, family="data", paper="Abdelfattah et al. 2021")
def grad_norm(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ ‖∂L/∂θ‖₂ per weight tensor."""
    if record.grads_all_zero:
        return WORST_SCORE
    return float(sum(g.norm() for g in record.grads))


@register_proxy("plain", needs_data=True, family="data", paper="Mozer & Smolensky 1989; Abdelfattah et al. 2021")
def plain(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ θ ⊙ ∂L/∂θ (first-order change of the loss if θ were removed, with its sign)."""
    if record.grads_all_zero:
        return WORST_SCORE
    return float(sum((w * g).sum() for w, g in zip(record.weights, record.grads, strict=True)))


@register_proxy("fisher", needs_data=True, family="data", paper="Theis et al. 2018; Turner et al. 2020")
def fisher(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ_channels ½·mean_n(Σ_spatial a ⊙ ∂L/∂a)² over conv/linear outputs."""
    if record.grads_all_zero or not record.activations:
        return WORST_SCORE
    total = torch.zeros((), dtype=torch.float64)
    for act, grad in record.activations:
        per_channel = (act * grad).reshape(act.shape[0], act.shape[1], -1).sum(-1)
        total += 0.5 * per_channel.pow(2).mean(0).sum()
    return float(total)
