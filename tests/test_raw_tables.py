"""A user's table as it comes (string categories, missing numbers and categories, an ID column): every problem named
in one message; accepted tables encoded by a ColumnTransformer fitted on the training split and registered inside
the model, so ``models:/NAME@champion`` takes the raw rows in a fresh process and the gateway takes named records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from nas.data import TaskData
from pipelines.data import DataSpec, DataValidationError, prepare
from pipelines.preprocessing import plan_columns

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "60", "--budget", "4", "--epochs", "3", "--top-k", "2", "--seed", "1"]


def raw_table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Labels that depend on a category and a number, with the mess a real export has."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=rows)
    size = rng.normal(size=rows)
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(rows)],
        "color": color,
        "size": size,
        "weight": rng.normal(size=rows),
        "member": rng.choice([True, False], size=rows),
        "country": "NL",
        "label": np.where((color == "red") | (size > 0.8), "yes", "no"),
    })
    frame.loc[[3, 10, 20, 30], "size"] = np.nan
    frame.loc[[5, 11, 40], "color"] = None
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


# -- what is accepted, dropped, refused ------------------------------------------------------------------------
def test_columns_are_planned_by_what_they_hold():
    frame = raw_table().drop(columns="label")
    frame["empty"] = np.nan
    frame["row_number"] = np.arange(len(frame))
    plan = plan_columns(frame)
    assert plan.numeric == ["size", "weight"] and plan.one_hot == ["color", "member"]
    assert set(plan.dropped) == {"customer_id", "country", "empty", "row_number"}
    assert "identifier" in plan.dropped["customer_id"] and "constant" in plan.dropped["country"]
    assert "all values missing" in plan.dropped["empty"]
    assert any("'customer_id' looks like an ID" in w for w in plan.warnings)
    schema = {c["name"]: (c["type"], c["optional"]) for c in plan.schema}
    assert schema == {"color": ("string", True), "size": ("double", True), "weight": ("double", False),
                      "member": ("boolean", False)}
    assert not plan.problems


def test_every_problem_is_named_in_the_first_message(tmp_path):
    """A missing label, a date column with a cell that is no date, an infinite number and a repeated target column:
    one message, all four."""
    frame = raw_table(60)
    frame["signup"] = pd.date_range("2024-01-01", periods=len(frame)).strftime("%Y-%m-%d")
    frame.loc[9, "signup"] = "2024-13-45"  # dates are expanded; one that is no date is refused, named
    frame.loc[7, "weight"] = np.inf
    frame.loc[2, "label"] = None
    path = tmp_path / "bad.csv"
    text = frame.to_csv(index=False).splitlines()
    text[0] += ",label"  # the header names the target twice (pandas would read the copy as label.1)
    path.write_text("\n".join([text[0]] + [line + ",x" for line in text[1:]]) + "\n")
    with pytest.raises(DataValidationError) as err:
        prepare(DataSpec(source=str(path), target="label"), tmp_path / "out")
    message = str(err.value)
    assert "4 problems" in message, message
    for needle in ("repeats column name(s) label", "'signup' holds dates, but 1 of its values are not (e.g. "
                   "'2024-13-45')", "'weight' has 1 infinite",
                   "1 rows have no label"):
        assert needle in message, message
    assert "\n" not in message


def test_the_encoding_is_fitted_on_the_training_split_only(tmp_path):
    frame = raw_table()
    prepared = prepare(DataSpec(source=write_csv(frame, tmp_path / "raw.csv"), target="label"), tmp_path / "out")
    assert prepared.input_form == "table"
    assert set(prepared.dropped_columns) == {"customer_id", "country"}
    assert [c["name"] for c in prepared.input_schema] == ["color", "size", "weight", "member"]
    task = TaskData.load(prepared.path)
    import joblib

    pre = joblib.load(task.meta["preprocessor"])
    num = pre.named_transformers_["num"]
    # the median imputed and the scale are the training rows', not the whole table's
    from pipelines.data import split_indices

    codes = (frame["label"] == "yes").to_numpy().astype(int)
    train = frame.iloc[split_indices(codes, 0)["train"]]
    assert num.named_steps["impute"].statistics_[0] == pytest.approx(train["size"].median())
    assert num.named_steps["impute"].statistics_[0] != pytest.approx(frame["size"].median())
    assert task.x_train.shape[1] == len(prepared.feature_names) == 2 + 3 + 2  # 2 numbers, 3 colours, 2 booleans
    assert np.isfinite(task.x_train).all() and np.isfinite(task.x_test).all()
    # the production split stays raw: what a client sends, and what the tournament and the canary replay
    prod = frame.iloc[split_indices(codes, 0)["prod"]]
    assert task.x_prod.shape == (len(prod), 4) and task.x_prod.dtype == object
    first = prod.iloc[0]
    color, size, weight, member = task.x_prod[0].tolist()
    assert color == (None if pd.isna(first["color"]) else first["color"]) and member is bool(first["member"])
    assert weight == pytest.approx(first["weight"]) and (size is None) == pd.isna(first["size"])


def test_a_complete_numeric_table_keeps_the_float_matrix_path(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    frame["y"] = np.arange(80) % 2
    prepared = prepare(DataSpec(source=write_csv(frame, tmp_path / "n.csv"), target="y"), tmp_path / "out")
    assert prepared.input_form == "tensor" and prepared.feature_names == ["a", "b", "c"]
    assert [c["type"] for c in prepared.input_schema] == ["double"] * 3


def test_the_compiled_row_encoder_matches_scikit_learn():
    """The gateway's one-row path (plain numpy from the fitted parameters) encodes exactly like the transformer,
    for missing numbers and categories, unseen categories and an ordinal-coded (high-cardinality) column."""
    from nas.table_model import RowEncoder, coerce_frame
    from pipelines.preprocessing import fit_preprocessor

    rng = np.random.default_rng(3)
    frame = raw_table().drop(columns="label")
    frame["city"] = rng.choice([f"city-{i}" for i in range(40)], size=len(frame))  # > 20 values: ordinal
    frame.loc[[1, 2], "city"] = None
    plan = plan_columns(frame)
    assert plan.ordinal == ["city"]
    pre = fit_preprocessor(plan, frame.iloc[:200])
    encoder = RowEncoder.build(pre, plan.schema)
    assert encoder is not None
    test = frame.iloc[200:].copy()
    test.loc[test.index[:5], "color"] = "purple"
    test.loc[test.index[5:10], "city"] = "atlantis"
    test.loc[test.index[10:15], ["size", "color", "city"]] = None
    rows = [[None if pd.isna(v) else (bool(v) if isinstance(v, np.bool_) else v) for v in r]
            for r in test[[c["name"] for c in plan.schema]].astype(object).itertuples(index=False)]
    expected = pre.transform(coerce_frame(test, plan.schema))
    np.testing.assert_allclose(encoder.encode(rows), expected, atol=1e-5)


# -- registered, loaded in a fresh process, served ---------------------------------------------------------------
@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, prefect_api_env) -> dict:
    """One real ``nasops refresh`` of the raw CSV (small search budgets; the session's Prefect server; the
    tournament and the canary replay the raw production rows through a real gateway): a champion and a challenger."""
    from servers import require_slow

    require_slow("runs a whole refresh (trains and registers models)")
    root = tmp_path_factory.mktemp("raw-refresh")
    csv = write_csv(raw_table(), root / "customers.csv")
    env = {**os.environ, "NASOPS_HOME": str(root / "home"), **prefect_api_env}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)  # set by earlier tests in this process (mlflow.set_*_uri export them)
    proc = subprocess.run([*NASOPS, "refresh", "--data", csv, "--target", "label", "--model-name", "customers",
                           *FAST, "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'customer_id' looks like an ID" in proc.stderr
    return {"home": root / "home", "csv": csv, "env": env, "result": json.loads(proc.stdout)}


FRESH_LOAD = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_registry_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/customers@champion")
raw = pd.read_csv(sys.argv[2]).drop(columns=["label"]).head(6)
raw.loc[0, "size"] = None
raw.loc[1, "color"] = "purple"
out = model.predict(raw)
print(json.dumps({"columns": [c.name for c in model.metadata.get_input_schema().inputs],
                  "required": [c.required for c in model.metadata.get_input_schema().inputs],
                  "predictions": out["prediction"].tolist()}))
"""


