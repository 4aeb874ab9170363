"""One process, two state dirs: configuring MLflow for one must not decide the other's store.

MLflow's ``set_tracking_uri`` exports ``MLFLOW_TRACKING_URI`` into ``os.environ`` (for subprocesses), and
``Settings`` reads that variable when built: configuring home A used to make a later ``Settings(home=B)`` use A's
tracking store with B's prediction log.
"""

from __future__ import annotations

import os

import mlflow
import pytest

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture
def two_homes(tmp_path, monkeypatch):
    for key in (*MLFLOW_ENV, "NASOPS_HOME", "NASOPS_PREDICTION_LOG_URL"):
        monkeypatch.delenv(key, raising=False)
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)  # whatever an earlier test in this process configured
    return tmp_path / "a", tmp_path / "b"


def _env() -> dict:
    return {key: os.environ.get(key) for key in MLFLOW_ENV}


def test_configure_leaves_the_environment_and_a_later_settings_alone(two_homes):
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    home_a, home_b = two_homes
    before = _env()
    configure_mlflow(Settings(home=home_a))
    assert _env() == before
    b = Settings(home=home_b)
    assert b.tracking_uri == f"sqlite:///{home_b.resolve() / 'mlflow.db'}"
    assert b.prediction_log_url == f"sqlite:///{home_b.resolve() / 'predictions.db'}"


def test_tracking_handle_scopes_the_fluent_api_and_restores_it(two_homes):
    from pipelines.settings import Settings
    from pipelines.tracking import Tracking

    home_a, home_b = two_homes
    before_env, before_uri = _env(), mlflow.get_tracking_uri()
    a = Tracking.open(Settings(home=home_a))
    assert _env() == before_env and mlflow.get_tracking_uri() == before_uri  # opening touches no global
    with a.fluent():
        assert mlflow.get_tracking_uri() == a.uri
        assert _env() == before_env  # a child started here does not inherit A's URI by accident
        with mlflow.start_run(run_name="in-a") as run:
            mlflow.log_param("k", 1)
    assert mlflow.get_tracking_uri() == before_uri and _env() == before_env
    assert a.client.get_run(run.info.run_id).data.params == {"k": "1"}
    assert a.client.get_run(run.info.run_id).info.experiment_id == a.experiment_id
    b = Tracking.open(Settings(home=home_b))
    assert b.uri != a.uri and b.uri.endswith(str(home_b.resolve() / "mlflow.db"))
    assert b.child_env({})["MLFLOW_TRACKING_URI"] == b.uri  # a child gets the URI explicitly


def test_settings_read_the_environment_once(two_homes, monkeypatch):
    from pipelines.settings import Settings

    home_a, _ = two_homes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    settings = Settings(home=home_a)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:10")
    assert settings.tracking_uri == "http://127.0.0.1:9"
