"""Where nasops keeps its state and which servers it talks to (pydantic settings, read from the environment).

Embedded defaults need nothing running: MLflow on a SQLite file under ``$NASOPS_HOME`` (default ``./.nasops``),
Prefect in ephemeral mode. ``MLFLOW_TRACKING_URI`` pointing at an ``mlflow server`` replaces the SQLite store.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


# Prefect's ephemeral server gets 20 s to start by default; on a busy 2-core laptop that is not enough, and a
# refresh must not fail because the machine was busy for a moment.
RUNTIME_ENV = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def apply_offline_defaults() -> None:
    """Telemetry off, nothing fetched from the internet, patient start-up; explicit user settings win."""
    for key, value in {**OFFLINE_ENV, **RUNTIME_ENV}.items():
        os.environ.setdefault(key, value)


class Settings(BaseSettings):
    """Process-wide configuration. Construct it where needed; there is no hidden global instance."""

    model_config = SettingsConfigDict(env_prefix="NASOPS_", extra="ignore")

    home: Path = Field(default=Path(".nasops"), description="state directory (NASOPS_HOME)")
    model_name: str = Field(default="nasops-classifier", description="registered model name (NASOPS_MODEL_NAME)")
    experiment: str = Field(default="nasops-refresh", description="MLflow experiment (NASOPS_EXPERIMENT)")

    @property
    def state_dir(self) -> Path:
        """The state directory, created if missing; one that cannot be used is a user mistake named as such."""
        from pipelines.errors import UserError

        path = self.home.expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"NASOPS_HOME={str(path)!r} cannot be used as the state directory ({exc.strerror}); "
                            "point NASOPS_HOME at a writable directory") from None
        if not os.access(path, os.W_OK | os.X_OK) or str(path).startswith(("/proc", "/sys")):
            raise UserError(f"NASOPS_HOME={str(path)!r} is not writable; point NASOPS_HOME at a writable directory")
        return path

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the state directory."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.state_dir / "mlartifacts").as_uri()

    @property
    def prediction_log_url(self) -> str:
        return os.environ.get("NASOPS_PREDICTION_LOG_URL") or f"sqlite:///{self.state_dir / 'predictions.db'}"

    @property
    def data_dir(self) -> Path:
        path = self.state_dir / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path
