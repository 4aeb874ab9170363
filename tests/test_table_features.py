"""Date columns expanded inside the registered model, and integer columns declared categorical (``--categorical``).

Dates (a datetime type, or ISO strings) become year, month, weekday, day of year (and hour when the data has times)
in the fitted ``ColumnTransformer``, so the served model takes the raw date strings; a date column with cells that
are not dates is refused naming them. Declared integer columns are one-hot encoded; a declared name the table does
not have is one line, exit 2. End to end: a real refresh, a fresh-process ``mlflow.pyfunc`` load, a real gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

from nas.data import TaskData
from pipelines.data import DataSpec, DataValidationError, prepare
from pipelines.preprocessing import fit_preprocessor, plan_columns

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "60", "--budget", "4", "--epochs", "3", "--top-k", "2", "--seed", "1", "--skip-tournament",
        "--skip-canary"]


def orders(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Late deliveries depend on the weekday of the order (a date string), its hour, and a store code (1-4, an
    integer category: store 3 is late whatever the number says)."""
    rng = np.random.default_rng(seed)
    placed = pd.Timestamp("2024-01-01 06:00") + pd.to_timedelta(rng.integers(0, 365 * 24, rows), unit="h")
    store = rng.integers(1, 5, rows)
    late = (placed.dayofweek >= 5) | (store == 3) | (placed.hour >= 20)
    frame = pd.DataFrame({
        "placed": placed.strftime("%Y-%m-%d %H:%M"),
        "store": store,
        "amount": rng.gamma(2.0, 20.0, rows).round(2),
        "late": np.where(late, "late", "on_time"),
    })
    frame.loc[[4, 17], "placed"] = None
    return frame


# -- dates ------------------------------------------------------------------------------------------------------
def test_date_strings_and_timestamps_are_expanded_not_refused():
    frame = orders().drop(columns="late")
    frame["shipped"] = pd.to_datetime(frame["placed"]) + pd.Timedelta(days=2)  # a datetime type (as from Parquet)
    frame["shipped"] = frame["shipped"].dt.normalize()  # midnight: no hour feature
    plan = plan_columns(frame)
    assert not plan.problems and plan.dates == ["placed", "shipped"]
    schema = {c["name"]: c for c in plan.schema}
    assert schema["placed"] == {"name": "placed", "type": "string", "optional": True, "format": "datetime"}
    pre = fit_preprocessor(plan, frame.iloc[:150])
    names = list(pre.get_feature_names_out())
    for part in ("year", "month", "dayofweek", "dayofyear", "hour"):
        assert f"date__placed_{part}" in names
    assert "date__shipped_hour" not in names and "date__shipped_dayofweek" in names
    # the weekday of a known date, unscaled: 2024-06-01 is a Saturday (5)
    parts = pre.named_transformers_["date"].named_steps["parts"]
    day = parts.transform(pd.DataFrame({"placed": ["2024-06-01 21:30"], "shipped": ["2024-06-03"]}))
    assert day[0, :5].tolist() == [2024, 6, 5, 153, 21]


def test_a_date_cell_does_not_depend_on_the_other_cells_of_its_batch():
    """pandas' ISO-8601 column parser let an offset shift the naive times after it (07:00 became 05:00 UTC behind a
    '+02:00' cell); parsed cell by cell, each value means the same in any batch."""
    from pipelines.date_features import parse_dates

    cells = ["2024-06-01T23:30:00+02:00", "2024-03-05 07:00", None, "2024-03-05T07:00:00Z", "nope"]
    stamps = parse_dates(pd.Series(cells, dtype=object))
    assert [None if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M") for t in stamps] == [
        "2024-06-01 21:30", "2024-03-05 07:00", None, "2024-03-05 07:00", None]
    assert parse_dates(pd.Series(cells[::-1], dtype=object)).tolist()[::-1] == stamps.tolist()


def test_a_date_column_with_cells_that_are_not_dates_is_refused_naming_them(tmp_path):
    frame = orders()
    frame.loc[8, "placed"] = "2024-02-31 10:00"
    frame.loc[9, "placed"] = "yesterday"
    path = tmp_path / "o.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as err:
        prepare(DataSpec(source=str(path), target="late"), tmp_path / "out")
    message = str(err.value)
    assert "'placed' holds dates, but 2 of its values are not" in message and "'2024-02-31 10:00'" in message
    assert "'yesterday'" in message and "\n" not in message


# -- integers declared categorical ------------------------------------------------------------------------------
def test_declared_integer_columns_are_one_hot_encoded():
    frame = orders().drop(columns="late")
    assert plan_columns(frame).numeric == ["store", "amount"]
    plan = plan_columns(frame, ["store"])
    assert plan.numeric == ["amount"] and plan.one_hot == ["store"] and plan.declared == ["store"]
    assert {c["name"]: c["type"] for c in plan.schema}["store"] == "double"  # a client still sends a number
    pre = fit_preprocessor(plan, frame)
    assert [n for n in pre.get_feature_names_out() if n.startswith("cat__store")] == [
        "cat__store_1", "cat__store_2", "cat__store_3", "cat__store_4"]
    from nas.table_model import coerce_frame

    one = pre.transform(coerce_frame(pd.DataFrame({"placed": ["2024-01-02"], "store": [3], "amount": [1.0]}),
                                     plan.schema))
    store = [i for i, n in enumerate(pre.get_feature_names_out()) if n.startswith("cat__store")]
    assert one[0, store].tolist() == [0, 0, 1, 0]


