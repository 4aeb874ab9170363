"""The canary stage, one job per module: ``config`` (rollout policy), ``rollout`` (the state machine), ``drift``
(the drift worker), ``evidence`` (report and decision), ``flow`` (the Prefect flow and its interval loop).

Names are exported lazily so that importing the configuration does not import MLflow, Prefect and the gateway.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CanaryConfig": "pipelines.canary.config",
    "load_canary_config": "pipelines.canary.config",
    "Phase": "pipelines.canary.rollout",
    "RolloutState": "pipelines.canary.rollout",
    "schedule": "pipelines.canary.rollout",
    "canary_rollout": "pipelines.canary.flow",
    "run_canary": "pipelines.canary.flow",
    "parse_config": "pipelines.canary.flow",
    "load_prepared": "pipelines.prepared",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines.canary' has no attribute {name!r}")
