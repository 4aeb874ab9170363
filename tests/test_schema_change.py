"""A refresh on other columns under the same model name stops before training, naming the columns and the fixes;
``--allow-schema-change`` (or another ``--model-name``) goes ahead."""

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
from pipelines.schema_check import SchemaDiff, compare, registered_schema

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "60", "--budget", "4", "--epochs", "2", "--top-k", "2", "--skip-tournament", "--skip-canary"]


def test_compare_names_added_removed_and_retyped_columns():
    old = [{"name": "a", "type": "double", "optional": False}, {"name": "b", "type": "string", "optional": True},
           {"name": "c", "type": "double", "optional": False}]
    new = [{"name": "a", "type": "double", "optional": True}, {"name": "b", "type": "double", "optional": False},
           {"name": "d", "type": "boolean", "optional": False}]
    diff = compare(old, new)
    assert diff.added == ["d"] and diff.removed == ["c"] and diff.retyped == [("b", "string", "double")]
    assert diff.describe() == "added 'd'; removed 'c'; retyped 'b' (string -> double)"
    assert not compare(old, [dict(c, optional=not c["optional"]) for c in old])  # optional or not: same table
    assert not SchemaDiff()


def test_the_registered_schema_is_read_from_the_tags():
    schema = [{"name": "x", "type": "string", "optional": True}]
    assert registered_schema({"input_schema": json.dumps(schema)}) == [{"name": "x", "type": "string"}]
    # a float-matrix version registered before input schemas were tagged: its feature names, as numbers
    assert registered_schema({"features": json.dumps(["p0", "p1"])}) == [{"name": "p0", "type": "double"},
                                                                       {"name": "p1", "type": "double"}]
    assert registered_schema({}) is None


def _table(columns: dict[str, str], rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: (rng.normal(size=rows) if kind == "double" else rng.choice(["p", "q", "r"], rows))
                          for name, kind in columns.items()})
    first = frame[next(iter(columns))]
    hi = (first > 0) if columns[next(iter(columns))] == "double" else (first == "p")
    flip = rng.uniform(size=rows) < 0.15  # not a copy of one column: the leakage check would refuse the table
    frame["y"] = np.where(hi ^ flip, "hi", "lo")
    return frame


def _cli(*args: str, home: Path, timeout: int = 600, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASOPS_HOME": str(home), **env_extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*NASOPS, *args], capture_output=True, text=True, timeout=timeout, env=env)


LEAKED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "NASOPS_PREDICTION_LOG_URL")