def test_the_compiled_row_encoder_takes_dates_and_declared_categories():
    """The gateway's one-row encoder (nas.table_model.RowEncoder) also compiles a date column and a declared integer
    category and encodes exactly as scikit-learn does (before, either made it decline, and every row paid 6-16 ms
    of pandas): ISO strings with and without times and zones, missing and unparseable dates, known, unseen and
    missing store codes."""
    from nas.table_model import RowEncoder, coerce_frame

    frame = orders().drop(columns="late")
    plan = plan_columns(frame, ["store"])
    assert plan.dates == ["placed"] and plan.one_hot == ["store"]
    pre = fit_preprocessor(plan, frame.iloc[:200])
    encoder = RowEncoder.build(pre, plan.schema)
    assert encoder is not None
    names = [c["name"] for c in plan.schema]
    rows = [list(r) for r in frame[names].astype(object).where(frame[names].notna(), None).itertuples(index=False)]
    rows += [["2024-06-01T21:30:00Z", 3, 5.0], ["2024-06-01T23:30:00+02:00", 9, None], ["2024-06-01", None, 1.5],
             ["not a date", 2.0, 7.0], [None, 4, None], ["2024-02-30", 1, 2.0], ["2023-12-31 23:59:59.5", 2, 0.0]]
    rows = [[float(v) if isinstance(v, (int, np.integer)) else v for v in r] for r in rows]  # validated: numbers
    expected = pre.transform(coerce_frame(pd.DataFrame(rows, columns=names), plan.schema))
    np.testing.assert_allclose(encoder.encode(rows), expected, atol=1e-5)


def test_wrong_declarations_are_problems_of_the_table():
    frame = orders().drop(columns="late")
    plan = plan_columns(frame, ["stor", "amount", "late"])
    text = " ".join(plan.problems)
    assert "--categorical names 'late', 'stor', not feature column(s)" in text, plan.problems
    assert "'amount' is declared categorical (--categorical) but holds non-integer numbers" in text


def test_an_unknown_categorical_column_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "o.csv"
    orders().to_csv(path, index=False)
    home = tmp_path / "home"
    home.mkdir()
    from support_cli import nasops

    proc = nasops("refresh", "--data", str(path), "--target", "late", "--categorical", "store,shop_id", *FAST,
                  home=home)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--categorical names 'shop_id'" in proc.stderr, proc.stderr


# -- end to end: registered, loaded fresh, served ---------------------------------------------------------------
@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, prefect_api_env) -> dict:
    from servers import require_slow

    require_slow("runs a whole refresh (trains and registers models)")
    root = tmp_path_factory.mktemp("dates-refresh")
    parquet = root / "orders.parquet"
    frame = orders()
    frame["placed"] = pd.to_datetime(frame["placed"])  # a timestamp type in the file
    frame.to_parquet(parquet, index=False)
    env = {**os.environ, "NASOPS_HOME": str(root / "home"), **prefect_api_env}  # the session's Prefect server
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)
    proc = subprocess.run([*NASOPS, "refresh", "--data", str(parquet), "--target", "late", "--categorical", "store",
                           "--model-name", "orders", *FAST, "--json"], capture_output=True, text=True, timeout=900,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"home": root / "home", "env": env, "result": json.loads(proc.stdout)}


FRESH_LOAD = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_registry_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/orders@champion")
raw = pd.DataFrame({"placed": ["2024-03-09 21:00", "2024-03-11 09:15", None],
                    "store": [3, 1, 2], "amount": [10.0, 55.5, 20.0]})  # an integer column: long in the signature
out = model.predict(raw)
print(json.dumps({"columns": [c.name for c in model.metadata.get_input_schema().inputs],
                  "predictions": out["prediction"].tolist()}))
"""


@pytest.mark.slow
def test_the_model_takes_raw_dates_in_a_fresh_process_and_at_the_gateway(refreshed):
    result = refreshed["result"]
    data = result["data"]
    assert data["input_form"] == "table"
    assert [(c["name"], c["type"]) for c in data["input_schema"]] == [("placed", "string"), ("store", "double"),
                                                                      ("amount", "double")]
    assert "date__placed_dayofweek" in data["feature_names"] and "cat__store_3" in data["feature_names"]
    task = TaskData.load(data["path"])
    assert isinstance(task.x_prod[0][0], str | type(None))  # the replayed rows carry the raw timestamp text
    home = refreshed["home"]
    uri = f"sqlite:///{home / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", FRESH_LOAD, uri], capture_output=True, text=True, timeout=300,
                          env=refreshed["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["placed", "store", "amount"]
    assert len(out["predictions"]) == 3 and set(out["predictions"]) <= {"late", "on_time"}

    from serving.config import GatewaySettings
    from serving.server import start_gateway

    settings = GatewaySettings(tracking_uri=uri, model_name="orders", poll_interval_s=0, challenger_weight=0.0,
                               prediction_log_url=f"sqlite:///{home / 'gateway-log.db'}")
    rows = [{"placed": "2024-03-09 21:00", "store": 3, "amount": 10.0},
            {"placed": "2024-03-11T09:15:00Z", "store": 1, "amount": 55.5},
            {"store": 2, "amount": 20.0},                                    # a missing date: imputed
            {"placed": "2024-03-11", "store": 9, "amount": 5.0}]             # a store never seen: no store column
    with start_gateway(settings) as gw:
        r = httpx.post(f"{gw.url}/predict", json={"records": rows})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 4 and set(r.json()["predictions"]) <= {"late", "on_time"}
        bad = httpx.post(f"{gw.url}/predict", json={"records": [{"placed": 20240309, "store": "3", "amount": 1.0}]})
        assert bad.status_code == 422, bad.text
        assert "'placed'" in bad.json()["error"] and "'store'" in bad.json()["error"]
