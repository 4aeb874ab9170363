"""The scorer's fast paths change no score: closed-form FLOPs and CPU-only seeding against the slow path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.datasets import bundled_task
from nas.pool import sample_pool
from nas.prefilter import CHEAP_DEFAULT, prefilter
from nas.proxies import compute_scores
from nas.proxies.context import fast_paths, fast_paths_enabled, seed_cpu
from nas.proxies.cost import analytic_flops
from nas.spaces import get_space

SHAPE, CLASSES = (64,), 10


@pytest.fixture(scope="module")
def mlp_pool():
    space = get_space("mlp")
    return sample_pool(space, 80, seed=11)  # every act / norm / dropout / residual choice appears


def _counted(model: nn.Module) -> float:
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *SHAPE))
    return float(counter.get_total_flops())


def test_closed_form_flops_of_a_small_mlp_by_hand():
    arch = get_space("mlp").from_string("depth=2|widths=32-64|act=gelu|norm=layer|dropout=0.1|residual=0")
    model = arch.build(CLASSES, SHAPE)
    # two multiply-adds per weight of each linear layer on one input row: 64x32, 32x64, 64x10
    assert analytic_flops(model) == 2 * (64 * 32 + 32 * 64 + 64 * 10) == 9472
    assert _counted(model) == 9472


def test_closed_form_flops_equal_the_flop_counter_on_a_pool(mlp_pool):
    for arch in mlp_pool:
        model = arch.build(CLASSES, SHAPE)
        assert analytic_flops(model) == _counted(model), arch.string


def test_closed_form_flops_decline_networks_they_cannot_count_exactly():
    nb201 = get_space("nb201", C=4, N=1)
    assert analytic_flops(nb201.sample(np.random.default_rng(0)).build(CLASSES, (1, 8, 8))) is None
    model = get_space("mlp").from_string("depth=1|widths=32|act=relu|norm=none|dropout=0|residual=0").build(
        CLASSES, SHAPE)
    model.hidden[0].body.append(nn.Softplus())  # an unknown part: the counter decides
    assert analytic_flops(model) is None


def test_cpu_seeding_gives_torch_manual_seed_stream():
    torch.manual_seed(5)
    expected = torch.rand(8)
    seed_cpu(5)
    assert torch.equal(torch.rand(8), expected)


def test_fast_and_slow_paths_give_identical_cheap_scores(mlp_pool):
    def scores() -> list[dict[str, float]]:
        return [
            compute_scores(lambda a=a: a.build(CLASSES, SHAPE), list(CHEAP_DEFAULT), input_shape=SHAPE,
                           num_classes=CLASSES, seed=3)
            for a in mlp_pool
        ]

    fast = scores()
    with fast_paths(False):
        assert not fast_paths_enabled()
        slow = scores()
    assert fast_paths_enabled()
    assert fast == slow  # exact, not approximately: same weights, same synflow, same counts
    assert len({s["synflow"] for s in fast}) > len(fast) // 2  # real, varied scores


def test_prefilter_ranking_is_unchanged_by_the_fast_paths(mlp_pool):
    space, data = get_space("mlp"), bundled_task("digits", seed=0)
    kwargs = {"keep": 5, "costly_fraction": 0.25, "ensemble": ["synflow", "params", "meco"], "seed": 1}
    fast = prefilter(space, mlp_pool, data, **kwargs)
    with fast_paths(False):
        slow = prefilter(space, mlp_pool, data, **kwargs)
    assert [(k.arch.string, k.scores, k.rank_score) for k in fast] == [
        (k.arch.string, k.scores, k.rank_score) for k in slow
    ]
