"""Credentials in a Prometheus URL are never stored or shown (adversarial round 3, finding 8: a `prometheus_url`
with a password was stored verbatim in the MLflow canary config artifact and the rollout record, and printed by
`canary status --json`)."""

from __future__ import annotations

import json

import pytest

from monitoring.core.urls import redact_url, split_password, with_password
from monitoring.sources import PrometheusError, PrometheusSource
from pipelines.control.config import PROMETHEUS_PASSWORD_ENV, load_canary_config

SECRET = "s3cret-Pr0m"
URL = f"http://ana:{SECRET}@127.0.0.1:9/prom"


@pytest.mark.parametrize(("url", "bare", "password"), [
    (URL, "http://ana@127.0.0.1:9/prom", SECRET),
    ("http://127.0.0.1:9090", "http://127.0.0.1:9090", None),
    ("https://bob@[::1]:9090/x?y=1", "https://bob@[::1]:9090/x?y=1", None),
    ("https://bob:p%40ss@[::1]:9090/x", "https://bob@[::1]:9090/x", "p%40ss"),
])
def test_a_url_splits_into_the_bare_url_and_its_password(url, bare, password):
    assert split_password(url) == (bare, password)
    assert with_password(bare, password) == url
    assert (password or "***") not in redact_url(url) or password is None


def test_the_canary_config_keeps_the_password_in_memory_only(monkeypatch):
    cfg = load_canary_config({"prometheus_url": URL})
    stored = json.dumps(cfg.model_dump(mode="json"))  # the record, the artifact and `status --json` are made of this
    assert SECRET not in stored and "http://ana@127.0.0.1:9/prom" in stored
    assert cfg.prometheus_query_url() == URL  # the requests still authenticate
    again = load_canary_config(json.loads(stored))  # a controller started from the stored record
    assert again.prometheus_query_url() == "http://ana@127.0.0.1:9/prom"
    monkeypatch.setenv(PROMETHEUS_PASSWORD_ENV, SECRET)
    assert again.prometheus_query_url() == URL


def test_an_unreachable_prometheus_is_named_without_its_password():
    source = PrometheusSource(URL, step_s=1.0, timeout_s=1.0)
    with pytest.raises(PrometheusError) as failed:
        source.query_range("up", 0.0, 1.0)
    assert SECRET not in str(failed.value) and "ana:***@127.0.0.1:9" in str(failed.value)
