"""After ``--allow-schema-change`` the champion and the challenger take other columns: the canary judges only
traffic that suits both (the shared columns, when every other column is optional for its variant), and refuses to
judge variants that no request suits both, instead of serving nothing. Real MLflow SQLite registry, real refresh
in a subprocess, real embedded canary (gateway and traffic processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.schema_check import traffic_columns
from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "60", "--budget", "4", "--epochs", "3", "--top-k", "2"]


def test_traffic_suits_both_only_when_every_unshared_column_is_optional():
    champion = [{"name": "size", "type": "double", "optional": False},
                {"name": "colour", "type": "string", "optional": False},
                {"name": "age", "type": "double", "optional": True}]
    assert traffic_columns(champion, [dict(c, optional=True) for c in champion]) == (None, None)  # same table
    dropped_age = champion[:2]
    assert traffic_columns(champion, dropped_age) == (["size", "colour"], None)
    shared, why = traffic_columns(champion, [*dropped_age, {"name": "height", "type": "double", "optional": False}])
    assert shared is None and "'height' (the challenger's)" in why and "added 'height'" in why
    shared, why = traffic_columns([dict(c, optional=False) for c in champion], dropped_age)
    assert shared is None and "'age' (the champion's)" in why
    shared, why = traffic_columns(champion, [dict(champion[0], type="string"), *champion[1:]])
    assert shared is None and "of other types" in why


def _table(columns: list[str], rows: int = 240, seed: int = 0, missing_age: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"size": rng.normal(size=rows), "colour": rng.choice(["p", "q", "r"], rows),
                          "age": rng.normal(40, 10, rows), "height": rng.normal(170, 10, rows)})
    frame["y"] = np.where((frame["size"] > 0) | (frame["colour"] == "p"), "hi", "lo")
    if missing_age:
        frame.loc[[2, 5, 9], "age"] = np.nan  # the champion imputes it: a request may leave it out
    return frame[[*columns, "y"]]


@pytest.fixture
def two_versions(tmp_path, nasops_home):
    """Register a baseline per table under 'shop' and point champion / challenger at them."""
    from servers import require_slow

    from pipelines.config import RetrainConfig
    from pipelines.contracts import Lineage
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import register_baseline
    from pipelines.tracking import configure_mlflow

    require_slow("trains and registers models")
    settings = Settings()
    configure_mlflow(settings)

    def register(frame: pd.DataFrame, name: str):
        csv = tmp_path / f"{name}.csv"
        frame.to_csv(csv, index=False)
        prepared = prepare(DataSpec(source=str(csv), target="y"), settings.data_dir)
        out = register_baseline(prepared.path, "shop", RetrainConfig(epochs=1), Lineage(
            dataset_fingerprint=prepared.fingerprint, data_source=csv.name, refresh_run_id="r"))
        return out.version, prepared

    def pair(champion: pd.DataFrame, challenger: pd.DataFrame):
        old, _ = register(champion, "v1")
        new, prepared = register(challenger, "v2")
        client = tracking_client(Settings())
        client.set_registered_model_alias("shop", "champion", old)
        client.set_registered_model_alias("shop", "challenger", new)
        return client, prepared

    return pair


@pytest.mark.slow
def test_the_canary_refuses_variants_no_request_suits(two_versions):
    from pipelines.control.versions import variants

    client, _ = two_versions(_table(["size", "colour", "age"]), _table(["size", "colour", "height"]))
    with pytest.raises(UserError) as err:
        variants(client, "shop")
    message = str(err.value)
    assert "the canary refuses to judge challenger v2 against champion v1 of 'shop'" in message, message
    assert "added 'height'; removed 'age'" in message and "'height' (the challenger's)" in message, message
    # `nasops canary start` goes through the same check (start_rollout -> variants): no rollout is created
    from monitoring.prediction_log import create_log_engine
    from monitoring.rollout_store import RolloutStore
    from pipelines.control.config import CanaryConfig
    from pipelines.control.controller import start_rollout

    store = RolloutStore(create_log_engine(Settings().prediction_log_url))
    with pytest.raises(UserError, match="refuses to judge"):
        start_rollout(store, "shop", CanaryConfig(), client=client)
    assert store.active("shop") is None


@pytest.mark.slow
def test_compatible_traffic_is_the_shared_columns_in_the_champions_order(two_versions):
    from nas.data import TaskData
    from pipelines.canary.flow import compatible_traffic
    from pipelines.control.versions import variants
    from pipelines.schema_check import judgeable_columns

    client, prepared = two_versions(_table(["age", "size", "colour"]), _table(["colour", "size"]))
    champion, challenger = variants(client, "shop")  # not refused
    shared = judgeable_columns("shop", champion, challenger)
    assert shared == ["colour", "size"]
    path = compatible_traffic(prepared.path, champion, shared)
    replay = TaskData.load(path)
    original = TaskData.load(prepared.path)
    assert [c["name"] for c in replay.meta["input_schema"]] == ["age", "size", "colour"]
    assert replay.x_prod[:, 0].tolist() == [None] * len(replay.x_prod)  # the champion imputes the age
    assert replay.x_prod[:, 1].tolist() == original.x_prod[:, 1].tolist()  # size
    assert replay.x_prod[:, 2].tolist() == original.x_prod[:, 0].tolist()  # colour
    assert replay.y_prod.tolist() == original.y_prod.tolist()


@pytest.mark.slow
def test_allow_schema_change_runs_the_canary_on_compatible_traffic(tmp_path, prefect_api_env):
    """A second refresh that drops an optional column, with --allow-schema-change: the canary replays only the
    shared columns to both variants and judges them (requests and answers on both sides, a decision)."""
    home = tmp_path / "home"
    env = {**os.environ, "NASOPS_HOME": str(home), **prefect_api_env}  # the session's Prefect server
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)

    def refresh(frame: pd.DataFrame, name: str, *extra: str) -> subprocess.CompletedProcess:
        csv = Path(tmp_path / f"{name}.csv")
        frame.to_csv(csv, index=False)
        return subprocess.run([*NASOPS, "refresh", "--data", str(csv), "--target", "y", "--model-name", "shop",
                               *FAST, *extra, "--json"], capture_output=True, text=True, timeout=900, env=env)

    first = refresh(_table(["size", "colour", "age"]), "v1", "--skip-canary", "--skip-tournament")
    assert first.returncode == 0, first.stderr[-3000:]
    second = refresh(_table(["size", "colour"], seed=1), "v2", "--allow-schema-change")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "the canary judges only traffic of the columns both variants take: 'size', 'colour'" in second.stderr
    canary = json.loads(second.stdout)["canary"]
    assert canary["judged_columns"] == ["size", "colour"], canary
    online = canary["online"]
    assert online["champion"]["requests"] > 0 and online["challenger"]["requests"] > 0, canary
    assert online["champion"]["errors"] == 0 and online["challenger"]["errors"] == 0, canary
    assert canary["replay"]["failed"] == 0, canary
    assert canary["decision"] in ("promote", "rollback", "promoted", "rolled_back"), canary


@pytest.mark.slow
def test_a_canary_of_one_version_against_itself_is_refused_before_prefect_starts(nasops_home, tmp_path, monkeypatch):
    """Issue 24: `nasops canary run` with 'champion' and 'challenger' on the same version was refused only inside
    the flow, ~65 s later on a busy host. The registry is read first now; the flow is never reached."""
    from support_cli import nasops

    import pipelines.canary

    client = tracking_client(Settings())
    client.create_registered_model("shop")
    client.create_model_version("shop", source=str(tmp_path / "model"))
    client.set_registered_model_alias("shop", "champion", "1")
    client.set_registered_model_alias("shop", "challenger", "1")
    prepared = tmp_path / "prepared.npz"
    prepared.write_bytes(b"")

    def flow_reached(*_args, **_kwargs):
        raise AssertionError("the canary flow started")

    monkeypatch.setattr(pipelines.canary, "canary_rollout", flow_reached, raising=False)
    result = nasops("canary", "run", "--model-name", "shop", "--data", str(prepared), home=nasops_home)
    assert result.returncode == 2, result
    assert "both point at version 1" in result.stderr and "Traceback" not in result.stderr, result.stderr
