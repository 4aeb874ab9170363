"""Once-for-All elastic MLP: sub-networks equal their extracted MLPNetwork, progressive shrinking runs in order, and
the sub-network picked for a latency budget meets it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nas.datasets import bundled_task
from nas.spaces import get_space
from nas.spaces.mlp import MLPConfig
from nas.supernet import ElasticConfig, ElasticMLP, SPOSConfig, SupernetEvaluator, pick_for_latency
from nas.supernet.elastic import DynamicBatchNorm1d, shrinking_schedule


@pytest.fixture(scope="module")
def data():
    return bundled_task("digits", seed=0)


@pytest.fixture(scope="module")
def space():
    return get_space("mlp", max_depth=3, widths=[16, 32, 64])


@pytest.fixture(scope="module")
def fitted(data, space):
    torch.set_num_threads(1)
    config = ElasticConfig(full_epochs=1, depth_epochs=2, width_epochs=2, spos=SPOSConfig(batch_size=128))
    return SupernetEvaluator(data, space, config).fit()


def n_params(module: torch.nn.Module) -> float:
    return float(sum(p.numel() for p in module.parameters()))


def test_every_sub_network_equals_its_extracted_mlp(fitted, data, space):
    x, _ = data.tensors("val")
    configs = [
        MLPConfig((64, 64, 64), "relu", "batch", 0.0, True),
        MLPConfig((16,), "tanh", "layer", 0.1, False),
        MLPConfig((32, 16), "gelu", "none", 0.2, False),
        MLPConfig((64, 32, 32), "silu", "batch", 0.0, True),
    ]
    for cfg in configs:
        arch = space.from_config(cfg)
        module = fitted.extract(arch)
        assert type(module).__name__ == "MLPNetwork"
        assert n_params(module) == space.count_params(arch, 10, (1, 8, 8))
        with torch.no_grad():
            assert torch.allclose(module(x), fitted.net(x, path=cfg), atol=1e-5), cfg


def test_width_slices_share_one_weight_tensor_per_layer(space):
    net = ElasticMLP(space, 64, 10)
    assert len(net.linears) == space.max_depth
    narrow, wide = MLPConfig((16, 16), "relu", "none", 0.0, False), MLPConfig((64, 64), "relu", "none", 0.0, False)
    x = torch.randn(4, 64)
    grads = []
    for cfg in (narrow, wide):
        net.zero_grad(set_to_none=True)
        net(x, path=cfg).sum().backward()
        grads.append(net.linears[1].weight.grad.clone())
    assert float(grads[0][:16, :16].abs().sum()) > 0 and float(grads[0][16:].abs().sum()) == 0
    assert float(grads[1][16:].abs().sum()) > 0


def test_unit_sorting_keeps_the_full_width_function(space):
    torch.manual_seed(1)
    net = ElasticMLP(space, 40, 10).eval()  # 40 inputs: no width matches, so residuals join hidden layers only
    cfg = MLPConfig((64, 64, 64), "relu", "layer", 0.0, True)
    x = torch.randn(5, 40)
    with torch.no_grad():
        before = net(x, path=cfg)
        net.sort_units()
        after = net(x, path=cfg)
    assert torch.allclose(before, after, atol=1e-5)
    importance = sum(lin.weight.abs().sum(1) for lin in net.linears)
    assert torch.all(importance[:-1] >= importance[1:] - 1e-6)


def test_dynamic_batch_norm_updates_only_the_used_units():
    bn = DynamicBatchNorm1d(8)
    bn.train()
    bn(torch.randn(16, 3) + 5.0)
    assert torch.all(bn.running_mean[:3] > 0.1) and torch.all(bn.running_mean[3:] == 0)


def test_progressive_shrinking_schedule_grows_the_choices_in_ofa_order():
    config = ElasticConfig(full_epochs=2, depth_epochs=4, width_epochs=6)
    sched = shrinking_schedule(config, 4, (32, 64, 128, 256))
    assert [p for p, _, _ in sched] == ["full"] * 2 + ["depth"] * 4 + ["width"] * 6
    assert sched[0][1:] == ((4,), (256,))
    depth_sets = [set(d) for p, d, _ in sched if p == "depth"]
    width_sets = [set(w) for p, _, w in sched if p == "width"]
    assert all(a <= b for a, b in itertools.pairwise(depth_sets))
    assert all(a <= b for a, b in itertools.pairwise(width_sets))
    assert width_sets[-1] == {32, 64, 128, 256} and depth_sets[-1] == {1, 2, 3, 4}


def test_elastic_history_records_the_phases(fitted):
    assert [row["phase"] for row in fitted.history] == [0.0, 1.0, 1.0, 2.0, 2.0]


def test_pick_meets_the_budget_it_was_picked_for(fitted, space):
    candidates = space.sample_many(40, np.random.default_rng(0))
    cache: dict = {}
    proxy = n_params  # deterministic latency stand-in: parameters of the real extracted module
    sizes = sorted(proxy(fitted.extract(a)) for a in candidates)
    budgets = [sizes[-1], sizes[len(sizes) // 2], sizes[0]]
    picks = [pick_for_latency(fitted, b, candidates=candidates, latency_fn=proxy, cache=cache) for b in budgets]
    ranked = cache["ranked"]
    for budget, pick in zip(budgets, picks, strict=True):
        assert proxy(pick.module) <= budget
        assert pick.latency_ms == proxy(pick.module)
        better = [a for a, r in ranked if r.metrics["val_accuracy"] > pick.val_accuracy]
        assert all(proxy(fitted.extract(a)) > budget for a in better)  # nothing more accurate fits
    accs = [p.val_accuracy for p in picks]
    assert accs == sorted(accs, reverse=True)  # a tighter budget never buys a better network
    with pytest.raises(ValueError, match="raise the budget"):
        pick_for_latency(fitted, sizes[0] / 2, candidates=candidates, latency_fn=proxy, cache=cache)


def test_pick_with_a_generous_measured_budget(fitted, space, data):
    from nas.trainer import measure_latency_ms

    candidates = space.sample_many(5, np.random.default_rng(1))
    pick = pick_for_latency(fitted, 10_000.0, candidates=candidates)
    assert pick.latency_ms <= 10_000.0 and pick.timed == 1
    assert measure_latency_ms(pick.module, data.input_shape, repeats=3) < 10_000.0


def test_elastic_config_is_validated():
    with pytest.raises(ValueError, match="paths_per_step"):
        ElasticConfig(paths_per_step=0)
    with pytest.raises(ValueError, match="at least one epoch"):
        ElasticConfig(full_epochs=0, depth_epochs=0, width_epochs=0)
