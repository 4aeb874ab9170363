"""Compound scaling in the retrain stage (opt-in): the winner's scaled family within the budget is retrained,
registered as candidates, and the Pareto-best becomes the challenger; without the option nothing changes."""

from __future__ import annotations

import pytest

from pipelines.config import RefreshConfig, RetrainConfig
from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client


def test_scaling_is_off_by_default_and_checks_its_values():
    assert RetrainConfig().scale_phis == [] and RefreshConfig().retrain.scale_phis == []
    assert RetrainConfig(scale_phis=[-1, 1], scale_max_params=5000).scale_max_params == 5000
    with pytest.raises(ValueError, match="finite"):
        RetrainConfig(scale_phis=[float("nan")])
    with pytest.raises(ValueError, match="scale_max_params"):
        RetrainConfig(scale_phis=[1.0], scale_max_params=0)


def test_the_pareto_order_puts_the_front_first_and_the_most_accurate_on_top():
    from monitoring.core.tasks import CLASSIFICATION, REGRESSION
    from pipelines.contracts import OfflineMetrics
    from pipelines.retrain import Ranked, Trained, _pareto_order

    def entry(acc, params, latency, rank=0, key="val_accuracy"):
        metrics = {key: acc, "params": params, "latency_ms": latency}
        return Ranked(acc, rank, None, Trained(None, "run", metrics, OfflineMetrics()))  # type: ignore[arg-type]

    big, small, dominated = entry(0.90, 9000, 2.0), entry(0.85, 1000, 1.0), entry(0.80, 5000, 1.5)
    ordered, front = _pareto_order([dominated, big, small], CLASSIFICATION)
    assert ordered == [big, small, dominated] and front == {0, 1}
    tie = entry(0.90, 4000, 1.0)  # as accurate as `big` and smaller: it dominates `big`
    ordered, front = _pareto_order([big, tie], CLASSIFICATION)
    assert ordered[0] is tie and front == {0}
    # a regression's front is on its score key (minus the RMSE), never on an accuracy it does not have
    big, small = entry(-2.0, 9000, 2.0, key="val_neg_rmse"), entry(-3.0, 1000, 1.0, key="val_neg_rmse")
    ordered, front = _pareto_order([small, big], REGRESSION)
    assert ordered == [big, small] and front == {0, 1}


@pytest.mark.slow  # trains and registers models
def test_retrain_trains_and_registers_the_scaled_family_within_its_budget(nasops_home):
    import mlflow

    from pipelines import registry
    from pipelines.contracts import Candidate, Lineage, RetrainInput, SearchOutput
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import retrain_and_register
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    configure_mlflow(settings)
    prepared = prepare(DataSpec(source="digits", max_rows=300), settings.data_dir)
    winner = "depth=1|widths=32|act=relu|norm=none|dropout=0|residual=0"
    search = SearchOutput(
        search_run_id="s1", space="mlp", space_config={}, input_shape=[64], num_classes=10, pool_size=1,
        evaluations=1, seconds=0.0, prefilter_seconds=0.0, journal="",
        candidates=[Candidate(arch=winner, val_accuracy=0.5, proxy_scores={"synflow": 1.0})])
    lineage = Lineage(dataset_fingerprint=prepared.fingerprint, data_source="digits", refresh_run_id="r")
    inputs = RetrainInput(data=prepared, search=search, model_name=settings.model_name, lineage=lineage)
    # φ = 3 grows the 32-wide layer far past 6000 parameters: the budget must leave it out
    config = RetrainConfig(epochs=2, top_k=1, scale_phis=[-1.0, 0.0, 1.0, 3.0], scale_max_params=6000)
    with mlflow.start_run(run_name="refresh"):
        out = retrain_and_register(inputs, config).model_dump()
    client = tracking_client(Settings())
    cands = out["candidates"]
    tags = [registry.version_tags(registry.alias_version(client, settings.model_name, c["alias"])) for c in cands]
    phis = sorted(float(t["scaled_phi"]) for t in tags)
    assert phis == [-1.0, 0.0, 1.0]  # the winner itself (φ = 0) once, φ = 3 over budget
    assert all(int(t["params"]) <= 6000 for t in tags)
    assert [c["alias"] for c in cands] == [f"candidate-{i}" for i in range(1, len(cands) + 1)]
    assert len({c["version"] for c in cands}) == len(cands) == out["retrained"]
    assert tags[0]["pareto_front"] == "true" and tags[0]["role"] == "nas"
    assert max(c["val_accuracy"] for c in cands) == cands[0]["val_accuracy"]  # the front's most accurate
    assert str(registry.alias_version(client, settings.model_name, "challenger").version) == cands[0]["version"]
    scaled = [t for t in tags if float(t["scaled_phi"]) != 0.0]
    assert all(t["arch"] != winner and t["space"] == "mlp" for t in scaled)
    # without the option the same inputs give what they always did: one version, no scaling tags
    with mlflow.start_run(run_name="refresh-default"):
        plain = retrain_and_register(inputs, RetrainConfig(epochs=1, top_k=1)).model_dump()
    assert plain["retrained"] == 1 and [c["alias"] for c in plain["candidates"]] == ["candidate-1"]
    mv = registry.alias_version(client, settings.model_name, "candidate-1")
    assert not {"scaled_phi", "pareto_front"} & set(registry.version_tags(mv))
    assert "candidate-2" not in client.get_registered_model(settings.model_name).aliases


def test_an_unscalable_space_is_a_clear_error(nasops_home):
    from nas.spaces import list_spaces

    if "vit" not in list_spaces():
        pytest.skip("no unscalable space registered")
    from nas.spaces import get_space
    from pipelines.errors import UserError
    from pipelines.retrain import _train_scaled_family

    with pytest.raises(UserError, match="compound scaling knows the spaces"):
        _train_scaled_family(None, None, get_space("vit"),  # type: ignore[arg-type]
                             RetrainConfig(scale_phis=[1.0]))
