"""A refresh of an imbalanced binary table (issue 22 / 23): it defaults to a metric that "always the majority class"
does not win (log loss), says so, ranks by it, records it on every registered version, and the canary judges it
(``online_log_loss`` as the critical label metric, from the gateway's logged probabilities and late labels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "40", "--budget", "3", "--epochs", "3", "--top-k", "1", "--seed", "0", "--skip-tournament"]


def imbalanced_table(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """About 5 % positives, whose odds rise with ``a`` and ``b``: a model has signal, accuracy hardly sees it."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=rows), rng.normal(size=rows), rng.normal(size=rows)
    p = 1 / (1 + np.exp(-(-3.6 + 1.5 * a + 1.0 * b)))
    return pd.DataFrame({"a": a, "b": b, "c": c, "default": np.where(rng.random(rows) < p, "yes", "no")})


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, prefect_api_env) -> dict:
    from servers import require_slow

    require_slow("runs a whole refresh (trains and registers models, canaries the challenger)")
    root = tmp_path_factory.mktemp("metric-refresh")
    table = imbalanced_table()
    assert 0.02 < (table["default"] == "yes").mean() < 0.1
    table.to_csv(root / "credit.csv", index=False)
    env = {**os.environ, "NASOPS_HOME": str(root / "home"), **prefect_api_env}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)
    proc = subprocess.run([*NASOPS, "refresh", "--data", str(root / "credit.csv"), "--target", "default",
                           "--model-name", "credit", *FAST, "--json"],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"home": root / "home", "result": json.loads(proc.stdout), "stderr": proc.stderr}


@pytest.mark.slow
def test_an_imbalanced_binary_refresh_defaults_to_log_loss_and_the_canary_judges_it(refreshed):
    result, stderr = refreshed["result"], refreshed["stderr"]
    assert result["data"]["metric"] == "log_loss"
    assert "metric log_loss (default for a binary target whose rarer class is" in stderr  # printed, with why
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{refreshed['home'] / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for alias in ("champion", "challenger"):
        try:
            mv = client.get_model_version_by_alias("credit", alias)
        except Exception:  # the challenger alias moves to champion when promoted
            continue
        assert mv.tags["nasops.metric"] == "log_loss"
        assert 0 < float(mv.tags["nasops.test_log_loss"]) < 1.0  # the base rate's entropy is ~0.2 nats
    challenger_run = client.get_run(client.get_model_version("credit", result["challenger"]["version"]).run_id)
    assert "val_metric" in challenger_run.data.metrics  # retraining ranked and early-stopped on it
    canary = result["canary"]
    evidence = {e["name"]: e for e in canary["evidence"]}
    assert "online_accuracy" not in evidence, evidence.keys()
    judged = evidence["online_log_loss"]
    assert judged["critical"] and judged["n_champion"] > 0 and judged["n_challenger"] > 0, judged
