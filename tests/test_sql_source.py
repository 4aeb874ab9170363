"""A SQL query as a data source: a real SQLite file and a real PostgreSQL server (``servers.start_postgres``).

The rows meet the same validation as a CSV; every way the source can be wrong before a row arrives is one line and
exit 2 from the CLI (a subprocess); the password appears nowhere (output, MLflow params and tags, the refresh state,
Prefect's database); the fingerprint follows the rows, and the query is recorded as lineage.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support_cli import nasops

from pipelines.data import DataSpec, prepare
from pipelines.errors import UserError
from pipelines.sql_source import display_url, read_query, strip_password

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]
FAST = ["--pool-size", "60", "--budget", "4", "--epochs", "2", "--top-k", "2", "--skip-tournament", "--skip-canary"]
PASSWORD = "hunter2-Secret"
QUERY = "SELECT colour, size, joined, label FROM customers WHERE label IN ('yes', 'no')"


def _customers(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    size = rng.normal(size=rows)
    frame = pd.DataFrame({
        "colour": colour,
        "size": size,
        "joined": pd.date_range("2023-01-01 08:00", periods=rows, freq="37h").strftime("%Y-%m-%d %H:%M"),
        "label": np.where((colour == "red") | (size > 0.8), "yes", "no"),
    })
    frame.loc[[3, 9], "size"] = np.nan
    frame.loc[[4], "colour"] = None
    return frame


def _sqlite(path: Path, frame: pd.DataFrame) -> str:
    with sqlite3.connect(path) as conn:
        frame.to_sql("customers", conn, index=False, if_exists="replace")
    return f"sqlite:///{path}"


def _cli(*args: str, home: Path, timeout: int = 120, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASOPS_HOME": str(home), "PREFECT_HOME": str(home.parent / "prefect"), **env_extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return subprocess.run([*NASOPS, *args], capture_output=True, text=True, timeout=timeout, env=env)


# -- the query's rows are the table -----------------------------------------------------------------------------
def test_a_sqlite_query_is_validated_and_prepared_like_a_csv(tmp_path):
    url = _sqlite(tmp_path / "shop.db", _customers())
    prepared = prepare(DataSpec(source=url, query=QUERY, target="label"), tmp_path / "out")
    assert prepared.source == url and prepared.query == QUERY
    assert [c["name"] for c in prepared.input_schema] == ["colour", "size", "joined"]
    assert prepared.input_form == "table" and sum(prepared.rows.values()) == 120
    # the same rows from a Parquet file: the same fingerprint (it hashes the rows, not where they came from)
    parquet = tmp_path / "shop.parquet"
    _customers().to_parquet(parquet, index=False)
    assert prepare(DataSpec(source=str(parquet), target="label"), tmp_path / "out").fingerprint == \
        prepared.fingerprint
    # the same query on changed data: another fingerprint
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.execute("UPDATE customers SET size = size + 1 WHERE rowid = 7")
    again = prepare(DataSpec(source=url, query=QUERY, target="label"), tmp_path / "out")
    assert again.fingerprint != prepared.fingerprint


def test_query_results_get_the_table_checks_in_one_message(tmp_path):
    frame = _customers()
    frame["size"] = frame["size"].astype(object)
    frame.loc[5, "size"] = float("inf")
    url = _sqlite(tmp_path / "bad.db", frame)
    with pytest.raises(UserError) as err:
        prepare(DataSpec(source=url, query="SELECT size, size, colour, label FROM customers", target="label"),
                tmp_path / "out")
    message = str(err.value)
    assert "3 problems" in message and "repeats column name(s) size" in message, message
    assert "'size' has 1 infinite" in message and "'size.1' has 1 infinite" in message, message


def test_the_password_is_hidden_and_can_be_moved_out_of_the_url():
    url = f"postgresql://ana:{PASSWORD}@db.example:5432/shop"
    assert PASSWORD not in display_url(url) and "ana:***@db.example" in display_url(url)
    assert PASSWORD not in display_url("postgresql://ana:" + PASSWORD + "@db.example:notaport/shop")
    bare, password = strip_password(url)
    assert password == PASSWORD and bare == "postgresql://ana@db.example:5432/shop"


# -- every way the source can be wrong: one line, exit 2 --------------------------------------------------------
def _silent_listener() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word: a hung server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(
    ("data", "query", "needles"),
    [
        (f"postgresql://ana:{PASSWORD}@127.0.0.1:notaport/shop", "SELECT 1", ["is not a database URL"]),
        ("sqlite:///{tmp}/missing.db", "SELECT 1", ["does not exist", "check the path"]),
        ("sqlite:///{tmp}/shop.db", "SELECT * FROM nowhere", ["the query failed", "no such table: nowhere",
                                                               "fix the SQL of --query"]),
        ("sqlite:///{tmp}/shop.db", "SELECT * FROM customers WHERE size > 1000", ["returned no rows"]),
        ("sqlite:///{tmp}/shop.db", None, ["is a database", "--query"]),
        ("{tmp}/shop.csv", "SELECT 1", ["--query is for a database source", "--data postgresql://"]),
        (f"postgresql://ana:{PASSWORD}@127.0.0.1:{{closed}}/shop", "SELECT 1", ["cannot connect to the database",
                                                                              "postgresql://ana@127.0.0.1"]),
        (f"postgresql://ana:{PASSWORD}@127.0.0.1:{{silent}}/shop", "SELECT 1", ["does not answer within 2s"]),
    ],
    ids=["bad-url", "missing-file", "sql-error", "empty-result", "url-without-query", "query-without-url",
         "refused", "hung-server"],
)
def test_a_wrong_source_is_one_line_and_exit_2(tmp_path, monkeypatch, data, query, needles):
    import pipelines.sql_source

    # in-process: the module read NASOPS_SQL_CONNECT_TIMEOUT_S when it was imported, so set what it read
    monkeypatch.setattr(pipelines.sql_source, "CONNECT_TIMEOUT_S", 2.0)
    _sqlite(tmp_path / "shop.db", _customers())
    _customers().to_csv(tmp_path / "shop.csv", index=False)
    silent, silent_port = _silent_listener()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    try:
        home = tmp_path / "home"
        home.mkdir()
        args = ["refresh", "--data", data.format(tmp=tmp_path, closed=closed_port, silent=silent_port),
                "--target", "label", *FAST]
        if query is not None:
            args += ["--query", query]
        proc = nasops(*args, home=home)
        took = proc.seconds
    finally:
        silent.close()
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    if "silent" in data:
        assert took < 60, took  # the connect timeout (2 s here) holds: no hang


def test_read_query_names_a_query_that_returned_no_rows(tmp_path):
    url = _sqlite(tmp_path / "shop.db", _customers())
    with pytest.raises(UserError, match="returned no rows"):
        read_query(url, "SELECT * FROM customers WHERE 0 LIMIT 0; -- an empty result")


def _customer_count(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize("query, needle", [
    ("DROP TABLE customers", "starts with 'DROP', not SELECT"),
    ("SELECT * FROM customers; DROP TABLE customers", "more than one statement"),
    ("SELECT * FROM customers;\nCREATE TABLE pwned (x int); COMMIT", "more than one statement"),
    ("/* a comment */ DELETE FROM customers", "starts with 'DELETE'"),
    # passes the statement check; the read-only connection refuses the write
    ("WITH doomed AS (SELECT 1) DELETE FROM customers", "readonly database"),
])
def test_a_query_that_writes_is_refused_and_the_source_is_untouched(tmp_path, query, needle):
    """Finding 7 of the adversarial round 3: `--query "DROP TABLE t2"` took effect on the source."""
    url = _sqlite(tmp_path / "shop.db", _customers())
    before = _customer_count(url)
    with pytest.raises(UserError, match=needle):
        read_query(url, query)
    assert _customer_count(url) == before


def test_semicolons_and_keywords_inside_literals_are_not_statements(tmp_path):
    url = _sqlite(tmp_path / "shop.db", _customers())
    frame = read_query(url, "SELECT *, 'a; DROP TABLE x' AS note FROM customers -- trailing; comment\n;")
    assert len(frame) == _customer_count(url) and set(frame["note"]) == {"a; DROP TABLE x"}


def test_a_scheduled_refresh_carries_the_query(tmp_path):
    url = _sqlite(tmp_path / "shop.db", _customers())
    home = tmp_path / "home"
    home.mkdir()
    proc = nasops("schedule", "--cron", "0 3 * * 0", "--data", url, "--query", QUERY, "--target", "label",
                  "--check", home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads(proc.stdout)["parameters"]["config"]
    assert config["data"] == url and config["query"] == QUERY and config["target"] == "label"


# -- a real PostgreSQL server through the CLI -------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres():
    from servers import start_postgres

    with start_postgres() as server:
        yield server


def _load_postgres(postgres, database: str, frame: pd.DataFrame) -> str:
    import sqlalchemy as sa

    url = postgres.create_database(database)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.assign(joined=pd.to_datetime(frame["joined"])).to_sql("customers", conn, index=False)
    engine.dispose()
    return url


@pytest.mark.slow
def test_postgres_query_text_is_the_drivers_own_sql(postgres):
    """A '%' in a LIKE pattern and a ':' in a time literal reach PostgreSQL as written (no placeholder parsing)."""
    url = _load_postgres(postgres, "shop_sql_text", _customers())
    frame = read_query(url, "SELECT colour, joined FROM customers WHERE colour LIKE 'r%' AND joined > "
                            "'2023-01-01 09:00'")
    assert len(frame) > 0 and set(frame["colour"]) == {"red"}
    assert pd.api.types.is_datetime64_any_dtype(frame["joined"])  # a timestamp column arrives as a datetime type


@pytest.mark.slow
def test_a_postgres_query_runs_in_a_read_only_transaction(postgres):
    """A data-modifying CTE passes the one-SELECT check; PostgreSQL's read-only transaction refuses it."""
    url = _load_postgres(postgres, "shop_read_only", _customers())
    with pytest.raises(UserError, match="read-only transaction"):
        read_query(url, "WITH gone AS (DELETE FROM customers RETURNING *) SELECT * FROM gone")
    with pytest.raises(UserError, match="more than one statement"):
        read_query(url, "SELECT 1; COMMIT; CREATE TABLE pwned (x int)")
    assert _customer_count(url) == len(_customers())


