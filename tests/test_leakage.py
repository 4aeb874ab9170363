"""A feature that gives the target away is refused before training, named with its evidence (pipelines/leakage.py):
a wage table that carries ``logwage`` (a user's 3,000-row table reported a test RMSE of 1.36 on a target spread of
~40), parts that add up to the target, a relabelled copy of the class. Honest strong columns, identifiers and
constants pass; ``--allow-column NAME`` lets a column known at prediction time through."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support_cli import nasops

from pipelines.leakage import LeakageError, check_leakage, find_leaks
from pipelines.preprocessing import plan_columns


def _wages(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A CPS1988-like table: a heavy-tailed wage from education and experience, categories beside."""
    rng = np.random.default_rng(seed)
    education = rng.integers(0, 19, n)
    experience = rng.integers(0, 45, n)
    wage = np.round(np.exp(4.5 + 0.08 * education + 0.02 * experience + rng.normal(0, 0.55, n)), 2)
    return pd.DataFrame({"wage": wage, "education": education, "experience": experience,
                         "ethnicity": rng.choice(["cauc", "afam"], n, p=[0.9, 0.1]),
                         "region": rng.choice(["northeast", "south", "west", "midwest"], n)})


def _parts(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    """``total = part_a + part_b`` (cents), with an honest ``size`` strongly correlated with the total."""
    rng = np.random.default_rng(seed)
    part_a, part_b = np.round(rng.gamma(2.0, 100.0, n), 2), np.round(rng.gamma(3.0, 50.0, n), 2)
    total = part_a + part_b
    return pd.DataFrame({"size": total + rng.normal(0, 60, n), "part_a": part_a, "part_b": part_b,
                         "noise": rng.normal(size=n), "total": total})


def _churn(n: int = 4000, seed: int = 2) -> pd.DataFrame:
    """3 % positives, an honest predictor, and a relabelled copy of the class."""
    rng = np.random.default_rng(seed)
    churn = rng.choice(["yes", "no"], n, p=[0.03, 0.97])
    calls = rng.poisson(np.where(churn == "yes", 4, 1))
    return pd.DataFrame({"calls": calls, "plan": rng.choice(["a", "b", "c"], n),
                         "churned_flag": np.where(churn == "yes", "Y", "N"), "churn": churn})


def _leaks(frame: pd.DataFrame, target: str, task: str) -> list:
    x = frame.drop(columns=[target])
    return find_leaks(x, frame[target], task, plan_columns(x))


# -- the detectors -----------------------------------------------------------------------------------------------
def test_a_monotone_transform_of_the_target_is_found():
    frame = _wages()
    frame["logwage"] = np.log(frame["wage"])
    [leak] = _leaks(frame, "wage", "regression")
    assert leak.columns == ("logwage",) and "Spearman 1.000 with 'wage'" in leak.evidence
    assert _leaks(_wages(), "wage", "regression") == []  # the table without it is clean


def test_a_rounded_copy_and_a_non_monotone_code_of_the_target_are_found():
    frame = _wages()
    frame["wage_k"] = np.round(frame["wage"], -1)  # rounded to tens: still the target
    band = pd.qcut(frame["wage"], 60, labels=False)  # 60 wage bands, numbered in a shuffled order
    frame["band_code"] = np.random.default_rng(0).permutation(60)[band]
    found = {leak.columns: leak.evidence for leak in _leaks(frame, "wage", "regression")}
    assert set(found) == {("wage_k",), ("band_code",)}
    assert "Spearman" in found[("wage_k",)] and "of the ranks of 'wage' out of sample" in found[("band_code",)]


def test_parts_that_add_up_to_the_target_are_named_without_the_honest_column_picked_first():
    [leak] = _leaks(_parts(), "total", "regression")
    assert leak.columns == ("part_a", "part_b")  # not ``size``, the column most correlated with the total
    assert "parts that add up to the target" in leak.evidence and "R² 1.0000" in leak.evidence
    assert _leaks(_parts().drop(columns=["part_b"]), "total", "regression") == []  # one part alone is a feature


def test_parts_that_multiply_to_the_target_are_named():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"unit_price": np.round(rng.gamma(2.0, 10.0, 3000), 2), "quantity": rng.integers(1, 20, 3000),
                          "store": rng.choice(["n", "s"], 3000)})
    frame["revenue"] = frame["unit_price"] * frame["quantity"]
    [leak] = _leaks(frame, "revenue", "regression")
    assert leak.columns == ("unit_price", "quantity") and "parts that multiply to the target" in leak.evidence


