"""Zero-cost proxies: hand-computed values on a one-layer linear classifier, known properties elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nas.proxies import WORST_SCORE, compute_scores, get_proxy, list_proxies, needs_data, score_model
from nas.proxies.data_pass import ZICO_SPLITS
from nas.proxies.zen import ZEN_ALPHA

D, C, N = 12, 3, 8
ALL = [
    "params", "flops", "synflow", "snip", "grasp", "fisher", "grad_norm", "jacob_cov", "nwot", "epe_nas",
    "l2_norm", "plain", "zen", "zico", "meco",
]


def linear_factory() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(D, C))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )


class CutNetwork(nn.Module):
    """A cell cut by ``none``: the features are zeroed, so the output never depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mul(0.0).mean((2, 3)))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(N, D, generator=gen)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    return x, y


@pytest.fixture
def image_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(16, 1, 6, 6, generator=gen), torch.arange(16) % 4


def _linear_parts(batch):
    """The weights of the seed-0 linear model and the exact loss gradient of softmax regression."""
    torch.manual_seed(0)
    lin = linear_factory()[1]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    x, y = batch[0].double(), batch[1]
    onehot = torch.nn.functional.one_hot(y, C).double()

    def grad(idx):
        z = x[idx] @ w.T + b
        return (torch.softmax(z, 1) - onehot[idx]).T @ x[idx] / len(idx)

    return w, b, x, y, onehot, grad


def test_registry_lists_every_proxy_and_which_need_data():
    assert sorted(ALL) == list_proxies()
    assert not needs_data("synflow") and not needs_data("params") and not needs_data("meco")
    assert needs_data("snip") and needs_data("nwot") and needs_data("jacob_cov")


def test_unknown_name_and_missing_batch_are_clear_errors(batch):
    with pytest.raises(KeyError, match="synflow"):
        compute_scores(linear_factory, ["synflo"], input_shape=(D,))
    with pytest.raises(ValueError, match="needs data: pass --dataset / a batch"):
        compute_scores(linear_factory, ["synflow", "snip"], input_shape=(D,))
    with pytest.raises(ValueError, match="input_shape"):
        compute_scores(linear_factory, ["synflow"])


def test_linear_model_matches_hand_computed_values(batch):
    scores = compute_scores(linear_factory, ALL, batch=batch, seed=0)
    w, b, x, y, onehot, grad = _linear_parts(batch)
    g = grad(torch.arange(N))
    assert scores["params"] == D * C + C
    assert scores["flops"] == 2 * D * C
    assert scores["l2_norm"] == pytest.approx(float(w.norm()), rel=1e-9)
    # SynFlow: R = Σ(|W|·1 + |b|), so ∂R/∂|W| = 1 and the score is Σ|W|.
    assert scores["synflow"] == pytest.approx(float(w.abs().sum()), rel=1e-9)
    assert scores["snip"] == pytest.approx(float((w * g).abs().sum()), rel=1e-5)
    assert scores["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
    assert scores["plain"] == pytest.approx(float((w * g).sum()), rel=1e-4, abs=1e-7)
    # Fisher on the linear output z: ½·mean_n (z ⊙ ∂L/∂z)² summed over outputs, ∂L/∂z = (p − y)/N.
    z = x @ w.T + b
    dz = (torch.softmax(z, 1) - onehot) / N
    assert scores["fisher"] == pytest.approx(float(0.5 * (z * dz).pow(2).mean(0).sum()), rel=1e-4)
    # ZiCo: per-element mean|g| / std over the mini-batch chunks, log of the sum.
    chunks = torch.stack([grad(idx) for idx in torch.arange(N).tensor_split(ZICO_SPLITS)])
    ratio = chunks.abs().mean(0) / chunks.std(0, correction=0)
    assert scores["zico"] == pytest.approx(math.log(float(ratio.sum())), rel=1e-4)
    # Jacobian of Σ logits is Σ_c W_c for every input: all rows correlate perfectly, eigenvalues (N, 0, ..., 0).
    k = 1e-5
    expected_jc = -(math.log(N + k) + 1 / (N + k)) - (N - 1) * (math.log(k) + 1 / k)
    assert scores["jacob_cov"] == pytest.approx(expected_jc, rel=1e-6)
    counts = torch.bincount(y).tolist()
    assert scores["epe_nas"] == pytest.approx(sum(n * n * math.log(1 + k) for n in counts), rel=1e-6)
    # Zen: with no pooling module the feature map is the input of the last linear layer, i.e. the input itself,
    # so Zen = log E‖αε‖ ≈ log(α·√D).
    assert scores["zen"] == pytest.approx(math.log(ZEN_ALPHA * math.sqrt(D)), abs=0.15)
    # MeCo on a 2-D output correlates the random inputs' logits: one term in [0, 1].
    assert 0.0 <= scores["meco"] <= 1.0


def test_grasp_equals_minus_weight_times_hessian_gradient_product(batch):
    score = compute_scores(linear_factory, ["grasp"], batch=batch, seed=0)["grasp"]
    w, b, x, y, _onehot, grad = _linear_parts(batch)

    def loss(flat_w):
        return torch.nn.functional.cross_entropy(x @ flat_w.reshape(C, D).T + b, y)

    hessian = torch.autograd.functional.hessian(loss, w.reshape(-1))
    hg = hessian @ grad(torch.arange(N)).reshape(-1)
    assert score == pytest.approx(float(-(w.reshape(-1) * hg).sum()), rel=1e-4)


def test_nwot_is_log_det_of_hamming_kernel():
    # Identity layer + ReLU on two inputs: codes [1,0,1] and [1,1,0], N_A = 3, Hamming distance 2,
    # K = [[3, 1], [1, 3]] and log det K = log 8.
    def factory():
        lin = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(3))
        return nn.Sequential(lin, nn.ReLU())

    x = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    score = compute_scores(factory, ["nwot"], batch=(x, torch.tensor([0, 1])))["nwot"]
    assert score == pytest.approx(math.log(8.0))
    # More distinct activation patterns -> higher score: identical codes make K singular -> worst.
    same = torch.tensor([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]])
    assert compute_scores(factory, ["nwot"], batch=(same, torch.tensor([0, 1])))["nwot"] < score


