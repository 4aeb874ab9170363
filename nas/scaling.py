"""Compound scaling of a search winner: depth, width and input resolution grown together by one coefficient φ.

Tan & Le (ICML 2019), "EfficientNet: Rethinking model scaling for convolutional neural networks", Section 3.3:
depth ``d = α^φ``, width ``w = β^φ``, resolution ``r = γ^φ`` with ``α·β²·γ² ≈ 2`` and ``α, β, γ ≥ 1``, so that FLOPs
grow by about ``2^φ``; α, β, γ are found once by a small grid search at φ = 1 (:func:`search_coefficients`, step 1
of the paper), then φ is raised to fill a resource budget (step 2). The paper's EfficientNet-B0 values,
α = 1.2, β = 1.1, γ = 1.15, are the default.

What the dimensions mean here:

- ``nb201``: depth is ``N`` (cells per stage), width is ``C`` (stem channels; the stages use C, 2C, 4C), resolution
  is the image height and width. The cell (the searched operations) is unchanged.
- ``mlp``: depth is the number of hidden layers (layer ``i`` of the deeper net takes the width of layer
  ``floor(i·D/D')`` of the winner), width multiplies every layer's width; flat features have no resolution.

Resolution is scaled only when the data allows it (``max_resolution`` above the searched size: the refresh must then
prepare the data at the member's ``input_shape``); otherwise γ is fixed to 1 and α, β are raised to a common power
so that ``α·β² = 2`` still holds (FLOPs still double per unit of φ).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from nas.spaces import get_space
from nas.spaces.base import Architecture, SearchSpace
from nas.spaces.mlp import MLPConfig, MLPSpace
from nas.spaces.nb201 import NB201Space

SCALABLE_SPACES: tuple[str, ...] = ("nb201", "mlp")
DEFAULT_PHIS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
SHRINK_PHIS: tuple[float, ...] = (-0.5, -1.0, -1.5, -2.0, -2.5, -3.0)


@dataclass(frozen=True)
class ScalingCoefficients:
    """``α`` (depth), ``β`` (width), ``γ`` (resolution); Tan & Le's EfficientNet-B0 values by default."""

    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 1:
            raise ValueError(f"alpha, beta and gamma must be >= 1, got {self.alpha}, {self.beta}, {self.gamma}")
        if self.alpha * self.beta**2 <= 1:
            raise ValueError("alpha * beta^2 must exceed 1, or scaling does nothing")

    @property
    def flops_base(self) -> float:
        """``α·β²·γ²``: the factor FLOPs grow by per unit of φ (≈ 2 by the paper's rule)."""
        return self.alpha * self.beta**2 * self.gamma**2

    def fixed_resolution(self) -> ScalingCoefficients:
        """γ = 1, and α, β raised to the power ``k`` that keeps ``α^k·β^(2k) = α·β²·γ²`` (their ratio kept)."""
        k = math.log(self.flops_base) / math.log(self.alpha * self.beta**2)
        return ScalingCoefficients(self.alpha**k, self.beta**k, 1.0)


@dataclass(frozen=True)
class Budget:
    """The resources a scaled member may use; ``None`` means unconstrained."""

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_params", "max_flops", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def admits(self, params: int, flops: int, latency_ms: float | None) -> bool:
        return ((self.max_params is None or params <= self.max_params)
                and (self.max_flops is None or flops <= self.max_flops)
                and (self.max_latency_ms is None or (latency_ms is not None and latency_ms <= self.max_latency_ms)))


