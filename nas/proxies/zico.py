"""ZiCo (Li et al., ICLR 2023, "ZiCo: Zero-shot NAS via inverse coefficient of variation on gradients").

For every weight tensor θ_l, the mean absolute gradient and the standard deviation of the gradient across
mini-batches are compared element-wise; ZiCo = Σ_l log( Σ_{θ∈θ_l} E[|∂L/∂θ|] / σ(∂L/∂θ) ), skipping elements with
σ = 0 and tensors whose sum is 0. The mini-batches are the ``ZICO_SPLITS`` chunks of the shared data pass.
"""

from __future__ import annotations

import math

from nas.proxies.context import WORST_SCORE, ScoringContext
from nas.proxies.data_pass import DataRecord
from nas.proxies.registry import register_proxy


@register_proxy("zico", needs_data=True, family="data", paper="Li et al. 2023")
def zico(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ_l log Σ mean|g| / std(g) over mini-batches (inverse coefficient of variation of the gradients)."""
    total, used = 0.0, 0
    for grads in record.chunk_grads:
        std = grads.std(0, correction=0)
        mask = std > 0
        if not bool(mask.any()):
            continue
        ratio = float((grads.abs().mean(0)[mask] / std[mask]).sum())
        if ratio > 0:
            total += math.log(ratio)
            used += 1
    return total if used else WORST_SCORE
