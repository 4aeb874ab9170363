"""Drift during a canary: per-interval data drift of each variant's inputs and challenger-vs-champion prediction
drift, computed off the traffic path, plus the end-of-canary Evidently report.

Drift is measured on the *distinct* inputs of a window: replayed traffic repeats a small prod split many times, and
duplicated rows make every two-sample test see a difference that is not there. A window with too few distinct rows
is reported as too small to judge (None), not as "no drift".
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from monitoring.drift import data_drift_share, features_frame, prediction_drift
from monitoring.prediction_log import read_predictions
from monitoring.sources import label_key
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from pipelines.canary.config import CanaryConfig
from pipelines.gateway_admin import GatewayAdmin

MIN_DISTINCT_ROWS = 10

log = logging.getLogger("nasops.canary")


def distinct_inputs(frame: pd.DataFrame, variant: str | None = None, *, include_shadow: bool = True) -> np.ndarray:
    """The distinct input rows a variant (or, with None, the gateway) received: one per value, whatever the
    number of requests, fallbacks or shadow copies that carried it."""
    rows = frame if variant is None else frame[frame["variant"] == variant]
    if not include_shadow and "shadow" in rows:
        rows = rows[~rows["shadow"].astype(bool)]
    if rows.empty:
        return np.empty((0, 0))
    x = np.array(rows["inputs"].tolist(), dtype=float)
    return np.unique(x, axis=0) if x.ndim == 2 and len(x) else x


def predictions(frame: pd.DataFrame, variant: str) -> list:
    rows = frame[(frame["variant"] == variant) & frame["prediction"].notna()]
    return [label_key(p) for p in rows["prediction"]]


def interval_drift(frame: pd.DataFrame, reference: pd.DataFrame, cfg: CanaryConfig) -> dict[str, float | None]:
    """Drift shares of each variant's distinct inputs in one window, and challenger-vs-champion prediction drift
    (None: too few samples to judge)."""
    out: dict[str, float | None] = {}
    for variant in VARIANTS:
        x = distinct_inputs(frame, variant)
        out[variant] = (data_drift_share(reference, features_frame(x, list(reference.columns)),
                                         threshold=cfg.drift_threshold).share
                        if len(x) >= MIN_DISTINCT_ROWS else None)
    champ, chall = predictions(frame, CHAMPION), predictions(frame, CHALLENGER)
    enough = len(champ) >= MIN_DISTINCT_ROWS and len(chall) >= MIN_DISTINCT_ROWS
    out["prediction"] = prediction_drift(champ, chall) if enough else None
    return out


def import_evidently() -> None:
    """Evidently's import alone takes seconds: done on the worker thread while the gateway starts."""
    import evidently.metrics
    import evidently.presets  # noqa: F401


class DriftWorker:
    """Per-interval drift on one background thread, so Evidently's seconds overlap the next interval's traffic
    instead of adding to it; each result lands in its step dict and on the gateway's ``nasops_drift_share``.
    An interval that ends while the previous computation still runs is skipped (recorded as such): at most one
    computation in flight bounds the overhead on a busy machine."""

    def __init__(self, log_engine: Engine, reference: pd.DataFrame, cfg: CanaryConfig, admin: GatewayAdmin) -> None:
        self.log_engine, self.reference, self.cfg, self.admin = log_engine, reference, cfg, admin
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canary-drift")
        self.futures: list = []
        self.seconds = 0.0
        self.pool.submit(import_evidently)

    def submit(self, step: dict, since: float, until: float) -> None:
        if any(not f.done() for f in self.futures):
            step["drift"] = {"skipped": True}
            return
        self.futures.append(self.pool.submit(self._run, step, since, until))

    def _run(self, step: dict, since: float, until: float) -> None:
        t0 = time.perf_counter()
        drift = interval_drift(read_predictions(self.log_engine, since, until), self.reference, self.cfg)
        step["drift"] = drift
        for variant in VARIANTS:
            if drift.get(variant) is not None:
                # The gauge is best effort; the values stay in the step record either way.
                with contextlib.suppress(httpx.HTTPError):
                    self.admin.publish_drift(variant, float(drift[variant]))
        self.seconds += time.perf_counter() - t0

    def wait(self, timeout_s: float = 120.0) -> float:
        """Block until every submitted interval is done; returns the seconds spent computing drift."""
        wait(self.futures, timeout=timeout_s)
        for future in self.futures:
            if future.done() and future.exception() is not None:
                log.warning("interval drift failed: %s", future.exception())
        return self.seconds

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