@dataclass(frozen=True)
class ScaledMember:
    """One member of the scaled family: everything the refresh needs to build and retrain it."""

    phi: float
    space: str
    space_config: dict[str, Any]
    arch: str
    input_shape: tuple[int, ...]
    depth: int
    width: int
    params: int
    flops: int
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get_space(self) -> SearchSpace:
        return get_space(self.space, **self.space_config)

    def build(self, num_classes: int) -> nn.Module:
        space = self.get_space()
        return space.build(space.from_string(self.arch), num_classes, self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out


def _scaled_nb201(space: NB201Space, arch: Architecture, d: float, w: float, r: float,
                  input_shape: tuple[int, ...], max_resolution: int | None) -> tuple[SearchSpace, Architecture,
                                                                                       tuple[int, ...], int, int]:
    n_cells = max(1, round(space.N * d))
    channels = max(1, round(space.C * w))
    shape = tuple(input_shape)
    if max_resolution is not None and r != 1.0:
        side = lambda s: int(min(max(4, round(s * r)), max_resolution))  # noqa: E731 - two uses, one line
        shape = (shape[0], side(shape[1]), side(shape[2]))
    scaled = NB201Space(C=channels, N=n_cells)
    return scaled, scaled.from_string(arch.string), shape, n_cells, channels


def _scaled_mlp(space: MLPSpace, arch: Architecture, d: float, w: float, input_shape: tuple[int, ...]):
    cfg = space.parse(arch.string)
    depth = max(1, round(cfg.depth * d))
    widths = tuple(max(1, round(cfg.widths[(i * cfg.depth) // depth] * w)) for i in range(depth))
    scaled = MLPSpace(max_depth=max(space.max_depth, depth), widths=tuple(sorted(set(space.widths) | set(widths))),
                      activations=space.activations, norms=space.norms, dropouts=space.dropouts)
    new = MLPConfig(widths, cfg.act, cfg.norm, cfg.dropout, cfg.residual)
    return scaled, scaled.canonicalize(scaled.from_config(new)), tuple(input_shape), depth, max(widths)


def scale_architecture(space: SearchSpace, arch: Architecture, phi: float, input_shape: Sequence[int], *,
                       coefficients: ScalingCoefficients | None = None, max_resolution: int | None = None):
    """``(space, arch, input_shape, depth, width)`` of ``arch`` scaled by ``φ`` (see the module docstring)."""
    if space.name not in SCALABLE_SPACES:
        raise ValueError(f"compound scaling knows the spaces {', '.join(SCALABLE_SPACES)}, not {space.name!r}")
    coef = coefficients or ScalingCoefficients()
    shape = tuple(int(s) for s in input_shape)
    can_resize = space.name == "nb201" and max_resolution is not None and max_resolution > min(shape[1:])
    if not can_resize:
        coef = coef.fixed_resolution()
    d, w, r = coef.alpha**phi, coef.beta**phi, coef.gamma**phi
    if isinstance(space, NB201Space):
        return _scaled_nb201(space, arch, d, w, r, shape, max_resolution if can_resize else None)
    assert isinstance(space, MLPSpace)
    return _scaled_mlp(space, arch, d, w, shape)


def compound_scale(space: SearchSpace, arch: Architecture, num_classes: int, input_shape: Sequence[int],
                   budget: Budget, *, coefficients: ScalingCoefficients | None = None,
                   phis: Sequence[float] | None = None, max_resolution: int | None = None,
                   latency: Callable[[nn.Module, tuple[int, ...]], float] | None = None) -> list[ScaledMember]:
    """The scaled family of ``arch`` within ``budget``, one member per distinct network, ordered by φ.

    ``phis`` defaults to 0, 0.5, …, 3, and to -0.5 … -3 (shrinking) when the winner itself is over budget. Latency
    is measured only when the budget limits it (``latency(model, input_shape)`` ms, default
    :func:`nas.trainer.measure_latency_ms`). An empty list means no member fits the budget.
    """
    if latency is None and budget.max_latency_ms is not None:
        from nas.trainer import measure_latency_ms

        latency = measure_latency_ms
    grid = list(DEFAULT_PHIS if phis is None else phis)
    members: list[ScaledMember] = []
    seen: set[tuple] = set()

    def consider(phi: float) -> bool:
        s, a, shape, depth, width = scale_architecture(space, arch, phi, input_shape, coefficients=coefficients,
                                                       max_resolution=max_resolution)
        key = (s.name, json.dumps(s.config(), sort_keys=True), a.string, shape)
        params, flops = s.count_params(a, num_classes, shape), s.count_flops(a, num_classes, shape)
        ms = None
        if budget.max_latency_ms is not None and latency is not None:
            ms = float(latency(s.build(a, num_classes, shape), shape))
        fits = budget.admits(params, flops, ms)
        if fits and key not in seen:
            seen.add(key)
            members.append(ScaledMember(float(phi), s.name, s.config(), a.string, shape, depth, width, params, flops,
                                        ms))
        return fits

    fitted = [consider(phi) for phi in sorted(grid)]
    if phis is None and not fitted[0]:
        for phi in SHRINK_PHIS:
            consider(phi)
    return sorted(members, key=lambda m: m.phi)


def search_coefficients(evaluate: Callable[[ScalingCoefficients], float], *, step: float = 0.05,
                        tolerance: float = 0.1, max_value: float = 2.0) -> tuple[ScalingCoefficients, float]:
    """Step 1 of Tan & Le: grid-search α, β, γ ≥ 1 with ``|α·β²·γ² − 2| ≤ tolerance`` at φ = 1; the best by
    ``evaluate`` (higher is better, e.g. the validation accuracy of the φ = 1 member after a short training)."""
    values = np.round(np.arange(1.0, max_value + 1e-9, step), 6)
    best: tuple[ScalingCoefficients, float] | None = None
    for a, b, g in itertools.product(values, repeat=3):
        if abs(a * b * b * g * g - 2.0) > tolerance or a * b * b <= 1:
            continue
        coef = ScalingCoefficients(float(a), float(b), float(g))
        score = float(evaluate(coef))
        if best is None or score > best[1]:
            best = (coef, score)
    if best is None:
        raise ValueError(f"no α, β, γ on a {step} grid within {tolerance} of α·β²·γ² = 2; widen the tolerance")
    return best
