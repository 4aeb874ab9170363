"""Compound scaling meets its budget, grows monotonically in φ, and builds networks that run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nas.scaling import Budget, ScalingCoefficients, compound_scale, scale_architecture, search_coefficients
from nas.spaces import get_space

NB201 = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|"
MLP = "depth=2|widths=64-128|act=relu|norm=batch|dropout=0.1|residual=0"


def _family(space_name: str, arch: str, shape, budget: Budget, **kw):
    space = get_space(space_name, **({"C": 8, "N": 1} if space_name == "nb201" else {}))
    return compound_scale(space, space.from_string(arch), 10, shape, budget, **kw)


@pytest.mark.parametrize(("space", "arch", "shape"), [("nb201", NB201, (1, 8, 8)), ("mlp", MLP, (64,))])
def test_family_meets_the_params_budget_and_grows_with_phi(space, arch, shape):
    budget = Budget(max_params=150_000)
    family = _family(space, arch, shape, budget)
    assert len(family) >= 3
    assert all(m.params <= budget.max_params for m in family)
    phis = [m.phi for m in family]
    assert phis == sorted(phis) and phis[0] == 0.0
    for small, big in itertools.pairwise(family):
        assert big.params >= small.params and big.flops >= small.flops
        assert big.depth >= small.depth and big.width >= small.width
    assert family[-1].params > family[0].params
    net = family[-1].build(10)
    assert net(torch.zeros(2, *family[-1].input_shape)).shape == (2, 10)


def test_flops_budget_and_resolution_when_the_data_allows():
    budget = Budget(max_flops=3_000_000)
    family = _family("nb201", NB201, (1, 8, 8), budget, max_resolution=28)
    assert all(m.flops <= budget.max_flops for m in family)
    sides = [m.input_shape[1] for m in family]
    assert sides == sorted(sides) and sides[-1] > 8 and max(sides) <= 28
    fixed = _family("nb201", NB201, (1, 8, 8), budget)  # no higher-resolution data: resolution stays 8x8
    assert {m.input_shape for m in fixed} == {(1, 8, 8)}


def test_latency_budget_uses_the_given_measure():
    calls = []

    def fake_ms(model, shape):  # latency proportional to parameters: deterministic for the test
        calls.append(shape)
        return sum(p.numel() for p in model.parameters()) / 10_000

    family = _family("mlp", MLP, (64,), Budget(max_latency_ms=5.0), latency=fake_ms)
    assert calls and family and all(m.latency_ms is not None and m.latency_ms <= 5.0 for m in family)


def test_over_budget_winner_is_shrunk_or_nothing_fits():
    family = _family("mlp", MLP, (64,), Budget(max_params=8_000))
    assert family and all(m.phi < 0 and m.params <= 8_000 for m in family)
    assert _family("mlp", MLP, (64,), Budget(max_params=500)) == []


def test_coefficients_follow_the_rule():
    coef = ScalingCoefficients()
    assert coef.flops_base == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    fixed = coef.fixed_resolution()
    assert fixed.gamma == 1.0 and fixed.alpha * fixed.beta**2 == pytest.approx(coef.flops_base)
    assert fixed.alpha / fixed.beta > 1  # the depth:width balance is kept
    with pytest.raises(ValueError, match="must be >= 1"):
        ScalingCoefficients(0.9, 1.1, 1.1)
    best, score = search_coefficients(lambda c: -abs(c.alpha - 1.4) - abs(c.gamma - 1.0), step=0.1)
    assert abs(best.alpha * best.beta**2 * best.gamma**2 - 2) <= 0.1 and best.gamma == 1.0
    assert score == pytest.approx(-abs(best.alpha - 1.4))


def test_unknown_space_is_refused():
    space = get_space("vit")
    arch = space.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="compound scaling knows"):
        scale_architecture(space, arch, 1.0, (1, 8, 8))
