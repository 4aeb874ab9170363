"""The pipelines' side of the settings: the offline defaults a CLI process sets, and ``Settings`` whose errors are
user errors. The settings themselves live in :mod:`monitoring.core.settings` (the gateway shares their defaults).

Embedded defaults need nothing running: MLflow on a SQLite file under ``$NASOPS_HOME`` (default ``./.nasops``),
Prefect in ephemeral mode. ``MLFLOW_TRACKING_URI`` pointing at an ``mlflow server`` replaces the SQLite store.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitoring.core.settings import Settings as CoreSettings
from monitoring.core.settings import StateDirError

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


class Settings(CoreSettings):
    """:class:`monitoring.core.settings.Settings` as the pipelines use it: a state directory that cannot be used is
    a :class:`~pipelines.errors.UserError` (one line, exit 2)."""

    @property
    def state_dir(self) -> Path:
        from pipelines.errors import UserError

        try:
            return super().state_dir
        except StateDirError as exc:
            raise UserError(str(exc)) from None
