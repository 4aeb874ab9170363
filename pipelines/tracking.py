"""MLflow set-up shared by every stage: one tracking URI, one experiment whose artifacts live in the state dir."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from pipelines.errors import UserError
from pipelines.settings import Settings


def configure_mlflow(settings: Settings | None = None, experiment: str | None = None) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns its id.

    With the embedded SQLite store, artifacts go to ``$NASOPS_HOME/mlartifacts`` (not ``./mlruns`` in whatever
    directory the command happened to run from). A tracking server keeps its own artifact configuration.
    """
    settings = settings or Settings()
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or settings.experiment
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:  # a dead server, a bad URI: say which and how to fix it
        raise UserError(
            f"cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: {exc}). "
            "Start the server, or unset MLFLOW_TRACKING_URI to use the embedded SQLite store."
        ) from exc
    if exp is None:
        location = settings.artifact_root if uri.startswith("sqlite:") else None
        exp_id = client.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def client(settings: Settings | None = None) -> MlflowClient:
    """An ``MlflowClient`` on the configured store (tracking and registry)."""
    settings = settings or Settings()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def ensure_tracking() -> None:
    """Configure MLflow unless a caller (the refresh, a test) already did: a stage run on its own still works."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not is_tracking_uri_set() and not mlflow.active_run():
        configure_mlflow(Settings())
