"""Each strategy's ask/tell contract on a small synthetic table space, plus the predictors themselves."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau

from nas.evaluators import Result, TabularEvaluator
from nas.objectives import Constraints
from nas.predictors import get_predictor
from nas.strategies import get_strategy, list_strategies, zero_cost_order
from nas.strategies.predictor import acquisition
from nas.tabular import BenchmarkTable, TableSpace

OPS = ("a", "b", "c", "d", "e")
ARCH_LEVEL = list_strategies(multi_fidelity=False)  # schedulers re-evaluate archs at higher rungs: own tests


def toy_table(seed: int = 0) -> BenchmarkTable:
    """625 architectures ``x|y|z|w``; accuracy = additive op weights + one interaction + small noise."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, len(OPS)))
    archs, acc = [], []
    for combo in itertools.product(range(len(OPS)), repeat=4):
        archs.append("|".join(OPS[i] for i in combo))
        value = sum(weights[p, i] for p, i in enumerate(combo)) + 0.5 * (combo[0] == combo[1])
        acc.append(value)
    acc = np.array(acc)
    acc = 0.5 + 0.4 * (acc - acc.min()) / (acc.max() - acc.min()) + rng.normal(scale=0.005, size=len(acc))
    params = 1000 + 500 * acc + rng.normal(scale=20, size=len(acc))  # a decent zero-cost proxy
    latency = rng.uniform(0.5, 3.0, size=len(acc))
    return BenchmarkTable(archs, {"val_accuracy": acc, "latency_ms": latency, "params": params},
                          proxies={"params": params})


@pytest.fixture(scope="module")
def table() -> BenchmarkTable:
    return toy_table()


@pytest.fixture(scope="module")
def space(table) -> TableSpace:
    return TableSpace(table.archs)


def drive(strategy, evaluator, budget: int, batch: int = 1) -> list[str]:
    seen: list[str] = []
    while len(seen) < budget:
        for arch in strategy.ask(batch):
            strategy.tell(arch, evaluator.evaluate(arch))
            seen.append(arch.string)
    return seen


@pytest.mark.parametrize("name", ARCH_LEVEL)
def test_ask_returns_unseen_architectures_of_the_space(name, table, space):
    strategy = get_strategy(name, space, seed=1, n_init=4) if name == "predictor" else get_strategy(name, space)
    evaluator = TabularEvaluator(table)
    proposed = drive(strategy, evaluator, 40, batch=4)
    assert len(proposed) == 40
    assert len(set(proposed)) == 40, "a strategy proposed the same architecture twice"
    assert all(a in space.index for a in proposed)
    assert len(strategy.history) == 40
    assert strategy.best.score == max(table.metrics["val_accuracy"][space.index[a]] for a in proposed)


@pytest.mark.parametrize("name", ARCH_LEVEL)
def test_same_seed_same_proposals(name, table, space):
    runs = []
    budget = 14 if name == "predictor" else 25
    kw = {"n_init": 4, "predictor": "mlp", "predictor_kwargs": {"steps": 60}} if name == "predictor" else {}
    for _ in range(2):
        strategy = get_strategy(name, space, seed=7, **kw)
        runs.append(drive(strategy, TabularEvaluator(table), budget))
    assert runs[0] == runs[1]
    other = drive(get_strategy(name, space, seed=8, **kw), TabularEvaluator(table), budget)
    assert other != runs[0]


@pytest.mark.parametrize("name", ARCH_LEVEL)
def test_warm_start_is_proposed_first(name, table, space):
    order = zero_cost_order(table.proxies)
    warm = [space.from_string(table.archs[i]) for i in order[:3]]
    strategy = get_strategy(name, space, seed=0, warm_start=warm)
    assert [a.string for a in strategy.ask(3)] == [a.string for a in warm]


def test_ask_needs_a_positive_n_and_unknown_names_are_named(space):
    strategy = get_strategy("random", space)
    with pytest.raises(ValueError, match="n >= 1"):
        strategy.ask(0)
    with pytest.raises(KeyError, match="choose one of: random, evolution, local, predictor"):
        get_strategy("bayesian", space)
    with pytest.raises(ValueError, match="unknown acquisition"):
        get_strategy("predictor", space, acquisition="pi")
    with pytest.raises(KeyError, match="unknown predictor"):
        get_strategy("predictor", space, predictor="xgboost")


def test_random_search_exhausts_a_finite_space_without_repeats():
    small = TableSpace(["a|x", "a|y", "b|x", "b|y"])
    strategy = get_strategy("random", small, seed=0)
    got = strategy.ask(4)
    assert sorted(a.string for a in got) == sorted(small.archs)
    assert strategy.ask(1) == []


