"""DARTS on the NB201 cell: architecture weights move under both orders, the discretised cell is an ordinary valid
nb201 architecture, and the two collapse guards (DARTS+ early stop, DARTS-PT selection) do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nas.supernet.darts as darts_module
from nas.datasets import bundled_task
from nas.spaces import get_space
from nas.spaces.nb201 import EDGES, OPS
from nas.supernet import DartsConfig, darts_search, plot_darts_alphas
from nas.supernet.darts import discretize


@pytest.fixture(scope="module")
def data():
    return bundled_task("digits", seed=0).subset(0.4, seed=0)


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", C=4, N=1)


def alpha_matrix(row: dict) -> np.ndarray:
    return np.array([[row[f"alpha.{s}_{t}.{op}"] for op in OPS] for s, t in EDGES])


@pytest.fixture(scope="module")
def first_order(data, space):
    torch.set_num_threads(1)
    return darts_search(space, data, DartsConfig(epochs=3, selection="argmax", max_skip=None, arch_lr=0.01))


def test_first_order_moves_the_architecture_weights(first_order, space):
    history = first_order.history
    assert len(history) == 3 and not first_order.stopped_early
    start, end = alpha_matrix(history[0]), alpha_matrix(history[-1])
    assert np.allclose(start.sum(1), 1.0) and np.allclose(end.sum(1), 1.0)
    assert np.abs(end - 1 / len(OPS)).max() > 0.01  # moved away from uniform
    assert np.abs(end - start).max() > 1e-3  # and kept moving
    assert np.allclose(first_order.alphas, end, atol=1e-6)


def test_discretised_cell_is_a_valid_nb201_architecture(first_order, space):
    arch = first_order.arch
    assert arch.space == space and space.from_string(arch.string) == arch
    ops = space.to_ops(arch)
    assert "none" not in ops  # DARTS keeps the strongest non-zero operation
    assert ops == discretize(np.log(first_order.alphas))  # argmax of the final weights
    assert history_arch_matches(first_order)
    assert arch.build(10, (1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def history_arch_matches(result) -> bool:
    return result.history[-1]["arch"] == result.argmax_arch.string


def test_second_order_uses_the_unrolled_gradient(data, space):
    result = darts_search(space, data.subset(0.5, seed=1), DartsConfig(epochs=1, order="second", selection="argmax",
                                                                       max_skip=None, arch_lr=0.01))
    alphas = alpha_matrix(result.history[-1])
    assert np.isfinite(alphas).all() and np.abs(alphas - 1 / len(OPS)).max() > 1e-3
    assert space.from_string(result.arch.string) == result.arch


def test_perturbation_selection_scores_every_candidate_of_every_edge(data, space):
    result = darts_search(space, data, DartsConfig(epochs=1, selection="pt", max_skip=None, pt_finetune_steps=2))
    assert set(result.pt_scores) == {f"{s}_{t}" for s, t in EDGES}
    for edge, scores in result.pt_scores.items():
        assert set(scores) == set(OPS) - {"none"}
        chosen = space.to_ops(result.arch)[[f"{s}_{t}" for s, t in EDGES].index(edge)]
        assert scores[chosen] == min(scores.values())  # the op whose removal hurt most was kept
    assert "none" not in space.to_ops(result.arch)


def test_darts_plus_stops_when_skip_connections_take_over(data, space, monkeypatch):
    collapsed = ("skip_connect",) * len(EDGES)
    monkeypatch.setattr(darts_module, "discretize", lambda alphas, ops=OPS: collapsed)
    result = darts_search(space, data, DartsConfig(epochs=5, selection="argmax", max_skip=2, early_stop_from=2))
    assert result.stopped_early and len(result.history) == 2  # not judged before epoch early_stop_from
    assert "max_skip=2" in result.stop_reason
    assert result.history[0]["skip_count"] == len(EDGES)


def test_darts_rejects_bad_settings(data):
    with pytest.raises(ValueError, match="order"):
        DartsConfig(order="third")
    with pytest.raises(ValueError, match="selection"):
        DartsConfig(selection="best")
    with pytest.raises(ValueError, match="max_skip"):
        DartsConfig(max_skip=0)
    with pytest.raises(ValueError, match="early_stop_from"):
        DartsConfig(early_stop_from=0)
    with pytest.raises(ValueError, match="nb201"):
        darts_search(get_space("mlp"), data)


def test_alpha_plot_is_a_png(first_order, tmp_path):
    path = plot_darts_alphas(first_order.history, tmp_path / "alphas.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
