"""The ``model_refresh`` Prefect flow: data prep -> NAS -> retrain + register -> tournament -> canary.

Each stage is ``stage(inputs, config) -> output`` with typed pydantic values (:mod:`pipelines.contracts`), so a
stage can be re-run, cached, retried or sent elsewhere. The expensive stages are Prefect tasks whose results are
cached by (refresh id, stage inputs and config, code version) in the refresh's own result store: a refresh resumed
with ``--resume`` reads finished stages back instead of repeating them, and the search continues its journal. All
MLflow runs of one refresh nest under one parent run, which carries the dataset fingerprint and the decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext, get_run_context

from monitoring.core.tasks import get_task
from monitoring.vocabulary import CHAMPION, tag
from pipelines import refresh_state, registry
from pipelines.baselines import crown_first_champion, is_tabular, register_baselines
from pipelines.config import DataSpec, RefreshConfig, RetrainConfig, config_hash
from pipelines.contracts import (
    BaselineOutput,
    BaselinesOutput,
    CanaryOutput,
    ChampionFacts,
    HandoverOutput,
    Lineage,
    OfflineMetrics,
    PreparedData,
    RefreshResult,
    RetrainInput,
    RetrainOutput,
    SearchInput,
    TournamentOutput,
)
from pipelines.data import prepare
from pipelines.retrain import register_baseline, retrain_and_register
from pipelines.retry import retry_transient
from pipelines.schema_check import compare_with_champion
from pipelines.settings import Settings
from pipelines.targets import check_champion_task
from pipelines.tracking import Tracking

progress = logging.getLogger("nasops.refresh")
"""Stage start / end lines (the CLI shows them as its progress display; Prefect's own INFO lines need --verbose)."""


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """(task, its inputs and config, code version): the same stage of the same refresh is read back, not re-run.
    Inputs carry the refresh id (lineage / ``refresh_id``), so two refreshes never share a result."""
    return f"{context.task.name}-{config_hash(parameters, registry.code_version())}"


def _cached(fn: Any, store: Path) -> Any:
    """``fn`` with its result persisted in the refresh's own store (a Path: Prefect keeps it a local file system)."""
    return fn.with_options(cache_key_fn=stage_cache_key, persist_result=True, result_storage=Path(store))


@task(name="prepare_data", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_transient)
def prepare_data(spec: DataSpec, out_dir: str, refresh_id: str) -> PreparedData:
    """Stage 1: validated, split, fingerprinted data saved as .npz (a retry covers a SQL source that did not answer;
    invalid data fails the same way every time and is not retried)."""
    prepared = prepare(spec, Path(out_dir))
    get_run_logger().info("prepared %s: %s rows, %d classes, fingerprint %s", prepared.source, prepared.rows,
                          prepared.num_classes, prepared.fingerprint)
    return prepared


@task(name="train_baselines")
def baselines_task(data: PreparedData, model_name: str, config: RetrainConfig, lineage: Lineage) -> BaselinesOutput:
    """Every refresh of a table: LightGBM and a linear model on the same split, registered to rank with NAS."""
    return register_baselines(data.path, model_name, config, lineage)


@task(name="register_baseline_champion")
def baseline_champion(data: PreparedData, model_name: str, config: RetrainConfig, lineage: Lineage,
                      baselines: BaselinesOutput | None = None) -> BaselineOutput | None:
    """First refresh only: the best baseline (this refresh's LightGBM and linear models and the hand-designed
    network) becomes ``champion`` so the canary has something to beat."""
    if registry.alias_version(registry.client_for_active(), model_name, CHAMPION) is not None:
        return None
    get_run_logger().info("no champion for %s yet: the best baseline becomes champion", model_name)
    hand = register_baseline(data.path, model_name, config, lineage, champion=False)
    return crown_first_champion(model_name, hand, baselines)


@task(name="retrain_and_register")
def retrain_task(inputs: RetrainInput, config: RetrainConfig) -> RetrainOutput:
    """Stage 3: full training of the best candidates; the winner becomes ``challenger``."""
    return retrain_and_register(inputs, config)


@task(name="read_champion", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient)
def champion_facts(model_name: str) -> ChampionFacts | None:
    """The champion before this refresh (a registry read: retried with backoff when the server hiccups, i.e. on a
    connection error, a 5xx or a locked SQLite store; never on a deterministic error)."""
    mv = registry.alias_version(registry.client_for_active(), model_name, CHAMPION)
    if mv is None:
        return None
    tags = registry.version_tags(mv)
    offline = OfflineMetrics.from_tags(tags)
    return ChampionFacts(version=str(mv.version), arch=tags.get("arch", ""), model_kind=tags.get("model_kind", ""),
                         latency_ms=offline.latency_ms,
                         **offline.reported())


class _Clock:
    """Per-stage wall time and the progress lines the CLI shows."""

    def __init__(self, on_done: Callable[[str], None] | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()
        self._on_done = on_done  # records each finished stage (what a resume reuses)

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        progress.info("▶ %s", name)
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        progress.info("✔ %s (%.1f s)", name, self.timings[name])
        if self._on_done is not None:
            self._on_done(name)
        return result

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start


def _tournament_stage(config: RefreshConfig, model_name: str, data: PreparedData, challenger: RetrainOutput,
                      clock: _Clock) -> TournamentOutput | None:
    """The shadow tournament: informs, never blocks. None when the refresh skips it or retrained one candidate,
    ``skipped`` when the task kind has nothing it ranks by, ``error`` when it failed."""
    from pipelines.tournament import shadow_tournament

    if config.skip_tournament:
        return None
    reason = get_task(data.task).tournament_skip
    if reason is not None:
        get_run_logger().info("shadow tournament skipped: %s", reason)
        return TournamentOutput(skipped=reason, model_name=model_name)
    if len(challenger.candidates) < 2:
        return None
    aliases = [c.alias for c in challenger.candidates]
    tcfg = config.tournament.model_copy(update={"aliases": config.tournament.aliases or aliases})

    def run_tournament() -> TournamentOutput:
        try:
            return shadow_tournament(model_name, data.path, tcfg)
        except Exception as exc:  # the tournament informs; it must not block the canary that decides
            get_run_logger().warning("shadow tournament failed: %s", exc)
            return TournamentOutput(error=f"{type(exc).__name__}: {exc}", model_name=model_name, aliases=aliases)

    return clock.stage("shadow_tournament", run_tournament)


def _canary_stage(config: RefreshConfig, model_name: str, data: PreparedData, clock: _Clock
                  ) -> CanaryOutput | HandoverOutput | None:
    """The canary decides: embedded (a local gateway and simulated traffic), or handed over to a running gateway."""
    if config.skip_canary:
        return None
    if config.gateway_url:
        from pipelines.control.handover import hand_over

        return clock.stage("canary_handover", lambda: hand_over(model_name, data.path, config.canary,
                                                                 config.gateway_url,
                                                                 work_pool=config.controller_work_pool))
    from pipelines.canary.flow import canary_rollout

    return clock.stage("canary_rollout", lambda: canary_rollout(model_name, data.path, config.canary))


@flow(name="model_refresh", log_prints=True)
def model_refresh(config: RefreshConfig | None = None, refresh_id: str | None = None) -> RefreshResult:
    """One scheduled refresh (``refresh_id`` of an unfinished one resumes it, with its recorded configuration);
    returns every stage's output. The flow's entry point: its one ``Settings`` and tracking handle are built here."""
    settings = Settings()
    config = None if config is None else RefreshConfig.model_validate(config)
    model_name = _model_name(settings, config, refresh_id)
    tracking = Tracking.open(settings, model_name=model_name)  # the model's own experiment
    from pipelines.locks import refresh_lock

    with refresh_lock(settings.state_dir, model_name):
        return _refresh(settings, tracking, config, refresh_id)


def _model_name(settings: Settings, config: RefreshConfig | None, refresh_id: str | None) -> str:
    """The model a refresh is about, known before its record opens (a resumed one: its recorded name)."""
    if refresh_id is not None:
        recorded = refresh_state.load(settings.state_dir, refresh_id).config.get("model_name")
        return recorded or settings.model_name
    return (config.model_name if config is not None else None) or settings.model_name


def _refresh(settings: Settings, tracking: Tracking, config: RefreshConfig | None, refresh_id: str | None
             ) -> RefreshResult:
    """The flow's body, under the model's refresh lock."""
    record, config = _open_record(settings, tracking, config, refresh_id)
    if record.parent_run_id:  # resumed: its parent run's experiment, wherever it was started
        tracking = tracking.for_run(record.parent_run_id)
    model_name = config.model_name or settings.model_name
    store = record.directory(settings.state_dir)
    ctx = get_run_context()
    flow_run_id = str(ctx.flow_run.id) if getattr(ctx, "flow_run", None) else ""
    clock = _Clock(on_done=lambda stage: _note_stage(settings, record, stage))
    try:
        with tracking.fluent(), mlflow.start_run(
                run_id=record.parent_run_id,
                run_name=None if record.parent_run_id else f"refresh-{record.refresh_id}") as parent:
            _note_parent(settings, record, parent.info.run_id, flow_run_id)
            result = _stages(config, model_name, record, store, parent.info.run_id, flow_run_id, clock, settings)
            from pipelines.refresh_facts import record_refresh  # quality figures, versions, model description

            record_refresh(result, tracking.client)
            mlflow.log_metrics({"refresh_seconds": clock.total,
                                **{f"seconds.{k}": v for k, v in clock.timings.items()}})
            if result.canary is not None:
                mlflow.set_tag(tag("decision"), result.canary.decision or "")
    except BaseException as exc:
        why = ("interrupted (Ctrl-C); continue it with `nasops refresh --resume`" if isinstance(exc, KeyboardInterrupt)
               else f"{type(exc).__name__}: {exc}"[:500])
        record.status, record.error = refresh_state.FAILED, why
        refresh_state.save(settings.state_dir, record)
        raise
    record.status, record.finished = refresh_state.COMPLETED, time.time()
    refresh_state.save(settings.state_dir, record)
    return result


def _open_record(settings: Settings, tracking: Tracking, config: RefreshConfig | None, refresh_id: str | None
                 ) -> tuple[refresh_state.RefreshRecord, RefreshConfig]:
    """The refresh's record and the configuration it runs with (resolved: the model name is the settings' when
    none is given); a resumed refresh runs its recorded configuration (:func:`refresh_state.resumed_config`)."""
    from pipelines.abandoned import clean_up

    home = settings.state_dir
    if config is not None and config.model_name is None:
        config = config.model_copy(update={"model_name": settings.model_name})
    if refresh_id is None:
        config = config or RefreshConfig(model_name=settings.model_name)
        clean_up(home, config.model_name, keep=None, client=tracking.client)
        record = refresh_state.RefreshRecord(refresh_state.new_refresh_id(), config=config.model_dump(mode="json"))
    else:
        record = refresh_state.load(home, refresh_id)
        if record.status == refresh_state.COMPLETED:
            from pipelines.errors import UserError

            raise UserError(f"refresh {refresh_id} already completed; start a new one without --resume")
        config = refresh_state.resumed_config(record, config)
        clean_up(home, config.model_name or settings.model_name, keep=refresh_id, client=tracking.client)
        record.status, record.error, record.attempts = refresh_state.RUNNING, None, record.attempts + 1
    refresh_state.save(home, record)
    return record, config


def _note_stage(settings: Settings, record: refresh_state.RefreshRecord, stage: str) -> None:
    if stage not in record.stages_done:
        record.stages_done.append(stage)
        refresh_state.save(settings.state_dir, record)


def _note_parent(settings: Settings, record: refresh_state.RefreshRecord, run_id: str, flow_run_id: str) -> None:
    if record.parent_run_id is None:
        record.parent_run_id = run_id
        refresh_state.save(settings.state_dir, record)
    mlflow.set_tags({tag("stage"): "refresh", tag("prefect_flow_run_id"): flow_run_id,
                     tag("refresh_id"): record.refresh_id, tag("attempt"): str(record.attempts)})


def _stages(config: RefreshConfig, model_name: str, record: refresh_state.RefreshRecord, store: Path,
            parent_run_id: str, flow_run_id: str, clock: _Clock, settings: Settings) -> RefreshResult:
    """The spine: every stage's typed inputs built from the previous stages' outputs."""
    from pipelines.nas_stage import search_architectures

    results = store / "results"
    spec = DataSpec(source=config.data, target=config.target, seed=config.seed, max_rows=config.max_rows,
                    query=config.query, categorical=config.categorical, task=config.task,
                    allow_columns=config.allow_columns, password=config.data_password, metric=config.metric,
                    metric_params=config.metric_params)
    data: PreparedData = clock.stage("prepare_data", lambda: _cached(prepare_data, results)(
        spec, str(settings.data_dir), record.refresh_id))
    check_champion_task(model_name, data.task)  # a regression never challenges a classifier, nor the reverse
    # before training: other columns stop here (or are allowed); the same data as the champion's is said and tagged
    versus = compare_with_champion(model_name, data.input_schema, data.source, data.fingerprint,
                                   config.allow_schema_change)
    progress.info("%s", versus.describe())
    mlflow.set_tags({tag("data_vs_champion"): versus.data,
                     tag("champion_dataset_fingerprint"): versus.champion_fingerprint or ""})
    if versus.diff:  # allowed: the old champion cannot answer the new columns; the canary judges what suits both
        from pipelines.schema_check import traffic_columns

        shared, refusal = traffic_columns(versus.champion_schema or [], data.input_schema)
        config = config.model_copy(update={"skip_tournament": True, "skip_canary": config.skip_canary or bool(refusal)})
        if refusal:
            progress.warning("the tournament and the canary are skipped: %s; check the challenger offline and "
                             "promote it by hand", refusal)
        else:
            progress.info("the canary judges only traffic of the columns both variants take: %s",
                          ", ".join(map(repr, shared or [])))
    mlflow.log_params({"data": data.source, "dataset_fingerprint": data.fingerprint, "model_name": model_name,
                       "seed": config.seed, "top_k": config.top_k,
                       "task": data.task, **({"data_query": data.query} if data.query else {})})
    mlflow.set_tag(tag("task"), data.task)
    lineage = Lineage(dataset_fingerprint=data.fingerprint, data_source=data.source, data_query=data.query or "",
                      refresh_run_id=parent_run_id, prefect_flow_run_id=flow_run_id, refresh_id=record.refresh_id,
                      seed=config.seed)
    search_in = SearchInput(data=data, journal=str(store / record.journal_name), resume=record.attempts > 1)
    search = clock.stage("search_architectures", lambda: search_architectures(search_in, config.search))
    baselines = clock.stage("train_baselines", lambda: _cached(baselines_task, results)(
        data, model_name, config.retrain, lineage)) if is_tabular(data.input_shape) else None
    baseline = clock.stage("register_baseline_champion", lambda: _cached(baseline_champion, results)(
        data, model_name, config.retrain, lineage, baselines))
    from pipelines.rescore import on_this_split  # the champion on this refresh's rows when the data changed

    champion_before = on_this_split(model_name, data.path, champion_facts(model_name))
    retrain_in = RetrainInput(data=data, search=search, model_name=model_name, lineage=lineage, baselines=baselines)
    challenger = clock.stage("retrain_and_register", lambda: _cached(retrain_task, results)(
        retrain_in, config.retrain))
    tournament = _tournament_stage(config, model_name, data, challenger, clock)
    canary = _canary_stage(config, model_name, data, clock)
    return RefreshResult(
        model_name=model_name, refresh_id=record.refresh_id, refresh_run_id=parent_run_id,
        tracking_uri=settings.tracking_uri, data=data, search=search, baseline=baseline, baselines=baselines,
        champion_before=champion_before, challenger=challenger, tournament=tournament, canary=canary,
        seconds=clock.total, timings=clock.timings,
    )
