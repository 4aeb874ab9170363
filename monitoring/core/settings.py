"""Where nasops keeps its state and which stores it talks to, read from the environment once per entry point.

Each entry point (the CLI, a flow's entry, the gateway factory, the controller's entry) builds one ``Settings`` and
passes it down; code deeper in never re-reads the environment. Embedded defaults need nothing running: MLflow on a
SQLite file under ``$NASOPS_HOME`` (default ``./.nasops``), the prediction log beside it, Prefect in ephemeral mode.
The gateway's own settings take their defaults from here, so one spelling of every default serves both.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = ".nasops"
DEFAULT_MODEL_NAME = "nasops-classifier"
MLFLOW_DB = "mlflow.db"
PREDICTIONS_DB = "predictions.db"


class StateDirError(ValueError):
    """The state directory cannot be used (the message names it and the fix)."""


class Settings(BaseSettings):
    """Process-wide configuration, built at an entry point and passed down (there is no hidden global instance)."""

    model_config = SettingsConfigDict(env_prefix="NASOPS_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(DEFAULT_HOME), description="state directory (NASOPS_HOME)")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="registered model name (NASOPS_MODEL_NAME)")
    experiment: str = Field(default="nasops-refresh", description="MLflow experiment (NASOPS_EXPERIMENT)")
    mlflow_tracking_uri: str | None = Field(
        default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI") or None,
        description="MLFLOW_TRACKING_URI, read once when the settings are built (None: the embedded SQLite store)")
    prediction_log_url_override: str | None = Field(
        default=None, alias="NASOPS_PREDICTION_LOG_URL", description="NASOPS_PREDICTION_LOG_URL")

    @property
    def home_path(self) -> Path:
        """The state directory's absolute path, without creating it (read-only commands must not create state)."""
        return self.home.expanduser().resolve()

    @property
    def state_dir(self) -> Path:
        """The state directory, created if missing; one that cannot be used is a :class:`StateDirError`."""
        path = self.home_path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"NASOPS_HOME={str(path)!r} cannot be used as the state directory ({exc.strerror}); "
                                "point NASOPS_HOME at a writable directory") from None
        if not os.access(path, os.W_OK | os.X_OK) or str(path).startswith(("/proc", "/sys")):
            raise StateDirError(f"NASOPS_HOME={str(path)!r} is not writable; point NASOPS_HOME at a writable "
                                "directory")
        return path

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` as it was when the settings were built, else a SQLite file in the state dir."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / MLFLOW_DB}"

    @property
    def tracking_uri_uncreated(self) -> str:
        """:attr:`tracking_uri` without creating the state directory (for a reader's defaults; whoever writes
        there creates it)."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_path / MLFLOW_DB}"

    @property
    def prediction_log_url_uncreated(self) -> str:
        """:attr:`prediction_log_url` without creating the state directory."""
        return self.prediction_log_url_override or f"sqlite:///{self.home_path / PREDICTIONS_DB}"

    @property
    def artifact_root(self) -> str:
        return (self.state_dir / "mlartifacts").as_uri()

    @property
    def prediction_log_url(self) -> str:
        return self.prediction_log_url_override or f"sqlite:///{self.state_dir / PREDICTIONS_DB}"

    @property
    def data_dir(self) -> Path:
        path = self.state_dir / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path
