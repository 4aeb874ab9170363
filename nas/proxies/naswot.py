"""NASWOT (Mellor et al., ICML 2021, "Neural architecture search without training").

Each input of the batch gets a binary code: which units of every ReLU-like activation it switches on. The kernel
K_ij = Σ (agreements of codes i and j) = N_A − d_Hamming(c_i, c_j), summed over activation layers, and the score
is log|det K|: networks that give different inputs more different activation patterns score higher. A singular
kernel (two inputs that look the same to the network) gets the worst score.
"""

from __future__ import annotations

import torch

from nas.proxies.context import WORST_SCORE, ScoringContext
from nas.proxies.data_pass import DataRecord
from nas.proxies.registry import register_proxy


@register_proxy("nwot", needs_data=True, family="data", paper="Mellor et al. 2021")
def nwot(record: DataRecord, ctx: ScoringContext) -> float:
    """log|det K| of the Hamming-agreement kernel of binary activation codes."""
    sign, logdet = torch.linalg.slogdet(record.naswot_kernel)
    return float(logdet) if float(sign) > 0 else WORST_SCORE
