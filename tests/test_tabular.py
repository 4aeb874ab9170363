"""Benchmark-table loading (clear errors), the table search space, the tabular evaluator and objectives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support_cli import CliResult, nasops

from nas.evaluators import TabularEvaluator
from nas.objectives import Constraints, best_feasible, objective_value, pareto_front
from nas.tabular import TableSpace, load_table


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_missing_column_names_the_columns_there_are(tmp_path):
    csv = write(tmp_path / "t.csv", "arch,acc\na|b,0.5\n")
    with pytest.raises(ValueError, match=r"metric column 'accuracy' is not in t.csv; its columns are: arch, acc"):
        load_table(csv, "arch", "accuracy")
    with pytest.raises(ValueError, match="architecture column 'name'"):
        load_table(csv, "name", "acc")
    with pytest.raises(ValueError, match="proxy column 'synflow'"):
        load_table(csv, "arch", "acc", proxy_columns=["synflow"])


def test_duplicate_architectures_are_reported_with_their_lines(tmp_path):
    csv = write(tmp_path / "t.csv", "arch,acc\na|b,0.5\nc|d,0.6\na|b,0.7\n")
    with pytest.raises(ValueError, match=r"1 duplicate architecture\(s\).*'a\|b' on lines \[2, 4\]"):
        load_table(csv, "arch", "acc")


def test_non_numeric_metric_names_the_row_and_value(tmp_path):
    csv = write(tmp_path / "t.csv", "arch,acc\na|b,0.5\nc|d,oops\n")
    with pytest.raises(ValueError, match=r"metric column 'acc' must be numeric, but row 3 \(architecture 'c\|d'\) "
                                         r"holds 'oops'"):
        load_table(csv, "arch", "acc")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_table(tmp_path / "nope.csv", "arch", "acc")


def test_fidelity_cost_and_proxy_columns(tmp_path):
    csv = write(tmp_path / "t.csv", """
arch,acc,acc@1,acc@4,seconds,synflow
a|x,0.9,0.5,0.8,10,3
a|y,0.7,0.6,0.65,20,1
b|x,0.8,0.4,0.7,30,2
""")
    table = load_table(csv, "arch", "acc", proxy_columns=["synflow"], cost_column="seconds")
    assert set(table.fidelities["acc"]) == {1, 4}
    ev = TabularEvaluator(table)
    space = TableSpace(table.archs)
    arch = space.from_string("a|x")
    full = ev.evaluate(arch)
    assert full.metrics["acc"] == 0.9 and full.cost == 10 and full.metrics["proxy.synflow"] == 3
    low = ev.evaluate(arch, {"epochs": 2})
    assert low.metrics["acc"] == 0.5 and low.fidelity == {"epochs": 1} and low.cost == pytest.approx(2.5)
    assert ev.evaluate(arch, {"epochs": 4}).metrics["acc"] == 0.8
    assert table.optimum("acc") == 0.9
    with pytest.raises(KeyError, match="not in the table"):
        ev.evaluate(TableSpace(["c|z"]).from_string("c|z"))
    with pytest.raises(ValueError, match="choose one of"):
        TabularEvaluator(table, "latency")


def test_table_space_neighbours_encoding_and_strings():
    space = TableSpace(["a|x|1", "a|y|1", "b|x|1", "b|y|1", "c|y|1"])
    arch = space.from_string("a|x|1")
    assert sorted(a.string for a in space.neighbours(arch)) == ["a|y|1", "b|x|1"]
    assert space.encode(arch).shape == (5,)  # 3 + 2 values; the constant position is not a decision
    assert space.encode(arch).sum() == 2
    rng = np.random.default_rng(0)
    assert space.mutate(arch, rng).string in {"a|y|1", "b|x|1"}
    assert space.size() == 5 and len(list(space.enumerate())) == 5
    with pytest.raises(ValueError, match="not a row"):
        space.from_string("z|z|1")
    with pytest.raises(NotImplementedError, match="--space"):
        space.build(arch, 10, (3, 32, 32))


def test_constraints_and_pareto_front():
    points = [
        {"acc": 0.90, "latency_ms": 3.0, "params": 10},
        {"acc": 0.85, "latency_ms": 1.0, "params": 5},
        {"acc": 0.80, "latency_ms": 2.0, "params": 7},  # dominated by the second
        {"acc": 0.95, "latency_ms": 5.0, "params": 20},
    ]
    assert pareto_front(points, "acc", "latency_ms") == [1, 0, 3]
    under_2ms = Constraints(max_latency_ms=2.0)
    assert best_feasible(points, "acc", under_2ms) == 1
    assert best_feasible(points, "acc") == 3
    assert under_2ms.violations(points[0]) == ["latency_ms=3 exceeds the bound 2"]
    assert objective_value(points[0], "acc", under_2ms) == float("-inf")
    assert "was not measured" in Constraints(max_params=5).violations({"acc": 1.0})[0]
    with pytest.raises(ValueError, match="max_latency_ms must be > 0"):
        Constraints(max_latency_ms=0)
    with pytest.raises(KeyError, match="no metric 'top1'"):
        objective_value(points[0], "top1")


def _toy_csv(path: Path) -> Path:
    rows = ["arch,acc,size"]
    for i, a in enumerate("abcd"):
        for j, b in enumerate("wxyz"):
            rows.append(f"{a}|{b},{0.5 + 0.1 * i + 0.01 * j:.3f},{100 + i}")
    return write(path, "\n".join(rows))


def _nasops(*args: str) -> CliResult:
    """``nasops ARGS`` in-process (``support_cli``: the console script's own exit-code mapping)."""
    return nasops(*args)


def test_bench_search_cli_json_shape_and_errors(tmp_path):
    csv = _toy_csv(tmp_path / "toy.csv")
    done = _nasops("bench", "search", "--table", str(csv), "--arch-column", "arch", "--metric-column", "acc",
                   "--proxy-columns", "size", "--strategy", "all", "--budget", "8", "--seeds", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["optimum"] == pytest.approx(0.83)
    assert set(out["strategies"]) == {"random", "evolution", "local", "predictor", "hyperband", "rl", "bo", "bohb"}
    for curve in out["strategies"].values():
        assert curve["budgets"] == list(range(1, 9))
        assert len(curve["mean_best"]) == len(curve["mean_regret"]) == 8
        assert all(np.diff(curve["mean_best"]) >= 0)
        assert curve["mean_regret"][-1] == pytest.approx(out["optimum"] - curve["mean_best"][-1])
    bad = _nasops("bench", "search", "--table", str(csv), "--metric-column", "accuracy")
    assert bad.returncode == 2
    assert "metric column 'accuracy' is not in toy.csv; its columns are: arch, acc, size" in bad.stderr
    assert "Traceback" not in bad.stderr
