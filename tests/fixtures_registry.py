"""A real MLflow registry (SQLite store) holding a trained champion and a challenger, for gateway-level tests.

A pytest plugin (``pytest_plugins`` in ``conftest.py``): any test can ask for the ``registry`` fixture (fresh per
test) or ``shared_registry`` (one per session), with no import; or call :func:`build_registry` with your own
challenger module (e.g. a faulty one from ``support_models``). Training and registering takes seconds, so only
tests marked ``slow`` may build one (:func:`servers.require_slow`). The versions carry the contract tags
(``nasops.classes``, ``nasops.features``, ...) and a TensorSpec signature, exactly as the pipelines register them.
"""

from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from servers import require_slow
from support_models import digits_data, linear_classifier, mlp_classifier, train_small
from torch import nn

from monitoring.vocabulary import ARCH, CHALLENGER, CHAMPION, ROLE, tag

CLASSES = list(range(10))


@dataclass
class RegistryFixture:
    """Where the registry is and what it holds."""

    home: Path
    tracking_uri: str
    model_name: str
    prediction_log_url: str
    champion_version: str
    challenger_version: str | None
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list

    def gateway_settings(self, **overrides):
        """:class:`serving.config.GatewaySettings` pointing at this registry and its own prediction log."""
        from serving.config import GatewaySettings

        values = {"tracking_uri": self.tracking_uri, "model_name": self.model_name,
                  "prediction_log_url": self.prediction_log_url, "poll_interval_s": 0, **overrides}
        self.end_manual_rollout()
        return GatewaySettings(**values)

    def end_manual_rollout(self) -> None:
        """End an operator's split an earlier test left in this shared log: a manual rollout is durable routing
        state (every later gateway on the log follows it), and a test's gateway starts from its own settings."""
        from monitoring.rollout_store import RolloutStore, manual_end

        store = RolloutStore(self.prediction_log_url)
        try:
            latest = store.latest_routing(self.model_name)
            if latest is not None and latest.active and latest.manual:
                store.update(latest, manual_end("operator", "test isolation"), kind="manual_end", actor="operator")
        finally:
            store.engine.dispose()

    def register(self, module: nn.Module, alias: str | None = None, role: str = "nas") -> str:
        """Log and register one more version (optionally moving ``alias`` to it); returns its version."""
        return register_version(self.tracking_uri, self.model_name, module, alias=alias, role=role)


def register_version(tracking_uri: str, model_name: str, module: nn.Module, *, alias: str | None = None,
                     role: str = "nas", n_features: int = 64, classes: list | None = None,
                     serialization: str | None = None) -> str:
    """Log ``module`` like the pipelines do (TensorSpec signature, input example, contract tags) and register it.

    ``serialization="pt2"`` is MLflow's default and what the pipelines use (torch.export, ~10 s per model here);
    ``"pickle"`` (the default of this helper) is much faster and the only option for the faulty wrappers of
    ``support_models`` (tracing would freeze their Python behaviour). The gateway serves both.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import Schema, TensorSpec

    classes = CLASSES if classes is None else classes
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)))]),
    )
    serialization = serialization or "pickle"
    example = np.random.default_rng(0).random((4, n_features), dtype=np.float32)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(module, name="model", signature=signature, input_example=example,
                                        serialization_format=serialization, registered_model_name=model_name,
                                        pip_requirements=["torch", "numpy"])
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tags = {
        tag("classes"): json.dumps(classes),
        tag("features"): json.dumps([f"pixel_{i}" for i in range(n_features)]),
        tag("input_shape"): json.dumps([n_features]),
        tag(ARCH): type(module).__name__,
        tag(ROLE): role,
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if alias:
        client.set_registered_model_alias(model_name, alias, version)
    return version


def build_registry(home: Path, challenger: nn.Module | str | None = "mlp",
                   model_name: str = "nasops-classifier", champion_format: str = "pickle") -> RegistryFixture:
    """Train a linear champion (and an MLP challenger unless one is given) on digits and register both."""
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    require_slow("trains models and registers them in MLflow (fixtures_registry)")
    home.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri/set_registry_uri export MLFLOW_*_URI into os.environ, and Settings.tracking_uri
    # prefers that variable: without this, a second registry in the same process would land in the first one.
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(leaked, None)
    settings = Settings(home=home, model_name=model_name)
    assert settings.tracking_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}", settings.tracking_uri
    configure_mlflow(settings)
    x_tr, y_tr, x_te, y_te = digits_data()
    champion = train_small(linear_classifier(), x_tr, y_tr, steps=40)
    champion_version = register_version(settings.tracking_uri, model_name, champion, alias=CHAMPION,
                                        role="baseline", serialization=champion_format)
    challenger_version = None
    if challenger is not None:
        module = train_small(mlp_classifier(), x_tr, y_tr, steps=60) if isinstance(challenger, str) else challenger
        challenger_version = register_version(settings.tracking_uri, model_name, module, alias=CHALLENGER)
    return RegistryFixture(
        home=home, tracking_uri=settings.tracking_uri, model_name=model_name,
        prediction_log_url=f"sqlite:///{home / 'predictions.db'}", champion_version=champion_version,
        challenger_version=challenger_version, x_test=x_te, y_test=y_te, classes=CLASSES,
    )


@pytest.fixture
def registry(nasops_home) -> RegistryFixture:
    """A fresh registry with a trained champion (linear) and challenger (MLP) under ``nasops_home``."""
    return build_registry(nasops_home)


@pytest.fixture(scope="session")
def shared_registry(tmp_path_factory) -> RegistryFixture:
    """The same, built once per test session for every module that asks (tests must not move its aliases);
    its champion is saved in the pipelines' ``pt2`` format so that path is served too."""
    return build_registry(tmp_path_factory.mktemp("registry"), champion_format="pt2")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test module that imports these fixtures would define them a second time, and build a second session
    registry (minutes of training): they come from this plugin, so refuse the import with the fix."""
    fixtures = {"registry": registry, "shared_registry": shared_registry}
    offenders = sorted({
        f"{item.module.__name__}.{name}"
        for item in items if isinstance(getattr(item, "module", None), types.ModuleType)
        for name, fixture in fixtures.items() if vars(item.module).get(name) is fixture
    })
    if offenders:
        raise pytest.UsageError(
            f"{', '.join(offenders)}: imported from fixtures_registry; remove the import (and any `# noqa: F811`): "
            "conftest.py loads fixtures_registry as a plugin, so every test can ask for these fixtures by name")