def test_a_linear_target_with_honest_noise_is_not_called_parts():
    """y = 3a - 2b + noise of 3 % of its spread: a formula with noise (R² 0.999), not parts that add up to it."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(size=3000)})
    frame["y"] = 3 * frame["a"] - 2 * frame["b"] + rng.normal(0, 0.1, 3000)
    assert _leaks(frame, "y", "regression") == []


def test_a_relabelled_copy_of_a_rare_class_is_found_and_an_honest_predictor_is_not():
    frame = _churn()
    frame["churn_code"] = (frame["churn"] == "yes").astype(int)
    found = {leak.columns: leak.evidence for leak in _leaks(frame, "churn", "classification")}
    assert set(found) == {("churned_flag",), ("churn_code",)}
    assert "balanced accuracy 1.000" in found[("churned_flag",)]


def test_a_class_made_by_thresholding_a_column_is_found():
    frame = _wages(n=1000)
    frame["high"] = np.where(frame["wage"] > frame["wage"].quantile(0.9), "high", "low")
    [leak] = _leaks(frame, "high", "classification")
    assert leak.columns == ("wage",) and "balanced accuracy" in leak.evidence


def test_a_column_that_only_finds_the_majority_class_is_not_a_leak():
    """Plain accuracy 0.97 is "always No" on 3 % positives; balanced accuracy says 0.5."""
    frame = _churn().drop(columns=["churned_flag"])
    frame["mostly_no"] = np.where(frame["churn"] == "no", "N", np.random.default_rng(0).choice(["N", "Y"], len(frame)))
    assert _leaks(frame, "churn", "classification") == []


def test_identifiers_constants_and_strong_honest_columns_pass():
    rng = np.random.default_rng(3)
    n = 3000
    signal = rng.normal(size=n)
    frame = pd.DataFrame({"row_id": np.arange(n), "float_id": rng.permutation(n) + rng.uniform(size=n),
                          "constant": 1.0, "strong": signal + rng.normal(0, 0.1, n), "y": signal})
    assert np.corrcoef(frame["strong"], frame["y"])[0, 1] > 0.99  # honest and strong: R² 0.99 in sample
    assert _leaks(frame, "y", "regression") == []


def test_the_check_is_cheap_on_50k_rows():
    frame = pd.concat([_wages(n=10_000, seed=s) for s in range(5)], ignore_index=True)
    frame["logwage"] = np.log(frame["wage"])
    x = frame.drop(columns=["wage"])
    plan = plan_columns(x)
    started = time.perf_counter()
    leaks = find_leaks(x, frame["wage"], "regression", plan)
    assert time.perf_counter() - started < 5.0 and [leak.columns for leak in leaks] == [("logwage",)]


# -- the refusal -------------------------------------------------------------------------------------------------
def _check(frame: pd.DataFrame, target: str, task: str, allow: tuple[str, ...] = ()) -> None:
    x = frame.drop(columns=[target])
    check_leakage(x, frame[target], task, plan_columns(x), allow, label="t.csv")


def test_the_refusal_is_one_line_naming_the_column_the_evidence_and_the_flag():
    frame = _wages()
    frame["logwage"] = np.log(frame["wage"])
    with pytest.raises(LeakageError) as info:
        _check(frame, "wage", "regression")
    message = str(info.value)
    assert "\n" not in message and message.startswith("t.csv: logwage: Spearman 1.000 with 'wage'")
    assert "remove it, or pass --allow-column logwage if it is known when a prediction is made" in message
    _check(frame, "wage", "regression", allow=("logwage",))  # allowed: passes


def test_parts_are_refused_unless_every_part_is_allowed_and_a_misspelt_allow_is_refused():
    with pytest.raises(LeakageError, match=r"part_a \+ part_b: .*--allow-column part_a --allow-column part_b"):
        _check(_parts(), "total", "regression", allow=())
    with pytest.raises(LeakageError, match="--allow-column part_b if it is known"):
        _check(_parts(), "total", "regression", allow=("part_a",))
    _check(_parts(), "total", "regression", allow=("part_a", "part_b"))
    with pytest.raises(LeakageError, match="--allow-column names 'part_c', not feature column"):
        _check(_parts(), "total", "regression", allow=("part_a", "part_c"))


def test_the_data_stage_refuses_without_the_cli_and_writes_nothing(tmp_path):
    from pipelines.data import DataSpec, prepare

    frame = _wages()
    frame["logwage"] = np.log(frame["wage"])
    path = tmp_path / "wages.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "prepared"
    with pytest.raises(LeakageError, match="logwage"):
        prepare(DataSpec(source=str(path), target="wage"), out)
    assert not out.exists() or not any(out.iterdir())
    prepared = prepare(DataSpec(source=str(path), target="wage", allow_columns=["logwage"]), out)
    assert "num__logwage" in prepared.feature_names


# -- the CLI -----------------------------------------------------------------------------------------------------
def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _one_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_refresh_refuses_the_wage_leak_in_one_line_before_anything_is_written(tmp_path):
    frame = _wages()
    frame["logwage"] = np.log(frame["wage"])
    home = tmp_path / "home"
    proc = nasops("refresh", "--data", str(_csv(frame, tmp_path / "wages.csv")), "--target", "wage",
                  "--skip-canary", "--skip-tournament", home=home)
    _one_line(proc, "wages.csv: logwage: Spearman 1.000 with 'wage'", "--allow-column logwage")
    assert proc.stdout == "" and not (home / "refreshes").exists() and not (home / "data").exists()


def test_refresh_refuses_the_sum_of_parts_leak_in_one_line(tmp_path):
    proc = nasops("refresh", "--data", str(_csv(_parts(), tmp_path / "parts.csv")), "--target", "total",
                  "--skip-canary", "--skip-tournament", home=tmp_path / "home")
    _one_line(proc, "part_a + part_b: a linear fit on these columns", "--allow-column part_a --allow-column part_b")


def test_allow_column_passes_the_check_and_travels_in_the_configuration(tmp_path):
    frame = _wages()
    frame["logwage"] = np.log(frame["wage"])
    data = str(_csv(frame, tmp_path / "wages.csv"))
    proc = nasops("schedule", "--cron", "0 3 * * 0", "--data", data, "--target", "wage", "--check",
                  home=tmp_path / "home")
    _one_line(proc, "logwage")  # schedule runs the same pre-flight
    proc = nasops("schedule", "--cron", "0 3 * * 0", "--data", data, "--target", "wage", "--allow-column",
                  "logwage", "--check", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parameters"]["config"]["allow_columns"] == ["logwage"]
