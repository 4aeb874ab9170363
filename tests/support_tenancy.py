"""A production gateway watched beside another test's work on the same prediction-log database (issue 25, tenancy).

:func:`watch_production` serves the real app in-process (TestClient, the stand-in model backend: only its routing
is watched) as a production gateway of ``model_name`` on ``log_url``, and records its split every 50 ms: the
weight it applies and the rollout it follows. A test running an embedded canary inside the block then asserts the
production side never moved.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from fastapi.testclient import TestClient
from support_backend import StandInBackend, StandInModel

from serving.app import create_app
from serving.config import GatewaySettings

ADMIN = "tenancy-admin-token-0123456789-abcdefghijk"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def production_settings(log_url: str, model_name: str = "m", **overrides) -> GatewaySettings:
    """A production gateway's settings (its default rollout target) on the log at ``log_url``."""
    values = dict(tracking_uri="sqlite:///unused-by-the-stand-in.db", model_name=model_name,
                  prediction_log_url=log_url, poll_interval_s=0, rollout_poll_s=0.02, admin_token=ADMIN)
    return GatewaySettings(**{**values, **overrides})


@contextlib.contextmanager
def serve(settings: GatewaySettings, backend: StandInBackend | None = None) -> Iterator[TestClient]:
    """The real app in-process with stand-in models (champion v1, challenger v2 unless ``backend`` is given)."""
    if backend is None:
        backend = StandInBackend({"champion": StandInModel("1"), "challenger": StandInModel("2")})
    with TestClient(create_app(settings, backend=backend), raise_server_exceptions=False) as client:
        yield client


@contextlib.contextmanager
def watch_production(log_url: str, model_name: str) -> Iterator[list[tuple[float, object]]]:
    """Yields the list of ``(weight, rollout followed)`` a production gateway reported, filled until the block
    ends."""
    seen: list[tuple[float, object]] = []
    stop = threading.Event()
    with serve(production_settings(log_url, model_name)) as production:
        def watch() -> None:
            while not stop.is_set():
                state = production.get("/admin/state", headers=AUTH).json()
                seen.append((state["weight"], state["rollout"]))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, name="production-watcher", daemon=True)
        watcher.start()
        try:
            yield seen
        finally:
            stop.set()
            watcher.join(timeout=5)