def test_regularized_evolution_retires_the_oldest(table, space):
    strategy = get_strategy("evolution", space, seed=0, population_size=5, tournament_size=2)
    evaluator = TabularEvaluator(table)
    told = drive(strategy, evaluator, 12)
    assert [o.arch.string for o in strategy.population] == told[-5:]
    # after the random initial population, children are one mutation away from a population member
    child = strategy.ask(1)[0]
    parents = {o.arch.string for o in strategy.population}
    assert any(child.string in {n.string for n in space.neighbours(space.from_string(p))} for p in parents)


def test_local_search_climbs_to_a_better_neighbour(table, space):
    strategy = get_strategy("local", space, seed=3)
    evaluator = TabularEvaluator(table)
    start = strategy.ask(1)[0]
    strategy.tell(start, evaluator.evaluate(start))
    neighbours = {a.string for a in space.neighbours(start)}
    batch = strategy.ask(len(neighbours))
    assert {a.string for a in batch} == neighbours  # the whole neighbourhood first
    for arch in batch:
        strategy.tell(arch, evaluator.evaluate(arch))
    best_neighbour = max(batch, key=lambda a: evaluator.true_value(a))
    nxt = strategy.ask(1)[0]
    if evaluator.true_value(best_neighbour) > evaluator.true_value(start):
        assert strategy.center.arch.string == best_neighbour.string
        assert nxt.string in {a.string for a in space.neighbours(best_neighbour)}


def test_constraints_make_infeasible_results_worthless(table, space):
    strategy = get_strategy("evolution", space, constraints=Constraints(max_latency_ms=1.0))
    arch = space.from_string(table.archs[0])
    strategy.tell(arch, Result({"val_accuracy": 0.99, "latency_ms": 2.0}))
    assert strategy.history[-1].score == float("-inf")
    assert strategy.best is None


def test_predictor_strategy_beats_random_on_a_learnable_table(table, space):
    evaluator = TabularEvaluator(table)
    optimum = table.optimum("val_accuracy")
    order = zero_cost_order(table.proxies)
    pool = [space.from_string(table.archs[i]) for i in order[:200]]
    regrets = {"random": [], "predictor": []}
    for seed in range(3):
        for name in regrets:
            kw = {"pool": pool, "proxies": {a: {"params": float(v)} for a, v in
                                            zip(table.archs, table.proxies["params"], strict=True)}} \
                if name == "predictor" else {}
            strategy = get_strategy(name, space, seed=seed, **kw)
            drive(strategy, evaluator, 30, batch=5)
            regrets[name].append(optimum - strategy.best.score)
    assert np.mean(regrets["predictor"]) < np.mean(regrets["random"])
    assert np.mean(regrets["predictor"]) < 0.03


@pytest.mark.parametrize("name", ["mlp", "lgbm"])
def test_predictors_rank_unseen_architectures(name, table, space):
    rng = np.random.default_rng(0)
    idx = rng.choice(len(table), 150, replace=False)
    x = np.stack([space.encode(space.from_string(table.archs[i])) for i in range(len(table))])
    y = table.metrics["val_accuracy"]
    model = get_predictor(name, seed=0).fit(x[idx], y[idx])
    rest = np.setdiff1d(np.arange(len(table)), idx)
    mean, std = model.predict(x[rest])
    assert mean.shape == std.shape == (len(rest),)
    assert np.all(std >= 0) and std.mean() > 0
    assert kendalltau(mean, y[rest]).statistic > 0.5
    again = get_predictor(name, seed=0).fit(x[idx], y[idx]).predict(x[rest])[0]
    np.testing.assert_allclose(mean, again)


def test_acquisition_functions():
    rng = np.random.default_rng(0)
    mean = np.array([0.5, 0.6, 0.55])
    std = np.array([0.0001, 0.0001, 0.2])
    assert np.argmax(acquisition("ucb", mean, std, 0.6, rng, kappa=1.0)) == 2
    ei = acquisition("ei", mean, std, 0.6, rng)
    assert np.argmax(ei) == 2 and np.all(ei >= 0)
    draws = np.stack([acquisition("its", mean, std, 0.6, rng) for _ in range(500)])
    assert abs(draws[:, 1].mean() - 0.6) < 0.01
    # greedy exploits: the highest mean wins whatever the spread (the uncertain third candidate loses here)
    greedy = acquisition("greedy", mean, std, 0.6, rng)
    assert np.argmax(greedy) == 1 and np.array_equal(greedy, mean)
