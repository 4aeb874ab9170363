"""MLflow set-up shared by every stage: one tracking URI, one experiment whose artifacts live in the state dir."""

from __future__ import annotations

import os
from pathlib import Path

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
    check_tracking_store(uri)
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


SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_store(uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast, with one line, on a store that cannot work — before MLflow's own retries (minutes on a dead
    server) or a traceback from sqlite3: a database path that is a directory, not a database, or read-only, and a
    tracking server that does not answer its health check."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        fix = "move it away (nasops makes a new store) or set MLFLOW_TRACKING_URI"
        if path.is_dir():
            raise UserError(f"the tracking store {str(path)!r} is a directory, not a SQLite database; {fix}")
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as handle:
                if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise UserError(f"the tracking store {str(path)!r} is not a SQLite database (corrupt?); {fix}")
            if not os.access(path, os.W_OK):
                raise UserError(f"the tracking store {str(path)!r} is read-only; make it writable or set "
                                "MLFLOW_TRACKING_URI to a store you may write")
    elif uri.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: it does not "
                            "answer /health); start the server, or unset MLFLOW_TRACKING_URI to use the embedded "
                            "SQLite store") from None
        if response.status_code >= 500:
            raise UserError(f"the MLflow tracking server at {uri} answers {response.status_code} to /health; "
                            "check its logs, or unset MLFLOW_TRACKING_URI")


def client(settings: Settings | None = None) -> MlflowClient:
    """An ``MlflowClient`` on the configured store (tracking and registry)."""
    settings = settings or Settings()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def ensure_tracking() -> None:
    """Configure MLflow unless a caller (the refresh, a test) already did: a stage run on its own still works."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not is_tracking_uri_set() and not mlflow.active_run():
        configure_mlflow(Settings())
