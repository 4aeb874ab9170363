"""MeCo (Jiang et al., NeurIPS 2023, "MeCo: zero-shot NAS with one data and single forward pass via minimum
eigenvalue of correlation").

One input, one forward pass (eval mode: at initialisation batch-norm is then the identity, so the sample is scored
on its own): for every conv/linear layer i, P_i is the Pearson correlation matrix between the channels of its
feature map (each channel's values over the spatial/token positions) and MeCo = Σ_i λ_min(P_i). Channels that are
constant have undefined correlations, set to 0 as in the paper. Each term lies in [0, 1]. The input is one
Gaussian random sample of the input shape (the data-free form; the paper scores one training image).

A layer whose output has no spatial/token axis (a CNN's classifier) has one value per channel: its correlation
matrix is all undefined, i.e. 0, and it adds λ_min = 0, as in the paper; it is skipped. Networks on flat inputs
(plain MLPs) would then score 0 everywhere, so for them only the correlation is taken between ``MECO_SAMPLES``
random inputs instead (an N×N matrix over the features) — an extension so that every classifier gets a score.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.proxies.context import FEATURE_LAYERS, WORST_SCORE, ScoringContext, forward_input, hooks_removed_after
from nas.proxies.registry import register_proxy

MECO_SAMPLES = 8


def _min_eig_correlation(rows: torch.Tensor) -> float | None:
    """λ_min of the Pearson correlation between the rows (constant rows contribute zeros)."""
    if rows.shape[0] < 2 or rows.shape[1] < 2:
        return None
    rows = rows.double()
    centred = rows - rows.mean(1, keepdim=True)
    norms = centred.norm(dim=1)
    unit = torch.where(norms[:, None] > 0, centred / norms.clamp_min(1e-300)[:, None], torch.zeros_like(centred))
    corr = unit @ unit.T
    return float(torch.linalg.eigvalsh(corr)[0].clamp(0.0, 1.0))


@register_proxy("meco", needs_data=False, paper="Jiang et al. 2023")
def meco(model: nn.Module, ctx: ScoringContext) -> float:
    """Σ over layers of the minimum eigenvalue of the channel correlation matrix, for one random input."""
    model.eval()
    maps: list[torch.Tensor] = []

    def keep(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        out = out.detach()
        if isinstance(module, nn.Linear) and out.dim() > 2:
            out = out.movedim(-1, 1)
        maps.append(out)

    x = forward_input(ctx.gaussian(MECO_SAMPLES, offset=17), model)
    flat = len(ctx.input_shape) == 1
    if not flat:
        x = x[:1]  # image/token inputs: one sample, the paper's form (the other draws only serve flat inputs)
    with hooks_removed_after() as handles, torch.no_grad():
        handles += [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, FEATURE_LAYERS)]
        model(x)
    total, used = 0.0, 0
    for fmap in maps:
        if fmap.dim() <= 2 and not flat:
            continue  # no spatial/token axis: the paper's undefined correlations, a term of 0
        rows = fmap[0].reshape(fmap.shape[1], -1) if fmap.dim() > 2 else fmap
        value = _min_eig_correlation(rows)
        if value is not None:
            total += value
            used += 1
    return total if used else WORST_SCORE
