"""The HTTP contract as pydantic models: what FastAPI validates and what the OpenAPI schema publishes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from monitoring.core.enums import Mode
from monitoring.vocabulary import Variant

Number = StrictFloat | StrictInt
Row = list[Number]
Cell = Number | StrictStr | StrictBool | None
"""One value of a named row: a number, a category, a boolean, or null (missing: imputed by a table model)."""
Record = dict[StrictStr, Cell]
Label = StrictInt | StrictStr | StrictFloat
# A client-chosen id (namespaced by the gateway: see serving.request_ids), and the id /feedback takes (as answered).
RequestId = Annotated[str, Field(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9_.:\-]+$")]
AnsweredRequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")]


class DataFrameSplit(BaseModel):
    """MLflow's ``dataframe_split`` form: column names (the model's feature names) and rows."""

    model_config = ConfigDict(extra="forbid")
    columns: list[StrictStr] = Field(description="feature names, each exactly once (any order)")
    data: list[list[Cell]] = Field(description="rows in the order of `columns` (numbers; a table model also takes "
                                   "text, booleans and null for a missing value)")
    index: list | None = Field(default=None, description="ignored (accepted for MLflow compatibility)")


FORMS = ("inputs", "instances", "dataframe_split", "records", "dataframe_records")


class PredictRequest(BaseModel):
    """One batch of rows: exactly one of `inputs`, `instances` (rows of numbers in the model's column order),
    `dataframe_split`, `records` or `dataframe_records` (named columns: what a table model takes as it was trained)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[0.0, 0.5, 1.0]], "request_id": "order-42"}]},
    )
    inputs: list[list[Cell]] | None = Field(default=None, description="rows (n, F) of finite numbers in the "
                                            "model's column order (a table model: its columns' values, null for "
                                            "a missing one)")
    instances: list[list[Cell]] | None = Field(default=None, description="same as `inputs` (MLflow/TF-serving "
                                               "spelling)")
    dataframe_split: DataFrameSplit | None = None
    records: list[Record] | None = Field(
        default=None, description="named rows, e.g. [{\"color\": \"red\", \"size\": 1.5}]: the model's columns by "
        "name; an optional column may be absent or null (imputed)")
    dataframe_records: list[Record] | None = Field(default=None, description="same as `records` (MLflow's spelling)")
    request_id: RequestId | None = Field(
        default=None, description="your id for this request; it is answered as '<id>@<namespace of your "
        "X-Request-Key>' (send either to /feedback, the bare id with the same X-Request-Key). A random 128-bit id "
        "is generated if absent")
    explain_inputs: bool = Field(default=False, description="also answer `input_flags` (per row, the columns "
                                 "whose value the model could not use: unseen_category, unparseable) and "
                                 "`ignored_columns` (columns accepted and ignored, with why)")

    @model_validator(mode="after")
    def _exactly_one_form(self) -> PredictRequest:
        given = [n for n in FORMS if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "send exactly one of 'inputs', 'instances', 'dataframe_split', 'records' or 'dataframe_records' "
                f"(got {', '.join(given) if given else 'none'})"
            )
        return self


class PredictResponse(BaseModel):
    request_id: str = Field(description="the id to send to /feedback with the true labels")
    variant: Variant = Field(description="which model answered")
    model_version: str = Field(description="registered model version that answered")
    predictions: list[Label] = Field(description="predicted class label per row (from the nasops.classes tag)")
    probabilities: list[list[float]] = Field(description="class probabilities per row, in the order of the classes")
    input_flags: list[dict[str, str]] | None = Field(
        default=None, description="with explain_inputs: per row, {column: 'unseen_category' | 'unparseable'}")
    ignored_columns: dict[str, str] | None = Field(
        default=None, description="with explain_inputs: {column: 'dropped_at_training' | 'unknown'}")


class FeedbackItem(BaseModel):
    """True labels for a logged request: `labels` (one per row) or `label` (a one-row request)."""

    model_config = ConfigDict(extra="forbid")
    request_id: AnsweredRequestId = Field(description="the request_id answered by /predict, or your own id as you "
                                          "sent it (with the same X-Request-Key header)")
    labels: list[Label] | None = Field(default=None, min_length=1, description="one of the model's classes per row")
    label: Label | None = Field(default=None, description="the class of a one-row request")
    overwrite: bool = Field(default=False, description="replace labels sent before (otherwise a second label "
                            "for a request is refused with 409)")

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackItem:
        if (self.labels is None) == (self.label is None):
            raise ValueError("send exactly one of 'labels' (a list, one per row) or 'label' (one row)")
        return self

    def all_labels(self) -> list:
        return list(self.labels) if self.labels is not None else [self.label]


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="requests whose labels were joined")
    rows: int = Field(description="logged rows (served and shadow) that received a label")


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong")
    detail: str = Field(description="what was expected instead")


class WeightRequest(BaseModel):
    weight: float = Field(strict=True, ge=0.0, le=1.0, description="challenger share of traffic in split mode "
                          "(a number: `true` or \"0.5\" is refused)")


class ModeRequest(BaseModel):
    mode: Mode


class DriftRequest(BaseModel):
    variant: Variant | Literal["all"] = "all"
    share: float = Field(strict=True, ge=0.0, le=1.0, description="share of drifted features (0-1)")


class HealthResponse(BaseModel):
    status: str
    instance: str = Field(description="the gateway's instance id (tells launchers it is the process they started)")
