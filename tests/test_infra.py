"""Deployment files that cannot run here (no Docker engine, no Kubernetes) must at least parse and agree with the code.

This is the one place where nasops checks files instead of running them, and it says so: the compose file, the
Dockerfile, the Grafana provisioning and the Kubernetes manifests are validated statically (they parse, name only
real gateway settings, carry no secret, start the challenger at weight 0, every compose service has a healthcheck
and a restart policy, every database a URL names is created). The local stack, which can run here, is run for real
by ``tests/test_stack.py``; this module checks its command line only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from servers import unavailable

from serving.config import GatewaySettings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
STACK = INFRA / "local" / "stack.sh"
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _gateway_env_names() -> set[str]:
    return {f"NASOPS_GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_docs() -> list[dict]:
    return [d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in _docs(p)]


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]["containers"] if "template" in spec else []


# --- Kubernetes ---------------------------------------------------------------------------------------------

def test_kubernetes_manifests_parse_and_use_real_gateway_settings():
    docs = _k8s_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "CronJob"} <= kinds
    known = _gateway_env_names()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            unknown = {k for k in doc["data"] if k.startswith("NASOPS_GATEWAY_")} - known
            assert not unknown, f"{doc['metadata']['name']}: not gateway settings: {unknown}"
        for container in _containers(doc):
            names = {e["name"] for e in container.get("env", [])}
            assert {n for n in names if n.startswith("NASOPS_GATEWAY_")} <= known
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nasops-gateway")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["ports"][0]["containerPort"]
    assert container["args"][container["args"].index("--port") + 1] == str(port)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_kubernetes_manifests_ship_no_secret_and_a_silent_challenger():
    docs = _k8s_docs()
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret with a value must not be shipped; refer to one"
    weights = []
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not any(w in key.upper() for w in SECRET_WORDS), f"{key} in a ConfigMap"
                if key == "NASOPS_GATEWAY_CHALLENGER_WEIGHT":
                    weights.append(float(value))
        for container in _containers(doc):
            for env in container.get("env", []):
                if any(w in env["name"] for w in SECRET_WORDS):
                    assert "value" not in env, f"{env['name']} has a literal value"
                    assert env["valueFrom"]["secretKeyRef"]["name"], env
                if env["name"] == "NASOPS_GATEWAY_CHALLENGER_WEIGHT":
                    weights.append(float(env["value"]))
    assert weights and all(w == 0 for w in weights), f"challenger weight must start at 0, found {weights}"
    # the Secrets the Deployment refers to are named in the manifest's instructions
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nasops-gateway")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in _containers(deployment)[0]["env"] if "valueFrom" in e}
    header = (INFRA / "k8s" / "gateway.yaml").read_text()
    assert refs == {"nasops-gateway-tokens", "nasops-postgres"}
    assert all(f"kubectl create secret generic {ref}" in header for ref in refs)


def test_no_literal_secret_anywhere_in_infra():
    placeholder = re.compile(r"change-?me|changeme|password123|\bsecret\b\s*[:=]\s*\S", re.IGNORECASE)
    long_hex = re.compile(r"\b[0-9a-f]{32,}\b")
    url_password = re.compile(r"://[^/\s:@]+:[^@\s$]+@")  # user:password@host (a $(...) expansion is fine)
    for path in INFRA.rglob("*"):
        if not path.is_file() or path.suffix not in (".yml", ".yaml", ".json", ".sh", ".sql", "") or \
                path.name == ".gitignore":
            continue
        text = path.read_text()
        for pattern in (placeholder, long_hex, url_password):
            found = pattern.search(text)
            assert found is None, f"{path.relative_to(ROOT)}: {found.group(0)!r} looks like a shipped secret"


# --- docker compose -----------------------------------------------------------------------------------------

def test_compose_services_have_healthchecks_restart_policies_and_loopback_ports():
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"
        check = service.get("healthcheck", {}).get("test")
        assert check and check[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in ("service_healthy", "service_started"), (name, dep)
        unknown = {k for k in (service.get("environment") or {}) if k.startswith("NASOPS_GATEWAY_")}
        assert unknown <= _gateway_env_names(), unknown
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    assert services["gateway"]["environment"]["NASOPS_GATEWAY_CHALLENGER_WEIGHT"] == "0"
    assert "volumes" in services["refresh-worker"], "the refresh worker needs a data volume for NASOPS_HOME"


def test_compose_secrets_come_from_ignored_files_never_from_values():
    compose = _compose()
    declared = compose["secrets"]
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(w in key for w in SECRET_WORDS):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} uses undeclared secret {secret}"
        command = " ".join(service.get("command") or []) if isinstance(service.get("command"), list) else \
            str(service.get("command") or "")
        for used in re.findall(r"/run/secrets/([\w-]+)", command):
            assert used in service.get("secrets", []), f"{name} reads secret {used} it is not given"
    for name, secret in declared.items():
        path = INFRA / secret["file"]
        assert path.parent == INFRA / "secrets", f"secret {name} outside infra/secrets"
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} would be committed"


def test_compose_creates_every_database_it_uses():
    compose = _compose()
    services = compose["services"]
    init_mount = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    init_sql = (INFRA / init_mount.split(":")[0]).read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+)", init_sql)) | {services["postgres"]["environment"]["POSTGRES_DB"]}
    used = set()
    for service in services.values():
        text = json.dumps(service)
        for url in re.findall(r"postgresql(?:\+\w+)?://[^\s\"']+", text):
            parsed = urlparse(url.rstrip("\\"))
            assert parsed.hostname == "postgres", url
            used.add(parsed.path.strip("/"))
            if "+asyncpg" not in url:  # SQLAlchemy's bare postgresql:// means psycopg2, which is not installed
                assert url.startswith("postgresql+psycopg://"), url
    assert {"mlflow", "predictions", "prefect"} <= used
    assert used <= created, f"databases used but never created: {used - created}"


def test_compose_mlflow_has_a_postgres_driver_and_accepts_its_service_name():
    mlflow = _compose()["services"]["mlflow"]
    # built from the nasops image, whose pinned set has psycopg 3 (the upstream mlflow image has no driver)
    assert mlflow["build"]["dockerfile"] == "infra/Dockerfile"
    assert re.search(r"^psycopg(\[binary\])?==", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    command = " ".join(mlflow["command"])
    assert "postgresql+psycopg://" in command
    hosts = re.search(r"--allowed-hosts '([^']+)'", command).group(1).split(",")
    assert "mlflow:*" in hosts  # clients in the compose network send Host: mlflow:5000


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboard():
    services = _compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("."))
    provisioning = INFRA / next(src for src, dst in mounts.items() if dst == "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prom = next(d for d in datasources if d["type"] == "prometheus")
    url = urlparse(prom["url"])
    assert url.hostname in services and url.hostname == "prometheus"
    assert f"127.0.0.1:{url.port}:{url.port}" in services["prometheus"]["ports"]
    providers = yaml.safe_load((provisioning / "dashboards" / "nasops.yml").read_text())["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    dashboards = [src for src, dst in mounts.items() if dst.startswith(dashboard_dir + "/")]
    assert dashboards, f"no dashboard mounted under {dashboard_dir}"
    for src in dashboards:
        assert json.loads((INFRA / src).read_text())["uid"]
    # Prometheus in compose scrapes the gateway service on its port
    scrape = yaml.safe_load((INFRA / "prometheus" / "prometheus-compose.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert "127.0.0.1:8000:8000" in services["gateway"]["ports"]


def test_dockerfile_runs_unprivileged_with_a_healthcheck_and_every_package():
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.MULTILINE)
    packages = {p.rstrip("*") for p in
                __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
                ["find"]["include"]}
    ignore = (INFRA / "Dockerfile.dockerignore").read_text()
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile, f"the image lacks the {package} package"
        assert f"!{package}/" in ignore


# --- the local stack's command line (run for real in tests/test_stack.py) --------------------------------------

def _stack_env(tmp_path: Path, **extra: str) -> dict:
    return {"NASOPS_STACK_DIR": str(tmp_path / "stack"), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def test_local_stack_script_is_valid_bash_and_reports_a_stopped_stack(tmp_path):
    assert subprocess.run(["bash", "-n", str(STACK)], capture_output=True).returncode == 0
    proc = subprocess.run(["bash", str(STACK), "status"], capture_output=True, text=True, env=_stack_env(tmp_path))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # LSB: not running
    for name in ("postgres", "mlflow", "prefect", "prefect-worker", "dask-scheduler", "prometheus", "gateway"):
        assert re.search(rf"^{name}\s+-\s+\S+\s+stopped$", proc.stdout, re.MULTILINE), proc.stdout
    bad = subprocess.run(["bash", str(STACK), "bogus"], capture_output=True, text=True, env=_stack_env(tmp_path))
    assert bad.returncode == 2 and "usage" in bad.stderr
    env = subprocess.run(["bash", str(STACK), "env"], capture_output=True, text=True, env=_stack_env(tmp_path))
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in env.stdout
    assert "export NASOPS_GATEWAY_ADMIN_TOKEN=\"$(cat " in env.stdout  # the token itself is never printed


def test_local_stack_refuses_a_taken_port_before_starting_anything(tmp_path):
    has_postgres = bool(list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))) or shutil.which("postgres")
    if shutil.which("prometheus") is None or not has_postgres:
        unavailable("the stack's pre-flight needs the prometheus and PostgreSQL binaries (`make system-deps`)")
    names = ("POSTGRES", "MLFLOW", "PREFECT", "PREFECT_WORKER", "DASK", "DASK_DASHBOARD", "PROMETHEUS", "GATEWAY")
    with socket.socket() as sock, contextlib.ExitStack() as held:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        ports = {}
        for name in names:  # free ports for the others (held open until all are chosen, so they differ)
            if name != "MLFLOW":
                probe = held.enter_context(socket.socket())
                probe.bind(("127.0.0.1", 0))
                ports[f"NASOPS_STACK_{name}_PORT"] = str(probe.getsockname()[1])
        held.close()
        proc = subprocess.run(["bash", str(STACK), "up"], capture_output=True, text=True, timeout=60,
                              env=_stack_env(tmp_path, NASOPS_STACK_MLFLOW_PORT=str(port), **ports))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"port(s) {port} on 127.0.0.1 already in use" in proc.stderr
    assert "NASOPS_STACK_MLFLOW_PORT" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "stack").glob("run/*.pid"))


@pytest.mark.prometheus
def test_local_prometheus_config_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test` installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text((INFRA / "local" / "prometheus-local.yml").read_text().replace("GATEWAY_TARGET",
                                                                                      "127.0.0.1:8000"))
    shutil.copy(INFRA / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")  # as stack.sh lays them out
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
