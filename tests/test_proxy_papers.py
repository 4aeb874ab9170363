"""Each zero-cost proxy against its paper, on small networks whose value can be derived by hand.

tests/test_proxies.py checks the gradient proxies (snip, grad_norm, plain, fisher, zico, grasp, jacob_cov, epe_nas)
against the exact softmax-regression gradient of a linear classifier; this file adds closed forms for the
data-free proxies and for the conventions the papers fix (precision, batch-norm handling, input, which weights).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from nas.proxies import PROXIES, WORST_SCORE, compute_scores, list_proxies
from nas.proxies.context import ScoringContext, output_ignores_input
from nas.proxies.meco import MECO_SAMPLES
from nas.proxies.zen import ZEN_ALPHA, ZEN_SAMPLES


def _fixed(module: nn.Module, **tensors: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(module, name).copy_(value)
    return module


# -- synflow (Tanaka et al. 2020; Abdelfattah et al. 2021) ---------------------------------------------------------
W1 = torch.tensor([[0.5, -1.0, 2.0], [-0.25, 0.75, -1.5]])  # hidden 2 x input 3
B1 = torch.tensor([0.1, -0.2])
W2 = torch.tensor([[1.0, -2.0], [-0.5, 0.25], [3.0, 1.0]])  # classes 3 x hidden 2
B2 = torch.tensor([0.3, -0.3, 0.0])


def two_layer(bn: nn.Module | None = None) -> nn.Module:
    first = _fixed(nn.Linear(3, 2), weight=W1, bias=B1)
    head = _fixed(nn.Linear(2, 3), weight=W2, bias=B2)
    middle = [bn] if bn is not None else []
    return nn.Sequential(first, *middle, nn.ReLU(), head)


def synflow_closed_form() -> float:
    """R = 1ᵀ|W2|(|W1|·1 + |b1|) + Σ|b2|, so Σ|W1 ⊙ ∂R/∂W1| = Σ_h u_h Σ_d |W1_hd| with u = column sums of |W2|, and
    Σ|W2 ⊙ ∂R/∂W2| = Σ_ch |W2_ch| a_h with a = |W1|·1 + |b1| (the hidden activation on the all-ones input)."""
    a1, a2 = W1.abs().double(), W2.abs().double()
    u = a2.sum(0)
    hidden = a1.sum(1) + B1.abs().double()
    return float((u * a1.sum(1)).sum() + (a2 * hidden[None, :]).sum())


def test_synflow_two_layer_linear_net_equals_the_closed_form():
    value = compute_scores(two_layer, ["synflow"], input_shape=(3,))["synflow"]
    assert value == pytest.approx(synflow_closed_form(), rel=1e-12)
    # the worked number, for pencil and paper: u = (4.5, 3.25), row sums of |W1| = (3.5, 2.5), hidden = (3.6, 2.7)
    by_hand = 4.5 * 3.5 + 3.25 * 2.5 + (1 * 3.6 + 2 * 2.7) + (0.5 * 3.6 + 0.25 * 2.7) + (3 * 3.6 + 1 * 2.7)
    assert by_hand == pytest.approx(48.85)
    assert value == pytest.approx(by_hand, rel=1e-6)


def test_synflow_removes_batch_norm_whatever_its_statistics_and_affine():
    # Abdelfattah et al. score a copy without batch-norm: running statistics, batch statistics and the affine
    # parameters must all be irrelevant. This BN would map h to 1.5·(h − 5) + 20 in eval mode and renormalise the
    # single all-ones sample to zero in train mode.
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(20.0)
    value = compute_scores(lambda: two_layer(copy.deepcopy(bn)), ["synflow"], input_shape=(3,))["synflow"]
    assert value == pytest.approx(synflow_closed_form(), rel=1e-12)


def test_synflow_is_float64_with_absolute_weights_and_counts_the_classifier_head():
    # A chain of L layers W = [[1, −1], [1, 1]]/√2 (a rotation: the signed network keeps its input's norm, so its
    # float32 forward is fine). Linearised, |W| = J/√2 with J the all-ones matrix and J^L = 2^(L−1)·J, so
    # R = 1ᵀ|W|^L·1 = 2^(L/2+1). Every path crosses every layer once, so each layer's Σ θ·∂R/∂θ is R and the score
    # is L·R — for L = 300 about 8.5e47, beyond float32's 3.4e38. All L layers count, the last one (the
    # classifier head) included, and the signs of the weights do not matter.
    depth = 300
    rotation = torch.tensor([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2.0)

    def chain() -> nn.Module:
        return nn.Sequential(*[_fixed(nn.Linear(2, 2, bias=False), weight=rotation) for _ in range(depth)])

    value = compute_scores(chain, ["synflow"], input_shape=(2,))["synflow"]
    assert value > torch.finfo(torch.float32).max
    c = float(rotation[0, 0])  # 1/√2 as float32 stores it: R = c^L·2^(L+1) exactly
    assert value == pytest.approx(depth * c**depth * 2.0 ** (depth + 1), rel=1e-9)
    assert value == pytest.approx(depth * 2.0 ** (depth / 2 + 1), rel=1e-4)


def test_synflow_on_an_nb201_network_equals_the_batch_norm_free_reference():
    from nas.spaces import get_space

    space = get_space("nb201", C=4, N=1)
    arch = space.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|")
    torch.manual_seed(0)
    net = arch.build(10, (3, 8, 8))
    reference = copy.deepcopy(net).double()
    for module in list(reference.modules()):  # delete every BN, as the reference copy does
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for p in reference.parameters():
            p.abs_()
    out = reference(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum()
    weights = [m.weight for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = torch.autograd.grad(out, weights)
    expected = float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)))
    value = compute_scores(lambda: arch.build(10, (3, 8, 8)), ["synflow"], input_shape=(3, 8, 8), seed=0)["synflow"]
    assert value == pytest.approx(expected, rel=1e-12)


# -- params, flops, l2_norm ------------------------------------------------------------------------------------------
def small_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 1, bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )


def test_params_and_flops_by_hand():
    scores = compute_scores(small_convnet, ["params", "flops"], input_shape=(2, 6, 6))
    # conv 3x3: 3·2·9 + 3 bias; BN: 3 + 3; conv 1x1: 4·3; linear: 4·5 + 5
    assert scores["params"] == 3 * 2 * 9 + 3 + 6 + 4 * 3 + 4 * 5 + 5
    # 2 FLOPs per multiply-add: each conv output position costs C_in·k·k MACs; the linear layer 4·5 MACs
    assert scores["flops"] == 2 * (36 * 3 * 2 * 9 + 36 * 4 * 3 + 4 * 5)


def test_l2_norm_sums_frobenius_norms_of_weight_tensors_only():
    value = compute_scores(two_layer, ["l2_norm"], input_shape=(3,))["l2_norm"]
    assert value == pytest.approx(float(W1.double().norm() + W2.double().norm()), rel=1e-12)  # biases left out


# -- MeCo (Jiang et al. 2023) ----------------------------------------------------------------------------------------
def test_meco_is_one_minus_the_channel_correlation_for_two_channels():
    # One 1x1 identity conv on a 2-channel input: its feature map is the input, whose two channels (over the 5x5
    # positions of MeCo's single random sample) correlate with some ρ; P = [[1, ρ], [ρ, 1]], λ_min = 1 − |ρ|.
    def identity_conv() -> nn.Module:
        return _fixed(nn.Conv2d(2, 2, 1, bias=False), weight=torch.eye(2).reshape(2, 2, 1, 1))

    value = compute_scores(identity_conv, ["meco"], input_shape=(2, 5, 5), seed=3)["meco"]
    x = ScoringContext(None, (2, 5, 5), 3).gaussian(MECO_SAMPLES, offset=17)[0].reshape(2, -1).double()
    rho = float(torch.corrcoef(x)[0, 1])
    assert value == pytest.approx(1.0 - abs(rho), rel=1e-9)


def test_meco_constant_and_proportional_channels_give_zero():
    # channels (x, 0): the constant channel's correlations are undefined and set to 0 as in the paper, P = diag(1, 0)
    # channels (x, −2x): ρ = −1, P = [[1, −1], [−1, 1]]; both have λ_min = 0
    for second in (0.0, -2.0):
        def net(second: float = second) -> nn.Module:
            return _fixed(nn.Conv2d(1, 2, 1, bias=False), weight=torch.tensor([1.0, second]).reshape(2, 1, 1, 1))

        assert compute_scores(net, ["meco"], input_shape=(1, 4, 4))["meco"] == pytest.approx(0.0, abs=1e-12)


# -- Zen-score (Lin et al. 2021) -------------------------------------------------------------------------------------
def test_zen_by_hand_for_batch_norm_then_pooling():
    # No conv before pooling: the pre-pooling map is BN(x) with batch statistics and unit affine, so
    # Zen = log mean_n ‖BN(x)_n − BN(x + αε)_n‖ + log sqrt(mean_c var_c(x)).
    def net() -> nn.Module:
        return nn.Sequential(nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))

    value = compute_scores(net, ["zen"], input_shape=(2, 4, 4), seed=2)["zen"]
    ctx = ScoringContext(None, (2, 4, 4), 2)
    x = ctx.gaussian(ZEN_SAMPLES, offset=11).double()
    eps = ctx.gaussian(ZEN_SAMPLES, offset=13).double()

    def bn(t: torch.Tensor) -> torch.Tensor:
        mean = t.mean((0, 2, 3), keepdim=True)
        var = t.var((0, 2, 3), keepdim=True, correction=0)
        return (t - mean) / torch.sqrt(var + 1e-5)

    delta = (bn(x) - bn(x + ZEN_ALPHA * eps)).reshape(ZEN_SAMPLES, -1).norm(dim=1).mean()
    sigma = math.sqrt(float(x.var((0, 2, 3), correction=0).mean()))
    assert value == pytest.approx(math.log(float(delta)) + math.log(sigma), abs=1e-4)


# -- conventions ---------------------------------------------------------------------------------------------------
def test_a_deep_network_with_a_tiny_input_signal_is_not_mistaken_for_a_cut_one():
    # The input's contribution (1e-12 of the bias) is below float32 resolution of the logits, but it is there: the
    # degeneracy probe must look at the input gradient, not at the spread of the outputs.
    def faint() -> nn.Module:
        layers = [_fixed(nn.Linear(4, 4, bias=False), weight=1e-4 * torch.eye(4)) for _ in range(3)]
        head = _fixed(nn.Linear(4, 2), weight=torch.ones(2, 4), bias=torch.ones(2))
        return nn.Sequential(*layers, head)

    ctx = ScoringContext(None, (4,), 0)
    assert not output_ignores_input(faint(), ctx)
    assert compute_scores(faint, ["synflow"], input_shape=(4,))["synflow"] > WORST_SCORE

    class Cut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.mul(0.0))

    assert output_ignores_input(Cut(), ctx)


def test_every_proxy_names_its_paper_and_whether_it_needs_data():
    rows = {row["name"]: row for row in PROXIES.describe()}
    assert sorted(rows) == list_proxies()
    for name, row in rows.items():
        assert row["paper"], name
        assert set(row) >= {"needs_data", "family", "is_cost", "paper", "summary"}
    data_free = sorted(n for n, r in rows.items() if not r["needs_data"])
    assert data_free == ["flops", "l2_norm", "meco", "params", "synflow", "zen"]