def test_meco_terms_are_min_eigenvalues_in_unit_interval():
    def duplicated_filters():
        torch.manual_seed(0)
        conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            conv.weight[1] = conv.weight[0]
            conv.bias[1] = conv.bias[0]
        return nn.Sequential(conv, nn.Flatten(), nn.Linear(2 * 36, 2))

    # Two identical channels correlate perfectly: that layer contributes λ_min = 0; the 2-D linear layer ≤ 1.
    dup = compute_scores(duplicated_filters, ["meco"], input_shape=(1, 6, 6))["meco"]
    assert 0.0 <= dup <= 1.0
    cnn = compute_scores(small_cnn, ["meco"], input_shape=(1, 6, 6))["meco"]
    assert 0.0 < cnn <= 3.0  # three conv/linear layers, each term in [0, 1]


def test_all_scores_finite_and_fused_equals_one_at_a_time(image_batch):
    fused = compute_scores(small_cnn, ALL, batch=image_batch, seed=1)
    assert all(math.isfinite(v) and v > WORST_SCORE for v in fused.values()), fused
    for name in ALL:
        alone = compute_scores(small_cnn, [name], batch=image_batch, seed=1)[name]
        assert alone == pytest.approx(fused[name], rel=1e-5, abs=1e-9), name


def test_same_seed_same_scores_other_seed_other_network(image_batch):
    names = ["synflow", "snip", "zen", "nwot", "zico", "meco"]
    a = compute_scores(small_cnn, names, batch=image_batch, seed=4)
    assert a == compute_scores(small_cnn, names, batch=image_batch, seed=4)
    assert a["synflow"] != compute_scores(small_cnn, names, batch=image_batch, seed=5)["synflow"]


def test_output_independent_of_input_gets_worst_value_without_nan(image_batch):
    scores = compute_scores(CutNetwork, ALL, batch=image_batch)
    assert scores["params"] == sum(p.numel() for p in CutNetwork().parameters())  # costs stay true
    for name in set(ALL) - {"params", "flops"}:
        assert scores[name] == WORST_SCORE, name
    assert all(math.isfinite(v) for v in scores.values())


def test_scoring_leaves_the_callers_model_untouched(image_batch):
    torch.manual_seed(0)
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    single = get_proxy("snip")(model, image_batch)
    scores = score_model(model, ALL, batch=image_batch)
    assert single == pytest.approx(scores["snip"], rel=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_nb201_cells_score_and_cut_cells_are_worst():
    from nas.spaces import get_space

    space = get_space("nb201", C=4, N=1)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 1, 8, 8, generator=gen), torch.arange(16) % 10)
    good = space.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|")
    cut = space.from_string("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    from nas.proxies import score_architecture

    ok = score_architecture(good, ALL, batch=batch, input_shape=(1, 8, 8), num_classes=10)
    assert all(v > WORST_SCORE and math.isfinite(v) for v in ok.values()), ok
    bad = score_architecture(cut, ALL, batch=batch, input_shape=(1, 8, 8), num_classes=10)
    assert all(bad[n] == WORST_SCORE for n in ALL if n not in ("params", "flops"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_memory_stays_flat_over_many_networks(image_batch):
    names = ["synflow", "snip", "fisher", "nwot", "jacob_cov", "zico", "meco", "zen", "grasp"]
    for seed in range(20):  # warm-up: allocator pools and lazy imports settle
        compute_scores(small_cnn, names, batch=image_batch, seed=seed)
    start = _rss_bytes()
    values = [compute_scores(small_cnn, names, batch=image_batch, seed=seed)["snip"] for seed in range(200)]
    growth = _rss_bytes() - start
    assert growth < 30 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 200 networks"
    assert len(set(np.round(values, 12))) > 150  # really different networks were scored
