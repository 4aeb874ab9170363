"""The NB201 supernet: one weight tensor per operation per edge, paths that equal stand-alone networks, BN
recalibration, and the supernet as an Evaluator any strategy can search on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.datasets import bundled_task
from nas.search import run_search
from nas.spaces import get_space
from nas.spaces.nb201 import EDGES, OPS
from nas.strategies import get_strategy
from nas.supernet import NB201Supernet, SPOSConfig, SupernetEvaluator, plot_supernet_history, recalibrate_bn
from nas.supernet.spos import calibration_batches

PARAM_OPS = ("nor_conv_1x1", "nor_conv_3x3")  # the candidates that hold weights (conv + BN: 3 tensors each)


@pytest.fixture(scope="module")
def data():
    return bundled_task("digits", seed=0)


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", C=4, N=1)


@pytest.fixture(scope="module")
def fitted(data, space):
    torch.set_num_threads(1)
    return SupernetEvaluator(data, space, SPOSConfig(epochs=1, batch_size=128)).fit()


def test_each_operation_of_each_edge_holds_its_weights_once(space):
    net = NB201Supernet(space.C, space.N, 1, 10)
    tensors = list(net.parameters())
    assert len({id(t) for t in tensors}) == len(tensors)
    cells = 3 * space.N
    per_op: dict[tuple[int, tuple[int, int], str], list[torch.nn.Parameter]] = {}
    for cell in range(cells):
        for edge in EDGES:
            for op in OPS:
                params = net.candidate_parameters(cell, edge, op)
                assert len(params) == (3 if op in PARAM_OPS else 0), (cell, edge, op)
                per_op[(cell, edge, op)] = params
    owned = [id(p) for params in per_op.values() for p in params]
    assert len(owned) == len(set(owned)) == cells * len(EDGES) * len(PARAM_OPS) * 3
    # Skeleton (stem, reductions, last BN, classifier) + candidates = every tensor of the supernet, nothing else.
    skeleton = [p for name, p in net.named_parameters() if ".candidates." not in name]
    assert len(skeleton) + len(owned) == len(tensors)


def test_two_paths_through_one_operation_train_the_same_tensor(space):
    torch.manual_seed(0)
    net = NB201Supernet(space.C, space.N, 1, 10)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    conv = OPS.index("nor_conv_3x3")
    a = (conv, 1, 1, 1, 1, 1)  # edge 0->1 conv3x3, the rest skip
    b = (conv, 2, 2, 4, 4, 4)  # same op on edge 0->1, other ops elsewhere
    weight = net.candidate_parameters(0, (0, 1), "nor_conv_3x3")[0]
    other = net.candidate_parameters(0, (0, 2), "nor_conv_3x3")[0]
    grads = []
    for path in (a, b):
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x, path=path), y).backward()
        grads.append(weight.grad.clone())
        assert other.grad is None  # a candidate off the path is untouched
    assert all(float(g.abs().sum()) > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[1])  # the same tensor, trained in two different contexts


def test_fair_sampling_trains_every_operation_of_every_edge_once_per_step(space):
    net = NB201Supernet(space.C, space.N, 1, 10)
    paths = net.sample_paths(np.random.default_rng(3), fair=True)
    assert len(paths) == len(OPS)
    for e in range(len(EDGES)):
        assert sorted(p[e] for p in paths) == list(range(len(OPS)))
    assert len(net.sample_paths(np.random.default_rng(3), fair=False)) == 1


def test_extracted_network_equals_its_path(fitted, data, space):
    x, _ = data.tensors("val")
    for arch in space.sample_many(4, np.random.default_rng(5)):
        module = fitted.extract(arch)
        assert type(module) is type(arch.build(10, (1, 8, 8)))
        with torch.no_grad():
            expected = fitted.net(x, path=fitted.path_of(arch))  # extract left the recalibrated stats in place
            assert torch.allclose(module(x), expected, atol=1e-5)


def test_bn_recalibration_changes_the_statistics_to_the_paths_own(fitted, data, space):
    net = fitted.net
    bn = net.stem[1]
    arch = space.from_string("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    path = fitted.path_of(arch)
    conv_bn = net.cells[0].edges["0_1"].candidates["nor_conv_3x3"][2]
    before = conv_bn.running_mean.clone(), conv_bn.running_var.clone()
    batches = calibration_batches(data, fitted.config, torch.device("cpu"))
    recalibrate_bn(net, lambda xb: net(xb, path=path), batches)
    after = conv_bn.running_mean, conv_bn.running_var
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    # The stem's statistics are now the exact mean over the calibration rows (momentum=None averaging).
    with torch.no_grad():
        stem_out = net.stem[0](torch.cat(batches))
    assert torch.allclose(bn.running_mean, stem_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not net.training


def test_supernet_evaluator_result_is_deterministic_and_cheap(fitted, space):
    arch = space.sample(np.random.default_rng(0))
    first, second = fitted.evaluate(arch), fitted.evaluate(arch)
    assert first.metrics == second.metrics
    assert 0.0 <= first.metrics["val_accuracy"] <= 1.0
    assert first.metrics["neg_val_loss"] == -first.metrics["val_loss"]
    assert first.metrics["params"] == space.count_params(arch, 10, (1, 8, 8))
    assert first.fidelity["supernet"] == 1.0 and first.cost > 0
    assert fitted.history and fitted.history[-1]["paths"] > 0


def test_supernet_evaluator_rejects_bad_input(data, space, fitted):
    with pytest.raises(RuntimeError, match="fit"):
        SupernetEvaluator(data, space, SPOSConfig(epochs=1)).evaluate(space.sample(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="unknown fidelity key 'epochs'"):
        fitted.evaluate(space.sample(np.random.default_rng(0)), {"epochs": 3})
    other = get_space("nb201", C=8, N=1)
    with pytest.raises(ValueError, match="given to a supernet"):
        fitted.evaluate(other.sample(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="supports the spaces"):
        SupernetEvaluator(data, get_space("vit"))
    with pytest.raises(ValueError, match="sampling"):
        SPOSConfig(sampling="greedy")
    with pytest.raises(ValueError, match="metric"):
        SupernetEvaluator(data, space, metric="accuracy")


def test_evolution_searches_on_the_supernet(fitted, space):
    strategy = get_strategy("evolution", space, seed=0, population_size=6, tournament_size=3)
    result = run_search(strategy, fitted, budget=15)
    assert len(result.records) == 15
    assert result.best is not None and result.best.score == max(r.score for r in result.records)
    assert all(r.result.fidelity["supernet"] == 1.0 for r in result.records)


def test_supernet_history_plot_is_a_png(fitted, tmp_path):
    path = plot_supernet_history(fitted.history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when no GPU is present")
def test_asking_for_a_missing_gpu_says_so(data, space):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        SupernetEvaluator(data, space, SPOSConfig(device="cuda"))
