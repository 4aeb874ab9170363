"""The Kubernetes manifests (infra/k8s) against the Kubernetes API schemas, offline: there is no cluster here, so
nothing is applied or run (docs/production.md, "Kubernetes", says what that leaves unchecked).

``kubernetes-validate`` bundles the OpenAPI schemas of each Kubernetes release; ``strict`` refuses any field the
schema does not know (a misspelt ``startupProbe`` would otherwise be dropped silently by the API server). Issue 25,
finding 11: no startup probe (liveness killed a gateway that needed 40-52 s to answer) and no manifests for MLflow,
Prefect, PostgreSQL, Prometheus or the controller. Slow-marked: importing the schemas takes ~0.5 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

K8S = Path(__file__).resolve().parent.parent / "infra" / "k8s"
KUBERNETES_VERSION = "1.31.0"
"""The release the manifests are validated for (docs/production.md names it)."""


def _docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _by_name(kind: str, name: str) -> dict:
    return next(d for _, d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_every_manifest_is_valid_for_the_stated_kubernetes_version():
    import kubernetes_validate

    docs = _docs()
    problems = []
    for file, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{file} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert {("Deployment", "nasops-gateway"), ("Deployment", "nasops-canary-controller"), ("Deployment", "mlflow"),
            ("Deployment", "prefect-server"), ("Deployment", "prefect-worker"), ("StatefulSet", "postgres"),
            ("Deployment", "prometheus"), ("CronJob", "nasops-refresh")} <= kinds


def test_a_misspelt_field_is_refused_so_the_check_has_teeth():
    import kubernetes_validate

    gateway = _by_name("Deployment", "nasops-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    container["startupProbes"] = container.pop("startupProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="startupProbes"):
        kubernetes_validate.validate(gateway, KUBERNETES_VERSION, strict=True)


def test_the_gateway_has_a_startup_probe_that_outlasts_a_slow_start():
    container = _by_name("Deployment", "nasops-gateway")["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180  # a 40-52 s start, with room to spare


def test_every_service_a_url_names_is_a_manifest_here():
    """Each in-cluster host in a URL (mlflow.mlops.svc, postgres.mlops.svc, prefect.mlops.svc) is a Service here,
    on the port the URL uses."""
    import re

    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for _, d in _docs()
                if d["kind"] == "Service"}
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    named = set(re.findall(r"([a-z0-9-]+)\.mlops\.svc:(\d+)", text))
    assert named, "no in-cluster URL found"
    for host, port in named:
        assert int(port) in services.get(host, set()), f"{host}.mlops.svc:{port} has no Service here"


def test_the_postgres_init_script_is_the_composes():
    init = _by_name("ConfigMap", "postgres-init")["data"]["10-nasops-databases.sql"]
    assert init.strip() == (K8S.parent / "postgres" / "init-databases.sql").read_text().strip()
