"""The gateway's admin API as a client: weight, mode, state, drift gauges, readiness — with a bearer token."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import httpx

from monitoring.vocabulary import CHAMPION
from pipelines.errors import UserError


class GatewayAdmin:
    """One gateway's ``/admin/*`` endpoints (and ``/readyz``) for whoever steers it: the canary, the tournament."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)

    def _post(self, path: str, body: dict) -> dict:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def set_weight(self, weight: float) -> dict:
        return self._post("/admin/weight", {"weight": weight})

    def set_mode(self, mode: str) -> dict:
        return self._post("/admin/mode", {"mode": mode})

    def publish_drift(self, variant: str, share: float) -> None:
        self._post("/admin/drift", {"variant": variant, "share": share})

    def state(self) -> dict:
        response = self.http.get("/admin/state")
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout_s: float = 120.0) -> dict:
        """Block until ``/readyz`` says champion and challenger are loaded."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            response = self.http.get("/readyz")
            if response.status_code == 200:
                return response.json()
            last = response.json()
            time.sleep(0.2)
        raise UserError(f"the gateway did not load both models within {timeout_s:.0f}s: {last}")

    def wait_loaded(self, shadow_aliases: Sequence[str], timeout_s: float = 120.0) -> dict:
        """Block until the champion and every shadow alias are loaded; a load error ends the wait."""
        deadline = time.monotonic() + timeout_s
        state: dict = {}
        while time.monotonic() < deadline:
            state = self.state()
            shadows = state.get("shadow_models") or {}
            if state.get("models", {}).get(CHAMPION) and all(shadows.get(a) for a in shadow_aliases):
                return state
            errors = {k: v for k, v in (state.get("load_errors") or {}).items() if k.startswith("shadow:")}
            if errors:
                raise UserError(f"the gateway could not load the shadow aliases: {errors}")
            time.sleep(0.2)
        raise UserError(f"the gateway did not load the champion and {list(shadow_aliases)} within "
                        f"{timeout_s:.0f}s: {state.get('load_errors')}")

    def wait_shadow_drained(self, timeout_s: float = 5.0) -> None:
        """Wait until no mirrored call is in flight, so the next window starts without stragglers."""
        deadline = time.monotonic() + timeout_s
        while self.state().get("shadow_in_flight", 0) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gateway_ready(url: str, *, awaiting_champion: bool = False) -> dict | None:
    """A running gateway's ``/readyz`` body (no token needed); a dead or unready gateway is a UserError.

    ``awaiting_champion``: the registry has no champion of the model yet (the first refresh on a fresh stack), so a
    live gateway answering 503 is what it should answer: accepted (None), the refresh registers the first champion
    and the hand-over waits for the gateway to load it (:func:`wait_ready`). A gateway that does not answer is
    refused all the same."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=5.0)
    except httpx.HTTPError as exc:
        raise UserError(f"cannot reach the gateway at {url} ({type(exc).__name__}); start it (`nasops serve`) or "
                        "fix the gateway URL") from None
    return readiness(response, url, awaiting_champion=awaiting_champion)


def readiness(response: httpx.Response, url: str, *, awaiting_champion: bool = False) -> dict | None:
    """The decision on a gateway's ``/readyz`` answer (see :func:`gateway_ready`): its body when ready, None when
    it waits for the first champion the caller is about to register, else a UserError naming why."""
    if response.status_code == 503 and awaiting_champion:
        return None
    if response.status_code != 200:
        try:
            why = response.json().get("error", "")
        except ValueError:
            why = response.text[:200]
        raise UserError(f"the gateway at {url} is not ready ({response.status_code}): {why}")
    return response.json()


def wait_ready(url: str, *, admin_token: str | None = None, timeout_s: float = 60.0) -> dict:
    """Wait until the gateway at ``url`` is ready, e.g. until it loads a champion and challenger the refresh has
    just registered (it polls the registry's aliases every ``poll_interval_s``, 10 s by default); with the admin
    token, ``POST /admin/reload`` asks it to load them now. Unreachable, or not ready in ``timeout_s``: UserError."""
    if admin_token:
        with contextlib.suppress(httpx.HTTPError):  # the wait below says what is wrong with the gateway
            httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30.0)
    deadline = time.monotonic() + timeout_s
    while True:
        body = gateway_ready(url, awaiting_champion=time.monotonic() < deadline)
        if body is not None:
            return body
        time.sleep(0.5)


def rollout_target(ready: dict, url: str) -> str:
    """The rollout target the gateway at ``url`` follows (its ``/readyz`` body): what a rollout started on it must
    name. A private gateway's (an embedded canary's) is refused: a hand-over steers the gateways callers use."""
    from monitoring.rollout_store import PRODUCTION_TARGET, is_embedded

    target = str(ready.get("rollout_target") or PRODUCTION_TARGET)
    if is_embedded(target):
        raise UserError(f"the gateway at {url} is an embedded canary's private gateway (rollout target "
                        f"{target!r}); start rollouts on the gateway callers use")
    return target


def refuse_production_target(target: str | None) -> None:
    """An embedded canary publishes to its private gateway's namespace only: a target outside it (production's, or
    any gateway callers use) would let a refresh without a gateway URL steer real traffic. One line, exit 2."""
    from monitoring.rollout_store import is_embedded

    if target is not None and not is_embedded(target):
        raise UserError(f"an embedded canary cannot publish its rollout to {target!r}: that target is followed by "
                        "gateways callers use; roll out there with `nasops refresh --gateway URL` or `nasops canary "
                        "start`")


def wait_follows(url: str, rollout_id: str, timeout_s: float = 15.0) -> None:
    """Wait until the gateway reports following ``rollout_id`` (it reads the same rollout store as we write). A
    worker still loading what a first refresh registered (503; its sibling answered ready) is waited for too."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ((gateway_ready(url, awaiting_champion=True) or {}).get("rollout") or {}).get("rollout_id") == rollout_id:
            return
        time.sleep(0.25)
    raise UserError(f"the gateway at {url} does not follow rollout {rollout_id}: it reads another rollout store. "
                    "Give the gateway and this command the same prediction-log database "
                    "(NASOPS_GATEWAY_PREDICTION_LOG_URL for the gateway, NASOPS_PREDICTION_LOG_URL or "
                    "--prediction-log-url here)")
