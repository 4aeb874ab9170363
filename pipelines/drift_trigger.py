"""React to change: measure drift of the champion's recent production inputs against its training data and, when
configured, start a refresh once it drifts beyond a threshold (off by default: measuring never retrains).

The reference is the training split of the data the champion was trained on (found through its
``nasops.dataset_fingerprint`` tag among the prepared files in the state dir), or an explicit ``data_path``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitoring.drift import DataDrift, data_drift_share, features_frame
from monitoring.prediction_log import create_log_engine, read_predictions
from nas.data import TaskData
from pipelines import registry
from pipelines.errors import UserError
from pipelines.settings import Settings


class DriftTriggerConfig(BaseModel):
    """When drift on the champion's traffic should start a refresh."""

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(3600.0, gt=0, description="look at the champion's inputs of the last N seconds")
    min_rows: int = Field(100, ge=10, description="fewer production rows: no decision")
    threshold: float = Field(0.5, gt=0, le=1, description="share of drifted features that triggers")
    trigger_refresh: bool = Field(False, description="start model_refresh when drift is detected (off by default)")
    refresh: dict[str, Any] = Field(default_factory=dict, description="RefreshConfig fields for a triggered refresh")
    reference_rows: int = Field(1000, ge=50)


def should_refresh(drift: DataDrift | None, cfg: DriftTriggerConfig) -> bool:
    """Refresh only when enabled, with enough rows, and at or beyond the threshold."""
    return bool(cfg.trigger_refresh and drift is not None and drift.rows >= cfg.min_rows
                and drift.share >= cfg.threshold)


def _reference_data(model_name: str, data_path: str | None, settings: Settings, client: MlflowClient | None
                    ) -> TaskData:
    if data_path:
        if not Path(data_path).is_file():
            raise UserError(f"data_path {data_path!r} does not exist")
        return TaskData.load(data_path)
    if client is None:
        raise UserError("no registry to find the champion's training data in; pass data_path=PATH.npz")
    mv = registry.alias_version(client, model_name, registry.CHAMPION)
    if mv is None:
        raise UserError(f"model {model_name!r} has no champion; nothing to watch")
    fingerprint = registry.version_tags(mv).get("dataset_fingerprint")
    files = sorted(settings.data_dir.glob(f"{fingerprint}-*.npz")) if fingerprint else []
    if not files:
        raise UserError(f"the champion's training data (fingerprint {fingerprint!r}) is not under "
                        f"{settings.data_dir}; pass data_path=PATH.npz")
    return TaskData.load(files[-1])


def champion_drift(model_name: str, cfg: DriftTriggerConfig, data_path: str | None = None,
                   now: float | None = None, *, settings: Settings, client: MlflowClient | None = None
                   ) -> DataDrift | None:
    """Evidently drift share of the champion's served inputs in the window (None: fewer than ``min_rows``); the
    reference is ``data_path``, else the champion's training data (found through ``client``'s registry)."""
    data = _reference_data(model_name, data_path, settings, client)
    now = time.time() if now is None else now
    engine = create_log_engine(settings.prediction_log_url)
    try:
        frame = read_predictions(engine, now - cfg.window_s, now + 1, variant="champion", include_shadow=False,
                                 model_name=model_name)
    finally:
        engine.dispose()
    rows = frame.drop_duplicates(["request_id", "row"])
    if len(rows) < cfg.min_rows:
        return None
    reference = data.x_train
    if len(reference) > cfg.reference_rows:
        reference = reference[np.sort(np.random.default_rng(0).choice(len(reference), cfg.reference_rows, False))]
    names = [str(n) for n in data.meta.get("feature_names") or []] or None
    current = np.array(rows["inputs"].tolist(), dtype=float)
    return data_drift_share(features_frame(reference, names), features_frame(current, names), threshold=cfg.threshold)


@flow(name="drift_watch", log_prints=True)
def drift_watch(model_name: str | None = None, config: dict | None = None, data_path: str | None = None) -> dict:
    """Measure drift on the champion's traffic; start ``model_refresh`` if configured and drifted."""
    try:
        cfg = DriftTriggerConfig.model_validate(config or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid drift trigger options: {problems}") from None
    from pipelines.tracking import Tracking

    settings = Settings()  # the flow's entry point: its one Settings and tracking handle
    tracking = Tracking.open(settings)
    model_name = model_name or settings.model_name
    drift = champion_drift(model_name, cfg, data_path, settings=settings, client=tracking.client)
    result: dict[str, Any] = {"model_name": model_name, "drift": drift.to_dict() if drift else None,
                              "threshold": cfg.threshold, "triggered": False}
    if should_refresh(drift, cfg):
        from pipelines.refresh import RefreshConfig, model_refresh

        print(f"drift share {drift.share:.2f} >= {cfg.threshold}: starting a refresh")  # type: ignore[union-attr]
        result["triggered"] = True
        config = RefreshConfig.model_validate({"model_name": model_name, **cfg.refresh})
        result["refresh"] = model_refresh(config).model_dump(mode="json")
    return result
