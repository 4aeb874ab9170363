"""The rl, bo and bohb strategies: the categorical seam they need, their papers' mechanics, and that each beats
random search at the same budget on a real benchmark table (nas-bench-graph, Amazon Computers), across seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.benchmarking import table_search
from nas.evaluators import Result, TabularEvaluator
from nas.search import run_search
from nas.spaces import get_space
from nas.spaces.base import InvalidArchitectureError
from nas.strategies import STRATEGIES, get_strategy, list_strategies
from nas.strategies.bo import CategoricalKDE
from nas.tabular import TableSpace, load_table

ROOT = Path(__file__).resolve().parents[1]
NEW = ("rl", "bo", "bohb")


@pytest.fixture(scope="module")
def computers():
    table = load_table(ROOT / "benchmarks/tables/nas_bench_graph_computers.csv", "arch", "val_accuracy",
                       proxy_columns=["params"])
    return table, TableSpace(table.archs)


# -- the categorical seam ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nb201", "mlp"])
def test_spaces_round_trip_through_their_categorical_decisions(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    sizes = [len(options) for _, options in space.categorical()]
    for _ in range(100):
        arch = space.sample(rng)
        index = space.categorical_index(arch)
        assert len(index) == len(sizes) and all(0 <= i < k for i, k in zip(index, sizes, strict=True))
        assert space.from_categorical(index).string == arch.string


def test_a_table_space_says_which_combinations_it_does_not_hold(computers):
    table, space = computers
    sizes = [len(o) for _, o in space.categorical()]
    assert sizes == [9, 9, 9, 9, 9]  # 59,049 combinations, 26,206 rows
    arch = space.from_string(table.archs[123])
    assert space.from_categorical(space.categorical_index(arch)).string == arch.string
    rng = np.random.default_rng(0)
    missing = 0
    for _ in range(200):
        try:
            space.from_categorical([int(rng.integers(k)) for k in sizes])
        except InvalidArchitectureError:
            missing += 1
    assert 60 < missing < 160


def test_spaces_without_categorical_decisions_are_refused_with_a_reason():
    vit = get_space("vit")
    for name in ("rl", "bo", "bohb"):
        with pytest.raises(ValueError, match="categorical decisions"):
            get_strategy(name, vit)


def test_registry_metadata_and_kwarg_checks(computers):
    _, space = computers
    described = {e["name"]: e for e in STRATEGIES.describe()}
    assert set(NEW) <= set(described) and all(described[n]["paper"] for n in described)
    assert described["bohb"]["multi_fidelity"] and "bohb" in list_strategies(multi_fidelity=True)
    assert "rl" in list_strategies(multi_fidelity=False)
    with pytest.raises(ValueError, match=r"takes no argument 'population_size'; it takes: .*latency_target_ms"):
        get_strategy("rl", space, population_size=3)
    get_strategy("bo", space, proxies={"x": {}})  # context every strategy may be offered, ignored by bo


# -- REINFORCE -----------------------------------------------------------------------------------------------------
def test_reinforce_moves_the_policy_towards_rewarded_decisions():
    space = get_space("nb201")
    rl = get_strategy("rl", space, seed=0, lr=0.2)
    good = space.from_ops(["nor_conv_3x3"] * 6)
    bad = space.from_ops(["none"] * 6)
    before = rl.probabilities()[0][space.categorical_index(good)[0]]
    for i in range(30):
        rl.tell(good if i % 2 else bad, Result({"val_accuracy": 0.9 if i % 2 else 0.1}))
    after = rl.probabilities()[0][space.categorical_index(good)[0]]
    assert after > before + 0.2
    assert rl.probabilities()[0][space.categorical_index(bad)[0]] < 0.1
    assert rl.baseline is not None and 0.1 < rl.baseline < 0.9  # the moving average of the rewards


def test_reinforce_uses_the_mnasnet_latency_reward():
    space = get_space("nb201")
    rl = get_strategy("rl", space, latency_target_ms=2.0)
    arch = space.from_ops(["nor_conv_3x3"] * 6)
    from nas.strategies.base import Observation

    slow = rl.reward(Observation(arch, Result({"val_accuracy": 0.8, "latency_ms": 4.0}), 0.8))
    fast = rl.reward(Observation(arch, Result({"val_accuracy": 0.8, "latency_ms": 1.0}), 0.8))
    assert slow == pytest.approx(0.8 * 2.0 ** -0.07) and fast == pytest.approx(0.8 * 0.5 ** -0.07)


# -- TPE / BOHB ----------------------------------------------------------------------------------------------------
def test_kde_prefers_points_near_its_data():
    sizes = np.array([3, 3])
    kde = CategoricalKDE(np.array([[0, 0], [0, 1]]), sizes, bandwidth=0.2)
    dens = np.exp(kde.log_density(np.array([[0, 0], [2, 2], [0, 1]])))
    assert dens[0] > dens[2] * 0.9 and dens[0] > 3 * dens[1]
    all_points = np.array([[i, j] for i in range(3) for j in range(3)])
    assert np.exp(kde.log_density(all_points)).sum() == pytest.approx(1.0)


def test_bo_batches_are_distinct_and_never_repeat_or_leave_the_table(computers):
    table, space = computers
    bo = get_strategy("bo", space, seed=0, n_startup=5)
    result = run_search(bo, TabularEvaluator(table), budget=40, batch=5)
    archs = [r.arch for r in result.records]
    assert len(set(archs)) == 40 and all(a in space.index for a in archs)
    assert bo.model_budget() == 0.0 and len(bo.observations[0.0]) == 40


def test_bohb_models_the_largest_budget_with_enough_results(computers):
    table, space = computers
    table = load_table(ROOT / "benchmarks/tables/nas_bench_graph_computers.csv", "arch", "val_accuracy")
    acc = table.metrics["val_accuracy"]
    noise = np.random.default_rng(0).normal(0, 0.01, size=len(acc))
    table.fidelities["val_accuracy"] = {1: acc - 0.05 + noise, 3: acc - 0.02 + noise / 2, 9: acc}
    bohb = get_strategy("bohb", space, seed=0, min_epochs=1, max_epochs=9, eta=3)
    assert bohb.model.min_points == len(space.categorical()) + 2
    result = run_search(bohb, TabularEvaluator(table), budget=13)  # the first bracket: 9 at 1, 3 at 3, 1 at 9
    assert [r.requested["epochs"] for r in result.records] == [1] * 9 + [3] * 3 + [9]
    assert bohb.model.model_budget() == 1.0  # 9 results at one epoch, too few elsewhere
    run_search(bohb, TabularEvaluator(table), budget=13 + 5 + 3)
    assert sorted(bohb.model.observations) == [1.0, 3.0, 9.0]


# -- better than random at the same budget --------------------------------------------------------------------------
@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_each_new_strategy_beats_random_search_at_the_same_budget(computers):
    """16 seeds x 150 evaluations each: lower mean regret than random, and more seeds within 0.5 accuracy points of
    the table's optimum (measured: random 0.0106 / 1 seed; rl 0.0068 / 4; bo 0.0054 / 5; bohb 0.0075 / 3)."""
    table, space = computers
    optimum = table.optimum("val_accuracy")
    regret = {}
    for name in ("random", *NEW):
        finals = [table_search(table, "val_accuracy", name, seed=s, budget=150, space=space)[0][-1]
                  for s in range(16)]
        regret[name] = optimum - np.array(finals)
    for name in NEW:
        assert regret[name].mean() < regret["random"].mean() - 0.002, (name, regret[name].mean())
        assert (regret[name] <= 0.005).sum() > (regret["random"] <= 0.005).sum(), name
