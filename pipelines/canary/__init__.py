"""The embedded canary, the training pipeline's side of a rollout: ``flow`` (the refresh's canary stage: a private
gateway, a traffic process and the controller reconciling in-process) and ``reference`` (a model's drift reference
from its prepared data). The control plane itself (rollout policy, state machine, controller, operator commands,
evidence, the Prefect deployment) is :mod:`pipelines.control`, which imports nothing from here.

Names are exported lazily so that importing the configuration does not import MLflow, Prefect and the gateway.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CanaryConfig": "pipelines.control.config",
    "load_canary_config": "pipelines.control.config",
    "parse_config": "pipelines.control.config",
    "Phase": "pipelines.control.rollout",
    "RolloutState": "pipelines.control.rollout",
    "schedule": "pipelines.control.rollout",
    "canary_rollout": "pipelines.canary.flow",
    "run_canary": "pipelines.canary.flow",
    "load_prepared": "pipelines.prepared",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines.canary' has no attribute {name!r}")