@pytest.fixture(scope="module")
def shop_champion(tmp_path_factory) -> dict:
    """A champion of model 'shop' trained (stage level, real SQLite registry) on columns size, colour, age: once
    for the module (a baseline training and its registration; neither test moves the champion alias)."""
    from servers import require_slow

    from pipelines.config import RetrainConfig
    from pipelines.contracts import Lineage
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import register_baseline
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    require_slow("trains and registers a model")
    root = tmp_path_factory.mktemp("shop")
    home = root / "nasops-home"
    home.mkdir()
    csv = root / "v1.csv"
    _table({"size": "double", "colour": "string", "age": "double"}).to_csv(csv, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NASOPS_HOME", str(home))
        for leaked in LEAKED:  # set to be put back (or removed) afterwards: configure_mlflow exports the URIs
            mp.setenv(leaked, "")
            mp.delenv(leaked)
        settings = Settings()
        configure_mlflow(settings)
        prepared = prepare(DataSpec(source=str(csv), target="y"), settings.data_dir)
        register_baseline(prepared.path, "shop", RetrainConfig(epochs=2),
                          Lineage(dataset_fingerprint=prepared.fingerprint, data_source="v1.csv",
                                  refresh_run_id="r"))
    return {"home": home, "prepared": prepared}


@pytest.fixture
def champion_home(shop_champion, tmp_path, monkeypatch) -> dict:
    """This test in the state dir of :func:`shop_champion` (``NASOPS_HOME``), with its own scratch directory."""
    monkeypatch.setenv("NASOPS_HOME", str(shop_champion["home"]))
    for leaked in LEAKED:
        monkeypatch.delenv(leaked, raising=False)
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow

    configure_mlflow(Settings())
    return {**shop_champion, "tmp": tmp_path}


@pytest.mark.slow
def test_other_columns_under_the_same_name_stop_with_exit_2_naming_them(champion_home):
    csv = champion_home["tmp"] / "v2.csv"
    _table({"size": "string", "colour": "string", "height": "double"}).to_csv(csv, index=False)
    from support_cli import nasops  # the CLI's pre-flight refuses it: in-process (the console script's own mapping)

    proc = nasops("refresh", "--data", str(csv), "--target", "y", "--model-name", "shop", *FAST,
                  home=champion_home["home"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in ("added 'height'", "removed 'age'", "retyped 'size' (double -> string)", "--model-name",
                   "--allow-schema-change"):
        assert needle in proc.stderr, proc.stderr
    # the flow checks too (a scheduled deployment has no CLI pre-flight): the same one line
    from pipelines.data import DataSpec, prepare
    from pipelines.schema_check import check_schema_change
    from pipelines.settings import Settings

    new = prepare(DataSpec(source=str(csv), target="y"), Settings().data_dir)
    with pytest.raises(UserError, match=r"added 'height'; removed 'age'; retyped 'size' \(double -> string\)"):
        check_schema_change("shop", new.input_schema, new.source)
    assert check_schema_change("shop", new.input_schema, new.source, allow=True)
    assert check_schema_change("shop", champion_home["prepared"].input_schema, "v1.csv") is None
    assert check_schema_change("another-model", new.input_schema, new.source) is None


@pytest.mark.slow
def test_allow_schema_change_retrains_the_model_on_the_new_columns(champion_home, prefect_api_env):
    csv = champion_home["tmp"] / "v2.csv"
    _table({"size": "double", "colour": "string", "height": "double"}, seed=1).to_csv(csv, index=False)
    no_skips = [a for a in FAST if a not in ("--skip-tournament", "--skip-canary")]
    proc = _cli("refresh", "--data", str(csv), "--target", "y", "--model-name", "shop", "--allow-schema-change",
                *no_skips, "--json", home=champion_home["home"], **prefect_api_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--allow-schema-change: retraining 'shop' on the new columns" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["baseline"] is None  # the old champion stays champion
    # a canary of two models with different columns would serve nothing: it is skipped, and says so
    assert result["canary"] in ({}, None) and result["tournament"] in ({}, None), result
    assert "tournament and the canary are skipped" in proc.stderr
    from mlflow.tracking import MlflowClient

    from pipelines.settings import Settings

    uri = Settings().tracking_uri
    mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("shop", "challenger")
    names = [c["name"] for c in json.loads(mv.tags["nasops.input_schema"])]
    assert names == ["size", "colour", "height"]


@pytest.mark.slow
def test_changed_data_scores_the_table_champion_again_on_the_new_rows(champion_home):
    """Issue 24: after the data changed the summary compared the champion's figures on its own split with the
    challenger's on the new one. Here the real table champion (its own fitted encoder) is scored on new rows of the
    same columns, and the figures are the ones its pyfunc gives on the new test rows."""
    import mlflow

    from nas.data import TaskData
    from pipelines import registry
    from pipelines.contracts import ChampionFacts
    from pipelines.data import RAW_EVAL, DataSpec, prepare
    from pipelines.rescore import on_this_split
    from pipelines.settings import Settings

    csv = champion_home["tmp"] / "v1b.csv"
    _table({"size": "double", "colour": "string", "age": "double"}, rows=300, seed=5).to_csv(csv, index=False)
    new = prepare(DataSpec(source=str(csv), target="y"), Settings().data_dir)
    version = str(registry.alias_version(registry.client_for_active(), "shop", registry.CHAMPION).version)
    facts = on_this_split("shop", new.path, ChampionFacts(version=version, test_accuracy=0.0))
    assert facts.rescored and facts.split == new.fingerprint[:8]
    assert facts.registered_split == champion_home["prepared"].fingerprint[:8]
    data = TaskData.load(new.path)
    rows = json.loads(Path(data.meta[RAW_EVAL]).read_text())["test"]
    frame = pd.DataFrame(rows, columns=[c["name"] for c in data.meta["input_schema"]])
    predicted = mlflow.pyfunc.load_model(f"models:/shop/{version}").predict(frame)["prediction"]
    truth = [new.classes[i] for i in data.y_test]
    assert facts.test_accuracy == pytest.approx(float(np.mean(predicted.to_numpy() == np.asarray(truth))))
    same = on_this_split("shop", champion_home["prepared"].path, ChampionFacts(version=version, test_accuracy=0.5))
    assert not same.rescored and same.test_accuracy == 0.5  # the champion's own data: its registered figures
