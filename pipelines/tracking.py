"""MLflow set-up shared by every stage: one tracking handle (URI, client, experiment), built from the settings at an
entry point and passed down, whose experiment's artifacts live in the state dir.

MLflow's fluent API (``mlflow.start_run``, ``log_model``) reads a process-global URI, and ``mlflow.set_tracking_uri``
also writes it into ``os.environ`` for every subprocess to inherit: a later ``Settings(home=B)`` in the same process
would then read A's store. :meth:`Tracking.fluent` sets those globals for one block and puts everything back (the
environment is never touched); a child process gets the URI explicitly (:meth:`Tracking.child_env`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines.errors import UserError
from pipelines.settings import Settings
from pipelines.store_checks import check_tracking_store

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
"""What MLflow's fluent setters write into ``os.environ`` (for subprocesses): restored after every set-up."""


def _creation_lock(uri: str) -> contextlib.AbstractContextManager[None]:
    """Serialise opening an embedded SQLite store (creating it runs MLflow's migrations, which two processes at once
    broke with a migration traceback); a tracking server or another database needs no lock here."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from pipelines.locks import serialised

    return serialised(Path(uri[len("sqlite:///"):]).expanduser().parent / ".mlflow-store.lock", "opening the "
                      "MLflow store")


@dataclass(frozen=True)
class Tracking:
    """Where this process's MLflow records go: the store's URI, a client on it (tracking and registry), the
    experiment and, inside a refresh, the parent run every stage nests under."""

    uri: str
    client: MlflowClient
    experiment_id: str
    parent_run_id: str | None = None

    @classmethod
    def open(cls, settings: Settings, experiment: str | None = None, *, model_name: str | None = None) -> Tracking:
        """Check the store (one line when it cannot work) and make sure the experiment exists; no global state.
        ``model_name``: the model's own experiment (:func:`experiment_name`) unless one is named.

        With the embedded SQLite store, artifacts go to ``$NASOPS_HOME/mlartifacts`` (not ``./mlruns`` in whatever
        directory the command happened to run from). A tracking server keeps its own artifact configuration."""
        uri = settings.tracking_uri
        with _creation_lock(uri):  # two commands on a fresh state directory: one creates the store, then the other
            check_tracking_store(uri)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            name = experiment or experiment_name(settings, model_name)
            return cls(uri, client, _experiment_id(client, uri, name, settings))

    def for_run(self, run_id: str) -> Tracking:
        """This handle on the experiment ``run_id`` belongs to: a refresh resumed under a parent run started before
        experiments were per model stays in that run's experiment (MLflow refuses to resume a run elsewhere)."""
        return replace(self, experiment_id=self.client.get_run(run_id).info.experiment_id)

    def under(self, parent_run_id: str) -> Tracking:
        """This handle with the refresh's parent run."""
        return replace(self, parent_run_id=parent_run_id)

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process that talks to this store: the URI given, never inherited."""
        return {**(os.environ if base is None else base), "MLFLOW_TRACKING_URI": self.uri}

    def install(self) -> None:
        """Point MLflow's fluent API at this store and experiment for the rest of the process (a stage run on its
        own, a test); the environment stays as it was. Prefer :meth:`fluent`, which also undoes it."""
        with _environ_kept():
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)
            mlflow.set_experiment(experiment_id=self.experiment_id)

    @contextlib.contextmanager
    def fluent(self) -> Iterator[Tracking]:
        """MLflow's fluent API on this store for the block (``start_run``, ``log_model``); afterwards the URIs
        and the experiment are what they were, and ``os.environ`` was never changed."""
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id)
        self.install()
        try:
            yield self
        finally:
            with _environ_kept():
                mlflow.set_tracking_uri(saved[0])  # also resets MLflow's tracer state tied to the URI
                registry_utils._registry_uri = saved[1]
                fluent._active_experiment_id = saved[2]


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """MLflow's setters export what they set to ``os.environ``; put the variables back as they were."""
    before = {key: os.environ.get(key) for key in MLFLOW_ENV}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


EXPERIMENT_PREFIX = "nasops/"


def experiment_name(settings: Settings, model_name: str | None = None) -> str:
    """The MLflow experiment of ``model_name``'s runs: ``nasops/<model_name>`` (issue 24: every model's runs shared
    one experiment), unless ``NASOPS_EXPERIMENT`` names one, which then holds every model's runs as before."""
    default = type(settings).model_fields["experiment"].default
    if model_name is None or settings.experiment != default:
        return settings.experiment
    return f"{EXPERIMENT_PREFIX}{model_name}"


def _experiment_id(client: MlflowClient, uri: str, name: str, settings: Settings) -> str:
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:  # a dead server, a bad URI: say which and how to fix it
        raise UserError(
            f"cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: {exc}). "
            "Start the server, or unset MLFLOW_TRACKING_URI to use the embedded SQLite store."
        ) from exc
    if exp is not None:
        return exp.experiment_id
    location = settings.artifact_root if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def configure_mlflow(settings: Settings | None = None, experiment: str | None = None) -> str:
    """Point MLflow's fluent API at the configured store for the rest of the process (a stage run on its own, a
    test); returns the experiment id. Entry points use :meth:`Tracking.open` and :meth:`Tracking.fluent` instead."""
    tracking = Tracking.open(settings or Settings(), experiment)
    tracking.install()
    return tracking.experiment_id


def client(settings: Settings) -> MlflowClient:
    """An ``MlflowClient`` on the configured store (tracking and registry), without checking or creating anything
    (:meth:`Tracking.open` does both)."""
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def ensure_tracking(settings: Settings | None = None) -> None:
    """Configure MLflow unless a caller (the refresh, a test) already did: a stage run on its own still works."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not is_tracking_uri_set() and not mlflow.active_run():
        configure_mlflow(settings or Settings())
