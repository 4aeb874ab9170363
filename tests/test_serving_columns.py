"""Serving the rows teams send: the training table's own rows (columns the refresh dropped are accepted, ignored and
counted), truly unknown columns under the ``unknown_columns`` policy, unseen categories and unparseable dates
counted per column and flagged in the answer on request, and a client's own request id accepted by /feedback.

In-process (TestClient, the real app and gateway) with a real table model in memory: a fitted
``ColumnTransformer`` from :mod:`pipelines.preprocessing` inside :class:`nas.table_model.TableClassifier`, served as
a :class:`serving.models.LoadedModel`; no registry, no training. A gateway's start and stop cost ~0.15 s, over
the fast suite's per-test budget: the tests that start one are marked slow (about 1.5 s in all).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from support_metrics import metric

from nas.table_model import TableClassifier
from pipelines.preprocessing import ID_REASON, fit_preprocessor, plan_columns
from serving.app import create_app
from serving.config import GatewaySettings
from serving.models import LoadedModel
from serving.request_ids import feedback_request_id

FEEDBACK = "columns-feedback-token-0123456789-abcdefghij"
LABELS = {"Authorization": f"Bearer {FEEDBACK}"}
MODEL = "columns"


def training_table(n: int = 30) -> pd.DataFrame:
    """A table as a team has it: a category, a number, a date, a constant column and an ID column."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "order_id": [f"o-{i}" for i in range(n)],
        "color": rng.choice(["red", "green", "blue"], n),
        "size": rng.normal(size=n),
        "when": [f"2024-01-{1 + i % 28:02d}" for i in range(n)],
        "shop": ["main"] * n,
    })


@pytest.fixture(scope="module")
def table_model() -> LoadedModel:
    frame = training_table()
    plan = plan_columns(frame)
    assert plan.dropped == {"order_id": ID_REASON, "shop": "constant ('main' in every row)"}
    preprocessor = fit_preprocessor(plan, frame)
    width = len(preprocessor.get_feature_names_out())
    torch.manual_seed(0)
    table = TableClassifier(preprocessor, torch.nn.Linear(width, 2), ["no", "yes"], plan.schema)
    return LoadedModel(alias="champion", name=MODEL, version="1", module=table.module, n_features=len(plan.schema),
                       classes=["no", "yes"], feature_names=table.columns, table=table, input_schema=table.schema,
                       dropped_columns=dict(plan.dropped))


