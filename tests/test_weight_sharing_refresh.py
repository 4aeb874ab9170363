"""``search.fidelity: supernet`` and ``search.strategy: darts`` through the whole refresh: the result is retrained,
registered, and carries its method (and the supernet's run) in its lineage."""

from __future__ import annotations

import pytest

from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client

pytestmark = pytest.mark.slow

SMALL = {"max_rows": 600, "top_k": 1, "retrain": {"epochs": 1}, "skip_canary": True, "skip_tournament": True}


def _challenger_tags(result) -> dict[str, str]:
    from pipelines import registry

    client = tracking_client(Settings())
    return registry.version_tags(client.get_model_version(result.model_name, result.challenger.version))


def test_refresh_on_a_supernet_registers_with_its_lineage(nasops_home, prefect_server):
    from pipelines.config import RefreshConfig
    from pipelines.refresh import model_refresh

    config = RefreshConfig.model_validate({**SMALL, "search": {
        "fidelity": "supernet", "strategy": "evolution", "pool_size": 20, "budget": 6, "supernet": {"epochs": 1}}})
    result = model_refresh(config)
    assert result.search.method == "supernet+evolution" and result.search.evaluations == 6
    tags = _challenger_tags(result)
    assert tags["search_method"] == "supernet+evolution"
    supernet_run = tracking_client(Settings()).get_run(tags["supernet_run_id"])
    assert supernet_run.data.tags["nasops.stage"] == "supernet"
    assert any(k.startswith("supernet.") for k in supernet_run.data.metrics)  # the training curve
    assert result.search.candidates[0].fidelity.get("supernet") == 1.0


def test_refresh_with_darts_registers_the_discretised_cell(nasops_home, prefect_server):
    from pipelines.config import RefreshConfig
    from pipelines.refresh import model_refresh

    config = RefreshConfig.model_validate({**SMALL, "search": {"strategy": "darts", "darts": {"epochs": 1}}})
    result = model_refresh(config)
    assert result.search.method == "darts"
    tags = _challenger_tags(result)
    assert tags["search_method"] == "darts" and tags["arch"].startswith("|")
    client = tracking_client(Settings())
    experiment = client.get_run(result.search.search_run_id).info.experiment_id
    runs = client.search_runs([experiment], "tags.`nasops.stage` = 'darts'")
    assert runs and "plots" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
