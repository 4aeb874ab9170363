"""What passes between the stages of a refresh: one pydantic model per stage output (and the inputs that are more
than a config).

``stage(inputs, config) -> output``: data prep ``DataSpec -> PreparedData``; search ``SearchInput,
SearchStageConfig -> SearchOutput``; retraining ``RetrainInput, RetrainConfig -> RetrainOutput``; the tournament
and the canary return their reports. Every model dumps to plain JSON (``model_dump(mode="json")``) so a stage's
output can cross a Prefect boundary, be cached, or be read back from a journal; readers use fields, never
``.get(...) or {}`` chains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Number = Annotated[float, BeforeValidator(lambda v: math.nan if v is None else v)]
"""A float that may be NaN (a regression's accuracy, a champion without that tag): strict JSON writes NaN as null
(``pipelines.summary.print_json``), and null reads back as NaN, so a dumped output validates again."""


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
    metric: str = Field("accuracy", description="the refresh-level metric every stage ranks and judges by "
                        "(monitoring.core.metrics): named, or chosen from the target")
    metric_params: dict[str, Any] = Field(default_factory=dict, description="its positive_class / cost_matrix")


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
    val_accuracy: Number
    val_rmse: float | None = Field(None, description="a regression's low-fidelity validation RMSE (val_accuracy NaN)")
    latency_ms: Number = float("nan")
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
    baselines: BaselinesOutput | None = Field(
        None, description="the baselines this refresh registered: ranked with the NAS finalists")


class RegisteredCandidate(_Output):
    """One fully retrained, registered candidate."""

    version: str
    arch: str
    alias: str
    run_id: str
    val_accuracy: Number
    test_accuracy: Number
    latency_ms: Number
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None


class Contender(_Output):
    """One registered model of a refresh's ranking: a NAS finalist or a baseline (``model_kind``)."""

    version: str
    model_kind: str = Field(description="nas, baseline-lightgbm, baseline-linear, baseline-mlp or baseline-cnn")
    arch: str
    run_id: str
    score: Number = Field(description="the ranking score (higher is better; pipelines.retrain.ranking_score)")
    offline: OfflineMetrics
    metrics: dict[str, float] = Field(default_factory=dict, description="everything its training logged")


class BaselinesOutput(_Output):
    """The baselines a refresh trained on its tabular split and registered (LightGBM, linear), in training order."""

    models: list[Contender] = Field(default_factory=list)


class BaselineGap(_Output):
    """How far the NAS winner is ahead of the best baseline on the test rows: ``advantage`` is the headline metric's
    difference in its better direction (positive: NAS better), with a paired bootstrap interval over test rows."""

    task: str = "classification"
    nas_version: str
    baseline_version: str
    baseline_kind: str
    metric: str = Field(description="the test metric compared, e.g. test_accuracy or test_rmse")
    nas_value: float
    baseline_value: float
    advantage: float
    low: float
    high: float
    level: float = 0.95
    rows: int
    resamples: int
    method: str = "paired bootstrap over test rows (percentile interval)"
    p_value: float | None = Field(None, description="exact McNemar test on the paired correct rows (a classifier)")

    @property
    def verdict(self) -> str:
        """``beats`` / ``trails`` when the interval excludes 0, else ``ties``."""
        return "beats" if self.low > 0 else "trails" if self.high < 0 else "ties"


class RetrainOutput(_Output):
    """Stage 3's output: the challenger (the best model overall: the best retrained candidate, or a baseline that
    beat it) and every registered candidate."""

    version: str
    arch: str
    space: str
    run_id: str
    retrained: int
    seed: int
    val_accuracy: Number
    test_accuracy: Number
    test_loss: Number
    best_epoch: Number
    train_seconds: Number
    latency_ms: Number
    params: Number
    candidates: list[RegisteredCandidate]
    task: str = "classification"
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None
    model_kind: str = Field("nas", description="what the challenger is: nas, or a baseline that ranked first")
    nas_version: str | None = Field(None, description="the NAS winner's version (the challenger's when nas)")
    ranking: list[Contender] = Field(default_factory=list, description="NAS finalists and baselines, best first")
    versus_baseline: BaselineGap | None = Field(None, description="the NAS winner against the best baseline")


class BaselineOutput(_Output):
    """The first refresh's champion: the best baseline (the hand-designed network, or on a table LightGBM or the
    linear model when one ranks above it)."""

    version: str
    arch: str
    run_id: str
    seed: int
    val_accuracy: Number
    test_accuracy: Number
    latency_ms: Number
    val_rmse: float | None = Field(None, description="regression: validation RMSE, target units (accuracy NaN)")
    test_rmse: float | None = None
    test_mae: float | None = None
    model_kind: str = Field("baseline-mlp", description="baseline-mlp / baseline-cnn (hand-designed), "
                            "baseline-lightgbm, baseline-linear")
    score: Number = Field(float("nan"), description="its ranking score (pipelines.retrain.ranking_score)")


class ChampionFacts(_Output):
    """The champion before this refresh, as its tags say."""

    version: str
    arch: str = ""
    model_kind: str = ""
    val_accuracy: Number = float("nan")
    test_accuracy: Number = float("nan")
    latency_ms: Number = float("nan")
    val_rmse: Number = float("nan")
    test_rmse: Number = float("nan")
    test_mae: Number = float("nan")
    split: str = Field("", description="the data fingerprint (short) of the rows these numbers are from")
    rescored: bool = Field(False, description="scored again on this refresh's split (the data changed)")
    registered_split: str = Field("", description="the fingerprint (short) its registered figures are from")
    figures: dict[str, float] = Field(default_factory=dict, description="every figure on ``split``: the task's "
                                      "and the refresh-level metric's (val_log_loss, test_log_loss)")


class OfflineMetrics(_Output):
    """One model's offline scores, measured on one split, in one shape for every task (fields a task does not have
    stay None): what retraining reports, what registration tags, what the summary and the tournament read."""

    task: str = "classification"
    split: str = Field("test", description="which rows the test_* numbers are from (the refresh's test split)")
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    val_rmse: float | None = None
    test_rmse: float | None = None
    val_mae: float | None = None
    test_mae: float | None = None
    test_loss: float | None = None
    latency_ms: float | None = None
    params: float | None = None

    @classmethod
    def from_metrics(cls, task: str, metrics: Mapping[str, float]) -> OfflineMetrics:
        """The offline figures of one training's logged metrics (the keys it does not have stay None)."""
        fields = set(cls.model_fields) - {"task", "split"}
        return cls(task=task, **{k: float(v) for k, v in metrics.items() if k in fields and v is not None})

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> OfflineMetrics:
        """A registered version's offline figures, read back from its tags (its ``task`` tag; a tag that is
        missing or not a number stays None)."""
        numbers = {}
        for key in set(cls.model_fields) - {"task", "split"}:
            try:
                numbers[key] = float(tags[key])
            except (KeyError, TypeError, ValueError):
                continue
        return cls.from_metrics(tags.get("task") or "classification", numbers)

    def headline(self, split: str = "test") -> float | None:
        """The task's headline metric (accuracy, RMSE) on ``split``."""
        from monitoring.core.tasks import get_task

        return getattr(self, f"{split}_{get_task(self.task).headline}", None)

    def tags(self) -> dict[str, float]:
        """What a registered version is tagged with: the task's ``offline_keys`` (accuracies, or RMSE / MAE)."""
        from monitoring.core.tasks import get_task

        return get_task(self.task).offline_tags(self.model_dump())

    def reported(self) -> dict[str, float | None]:
        """The offline fields the stage outputs mirror (:class:`RegisteredCandidate`, :class:`RetrainOutput`,
        :class:`BaselineOutput`): accuracy NaN for a regression, RMSE / MAE None for a classifier."""
        nan = float("nan")
        return {"val_accuracy": nan if self.val_accuracy is None else self.val_accuracy,
                "test_accuracy": nan if self.test_accuracy is None else self.test_accuracy,
                "val_rmse": self.val_rmse, "test_rmse": self.test_rmse, "test_mae": self.test_mae}


# -- the shadow tournament ----------------------------------------------------------------------------------------

class TournamentRow(_Output):
    """One served candidate (or the champion) in the tournament: offline facts beside what it did online."""

    alias: str
    version: str
    role: str = "candidate"
    arch: str = ""
    val_accuracy: float | None = None
    offline_latency_ms: float | None = None
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    labelled_rows: int = 0
    correct_rows: int = 0
    online_accuracy: float | None = None
    online_latency_ms: float | None = None
    val_metric: float | None = Field(None, description="the refresh-level metric on the validation split (its "
                                     "val_<metric> tag), when it is not accuracy")
    online_metric: float | None = Field(None, description="the same metric on the variant's labelled rows")
    offline_rank: int | None = None
    online_rank: int | None = None
    offline_latency_rank: int | None = None
    online_latency_rank: int | None = None


class RankCorrelation(_Output):
    n: int = 0
    spearman: float | None = None
    spearman_p: float | None = None
    kendall_tau: float | None = None
    kendall_p: float | None = None
    note: str = ""


class PairedTest(_Output):
    test: str
    paired_rows: int
    only_first_correct: int
    only_second_correct: int
    p_value: float


class TournamentWinner(_Output):
    offline_winner: str | None = None
    online_winner: str | None = None
    falls_behind: bool = False
    significant: bool = False
    gap: float = 0.0
    test: PairedTest | None = None
    winner_vs_champion_gap: float | None = None


class TournamentOutput(_Output):
    """The shadow tournament's report (3b): every candidate served in shadow on the same traffic, offline vs online
    ranking and whether the offline winner falls behind. ``skipped`` / ``error`` say why there is no ranking."""

    metric: str = Field("accuracy", description="what the ranks compare (the refresh-level metric)")
    skipped: str | None = None
    error: str | None = None
    model_name: str = ""
    aliases: list[str] = Field(default_factory=list)
    candidates: list[TournamentRow] = Field(default_factory=list)
    champion: TournamentRow | None = None
    accuracy_correlation: RankCorrelation = Field(default_factory=RankCorrelation)
    latency_correlation: RankCorrelation = Field(default_factory=RankCorrelation)
    winner: TournamentWinner = Field(default_factory=TournamentWinner)
    alpha: float = 0.05
    tournament_run_id: str | None = None
    plot_uri: str | None = None
    replay: dict[str, int | dict[str, int]] = Field(
        default_factory=dict, description="the replay's counts; ``errors`` by kind")
    seconds: float | None = None

    @property
    def ran(self) -> bool:
        return self.skipped is None and self.error is None and bool(self.candidates)


# -- the canary -----------------------------------------------------------------------------------------------------

class VariantOnline(_Output):
    """What one variant did on live traffic (``monitoring.online``'s definitions); a regression's RMSE / MAE."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    error_rate: float | None = None
    labelled_rows: int = 0
    correct_rows: int | None = None
    accuracy: float | None = None
    estimated_accuracy: float | None = None  # label-free, from calibrated probabilities (monitoring.cbpe)
    rmse: float | None = None
    mae: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


class DriftSummary(_Output):
    """Whole-canary drift: data drift of the served inputs against the training reference, prediction drift between
    the variants, each variant's last per-interval share, a regression's target drift; ``note`` says why a value
    is missing."""

    share: float | None = None
    dataset_drift: bool | None = None
    drifted_features: int | None = None
    features: int | None = Field(None, description="how many features the data drift compared")
    distinct_rows: int = 0
    prediction_drift: float | None = None
    champion_share: float | None = None
    challenger_share: float | None = None
    target_drift: float | None = None
    note: str = ""


class CanaryStep(_Output):
    interval: int
    mode: str
    weight: float
    verdict: str
    outcome: str
    score: float


class CanaryOutput(_Output):
    """The embedded canary's result (4), or a rollout's applied decision: the verdict that decided, its evidence,
    what each variant did online, drift, and where the report is."""

    task: str = "classification"
    decision: str | None = None
    reason: str = ""
    verdict: str = ""
    score: float = 0.0
    model_name: str
    champion_version: str
    challenger_version: str
    previous_champion_version: str
    intervals: int = 0
    failed_intervals: int = 0
    highest_weight: float = 0.0
    steps: list[CanaryStep] = Field(default_factory=list)
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    online: dict[str, VariantOnline] = Field(default_factory=dict)
    drift: DriftSummary = Field(default_factory=DriftSummary)
    report_uri: str | None = None
    canary_run_id: str | None = None
    gateway_url: str = ""
    rollout_id: str | None = None
    decided_by: str | None = None
    judged_columns: list[str] | None = None
    replay: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list, description="evidence steps that failed (the decision was "
                                "applied regardless): drift, the report, MLflow artifacts")


class HandoverOutput(_Output):
    """4': the refresh started a rollout on a running gateway and returned; its controller decides later."""

    handed_over: Literal[True] = Field(True, description="tells a hand-over from a decided canary in the JSON")
    decision: None = Field(None, description="none yet: the controller decides later")
    rollout_id: str
    gateway_url: str
    model_name: str
    champion_version: str
    challenger_version: str
    first_step: dict[str, Any] = Field(default_factory=dict)
    reason: str
    canary_run_id: str | None = None


class RefreshResult(_Output):
    """Everything a refresh did, for the CLI's table, ``--json`` and the tests."""

    model_name: str
    refresh_id: str
    refresh_run_id: str
    tracking_uri: str
    data: PreparedData
    search: SearchOutput
    baseline: BaselineOutput | None = None
    baselines: BaselinesOutput | None = Field(None, description="the baselines trained beside the NAS finalists")
    champion_before: ChampionFacts | None = None
    challenger: RetrainOutput
    tournament: TournamentOutput | None = None
    canary: CanaryOutput | HandoverOutput | None = Field(
        None, description="the embedded canary's decision, the hand-over to a running gateway, or None (skipped)")
    seconds: float
    timings: dict[str, float] = Field(default_factory=dict)
    resumed_stages: list[str] = Field(default_factory=list)