def _everything_under(root: Path) -> bytes:
    blob = b""
    for path in root.rglob("*"):
        if path.is_file():
            blob += path.read_bytes()
    return blob


@pytest.mark.slow
def test_a_postgres_query_refreshes_and_the_second_refresh_sees_the_same_data(postgres, tmp_path, prefect_server,
                                                                            prefect_api_env):
    """`nasops refresh --data postgresql://… --query …` registers a model whose lineage names the query; run again
    on unchanged rows it says "same data as the champion" and tags it; the password is nowhere."""
    from mlflow.tracking import MlflowClient

    url = _load_postgres(postgres, "shop_refresh", _customers(200))
    with_password = url.replace(f"{postgres.user}@", f"{postgres.user}:{PASSWORD}@").replace("+psycopg", "")
    assert with_password.startswith("postgresql://")  # the URL as an administrator hands it out
    home = tmp_path / "home"
    home.mkdir()
    first = _cli("refresh", "--data", with_password, "--query", QUERY, "--target", "label", "--model-name", "pg",
                 *FAST, home=home, timeout=900, **prefect_api_env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no champion of 'pg' yet" in first.stderr
    second = _cli("refresh", "--data", with_password, "--query", QUERY, "--target", "label", "--model-name", "pg",
                  *FAST, "--json", home=home, timeout=900, **prefect_api_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "same data as the champion (fingerprint" in second.stderr, second.stderr[-3000:]
    result = json.loads(second.stdout)
    assert result["data"]["query"] == QUERY and PASSWORD not in second.stdout

    uri = f"sqlite:///{home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(result["refresh_run_id"])
    assert parent.data.tags["nasops.data_vs_champion"] == "same"
    assert parent.data.params["data_query"] == QUERY
    assert parent.data.params["dataset_fingerprint"] == parent.data.tags["nasops.champion_dataset_fingerprint"]
    challenger = client.get_model_version_by_alias("pg", "challenger")
    assert challenger.tags["nasops.data_query"] == QUERY
    assert "***" not in challenger.tags["nasops.data_source"]  # the password never reached the configuration
    # the password is nowhere: output, every run's params and tags, every version's tags, state and Prefect files
    seen = first.stdout + first.stderr + second.stdout + second.stderr
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=500):
        seen += json.dumps(run.data.params) + json.dumps(run.data.tags)
    for mv in client.search_model_versions("name='pg'"):
        seen += json.dumps(mv.tags)
    assert PASSWORD not in seen
    assert PASSWORD.encode() not in _everything_under(tmp_path)
    assert PASSWORD.encode() not in _everything_under(prefect_server.workdir)  # the Prefect server's database

    # a scheduled refresh keeps the password out of the deployment's parameters too (it stays in the environment
    # of the serving process)
    scheduled = _cli("schedule", "--cron", "0 3 * * 0", "--data", with_password, "--query", QUERY, "--target",
                     "label", "--check", home=home)
    assert scheduled.returncode == 0, scheduled.stderr[-3000:]
    assert PASSWORD not in scheduled.stdout + scheduled.stderr
    assert json.loads(scheduled.stdout)["parameters"]["config"]["data"] == with_password.replace(f":{PASSWORD}", "")

    # the same query after the rows changed: the flow's check says so (stage level, same registry)
    with postgres.connect("shop_refresh") as conn:
        conn.execute("UPDATE customers SET size = size + 1 WHERE colour = 'red'")
    from pipelines.schema_check import compare_with_champion

    changed = prepare(DataSpec(source=url, query=QUERY, target="label"), tmp_path / "out")
    versus = compare_with_champion("pg", changed.input_schema, changed.source, changed.fingerprint, client=client)
    assert versus.data == "changed" and versus.describe().startswith("data changed since the champion")
