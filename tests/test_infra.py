"""Deployment files that cannot run here (no Docker engine, no Kubernetes) must at least parse and agree with the code.

This is the one place where nasops checks files instead of running them, and it says so: the compose file and the
manifests are validated structurally; the local stack script is run for real by ``infra/local/stack.sh status``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.config import GatewaySettings

INFRA = Path(__file__).resolve().parent.parent / "infra"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _gateway_env_names() -> set[str]:
    return {f"NASOPS_GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}


def test_kubernetes_manifests_parse_and_use_real_gateway_settings():
    docs = [d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in _docs(p)]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "CronJob"} <= kinds
    known = _gateway_env_names()
    for doc in docs:
        if doc["kind"] in ("ConfigMap", "Secret"):
            data = doc.get("data") or doc.get("stringData")
            unknown = set(data) - known
            assert not unknown, f"{doc['metadata']['name']}: not gateway settings: {unknown}"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_compose_file_parses_and_binds_only_loopback():
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        unknown = {k for k in (service.get("environment") or {}) if k.startswith("NASOPS_GATEWAY_")}
        assert unknown <= _gateway_env_names(), unknown


def test_local_stack_script_is_valid_bash_and_reports_status(tmp_path):
    script = INFRA / "local" / "stack.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    proc = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True,
                          env={"NASOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0
    assert "mlflow: stopped" in proc.stdout and "prometheus: stopped" in proc.stdout
    bad = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True,
                         env={"NASOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.prometheus
def test_local_prometheus_config_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test` installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text((INFRA / "local" / "prometheus-local.yml").read_text().replace("GATEWAY_TARGET",
                                                                                      "127.0.0.1:8000"))
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
