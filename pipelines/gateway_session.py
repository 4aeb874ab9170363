"""One gateway session for every stage that drives a private gateway: the canary, the tournament, the benchmarks.

A session owns the whole life of one gateway: its settings (tracking store, model, prediction log, a token made for
this session), the process it runs in (its own, as in production: in the caller's process the gateway's request
threads would share the GIL with the traffic and drift threads, and the judge would measure that contention as
model latency), readiness, warm-up, traffic and reading back the prediction log.

A session's gateway follows the rollouts of its own target, ``embedded:<session id>``
(:func:`monitoring.rollout_store.embedded_target`), never ``production``: on a prediction-log database shared with
production gateways, an embedded canary's rollout steers only this gateway, and production's rollouts do not steer
it (issue 25, finding 2).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from monitoring.prediction_log import create_log_engine, read_predictions
from monitoring.rollout_store import embedded_target
from pipelines.gateway_admin import GatewayAdmin
from pipelines.settings import Settings


@dataclass
class GatewaySession:
    """A running private gateway: its URL, an admin client, the prediction log it writes to, and the rollout
    target it follows (the one a rollout meant for it must name)."""

    url: str
    admin: GatewayAdmin
    log_engine: Engine
    feedback_token: str
    target: str

    def replay(self, x: np.ndarray, y: np.ndarray | None, **options: Any) -> Any:
        """Traffic at this gateway (see :func:`pipelines.replay.replay`); labels go to ``/feedback`` when ``y``."""
        from pipelines.replay import replay

        options.setdefault("feedback_token", self.feedback_token)
        return replay(self.url, x, y, **options)

    def warm_up(self, x: np.ndarray, requests: int, *, rate: float, seed: int = 0) -> None:
        """Mirror ``requests`` rows to every model before a judged window opens: a freshly loaded model's first
        calls are slow (lazy initialisation), and on the variant with fewer samples those would dominate its p99."""
        if requests <= 0:
            return
        previous = self.admin.state().get("mode", "split")
        self.admin.set_mode("shadow")
        self.replay(x[np.arange(requests) % len(x)], None, rate=max(rate, 50.0), feedback=False, seed=seed)
        self.admin.wait_shadow_drained()
        time.sleep(0.2)  # the last mirrored calls reach the prediction log before the window opens
        self.admin.set_mode(previous)

    def frame(self, since: float | None, until: float | None) -> pd.DataFrame:
        return read_predictions(self.log_engine, since, until)


@contextlib.contextmanager
def gateway_session(
    model_name: str,
    *,
    weight: float = 0.0,
    mode: str = "split",
    shadow_aliases: Sequence[str] = (),
    challenger_timeout_s: float = 0.5,
    shadow_max_in_flight: int | None = None,
    prediction_log_url: str | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
) -> Iterator[GatewaySession]:
    """Start a gateway process on loopback serving ``model_name``'s aliases; stop it (by PID) on exit.

    The gateway process is given its tracking store and prediction log explicitly (never by inheriting this
    process's environment); unset, they are the store MLflow's fluent API is pointed at (the caller's
    :meth:`pipelines.tracking.Tracking.fluent` block) and the settings' prediction log."""
    from serving.config import GatewaySettings
    from serving.server import start_gateway

    log_url = prediction_log_url or Settings().prediction_log_url
    # Tokens made for this session (32 random bytes each): the admin API steers, /feedback labels.
    admin_token, feedback_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    target = embedded_target(secrets.token_hex(6))
    extra: dict[str, Any] = {}
    if shadow_max_in_flight is not None:
        extra["shadow_max_in_flight"] = shadow_max_in_flight
    settings = GatewaySettings(
        tracking_uri=tracking_uri or mlflow.get_tracking_uri(), model_name=model_name, challenger_weight=weight,
        mode=mode,
        shadow_aliases=list(shadow_aliases), admin_token=admin_token, prediction_log_url=log_url, poll_interval_s=0,
        challenger_timeout_s=challenger_timeout_s, feedback_token=feedback_token, rollout_target=target,
        instance_id=target,  # its rows carry its target: its rollout judges them alone (rows_of), not production's
        **extra,
    )
    engine = create_log_engine(log_url)
    try:
        with start_gateway(settings, mode="process", workers=workers) as gateway, \
                GatewayAdmin(gateway.url, admin_token) as admin:
            yield GatewaySession(gateway.url, admin, engine, feedback_token, target)
    finally:
        engine.dispose()
