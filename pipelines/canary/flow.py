"""The canary stage: a Prefect flow that proves the challenger on live traffic, then promotes or rolls back.

Embedded (no gateway of the user's configured): the stage starts a gateway process serving ``@champion`` and
``@challenger`` and a separate traffic process that plays the ``prod`` split with late labels, creates the rollout
record the gateway follows, and runs the production controller (:mod:`pipelines.control.controller`) in this
process until it decides (it reads no file: the drift reference built here from the prepared data is stored with
the rollout): shadow (optional) and the traffic steps (5% -> 25% -> 50% -> 100% by default), each
judged on that step's samples. Evidence goes to an MLflow run nested under the refresh's run
(:mod:`pipelines.control.evidence`). Against a real gateway, ``nasops canary start --gateway URL`` runs the same
controller as a Prefect deployment instead (:mod:`pipelines.control.deployment`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from monitoring.drift import features_frame
from monitoring.rollout_store import RolloutStore
from nas.data import TaskData
from pipelines import registry
from pipelines.canary.reference import drift_reference
from pipelines.contracts import CanaryOutput
from pipelines.control.config import CanaryConfig, parse_config
from pipelines.control.controller import reconcile, start_rollout
from pipelines.control.versions import variants
from pipelines.errors import UserError
from pipelines.gateway_admin import refuse_production_target
from pipelines.gateway_session import GatewaySession, gateway_session
from pipelines.prepared import load_prepared
from pipelines.tracking import ensure_tracking


def compatible_traffic(data_path: str, champion: Any, shared: list[str]) -> str:
    """The ``prod`` rows as requests both variants answer (after ``--allow-schema-change``): in the champion's
    column order (what the gateway validates against), the ``shared`` columns filled from the new rows and the
    champion's other (optional) columns absent, which it imputes; the challenger imputes its own. Saved beside
    ``data_path``; returns the new path."""
    import dataclasses

    from pipelines.schema_check import registered_schema

    data = load_prepared(data_path)
    schema = registered_schema(registry.version_tags(champion), optional=True) or []
    index = {c["name"]: i for i, c in enumerate(data.meta.get("input_schema") or [])}
    rows = np.empty((len(data.x_prod), len(schema)), dtype=object)
    for j, column in enumerate(schema):
        rows[:, j] = data.x_prod[:, index[column["name"]]] if column["name"] in shared else None
    meta = {**data.meta, "input_form": "table", "input_schema": schema, "canary_columns": shared}
    path = Path(data_path).with_suffix(f".canary-v{champion.version}.npz")
    dataclasses.replace(data, x_prod=rows, meta=meta).save(path)
    return str(path)


def reference_frame(data: TaskData, cfg: CanaryConfig) -> pd.DataFrame:
    """Training rows (a seeded sample) as the drift reference."""
    x = data.x_train
    if len(x) > cfg.reference_rows:
        x = x[np.sort(np.random.default_rng(cfg.seed).choice(len(x), cfg.reference_rows, replace=False))]
    names = [str(n) for n in data.meta.get("feature_names") or []] or None
    return features_frame(x, names)


@flow(name="canary_rollout", log_prints=True)
def canary_rollout(model_name: str, data_path: str, config: dict | CanaryConfig | None = None) -> CanaryOutput:
    """Run the progressive canary of ``@challenger`` against ``@champion`` and decide."""
    return run_canary(model_name, data_path, config)


def run_canary(model_name: str, data_path: str, config: dict[str, Any] | CanaryConfig | str | None = None, *,
               on_interval: Callable[[dict], None] | None = None, target: str | None = None) -> CanaryOutput:
    """The body of :func:`canary_rollout` (callable without Prefect, e.g. from benchmarks).

    The embedded canary is production in miniature: a gateway process, a separate traffic process playing the
    ``prod`` split with labels arriving ``label_delay_s`` late, a rollout record in the prediction-log database
    that the gateway follows, and the very controller a production rollout uses, reconciling until it decides.
    Its rollout steers its own gateway only (``target``, default: the session's ``embedded:<id>``): a production
    gateway on the same database never follows it; a production target is refused.
    """
    refuse_production_target(target)
    cfg = parse_config(config)
    log = _logger()
    load_prepared(data_path)  # fail before a gateway starts
    ensure_tracking()
    client = registry.client_for_active()
    champion, challenger = variants(client, model_name)
    log.info("canary: champion v%s vs challenger v%s, steps %s", champion.version, challenger.version, cfg.steps)
    from pipelines.schema_check import judgeable_columns

    shared = judgeable_columns(model_name, champion, challenger)
    if shared is not None:
        data_path = compatible_traffic(data_path, champion, shared)
        log.info("canary: the variants take other columns; it replays only what suits both: the columns %s",
                 ", ".join(map(repr, shared)))
    clock = time.perf_counter()
    data = load_prepared(data_path)
    with gateway_session(model_name, weight=0.0, mode="split", challenger_timeout_s=cfg.challenger_timeout_s,
                         workers=cfg.gateway_workers) as session:
        session.admin.wait_ready()
        session.warm_up(data.x_prod, cfg.warmup_requests, rate=cfg.rate, seed=cfg.seed)
        gateway_start_s = time.perf_counter() - clock
        store = RolloutStore(session.log_engine)
        # production traffic exists before a rollout starts: the first interval must not be judged on silence
        with traffic_process(session, data_path, cfg) as traffic:
            rollout = start_rollout(store, model_name, cfg, gateway_url=session.url, data_path=data_path,
                                    client=client, reference=drift_reference(data, cfg.reference_rows, cfg.seed),
                                    target=target or session.target)
            wait_followed(session, rollout)
            report = drive(store, rollout.rollout_id, cfg, client=client, on_interval=on_interval)
        traffic_s = time.perf_counter() - clock - gateway_start_s
    if report.result is None:
        raise RuntimeError(f"rollout {rollout.rollout_id} ended ({report.action}) without a canary result")
    sent = int(traffic.get("sent", 0))
    result = report.result.model_copy(update={
        "rollout_id": rollout.rollout_id, "judged_columns": shared,
        "replay": {"sent": sent, "failed": max(0, sent - int(traffic.get("ok", 0))),
                   "feedback_sent": int(traffic.get("feedback_sent", 0))},
        "timings": {"gateway_start_s": round(gateway_start_s, 2), "traffic_s": round(traffic_s, 2),
                    "total_s": round(time.perf_counter() - clock, 2)}})
    log.info("canary decision: %s (%s)", result.decision, result.reason)
    return result


def wait_followed(session: GatewaySession, rollout: Any, timeout_s: float = 15.0) -> None:
    """Wait until the gateway applies the rollout record (it polls the same database)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = session.admin.state().get("rollout") or {}
        if seen.get("rollout_id") == rollout.rollout_id:
            return
        time.sleep(0.1)
    raise UserError(f"the gateway at {session.url} did not pick up rollout {rollout.rollout_id} within "
                    f"{timeout_s:.0f}s; it must use the same prediction-log database as the controller")


def drive(store: RolloutStore, rollout_id: str, cfg: CanaryConfig, *, client: Any = None,
          on_interval: Callable[[dict], None] | None = None) -> Any:
    """Reconcile in this process until the rollout is decided and applied (the embedded controller loop)."""
    while True:
        report = reconcile(store, rollout_id, client=client)
        if report.action in ("judged", "decided") and on_interval is not None:
            rollout = store.get(rollout_id)
            if rollout is not None and rollout.history:
                on_interval(rollout.history[-1])
        if report.action in ("applied", "decided", "done"):
            return report
        time.sleep(min(cfg.interval_s, max(0.05, report.next_due_s or 0.2)))


@contextlib.contextmanager
def traffic_process(session: GatewaySession, data_path: str, cfg: CanaryConfig) -> Iterator[dict]:
    """The traffic process (:mod:`pipelines.traffic`) against the session's gateway; yields its summary, filled
    in when it stops (SIGTERM, by PID, at the end of the block)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    summary: dict = {}
    with tempfile.TemporaryDirectory(prefix="nasops-traffic-") as tmp:
        token_file = Path(tmp) / "feedback-token"
        token_file.write_text(session.feedback_token)
        os.chmod(token_file, 0o600)
        out = Path(tmp) / "summary.json"
        argv = [sys.executable, "-m", "pipelines.traffic", "--gateway", session.url, "--data", data_path,
                "--rate", str(cfg.rate), "--label-delay-s", str(cfg.label_delay_s), "--seed", str(cfg.seed),
                "--summary", str(out)]
        if cfg.feedback:
            argv += ["--feedback-token-file", str(token_file)]
        if cfg.drift:
            argv += ["--drift", cfg.drift]
        log_path = Path(tmp) / "traffic.log"
        # stderr to a file, never a pipe: a pipe nobody reads fills up and blocks the traffic process mid-canary
        ready = Path(tmp) / "ready"
        argv += ["--ready-file", str(ready)]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            deadline = time.monotonic() + 120.0
            while not ready.exists():  # its first request answered: the traffic flows
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = log_path.read_text(errors="replace")[-500:].strip()
                    raise UserError(f"the traffic process did not start sending (exit {proc.poll()}): {err}")
                time.sleep(0.1)
            yield summary
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                summary.update(json.loads(out.read_text()))
            elif proc.returncode not in (0, -15, 143):
                err = log_path.read_text(errors="replace")[-500:].strip()
                raise UserError(f"the traffic process failed (exit {proc.returncode}): {err}")


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # called outside a flow run (benchmarks, notebooks)
        return logging.getLogger("nasops.canary")