class OneModel:
    """A backend serving one in-memory model as the champion (no challenger)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def start(self) -> None:
        pass

    def resolve(self, alias: str) -> str | None:
        return self.model.version if alias == "champion" else None

    def load(self, alias: str, version: str, load_as: str) -> LoadedModel:
        return dataclasses.replace(self.model, alias=load_as)


@contextlib.contextmanager
def gateway(tmp_path, model: LoadedModel, **overrides) -> Iterator[TestClient]:
    settings = GatewaySettings(**{**dict(tracking_uri="sqlite:///unused.db", model_name=MODEL, poll_interval_s=0,
                                         prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}", log_mode="sync",
                                         feedback_token=FEEDBACK), **overrides})
    with TestClient(create_app(settings, backend=OneModel(model)), raise_server_exceptions=False) as client:
        yield client


ROW = {"order_id": "o-99", "color": "red", "size": 0.5, "when": "2024-02-03", "shop": "main"}


@pytest.mark.slow
def test_the_training_tables_own_rows_are_answered_and_the_dropped_columns_counted(tmp_path, table_model):
    # The defect: order_id and shop (an ID and a constant the refresh dropped) were "unknown columns" -> 422.
    with gateway(tmp_path, table_model) as client:
        r = client.post("/predict", json={"records": [ROW, {**ROW, "order_id": "o-100"}]})
        assert r.status_code == 200, r.text
        assert "input_flags" not in r.json()  # only when asked
        text = client.get("/metrics").text
    for column in ("order_id", "shop"):
        assert metric(text, "nasops_ignored_columns_total", model=MODEL, column=column,
                      reason="dropped_at_training") == 1.0  # once per request
    split = {"columns": list(ROW), "data": [list(ROW.values())]}
    with gateway(tmp_path, table_model, unknown_columns="reject") as client:  # dropped ones pass under reject too
        assert client.post("/predict", json={"dataframe_split": split}).status_code == 200


@pytest.mark.slow
def test_unknown_columns_follow_the_policy(tmp_path, table_model):
    body = {"records": [{**ROW, "colour": "red"}], "explain_inputs": True}
    with gateway(tmp_path, table_model) as client:  # default: ignore, counted
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["ignored_columns"] == {"order_id": "dropped_at_training", "shop": "dropped_at_training",
                                               "colour": "unknown"}
        assert metric(client.get("/metrics").text, "nasops_ignored_columns_total", column="colour",
                      reason="unknown") == 1.0
    with gateway(tmp_path, table_model, unknown_columns="reject") as client:
        r = client.post("/predict", json=body)
        assert r.status_code == 422 and "'colour'" in r.json()["error"] and "order_id" not in r.json()["error"]


@pytest.mark.slow
def test_unseen_categories_and_unparseable_dates_are_counted_and_flagged_on_request(tmp_path, table_model):
    # The defect: both were answered 200 with nothing in the answer or in /metrics.
    rows = [{**ROW, "color": "purple"}, {**ROW, "when": "not a date"}, ROW, {**ROW, "color": "green"}]
    with gateway(tmp_path, table_model) as client:
        plain = client.post("/predict", json={"records": rows})
        assert plain.status_code == 200 and "input_flags" not in plain.json()
        r = client.post("/predict", json={"records": rows, "explain_inputs": True})
        assert r.status_code == 200, r.text
        assert r.json()["input_flags"] == [{"color": "unseen_category"}, {"when": "unparseable"}, {}, {}]
        text = client.get("/metrics").text
    assert metric(text, "nasops_unseen_values_total", model=MODEL, column="color", kind="unseen_category") == 2.0
    assert metric(text, "nasops_unseen_values_total", model=MODEL, column="when", kind="unparseable") == 2.0


def test_a_declared_integer_category_is_flagged_by_its_value_not_its_spelling():
    frame = pd.DataFrame({"grade": [1, 2, 3] * 10, "size": np.arange(30.0)})
    plan = plan_columns(frame, categorical=["grade"])
    table = TableClassifier(fit_preprocessor(plan, frame), torch.nn.Linear(4, 2), [0, 1], plan.schema)
    assert table.input_flags([{"grade": 2.0, "size": 1.0}, {"grade": 7, "size": None}]) == [
        {}, {"grade": "unseen_category"}]


@pytest.mark.slow
def test_feedback_takes_a_clients_own_request_id_as_it_was_sent(tmp_path, table_model):
    # The defect: a client's "order-42" had to be sent back as "order-42@anon".
    with gateway(tmp_path, table_model) as client:
        for key in ({}, {"X-Request-Key": "team-a"}):
            answered = client.post("/predict", json={"records": [ROW], "request_id": "order-42"}, headers=key)
            assert answered.status_code == 200
            r = client.post("/feedback", json={"request_id": "order-42", "label": "yes"}, headers={**LABELS, **key})
            assert r.status_code == 200 and r.json() == {"accepted": 1, "rows": 1}, r.text
        as_answered = answered.json()["request_id"]
        r = client.post("/feedback", json={"request_id": as_answered, "label": "no", "overwrite": True},
                        headers=LABELS)
        assert r.status_code == 200, r.text


def test_generated_and_answered_ids_pass_through_unchanged():
    assert feedback_request_id("0123456789abcdef0123456789abcdef", "k") == "0123456789abcdef0123456789abcdef"
    assert feedback_request_id("order-42@anon", "k") == "order-42@anon"
    assert feedback_request_id("order-42", None) == "order-42@anon"


def test_a_refused_row_still_names_the_unknown_column_it_ignored(table_model):
    from serving.schemas import PredictRequest
    from serving.validation import RequestRejected, ignored_columns, to_table_rows

    req = PredictRequest(records=[{"colour": "red", "size": 1.0, "when": "2024-01-02"}])
    ignore = ignored_columns(req, table_model.feature_names, table_model.dropped_columns)
    with pytest.raises(RequestRejected) as refused:
        to_table_rows(req, table_model.input_schema, 8, ignore=ignore)
    assert "required column 'color' is missing" in refused.value.error
    assert "unknown column(s) 'colour' (ignored)" in refused.value.error


def test_nasops_serve_takes_the_policy_and_refuses_another_word():
    from pipelines.cli.serve import gateway_settings
    from pipelines.errors import UserError
    from pipelines.settings import Settings

    assert gateway_settings(Settings(), unknown_columns="reject").unknown_columns == "reject"
    assert gateway_settings(Settings()).unknown_columns == "ignore"
    with pytest.raises(UserError, match="unknown_columns"):
        gateway_settings(Settings(), unknown_columns="drop")
