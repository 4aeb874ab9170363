"""Layers that make an MLP strong on tables, each from the paper that measured it.

- :class:`RobustScaleClip` + :class:`ScalingLayer`: RealMLP's input treatment (Holzmüller, Grinsztajn & Steinwart,
  NeurIPS 2024, "Better by default: strong pre-tuned MLPs and boosted trees on tabular data", Sec. 3): each feature
  centred on its training median and divided by its inter-quartile range (by half its range when the quartiles
  coincide), then smoothly clipped with ``x / sqrt(1 + (x/3)^2)``; then a learnable per-feature scale (a diagonal
  "scaling layer", initialised to 1) trained with a raised learning rate. The paper's ablation over its meta-train
  benchmarks credits these two — the preprocessing and the scaling layer — and the numerical embeddings with the
  largest steps from a plain MLP to RealMLP; they are the three of its tricks the ``tabular`` space offers (the
  embeddings through the two below).
- :class:`PiecewiseLinearEmbedding` ("PLE", quantile bins) and :class:`PeriodicEmbedding` ("PLR"): numerical
  feature embeddings of Gorishniy, Rubachev & Babenko, NeurIPS 2022, "On embeddings for numerical features in
  tabular deep learning" (Eq. 1-2 for PLE with bins from training quantiles, Sec. 3.3 for periodic
  ``[sin(2πcx), cos(2πcx)]`` with learned frequencies ``c``, followed by a linear layer and ReLU: "PLR"). Each
  feature gets its own embedding; the network sees their concatenation.
- :class:`BatchEnsembleLinear` and :class:`EnsembleHead`: the parameter-efficient ensemble of TabM (Gorishniy,
  Kotelnikov & Babenko, ICLR 2025, "TabM: advancing tabular deep learning with parameter-efficient ensembling"),
  built on BatchEnsemble (Wen, Tran & Ba, ICLR 2020): ``k`` members share every weight matrix ``W`` and differ by
  rank-1 multiplicative adapters, ``y_i = ((x_i ⊙ r_i) W) ⊙ s_i + b_i``, and each has its own output head. The
  members are trained as ``k`` models (the mean of their losses; :func:`nas.trainer.train` asks
  :meth:`member_outputs`); the prediction is the mean of their probabilities (a regression: of their values).

Data statistics (medians, quartiles, bin edges) are **buffers**, fitted once on the training rows by
:func:`fit_inputs` (the trainer calls it before the first epoch), so the state dict and the ONNX export carry them
and a served model never needs the training data. Before fitting, they describe standardised features (the
networks see standardised inputs): identity scaling, bins at standard-normal quantiles.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SMOOTH_CLIP = 3.0
"""RealMLP's smooth clipping bound: ``x / sqrt(1 + (x / 3)^2)`` stays within (-3, 3)."""
SCALE_LR_FACTOR = 6.0
"""The scaling layer's learning-rate factor (RealMLP-TD uses 6), applied by reparametrisation (see
:class:`ScalingLayer`) so every optimiser and the trainer's single parameter group keep working."""
PLE_BINS = 16
PLR_FREQUENCIES = 16
PLR_SIGMA = 0.1
"""Initial scale of the periodic frequencies (``c ~ N(0, sigma)``); RealMLP-TD's default for its periodic
embeddings, on robust-scaled, clipped inputs. Gorishniy et al. tune it per dataset; one value keeps the space small."""
EMBED_DIM = 16


def smooth_clip(x: torch.Tensor, bound: float = SMOOTH_CLIP) -> torch.Tensor:
    """``x / sqrt(1 + (x / bound)^2)``: the identity near 0, bounded by ``bound``, smooth everywhere."""
    return x / torch.sqrt(1 + (x / bound) ** 2)


