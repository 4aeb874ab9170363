"""The progressive rollout: the decision rule (unit) and the whole canary_rollout flow against a real gateway,
real MLflow registry and real Prefect (end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_registry import build_registry

from monitoring.judge import NODATA, PASS, MetricResult, Verdict
from pipelines.canary import RolloutState, parse_config, schedule
from pipelines.control.config import load_canary_config
from pipelines.errors import UserError


def verdict(kind: str, *, critical_nodata: bool = False) -> Verdict:
    """A judge verdict of the given kind (its metric table only matters for the critical-NoData rule)."""
    row = MetricResult(name="online_accuracy", group="accuracy", critical=True, direction="decrease",
                       statistic="mean", n_champion=50, n_challenger=3 if critical_nodata else 50,
                       champion_value=0.9, challenger_value=0.9, u_statistic=0.0, p_value=0.5, effect=0.0,
                       effect_kind="absolute", tolerance=0.02, shift=0.0,
                       classification=NODATA if critical_nodata else PASS,
                       failed=kind == "fail", reason="online_accuracy: test")
    score = {"pass": 100.0, "marginal": 80.0, "fail": 20.0, "nodata": 0.0}[kind]
    return Verdict(kind, score, [row], {"accuracy": score}, ["why"] if kind == "fail" else [])


def run(config: dict, verdicts: list[Verdict]) -> RolloutState:
    cfg = load_canary_config(config)
    state = RolloutState(schedule(cfg), cfg)
    for v in verdicts:
        state.advance(v)
        if state.decision:
            break
    return state


def test_passing_every_step_promotes():
    state = run({"steps": [0.05, 0.25, 0.5, 1.0]}, [verdict("pass")] * 10)
    assert state.decision == "promoted" and state.intervals == 4
    assert "passed every step" in state.reason


def test_failures_beyond_the_limit_roll_back():
    state = run({"failure_limit": 1}, [verdict("pass"), verdict("fail"), verdict("fail")])
    assert state.decision == "rolled_back" and state.intervals == 3 and state.failures == 2
    assert "at 25% traffic" in state.reason  # it failed at the second step
    assert run({"failure_limit": 0}, [verdict("fail")]).decision == "rolled_back"


def test_nodata_and_marginal_hold_the_step():
    state = run({"steps": [0.1, 1.0]}, [verdict("nodata"), verdict("marginal"), verdict("pass"), verdict("pass")])
    assert state.decision == "promoted" and state.intervals == 4
    advance = run({"steps": [0.1, 1.0], "on_marginal": "advance"}, [verdict("marginal"), verdict("pass")])
    assert advance.decision == "promoted" and advance.intervals == 2
    strict = run({"steps": [0.1, 1.0], "on_marginal": "fail", "failure_limit": 0}, [verdict("marginal")])
    assert strict.decision == "rolled_back"


def test_promotion_waits_for_critical_metrics_to_have_data():
    state = run({"steps": [0.5, 1.0]}, [verdict("pass"), verdict("pass", critical_nodata=True), verdict("pass")])
    assert state.decision == "promoted" and state.intervals == 3


def test_running_out_of_intervals_rolls_back():
    state = run({"steps": [0.5, 1.0], "max_intervals": 3}, [verdict("marginal")] * 5)
    assert state.decision == "rolled_back" and state.intervals == 3
    assert "no passing decision" in state.reason


def test_shadow_first_runs_before_the_split_steps():
    cfg = load_canary_config({"shadow_first": True, "shadow_intervals": 2, "steps": [0.5, 1.0]})
    assert [(p.mode, p.weight) for p in schedule(cfg)] == [("shadow", 0.0), ("split", 0.5), ("split", 1.0)]
    state = run({"shadow_first": True, "shadow_intervals": 2, "steps": [0.5, 1.0]}, [verdict("pass")] * 4)
    assert state.decision == "promoted" and state.intervals == 4


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="interval_seconds: unknown key"):
        parse_config({"interval_seconds": 3})


# -- end to end -------------------------------------------------------------------------------------------------

# A 2-point gain cannot be *proven* at 40 requests/s in six 3-s intervals (the packaged sequential judge's
# superiority rule, docs/canary.md): this flow test runs the fixed-horizon judge, the sequential one is pinned on
# simulations in tests/test_sequential.py and benchmarks/canary_sim.py.
# The non-critical per-chunk prediction drift can score a healthy MLP marginal at 100% (its chunks are compared with
# the champion's from the earlier, interleaved steps: +0.085 measured in a loaded CI run), and "hold" then spends the
# budget: this flow test is about the flow and its evidence, so a marginal interval advances here.
FAST = {"steps": [0.25, 1.0], "interval_s": 3.0, "rate": 40.0, "drift_each_interval": True, "max_intervals": 10,
        "on_marginal": "advance", "judge": {"method": "fixed_horizon"}}


@pytest.fixture(scope="module")
def canary_registry(tmp_path_factory):
    """A real registry: linear champion (v1), MLP challenger (v2), and a challenger that fails 20% of calls (v3)."""
    import support_models

    from nas.data import TaskData

    home = tmp_path_factory.mktemp("canary-home")
    reg = build_registry(home)
    x_tr, y_tr, x_te, y_te = support_models.digits_data()
    flaky = support_models.FlakyModel(
        support_models.train_small(support_models.mlp_classifier(), x_tr, y_tr, steps=60), period=5
    )
    reg.flaky_version = reg.register(flaky)
    half = len(x_te) // 2
    data = TaskData(x_tr, y_tr, x_te[:half], y_te[:half], (64,), 10, x_te[:half], y_te[:half], x_te[half:],
                    y_te[half:], meta={"classes": list(range(10)),
                                       "feature_names": [f"pixel_{i}" for i in range(64)]})
    reg.data_path = str(data.save(home / "data.npz"))
    return reg


def _use(reg, monkeypatch, challenger_version: str):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("NASOPS_HOME", str(reg.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg.tracking_uri)
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    client.set_registered_model_alias(reg.model_name, "champion", reg.champion_version)
    client.set_registered_model_alias(reg.model_name, "challenger", challenger_version)
    return client


@pytest.mark.slow
def test_faulty_challenger_rolls_back_with_no_failed_user_request(canary_registry, monkeypatch, prefect_server):
    from pipelines.canary import canary_rollout

    reg = canary_registry
    client = _use(reg, monkeypatch, reg.flaky_version)
    result = canary_rollout(reg.model_name, reg.data_path, {**FAST, "failure_limit": 0}).model_dump(mode="json")
    json.dumps(result)  # plain JSON for the refresh's summary
    assert result["decision"] == "rolled_back" and result["verdict"] == "fail"
    assert result["intervals"] <= 4  # the first look may have too few challenger samples at 25% on a busy machine
    assert "error_rate" in result["reason"]
    assert result["replay"]["failed"] == 0  # the gateway answered every request (fallback to the champion)
    assert result["online"]["challenger"]["errors"] > 0 and result["online"]["champion"]["errors"] == 0
    assert result["champion_version"] == reg.champion_version
    mv = client.get_model_version(reg.model_name, reg.flaky_version)
    assert mv.tags["nasops.decision"] == "rolled_back" and "error_rate" in mv.tags["rejected"]
    assert mv.tags["nasops.canary_run_id"] == result["canary_run_id"]
    aliases = client.get_registered_model(reg.model_name).aliases
    assert aliases["champion"] == int(reg.champion_version) and "challenger" not in aliases


@pytest.mark.slow
def test_better_challenger_is_promoted_with_evidence_in_mlflow(canary_registry, monkeypatch, prefect_server):
    from support_tenancy import watch_production

    from pipelines.canary import canary_rollout
    from pipelines.settings import Settings

    reg = canary_registry
    client = _use(reg, monkeypatch, reg.challenger_version)
    # a production gateway of the same model on the same database (issue 25: a refresh without a gateway URL
    # steered it to 5 % and 25 %): it must apply weight 0 and follow no rollout throughout
    with watch_production(Settings().prediction_log_url, reg.model_name) as production:
        result = canary_rollout(reg.model_name, reg.data_path, FAST).model_dump(mode="json")
    assert len(production) > 10 and {w for w, _ in production} == {0.0} and {r for _, r in production} == {None}
    assert result["decision"] == "promoted", result["reason"]
    assert result["verdict"] in ("pass", "marginal") and result["score"] >= 75  # never promoted on a failure
    assert [s["weight"] for s in result["steps"]][-1] == 1.0
    assert result["online"]["champion"]["requests"] > 0 and result["online"]["challenger"]["requests"] > 0
    assert result["online"]["challenger"]["accuracy"] > 0.8
    assert 0 <= result["drift"]["share"] <= 1 and result["drift"]["prediction_drift"] is not None
    aliases = client.get_registered_model(reg.model_name).aliases
    assert aliases["champion"] == int(reg.challenger_version)
    assert aliases["previous-champion"] == int(reg.champion_version)
    tags = client.get_model_version(reg.model_name, reg.challenger_version).tags
    assert tags["nasops.decision"] == "promoted" and tags["nasops.verdict"] == "pass"
    artifacts = {a.path for a in client.list_artifacts(result["canary_run_id"], "canary")}
    assert {"canary/canary_report.html", "canary/data_drift.html", "canary/judge_table.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(result["canary_run_id"], "canary/judge_table.json")).read_text())
    assert {"p_value", "u_statistic", "effect", "classification"} <= set(table["columns"])
    report = Path(client.download_artifacts(result["canary_run_id"], "canary/canary_report.html")).read_text()
    assert "promoted" in report and "online_accuracy" in report
    assert np.isfinite(result["timings"]["traffic_s"])


def test_cli_rejects_bad_canary_options_with_a_clear_message(nasops_home):
    from support_cli import nasops

    proc = nasops("canary", "run", "--steps", "0.5,0.2")
    assert proc.returncode == 2
    assert "steps must not decrease" in proc.stderr


def test_a_budget_rollback_names_the_step_that_was_judged_not_the_next_one():
    """Defect: "rolled back at 50% traffic, last verdict pass, score 100" from a rollout that never went above 25%.
    The budget ran out on an interval that passed 25% and moved the index to 50%, and the reason read the new
    index."""
    state = run({"steps": [0.05, 0.25, 0.5, 1.0], "max_intervals": 3},
                [verdict("marginal"), verdict("pass"), verdict("pass")])
    assert state.decision == "rolled_back"
    assert "25% traffic" in state.reason and "50%" not in state.reason


def test_sequential_marginal_ramps_but_never_promotes():
    """The sequential judge's `marginal` (guards fine, gain not yet proven) advances the ramp and holds at the last
    step, and at a step followed by 100 % (where the champion serves nothing to compare with): only a proven gain
    promotes."""
    cfg = load_canary_config({"steps": [0.05, 0.5, 1.0], "max_intervals": 6})
    state = RolloutState(schedule(cfg), cfg)
    for _ in range(6):
        v = verdict("marginal")
        v.method = "sequential"
        state.advance(v)
    assert state.decision == "rolled_back" and "50% traffic" in state.reason
    cfg = load_canary_config({"steps": [0.05, 0.5, 0.9], "max_intervals": 6})
    state = RolloutState(schedule(cfg), cfg)
    for _ in range(6):
        v = verdict("marginal")
        v.method = "sequential"
        state.advance(v)
    assert state.decision == "rolled_back" and "90% traffic" in state.reason
    state = RolloutState(schedule(cfg), cfg)
    for kind in ("marginal", "marginal", "pass"):
        v = verdict(kind)
        v.method = "sequential"
        state.advance(v)
    assert state.decision == "promoted" and state.intervals == 3
