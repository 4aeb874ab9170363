"""The ``model_refresh`` Prefect flow: data prep -> NAS -> retrain + register -> canary -> promote / roll back.

Each stage is a task or subflow whose inputs and outputs are plain values (paths, architecture strings, metric
dicts), so any stage can be re-run, retried or sent elsewhere. All MLflow runs of one refresh nest under one parent
run, which carries the dataset fingerprint and the final decision.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel, ConfigDict, Field

from pipelines import registry
from pipelines.data import DataSpec, prepare
from pipelines.retrain import RetrainConfig, register_baseline, retrain_and_register
from pipelines.settings import Settings
from pipelines.tracking import configure_mlflow


class RefreshConfig(BaseModel):
    """Everything a refresh needs; every field has a default that runs on a laptop in a few minutes."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("digits", description="bundled dataset (digits, mnist5k) or a .csv/.parquet path")
    target: str | None = Field(None, description="label column of a CSV/Parquet file")
    max_rows: int | None = Field(None, ge=50, description="stratified subsample of the data (for quick runs)")
    seed: int = 0
    model_name: str | None = Field(None, description="registered model name (default: NASOPS_MODEL_NAME)")
    search: dict[str, Any] = Field(default_factory=dict, description="NAS stage options (SearchStageConfig)")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    canary: dict[str, Any] = Field(default_factory=dict, description="canary stage options (CanaryConfig)")
    skip_canary: bool = Field(False, description="register the challenger but do not run the canary")
    tournament: dict[str, Any] = Field(default_factory=dict, description="shadow tournament options "
                                       "(TournamentConfig)")
    skip_tournament: bool = Field(False, description="do not serve the retrained candidates in a shadow tournament")


@task(name="prepare_data", cache_policy=NO_CACHE)
def prepare_data(spec: DataSpec, out_dir: str) -> dict:
    """Stage 1: validated, split, fingerprinted data saved as .npz."""
    from pathlib import Path

    prepared = prepare(spec, Path(out_dir))
    get_run_logger().info(
        "prepared %s: %s rows, %d classes, fingerprint %s",
        prepared.source, prepared.rows, prepared.num_classes, prepared.fingerprint,
    )
    return prepared.to_dict()


@task(name="register_baseline_champion", cache_policy=NO_CACHE)
def baseline_champion(data_path: str, model_name: str, config: RetrainConfig, lineage: dict) -> dict | None:
    """First refresh only: a hand-designed baseline becomes ``champion`` so the canary has something to beat."""
    if registry.alias_version(registry.client_for_active(), model_name, registry.CHAMPION) is not None:
        return None
    get_run_logger().info("no champion for %s yet: registering a hand-designed baseline", model_name)
    return register_baseline(data_path, model_name, config, lineage)


@task(name="retrain_and_register", cache_policy=NO_CACHE)
def retrain_task(data_path: str, search: dict, model_name: str, config: RetrainConfig, lineage: dict) -> dict:
    """Stage 3: full training of the best candidates; the winner becomes ``challenger``."""
    return retrain_and_register(data_path, search, model_name, config, lineage)


def _champion_summary(model_name: str) -> dict:
    mv = registry.alias_version(registry.client_for_active(), model_name, registry.CHAMPION)
    if mv is None:
        return {}
    tags = registry.version_tags(mv)
    return {
        "version": str(mv.version),
        "arch": tags.get("arch", ""),
        "val_accuracy": float(tags.get("val_accuracy", "nan")),
        "test_accuracy": float(tags.get("test_accuracy", "nan")),
        "latency_ms": float(tags.get("latency_ms", "nan")),
    }


@flow(name="model_refresh", log_prints=True)
def model_refresh(config: RefreshConfig | None = None) -> dict:
    """One scheduled refresh; returns a JSON-able summary of every stage."""
    from pipelines.canary import canary_rollout
    from pipelines.nas_stage import search_architectures
    from pipelines.tournament import parse_config as parse_tournament_config
    from pipelines.tournament import shadow_tournament

    config = config or RefreshConfig()
    parse_tournament_config({"seed": config.seed, **config.tournament})  # option mistakes fail before any work
    settings = Settings()
    model_name = config.model_name or settings.model_name
    configure_mlflow(settings)
    started = time.perf_counter()
    ctx = get_run_context()
    flow_run_id = str(ctx.flow_run.id) if getattr(ctx, "flow_run", None) else ""
    with mlflow.start_run(run_name=f"refresh-{time.strftime('%Y%m%d-%H%M%S')}") as parent:
        mlflow.set_tags({"nasops.stage": "refresh", "nasops.prefect_flow_run_id": flow_run_id})
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        spec = DataSpec(source=config.data, target=config.target, seed=config.seed, max_rows=config.max_rows)
        data = prepare_data(spec, str(settings.data_dir))
        lap("prepare_data")
        mlflow.log_params({"data": data["source"], "dataset_fingerprint": data["fingerprint"],
                           "model_name": model_name, "seed": config.seed})
        lineage = {"dataset_fingerprint": data["fingerprint"], "refresh_run_id": parent.info.run_id,
                   "prefect_flow_run_id": flow_run_id, "data_source": data["source"]}

        search = search_architectures(data["path"], {"seed": config.seed, **config.search})
        lap("search_architectures")
        baseline = baseline_champion(data["path"], model_name, config.retrain, lineage)
        lap("register_baseline_champion")
        champion_before = _champion_summary(model_name)
        challenger = retrain_task(data["path"], search, model_name, config.retrain, lineage)
        lap("retrain_and_register")

        tournament: dict[str, Any] = {}
        if not config.skip_tournament and len(challenger.get("candidates", [])) >= 2:
            aliases = [c["alias"] for c in challenger["candidates"]]
            try:
                tournament = shadow_tournament(model_name, data["path"],
                                               {"seed": config.seed, "aliases": aliases, **config.tournament})
            except Exception as exc:  # the tournament informs; it must not block the canary that decides
                get_run_logger().warning("shadow tournament failed: %s", exc)
                tournament = {"error": f"{type(exc).__name__}: {exc}"}
            lap("shadow_tournament")

        canary: dict[str, Any] = {}
        if not config.skip_canary:
            canary = canary_rollout(model_name, data["path"], {"seed": config.seed, **config.canary})
            lap("canary_rollout")
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"refresh_seconds": seconds, **{f"seconds.{k}": v for k, v in timings.items()}})
        if canary:
            mlflow.set_tag("nasops.decision", canary.get("decision", ""))
        return {
            "model_name": model_name,
            "refresh_run_id": parent.info.run_id,
            "tracking_uri": settings.tracking_uri,
            "data": data,
            "search": search,
            "baseline": baseline,
            "champion_before": champion_before,
            "challenger": challenger,
            "tournament": tournament,
            "canary": canary,
            "seconds": seconds,
            "timings": timings,
        }
