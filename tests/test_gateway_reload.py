"""Hot reload: when an alias moves, the gateway switches versions without failing a request in flight."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from servers import wait_until
from support_models import SlowModel, digits_data, mlp_classifier, train_small

from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

TOKEN = "reload-admin-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_alias_move_is_picked_up_by_polling_under_load(shared_registry):
    reg = shared_registry  # its own alias, so the shared champion/challenger stay where they are
    alias = "reload-under-load"
    x_tr, y_tr, _, _ = digits_data()
    # The old challenger answers slowly, so requests are in flight on it while the swap happens.
    old = reg.register(SlowModel(train_small(mlp_classifier(seed=5), x_tr, y_tr, steps=30), delay_s=0.02),
                       alias=alias)
    new_model = train_small(mlp_classifier(seed=7), x_tr, y_tr, steps=30)
    settings = reg.gateway_settings(challenger_alias=alias, challenger_weight=1.0, poll_interval_s=0.2,
                                    challenger_timeout_s=5)
    row = [reg.x_test[0].tolist()]
    results: list[tuple[int, str]] = []
    per_caller: list[list[str]] = [[], [], []]
    stop = threading.Event()
    with start_gateway(settings) as gw:

        def load(k: int) -> None:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                while not stop.is_set() and len(results) < 2000:
                    r = client.post("/predict", json={"inputs": row})
                    results.append((r.status_code, r.json().get("model_version", "")))
                    per_caller[k].append(results[-1][1])

        workers = [threading.Thread(target=load, args=(k,)) for k in range(3)]
        for w in workers:
            w.start()
        wait_until(lambda: all(per_caller), timeout=30, message="every caller getting answers from the old model")
        new = reg.register(new_model, alias=alias)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not results or results[-1][1] != new):
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        ready = httpx.get(f"{gw.url}/readyz").json()
    statuses = {s for s, _ in results}
    versions = [v for _, v in results]
    assert statuses == {200}, f"failed requests during reload: {statuses}"
    assert old in versions and new in versions
    # once a caller has seen the new version it never sees the old one again (no flapping between models)
    for seen in per_caller:
        if new in seen:
            assert old not in seen[seen.index(new):]
    assert ready["versions"]["challenger"] == new


def test_admin_reload_switches_immediately_without_polling(registry):
    settings = registry.gateway_settings(poll_interval_s=0, admin_token=TOKEN, challenger_weight=1.0)
    row = [registry.x_test[0].tolist()]
    with start_gateway(settings) as gw:
        assert httpx.post(f"{gw.url}/predict", json={"inputs": row}).json()["model_version"] == \
            registry.challenger_version
        x_tr, y_tr, _, _ = digits_data()
        new = registry.register(train_small(mlp_classifier(seed=9), x_tr, y_tr, steps=20), alias="challenger")
        # without polling nothing changes on its own
        assert httpx.post(f"{gw.url}/predict", json={"inputs": row}).json()["model_version"] == \
            registry.challenger_version
        state = httpx.post(f"{gw.url}/admin/reload", headers=AUTH).json()
        assert state["models"]["challenger"]["version"] == new
        assert httpx.post(f"{gw.url}/predict", json={"inputs": row}).json()["model_version"] == new
        # a removed challenger alias stops challenger traffic; the champion keeps serving and stays ready
        from mlflow.tracking import MlflowClient

        MlflowClient(registry.tracking_uri, registry.tracking_uri).delete_registered_model_alias(
            registry.model_name, "challenger")
        state = httpx.post(f"{gw.url}/admin/reload", headers=AUTH).json()
        assert state["models"]["challenger"] is None and state["ready"] is True
        assert httpx.post(f"{gw.url}/predict", json={"inputs": row}).json()["variant"] == "champion"
