"""Proxies of the input Jacobian J (one row d(Σ logits)/dx per input) recorded by the shared data pass.

- ``jacob_cov`` (Mellor et al. 2020, "Neural architecture search without training", v1; named as in Abdelfattah
  et al. 2021): with λ the eigenvalues of the correlation matrix of J's rows and k = 1e-5,
  score = −Σ (log(λ + k) + 1/(λ + k)). Inputs whose Jacobians are less correlated score higher.
- ``epe_nas`` (Lopes et al., ICANN 2021, "EPE-NAS: efficient performance estimation without training"): the same
  correlations computed per class; E_c = Σ_ij log(|ρ_ij| + k) over the class's inputs and, for ≤ 100 classes,
  score = Σ_c |E_c| (classes with one input in the batch are skipped). For more classes the paper's normalised
  form Σ_c Σ_c' |E_c − E_c'| / #classes with E_c divided by its class size is used.
"""

from __future__ import annotations

import torch

from nas.proxies.context import WORST_SCORE, ScoringContext
from nas.proxies.data_pass import DataRecord
from nas.proxies.registry import register_proxy

_K = 1e-5


def _correlation(rows: torch.Tensor) -> torch.Tensor | None:
    """Pearson correlation of the rows, or ``None`` if a row is constant (its correlation is undefined)."""
    centred = rows - rows.mean(1, keepdim=True)
    norms = centred.norm(dim=1)
    if bool((norms <= 1e-300).any()):
        return None
    unit = centred / norms[:, None]
    return (unit @ unit.T).clamp(-1.0, 1.0)


@register_proxy("jacob_cov", needs_data=True, family="data", paper="Mellor et al. 2020 (v1)")
def jacob_cov(record: DataRecord, ctx: ScoringContext) -> float:
    """−Σ log(λ + k) + 1/(λ + k) over the eigenvalues λ of corr(J)."""
    corr = _correlation(record.jacobian)
    if corr is None:
        return WORST_SCORE
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(eig + _K) + 1.0 / (eig + _K)).sum())


@register_proxy("epe_nas", needs_data=True, family="data", paper="Lopes et al. 2021")
def epe_nas(record: DataRecord, ctx: ScoringContext) -> float:
    """Σ_c |Σ_ij log(|ρ_ij| + k)| over per-class Jacobian correlation matrices."""
    per_class: list[float] = []
    for label in torch.unique(record.labels):
        rows = record.jacobian[record.labels == label]
        if len(rows) < 2:
            continue
        corr = _correlation(rows)
        if corr is None:
            return WORST_SCORE
        energy = float(torch.log(corr.abs() + _K).sum())
        per_class.append(energy / len(rows) if len(torch.unique(record.labels)) > 100 else energy)
    if not per_class:
        return WORST_SCORE
    if len(torch.unique(record.labels)) <= 100:
        return float(sum(abs(e) for e in per_class))
    e = torch.tensor(per_class, dtype=torch.float64)
    return float((e[:, None] - e[None, :]).abs().sum() / len(e))