@pytest.mark.slow
def test_the_champion_takes_raw_rows_in_a_fresh_process(refreshed):
    result = refreshed["result"]
    assert result["data"]["input_form"] == "table"
    assert result["baseline"]["version"] != result["challenger"]["version"]
    # the canary served the raw production rows to both variants and judged them (whatever it decided)
    online = result["canary"]["online"]
    assert online["champion"]["requests"] > 0 and online["challenger"]["requests"] > 0, result["canary"]
    assert online["champion"]["errors"] == 0 and online["challenger"]["errors"] == 0, result["canary"]
    assert "no metric had enough samples" not in result["canary"]["reason"]
    uri = f"sqlite:///{refreshed['home'] / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", FRESH_LOAD, uri, refreshed["csv"]], capture_output=True, text=True,
                          timeout=300, env=refreshed["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["color", "size", "weight", "member"]
    assert out["required"] == [False, False, True, True]
    assert len(out["predictions"]) == 6 and set(out["predictions"]) <= {"yes", "no"}


@pytest.mark.slow
def test_the_gateway_takes_named_records(refreshed):
    from serving.config import GatewaySettings
    from serving.server import start_gateway

    home = refreshed["home"]
    # the canary's decision took the challenger alias away: point it at the version that is not champion now
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    result = refreshed["result"]
    champion = result["canary"]["champion_version"]
    other = next(v for v in (result["baseline"]["version"], result["challenger"]["version"]) if v != champion)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias("customers", "challenger", other)
    settings = GatewaySettings(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", model_name="customers",
                               prediction_log_url=f"sqlite:///{home / 'gateway-log.db'}", poll_interval_s=0,
                               challenger_weight=0.5)
    rows = [{"color": "red", "size": 1.2, "weight": 0.1, "member": True},
            {"color": None, "weight": -0.3, "member": False},          # a missing category and a missing number
            {"color": "purple", "size": 0.0, "weight": 0.5, "member": True}]  # a category never seen in training
    with start_gateway(settings) as gw:
        variants = set()
        for _ in range(16):  # both variants answer (split 50/50 on random ids)
            r = httpx.post(f"{gw.url}/predict", json={"records": rows})
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"]) == 3 and set(r.json()["predictions"]) <= {"yes", "no"}
            variants.add(r.json()["variant"])
        assert variants == {"champion", "challenger"}
        r = httpx.post(f"{gw.url}/predict", json={"dataframe_records": rows[:1]})
        assert r.status_code == 200, r.text
        # issue 24: a row of the training table itself, with the ID column the refresh dropped, is answered (the
        # version's nasops.dropped_columns tag: data prep -> registration -> the gateway)
        own = httpx.post(f"{gw.url}/predict", json={"records": [{**rows[0], "customer_id": "c-1"}],
                                                    "explain_inputs": True})
        assert own.status_code == 200, own.text
        assert own.json()["ignored_columns"] == {"customer_id": "dropped_at_training"}, own.json()
        split = {"columns": ["member", "weight", "color"], "data": [[True, 0.2, "blue"]]}
        assert httpx.post(f"{gw.url}/predict", json={"dataframe_split": split}).status_code == 200
        # rows in the schema's column order (what the canary replays): color, size, weight, member
        r = httpx.post(f"{gw.url}/predict", json={"inputs": [["green", None, 0.4, False]]})
        assert r.status_code == 200, r.text
        short = httpx.post(f"{gw.url}/predict", json={"inputs": [["green", 0.4]]})
        assert short.status_code == 422 and "row 0 has 2 values" in short.json()["error"]
        bad = httpx.post(f"{gw.url}/predict", json={"records": [{"colour": "red", "size": "big", "member": True}]})
        assert bad.status_code == 422
        error = bad.json()["error"]
        for needle in ("unknown column(s) 'colour'", "'size' is 'big', expected a number",
                       "required column 'weight' is missing"):
            assert needle in error, error
        assert "weight (double)" in bad.json()["detail"]
        spec = httpx.get(f"{gw.url}/openapi.json").json()
        records = spec["components"]["schemas"]["PredictRequest"]["properties"]["records"]
        assert records["items"]["required"] == ["weight", "member"]
        assert set(records["items"]["properties"]) == {"color", "size", "weight", "member"}
    import sqlalchemy as sa

    engine = sa.create_engine(settings.prediction_log_url)
    with engine.connect() as conn:
        logged = [json.loads(r[0]) for r in conn.execute(sa.text("SELECT inputs FROM predictions LIMIT 3"))]
    engine.dispose()
    assert logged[1] == {"color": None, "size": None, "weight": -0.3, "member": False}  # named, as sent


def test_a_frame_read_from_the_training_file_meets_the_signature(tmp_path):
    """Issue 24: the documented `mlflow.pyfunc` call failed on a DataFrame read straight from the CSV ("Can not
    safely convert int64 to float64"): integer columns were declared double."""
    from mlflow.models.utils import _enforce_schema

    from pipelines.preprocessing import plan_columns
    from pipelines.registry import table_signature

    frame = pd.DataFrame({"rooms": [1, 2, 3, 4] * 10, "area": [30.5, 41.0, 55.2, 80.1] * 10,
                          "city": ["a", "b"] * 20, "floors": [1, None, 2, 3] * 10})
    path = tmp_path / "homes.csv"
    frame.to_csv(path, index=False)
    read = pd.read_csv(path)
    schema = plan_columns(read).schema
    signature = table_signature(schema)
    types = {c.name: c.type.name for c in signature.inputs.inputs}
    assert types == {"rooms": "long", "area": "double", "city": "string", "floors": "double"}, types
    _enforce_schema(read, signature.inputs)  # raises on a type MLflow will not cast


def test_the_logged_input_example_meets_an_integer_signature():
    """The input example registration logs must pass MLflow's own check of the signature (a long column)."""
    from mlflow.models.utils import _enforce_schema

    from pipelines.registry import table_signature
    from pipelines.retrain import _example_value

    schema = [{"name": "age", "type": "double", "optional": False, "integer": True},
              {"name": "income", "type": "double", "optional": True}, {"name": "home", "type": "string",
                                                                       "optional": True}]
    example = pd.DataFrame([{c["name"]: _example_value(c) for c in schema}])
    _enforce_schema(example, table_signature(schema).inputs)
