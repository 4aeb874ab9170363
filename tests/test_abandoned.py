"""After a refresh is killed with SIGKILL, the next refresh ends its RUNNING MLflow runs FAILED and tags its
undecided challenger ``abandoned`` (issue: kill -9 left runs RUNNING forever and a challenger with no decision)."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from fixtures_registry import register_version
from support_models import linear_classifier

from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client

pytestmark = pytest.mark.slow  # registers a model version


def test_the_next_refresh_cleans_up_after_a_killed_one(nasops_home):
    from monitoring import vocabulary as v
    from pipelines import refresh_state, registry
    from pipelines.abandoned import clean_up
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    configure_mlflow(settings)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone, as a SIGKILLed refresh's is
    with mlflow.start_run(run_name="refresh") as parent:
        with mlflow.start_run(run_name="search", nested=True) as search:
            child = mlflow.start_run(run_name="eval-000", nested=True)
            mlflow.end_run("RUNNING")  # leave it as a killed process would
        mlflow.end_run("RUNNING")
    client = tracking_client(Settings())
    for run_id in (parent.info.run_id, search.info.run_id, child.info.run_id):
        client.update_run(run_id, "RUNNING")
    version = register_version(settings.tracking_uri, settings.model_name, linear_classifier(), alias=v.CHALLENGER)
    client.set_model_version_tag(settings.model_name, version, v.tag("refresh_run_id"), parent.info.run_id)
    record = refresh_state.RefreshRecord("20260101-000000-dead00", parent_run_id=parent.info.run_id, pid=dead.pid)
    refresh_state.save(settings.state_dir, record)
    alive = refresh_state.RefreshRecord("20260101-000001-live00")  # this process: still running, left alone
    refresh_state.save(settings.state_dir, alive)

    assert clean_up(settings.state_dir, settings.model_name) == [record.refresh_id]
    for run_id in (parent.info.run_id, search.info.run_id, child.info.run_id):
        assert client.get_run(run_id).info.status == "FAILED"
    tags = registry.version_tags(client.get_model_version(settings.model_name, version))
    assert tags["decision"] == "abandoned" and "killed" in tags["decision_reason"]
    assert registry.alias_version(client, settings.model_name, v.CHALLENGER) is None
    assert refresh_state.load(settings.state_dir, record.refresh_id).status == "failed"
    assert refresh_state.load(settings.state_dir, alive.refresh_id).status == "running"
    assert clean_up(settings.state_dir, settings.model_name) == []  # idempotent