class FittedInput(nn.Module):
    """A module whose buffers are fitted once on training rows (``fitted`` is in the state dict, so a model loaded
    from its weights is never refitted)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, x: torch.Tensor) -> None:  # pragma: no cover - every subclass implements it
        raise NotImplementedError


class RobustScaleClip(FittedInput):
    """RealMLP's robust scaling and smooth clipping: ``smooth_clip((x - median) * s)`` with ``s`` the inverse
    inter-quartile range, or ``2 / (max - min)`` when the quartiles coincide (a column mostly one value), or 0 for a
    constant column."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        values = x.detach().double().cpu().numpy()
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        spread, full = q75 - q25, values.max(axis=0) - values.min(axis=0)
        scale = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0),
                         np.where(full > 0, 2.0 / np.where(full > 0, full, 1.0), 0.0))
        self.center.copy_(torch.as_tensor(median, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smooth_clip((x - self.center) * self.scale)


class ScalingLayer(nn.Module):
    """RealMLP's diagonal scaling layer: one learnable factor per feature (a soft feature selection), initialised
    to 1. Its raised learning rate is a reparametrisation, ``scale = factor * p`` with ``p`` initialised to
    ``1/factor``: under Adam(W), whose step size does not depend on the gradient's magnitude, that moves the scale
    ``factor`` times faster than a plain parameter, as RealMLP's per-layer learning-rate factor does."""

    def __init__(self, n_features: int, lr_factor: float = SCALE_LR_FACTOR) -> None:
        super().__init__()
        self.lr_factor = float(lr_factor)
        self.raw = nn.Parameter(torch.full((n_features,), 1.0 / self.lr_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.raw * self.lr_factor)


class FeatureLinear(nn.Module):
    """One linear map per feature, ``(n, F, d_in) -> (n, F, d_out)`` (a batched matmul: exports to ONNX MatMul)."""

    def __init__(self, n_features: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n_features, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias


def _normal_edges(n_features: int, n_bins: int) -> torch.Tensor:
    """Bin edges at standard-normal quantiles (the distribution of a standardised feature), ``(F, n_bins + 1)``."""
    probs = torch.linspace(0, 1, n_bins + 1)[1:-1]
    inner = torch.distributions.Normal(0.0, 1.0).icdf(probs)
    edges = torch.cat([torch.tensor([-3.0]), inner, torch.tensor([3.0])])
    return edges.expand(n_features, n_bins + 1).clone()


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """``(F, n_bins + 1)`` increasing bin edges from the training quantiles of each column. A column with fewer
    distinct quantiles (a binary or mostly-constant one) keeps its distinct edges and is padded with edges past its
    maximum, whose bins stay 0 on the training range (Gorishniy et al. drop such bins; a fixed shape keeps the
    buffer and the ONNX graph simple)."""
    qs = np.quantile(values.astype(np.float64), np.linspace(0, 1, n_bins + 1), axis=0).T
    out = np.empty((values.shape[1], n_bins + 1), dtype=np.float64)
    for j, q in enumerate(qs):
        distinct = np.unique(q)
        step = (distinct[-1] - distinct[0]) / max(len(distinct) - 1, 1) or 1.0
        pad = distinct[-1] + step * np.arange(1, n_bins + 2 - len(distinct))
        out[j] = np.concatenate([distinct, pad])
    return out


class PiecewiseLinearEncoding(FittedInput):
    """PLE (Gorishniy et al. 2022, Eq. 1-2): bin ``t`` of a feature is 0 left of the bin, 1 right of it, and linear
    inside; the first bin is not clipped below nor the last above, so values outside the training range extrapolate.
    ``(n, F) -> (n, F, n_bins)``; edges are quantiles of the training rows (:meth:`fit`)."""

    def __init__(self, n_features: int, n_bins: int = PLE_BINS) -> None:
        super().__init__()
        self.n_bins = int(n_bins)
        self.register_buffer("edges", _normal_edges(n_features, self.n_bins))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        edges = quantile_edges(x.detach().cpu().numpy(), self.n_bins)
        self.edges.copy_(torch.as_tensor(edges, dtype=torch.float32))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, width = self.edges[:, :-1], self.edges[:, 1:] - self.edges[:, :-1]
        z = (x.unsqueeze(-1) - left) / width
        if self.n_bins == 1:
            return z
        first = torch.clamp(z[..., :1], max=1.0)
        middle = torch.clamp(z[..., 1:-1], min=0.0, max=1.0)
        last = torch.clamp(z[..., -1:], min=0.0)
        return torch.cat([first, middle, last], dim=-1)


class PiecewiseLinearEmbedding(nn.Module):
    """PLE followed by a per-feature linear layer and ReLU (the paper's "Q-LR"): ``(n, F) -> (n, F * d)``."""

    def __init__(self, n_features: int, n_bins: int = PLE_BINS, d: int = EMBED_DIM) -> None:
        super().__init__()
        self.encoding = PiecewiseLinearEncoding(n_features, n_bins)
        self.linear = FeatureLinear(n_features, n_bins, d)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(self.encoding(x))).flatten(1)


class PeriodicEmbedding(nn.Module):
    """PLR (Gorishniy et al. 2022, Sec. 3.3): ``[sin(2π c x), cos(2π c x)]`` with ``k`` learned frequencies ``c``
    per feature (initialised ``N(0, sigma)``), a per-feature linear layer and ReLU: ``(n, F) -> (n, F * d)``."""

    def __init__(self, n_features: int, k: int = PLR_FREQUENCIES, d: int = EMBED_DIM,
                 sigma: float = PLR_SIGMA) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, k) * sigma)
        self.linear = FeatureLinear(n_features, 2 * k, d)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        return self.act(self.linear(torch.cat([torch.sin(v), torch.cos(v)], dim=-1))).flatten(1)


EMBEDDINGS: dict[str, type[nn.Module]] = {"ple": PiecewiseLinearEmbedding, "plr": PeriodicEmbedding}


class BatchEnsembleLinear(nn.Module):
    """``(n, k, d_in) -> (n, k, d_out)``: one shared ``nn.Linear`` weight (so dynamic int8 quantisation still finds
    it) with per-member rank-1 adapters ``r`` (input) and ``s`` (output) and per-member biases. TabM initialises the
    first layer's ``r`` with random signs (so the members differ from the start) and every other adapter with 1."""

    def __init__(self, d_in: int, d_out: int, k: int, *, random_signs: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        r = torch.ones(k, d_in)
        if random_signs:
            r = torch.where(torch.rand(k, d_in) < 0.5, -r, r)
        self.r = nn.Parameter(r)
        self.s = nn.Parameter(torch.ones(k, d_out))
        bound = 1 / math.sqrt(d_in)
        self.bias = nn.Parameter(torch.empty(k, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.r) * self.s + self.bias


class EnsembleHead(nn.Module):
    """``k`` independent output layers, ``(n, k, d) -> (n, k, C)`` (TabM keeps the heads separate)."""

    def __init__(self, d_in: int, d_out: int, k: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(k, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias


def combine_members(outputs: torch.Tensor, regression: bool) -> torch.Tensor:
    """``(n, k, C)`` member outputs -> ``(n, C)``: a regression's mean value, or the log of the members' mean
    probability (a softmax of it is exactly that mean, so callers keep treating the output as logits)."""
    if regression:
        return outputs.mean(dim=1)
    return torch.logsumexp(torch.log_softmax(outputs, dim=-1), dim=1) - math.log(outputs.shape[1])


def fit_inputs(model: nn.Module, x: torch.Tensor) -> bool:
    """Fit every not-yet-fitted :class:`FittedInput` of ``model`` on training rows ``x`` (what the model's forward
    takes), in forward order: each sees ``x`` as the modules before it transform it (the model's ``fit_inputs``
    does the walking). Returns whether anything was fitted; a model without such modules is left alone."""
    fit = getattr(model, "fit_inputs", None)
    if not callable(fit):
        return False
    return bool(fit(x))
