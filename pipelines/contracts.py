"""What passes between the stages of a refresh: one pydantic model per stage output (and the inputs that are more
than a config).

``stage(inputs, config) -> output``: data prep ``DataSpec -> PreparedData``; search ``SearchInput,
SearchStageConfig -> SearchOutput``; retraining ``RetrainInput, RetrainConfig -> RetrainOutput``; the tournament
and the canary return their reports. Every model dumps to plain JSON (``model_dump(mode="json")``) so a stage's
output can cross a Prefect boundary, be cached, or be read back from a journal; readers use fields, never
``.get(...) or {}`` chains.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreparedData(_Output):
    """Stage 1's output: where the split arrays are, and the facts every later stage logs."""

    path: str
    fingerprint: str
    source: str
    query: str | None = Field(None, description="the SQL query of a database source (lineage; whitespace collapsed)")
    target: str | None = None
    input_shape: list[int]
    num_classes: int
    classes: list[Any]
    feature_names: list[str]
    rows: dict[str, int] = Field(default_factory=dict)
    input_schema: list[dict[str, Any]] = Field(
        default_factory=list, description="the raw columns a served model takes: name, type, optional")
    input_form: str = Field("tensor", description="'tensor' (a float matrix) or 'table' (named raw columns, encoded "
                            "inside the model)")
    dropped_columns: dict[str, str] = Field(default_factory=dict, description="column -> why it is not a feature")
    warnings: list[str] = Field(default_factory=list, description="what the user should know about their table")
    task: str = Field("classification", description="'classification' (num_classes classes) or 'regression' (one "
                      "number per row, num_classes 1)")


class Lineage(_Output):
    """What every registered version of one refresh carries as tags (besides its own architecture and metrics)."""

    dataset_fingerprint: str
    data_source: str
    data_query: str = ""
    refresh_run_id: str
    prefect_flow_run_id: str = ""
    refresh_id: str = ""
    seed: int = 0


class SearchInput(_Output):
    """The search's inputs besides its config: the data, and where its journal lives (for ``--resume``)."""

    data: PreparedData
    journal: str | None = None
    resume: bool = False


class Candidate(_Output):
    """One architecture the search recommends for full retraining."""

    arch: str
    val_accuracy: float
    val_rmse: float | None = Field(None, description="a regression's low-fidelity validation RMSE (val_accuracy NaN)")
    latency_ms: float = float("nan")
    params: int = 0
    proxy_scores: dict[str, float] = Field(default_factory=dict)
    fidelity: dict[str, float] = Field(default_factory=dict)


class SearchOutput(_Output):
    """Stage 2's output: the space searched and the top-k candidates, best first."""

    search_run_id: str
    space: str
    space_config: dict[str, Any]
    input_shape: list[int]
    num_classes: int
    pool_size: int
    evaluations: int
    failed_evaluations: int = 0
    seconds: float
    prefilter_seconds: float
    candidates: list[Candidate]
    journal: str
    seed: int = 0
    method: str = Field("predictor", description="how candidates were found: a strategy, darts, supernet+<strategy>")
    supernet_run_id: str | None = Field(None, description="the MLflow run holding the weight-sharing supernet")
    objective: str = Field("accuracy", description="the search objective (latency_int8: register the int8 form too)")
    predictor_tau: list[dict[str, float]] = Field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


class RetrainInput(_Output):
    """Retraining's inputs besides its config."""

    data: PreparedData
    search: SearchOutput
    model_name: str
    lineage: Lineage


class RegisteredCandidate(_Output):
    """One fully retrained, registered candidate."""

    version: str
    arch: str
    alias: str
    run_id: str
    val_accuracy: float
    test_accuracy: float
    latency_ms: float
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None


class RetrainOutput(_Output):
    """Stage 3's output: the challenger (the best retrained candidate) and every registered candidate."""

    version: str
    arch: str
    space: str
    run_id: str
    retrained: int
    seed: int
    val_accuracy: float
    test_accuracy: float
    test_loss: float
    best_epoch: float
    train_seconds: float
    latency_ms: float
    params: float
    candidates: list[RegisteredCandidate]
    task: str = "classification"
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None


class BaselineOutput(_Output):
    """The first refresh's hand-designed champion."""

    version: str
    arch: str
    run_id: str
    seed: int
    val_accuracy: float
    test_accuracy: float
    latency_ms: float
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None


class ChampionFacts(_Output):
    """The champion before this refresh, as its tags say."""

    version: str
    arch: str = ""
    val_accuracy: float = float("nan")
    test_accuracy: float = float("nan")
    latency_ms: float = float("nan")
    val_rmse: float = float("nan")
    test_rmse: float = float("nan")


class RefreshResult(_Output):
    """Everything a refresh did, for the CLI's table, ``--json`` and the tests."""

    model_name: str
    refresh_id: str
    refresh_run_id: str
    tracking_uri: str
    data: PreparedData
    search: SearchOutput
    baseline: BaselineOutput | None = None
    champion_before: ChampionFacts | None = None
    challenger: RetrainOutput
    tournament: dict[str, Any] = Field(default_factory=dict)
    canary: dict[str, Any] = Field(default_factory=dict)
    seconds: float
    timings: dict[str, float] = Field(default_factory=dict)
    resumed_stages: list[str] = Field(default_factory=list)
