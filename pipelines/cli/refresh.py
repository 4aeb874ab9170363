"""``nasops refresh``, ``nasops schedule`` and ``nasops status``: the main job, its schedule, and what it left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from pipelines.cli.output import make_console
from pipelines.errors import UserError
from pipelines.settings import Settings

console = make_console(stderr=True)


def _load_config_file(path: Path | None) -> dict[str, Any]:
    from pipelines.config_file import read_mapping

    return {} if path is None else read_mapping(path, f"--config {path}")


def build_config(
    config_file: Path | None = None,
    data: str | None = None,
    target: str | None = None,
    max_rows: int | None = None,
    seed: int | None = None,
    model_name: str | None = None,
    space: str | None = None,
    budget: int | None = None,
    pool_size: int | None = None,
    max_latency_ms: float | None = None,
    runner: str | None = None,
    dask_address: str | None = None,
    epochs: int | None = None,
    top_k: int | None = None,
    drift: str | None = None,
    canary_profile: str | None = None,
    skip_canary: bool = False,
    skip_tournament: bool = False,
    objective: str | None = None,
    task: str | None = None,
    query: str | None = None,
    categorical: str | None = None,
    allow_schema_change: bool = False,
    gateway: str | None = None,
    allow_column: list[str] | None = None,
    settings: Settings | None = None,
    metric: str | None = None,
):
    """Merge a config file with command-line flags (flags win) into a validated ``RefreshConfig`` — the one place
    a refresh's options are checked, before Prefect starts or anything trains. The model name is resolved (the
    settings' when none is given), and a database URL's password moves out of the URL (:func:`_without_password`)."""
    from pipelines.config import RefreshConfig
    from pipelines.errors import parse_model

    raw = _load_config_file(config_file)
    flags = {"data": data, "target": target, "max_rows": max_rows, "seed": seed, "model_name": model_name,
             "top_k": top_k, "task": task, "query": query, "gateway_url": gateway, "metric": metric,
             "categorical": [c.strip() for c in categorical.split(",") if c.strip()] if categorical else None,
             "allow_columns": list(allow_column) if allow_column else None}
    raw.update({k: v for k, v in flags.items() if v is not None})
    for section, values in (("search", {"space": space, "budget": budget, "pool_size": pool_size,
                                        "max_latency_ms": max_latency_ms, "runner": runner,
                                        "dask_address": dask_address, "objective": objective}),
                            ("retrain", {"epochs": epochs}),
                            ("canary", {"drift": drift, "profile": canary_profile})):
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            raw[section] = {**(raw.get(section) or {}), **given}
    for flag, on in (("skip_canary", skip_canary), ("skip_tournament", skip_tournament),
                     ("allow_schema_change", allow_schema_change)):
        if on:
            raw[flag] = True
    config = parse_model(RefreshConfig, raw, "refresh configuration")
    if config.model_name is None:
        config = config.model_copy(update={"model_name": (settings or Settings()).model_name})
    return _without_password(config)


def _without_password(config):
    """A database URL's password moves to ``data_password``, a field that is never dumped: Prefect records the
    flow's parameters and the refresh state keeps its configuration, and neither may hold a password."""
    from pydantic import SecretStr

    from pipelines.sql_source import is_sql_url, strip_password

    if not is_sql_url(config.data):
        return config
    url, password = strip_password(config.data)
    if password is None:
        return config
    return config.model_copy(update={"data": url, "data_password": SecretStr(password)})


def preflight(config, settings: Settings) -> None:
    """Load the data and plan it exactly as the flow's first stage will (validation, the ``--max-rows`` subsample,
    the split), and check the search space can take it, before Prefect starts: a bad file, a subsample that leaves
    a class too small or a space that cannot read the data gets one clear line, not a failed flow run."""
    from pipelines.store_checks import check_stores

    # the state dir, the tracking store and the prediction log (the canary's and the tournament's) answer in
    # seconds or are one line, exit 2: never MLflow's minutes of retries inside a flow run
    check_stores(settings, prediction_log=not (config.skip_canary and config.skip_tournament))
    from pipelines.data import DataSpec, load_table, plan_rows
    from pipelines.nas_stage import resolve_space

    spec = DataSpec(source=config.data, target=config.target, seed=config.seed, task=config.task,
                    query=config.query, categorical=config.categorical, max_rows=config.max_rows,
                    allow_columns=config.allow_columns, password=config.data_password, metric=config.metric,
                    metric_params=config.metric_params)
    x, y, input_shape = load_table(spec)
    plan_rows(spec, x, y)
    resolve_space(config.search, input_shape)
    from pipelines.schema_check import preflight_schema
    from pipelines.targets import preflight_task

    preflight_task(config, y, settings)  # a classifier against a regression champion (or the reverse): one line now
    preflight_schema(config, x, settings)  # other columns than the champion's: one line now, not a failed flow run


def _quiet_prefect(verbose: bool) -> None:
    """Prefect's INFO lines (one per task state) only with --verbose; the stage progress display replaces them."""
    import logging
    import os

    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Created version 3 of model ..." per version
    log = logging.getLogger("nasops.refresh")
    for old in [h for h in log.handlers if getattr(h, "nasops_progress", False)]:
        log.removeHandler(old)  # one progress handler, however often the command runs in one process
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.nasops_progress = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


# Options shared by ``refresh`` and ``schedule`` (one spelling of each help text).
DATA = typer.Option(None, help="bundled dataset (digits, mnist5k, diabetes), a .csv/.parquet file, or a database "
                    "URL (postgresql://USER@HOST/DB, sqlite:///FILE.db) with --query; default: the --config file's "
                    "`data`, else digits", show_default=False)
TARGET = typer.Option(None, help="label column of a CSV/Parquet file or of the query's result")
QUERY = typer.Option(None, "--query", help='SQL whose rows are the table, e.g. "SELECT * FROM t" (with a database '
                     "URL as --data)")
CATEGORICAL = typer.Option(None, "--categorical", help="integer feature columns to encode as categories, "
                           "comma-separated (e.g. zone,rating)")
CONFIG_FILE = typer.Option(None, "--config", help="YAML/JSON file of RefreshConfig fields")
ALLOW_COLUMN = typer.Option(None, "--allow-column", help="a feature column that predicts the target almost perfectly "
                            "but is known when a prediction is made (repeat for each; the leakage check refuses "
                            "any other such column)")

OPTION_FIELDS = {
    "data": "data", "target": "target", "query": "query", "categorical": "categorical", "max_rows": "max_rows",
    "seed": "seed", "model_name": "model_name", "space": "search.space", "budget": "search.budget",
    "pool_size": "search.pool_size", "max_latency_ms": "search.max_latency_ms", "objective": "search.objective",
    "task": "task", "runner": "search.runner", "dask_address": "search.dask_address", "epochs": "retrain.epochs",
    "top_k": "top_k", "drift": "canary.drift", "canary_profile": "canary.profile", "skip_canary": "skip_canary",
    "skip_tournament": "skip_tournament",
    "allow_schema_change": "allow_schema_change", "gateway": "gateway_url", "allow_column": "allow_columns",
    "metric": "metric",
}
"""Each configuration option of ``nasops refresh`` and the field it sets (what a resume compares)."""


def refresh(
    ctx: typer.Context,
    data: str | None = DATA,
    target: str | None = TARGET,
    query: str | None = QUERY,
    categorical: str | None = CATEGORICAL,
    allow_column: list[str] | None = ALLOW_COLUMN,
    config_file: Path | None = CONFIG_FILE,
    max_rows: int | None = typer.Option(None, help="stratified subsample of the data, for quick runs"),
    seed: int | None = typer.Option(None, help="seed for splits, sampling and training (every stage)"),
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    space: str | None = typer.Option(None, help="search space (default: nb201 for images, mlp for tables)"),
    budget: int | None = typer.Option(None, help="low-fidelity trainings the search may spend"),
    pool_size: int | None = typer.Option(None, help="architectures sampled and scored by zero-cost proxies"),
    max_latency_ms: float | None = typer.Option(None, help="only accept architectures under this CPU latency"),
    objective: str | None = typer.Option(None, "--objective", help="search objective: accuracy, or latency_int8 "
                                         "(rank int8 accuracy, bound int8 latency, register the int8 form)"),
    task: str | None = typer.Option(None, "--task", help="classification or regression (default auto: a float "
                                    "target with many distinct values is a regression)"),
    metric: str | None = typer.Option(None, "--metric", help="what every stage ranks and the canary judges by: "
                                      "accuracy, balanced_accuracy, log_loss, roc_auc, f1, cost, rmse, mae (default: "
                                      "from the target; metric_params in --config)"),
    runner: str | None = typer.Option(None, help="candidate evaluation runner: thread or dask"),
    dask_address: str | None = typer.Option(None, help="address of an existing Dask scheduler (with --runner dask)"),
    epochs: int | None = typer.Option(None, help="maximum epochs of the full retraining"),
    top_k: int | None = typer.Option(None, help="candidates searched for and retrained fully"),
    drift: str | None = typer.Option(None, help="inject drift into the replayed traffic, e.g. noise=0.3"),
    canary_profile: str | None = typer.Option(None, "--canary-profile", help="whose canary defaults a hand-over "
                                              "to --gateway uses: production (default: minutes) or demo (seconds)"),
    skip_canary: bool = typer.Option(False, help="register the challenger without running the canary"),
    skip_tournament: bool = typer.Option(False, help="do not serve the retrained candidates in a shadow tournament"),
    allow_schema_change: bool = typer.Option(False, "--allow-schema-change", help="retrain the model although the "
                                             "data's columns differ from its champion's"),
    gateway: str | None = typer.Option(None, "--gateway", help="start the rollout on this running gateway and "
                                       "return (default $NASOPS_GATEWAY_URL; none: the embedded canary)"),
    resume: bool = typer.Option(False, "--resume", help="continue the last unfinished refresh (or --refresh-id), "
                                "with the configuration it started with"),
    refresh_id: str | None = typer.Option(None, help="the unfinished refresh to continue (implies --resume)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Prefect's log lines for every task"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object (nothing else on stdout)"),
) -> None:
    """Run the whole model refresh: data prep, NAS, retrain + register, canary, promote or roll back."""
    _quiet_prefect(verbose)  # before anything imports Prefect: its log level is read once, at import
    settings = Settings()  # this command's one Settings: everything below takes it (or what it holds)
    options = {name: ctx.params[name] for name in (*OPTION_FIELDS, "config_file")}
    config = build_config(**{k: v for k, v in options.items() if k != "gateway"}, gateway=gateway, settings=settings)
    config, resume_id = _resumed(settings, config, refresh_id, resume, _given(ctx, options), config_file)
    if config.gateway_url and not config.skip_canary:  # a demo-sized canary policy on a real gateway: refused now
        from pipelines.control.config import for_gateway

        for_gateway(config.canary)
    preflight(config, settings)
    if config.gateway_url and not config.skip_canary:  # before anything trains: the rollout needs that gateway
        gateway_preflight(settings, config.gateway_url.rstrip("/"), config.model_name or settings.model_name)
    _run_refresh(config, resume_id, as_json)


def gateway_preflight(settings: Settings, url: str, model_name: str) -> None:
    """The gateway the refresh hands over to must answer and be ready; on a fresh stack (no champion of the model in
    the registry yet) a live gateway waits for its first champion (503), which this refresh registers (the best
    baseline) before it hands over: accepted, and said. A gateway that does not answer is refused either way."""
    from pipelines.gateway_admin import gateway_ready

    if gateway_ready(url, awaiting_champion=not has_champion(settings, model_name)) is None:
        make_console(stderr=True).print(
            f"the gateway at {url} waits for its first champion: this refresh registers {model_name!r}'s best "
            "baseline as champion and hands over once the gateway has loaded it", highlight=False, soft_wrap=True)


def has_champion(settings: Settings, model_name: str) -> bool:
    """Whether the registry holds a champion of ``model_name`` (a read-only look: no store is created)."""
    from monitoring.vocabulary import CHAMPION
    from pipelines.cli.db import missing_sqlite

    uri = settings.tracking_uri_uncreated
    if missing_sqlite(uri, settings) is not None:
        return False
    return any(CHAMPION in v["aliases"] for v in _versions(uri, model_name))


def _given(ctx: typer.Context, options: dict[str, Any]) -> list[str]:
    """The options the user typed (or set through the environment), not those left at their defaults."""
    return [name for name in options if (source := ctx.get_parameter_source(name)) is not None
            and source.name != "DEFAULT"]


def _resumed(settings: Settings, config, refresh_id: str | None, resume: bool, given: list[str],
             config_file: Path | None) -> tuple[Any, str | None]:
    """``(the configuration to run, the refresh id to resume or None)``. A resume runs the recorded configuration
    only; an option given now that changes it is refused in one line (--resume never mixes two configurations)."""
    if refresh_id is None and not resume:
        return config, None
    from pipelines import refresh_state

    home = settings.state_dir
    record = refresh_state.load(home, refresh_id) if refresh_id else refresh_state.latest_unfinished(home)
    changed = refresh_state.conflicts(record.config, config.model_dump(mode="json"))
    fields = {OPTION_FIELDS[name]: f"--{name.replace('_', '-')}" for name in given if name in OPTION_FIELDS}
    if config_file is not None:
        fields.update({field: f"--config {config_file}" for field in _dotted(_load_config_file(config_file))})
    for field, option in fields.items():
        if field in changed:
            old, new = changed[field]
            raise UserError(f"{option} gives {field}={new!r}, but refresh {record.refresh_id} was started with "
                            f"{old!r} and --resume continues its recorded configuration; drop {option.split()[0]} "
                            "to resume it, or run without --resume to start a new refresh with it")
    console.print(refresh_state.resume_plan(home, record), highlight=False, soft_wrap=True)  # stderr, one line
    return refresh_state.resumed_config(record, None).model_copy(
        update={"data_password": config.data_password}), record.refresh_id


def _dotted(mapping: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"search": {"budget": 3}}`` -> ``["search.budget"]``: the fields a config file sets."""
    out: list[str] = []
    for key, value in mapping.items():
        out.extend(_dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])
    return out


def _run_refresh(config, resume_id: str | None, as_json: bool) -> None:
    """The flow itself, under the watchdog, then its summary (stdout: the table, or the JSON alone)."""
    import contextlib
    import sys

    from pipelines import supervisor
    from pipelines.cli.output import print_json
    from pipelines.refresh import model_refresh
    from pipelines.sql_source import display_url
    from pipelines.summary import refresh_details, refresh_table

    console.rule("[bold]nasops refresh")
    console.print(f"data: {display_url(config.data)}   model: {config.model_name}   seed: {config.seed}"
                  + (f"   resuming: {resume_id}" if resume_id else ""))
    watchdog = supervisor.start()  # what this refresh starts dies with it, even on kill -9
    # Whatever the libraries print while the flow runs goes to stderr: under --json, stdout is the JSON alone.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = model_refresh(config, refresh_id=resume_id)
    finally:
        supervisor.done(watchdog)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    out = make_console()
    out.print(refresh_table(result))
    for line in refresh_details(result):
        out.print(line, overflow="fold", highlight=False)


def schedule(
    cron: str = typer.Option(..., help='cron expression, e.g. "0 3 * * 0" (Sundays 03:00)'),
    name: str = typer.Option("nasops-refresh", help="deployment name"),
    timezone: str | None = typer.Option(None, help="IANA time zone of the cron expression (default UTC)"),
    data: str | None = DATA,
    target: str | None = TARGET,
    query: str | None = QUERY,
    categorical: str | None = CATEGORICAL,
    allow_column: list[str] | None = ALLOW_COLUMN,
    config_file: Path | None = CONFIG_FILE,
    check: bool = typer.Option(False, "--check", help="validate and print the deployment, then exit"),
) -> None:
    """Serve the refresh as a Prefect deployment on a cron schedule (runs until interrupted)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        raise UserError(f"--cron {cron!r} is not a valid cron expression (5 fields: minute hour day month "
                        f"weekday, e.g. \"0 3 * * 0\"): {exc.errors()[0]['msg']}") from exc
    settings = Settings()
    config = build_config(config_file, data, target, query=query, categorical=categorical, allow_column=allow_column,
                          settings=settings)
    preflight(config, settings)
    if config.data_password is not None:
        # the one place the password travels in the environment: the flow runs are child processes that serve()
        # starts with this process's environment, and a deployment's parameters are recorded
        import os

        from pipelines.sql_source import PASSWORD_ENV

        os.environ[PASSWORD_ENV] = config.data_password.get_secret_value()
    from pipelines.refresh import model_refresh

    deployment = model_refresh.to_deployment(
        name=name, schedule=CronSchedule(cron=cron, timezone=timezone),
        parameters={"config": config.model_dump(mode="json")},
        description="Scheduled nasops model refresh", tags=["nasops"],
    )
    info = {"deployment": f"model_refresh/{name}", "cron": cron, "timezone": timezone or "UTC",
            "parameters": deployment.parameters}
    if check:
        from pipelines.cli.output import print_json

        print_json(info)
        return
    from prefect import serve

    console.print(f"serving deployment [bold]model_refresh/{name}[/bold] on cron {cron!r}; Ctrl-C stops it")
    serve(deployment)


def status(
    model_name: str | None = typer.Option(None, help="registered model name (default $NASOPS_MODEL_NAME)"),
    history: bool = typer.Option(False, "--history", help="list every canary decision, oldest first"),
    window_s: float = typer.Option(3600.0, "--window-s", min=1, help="live-traffic window of the online summary"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Registered versions, their aliases and the last canary decisions."""
    from pipelines.cli.db import missing_sqlite
    from pipelines.cli.output import print_json
    from pipelines.store_checks import check_prediction_log, check_tracking_store
    from pipelines.summary import decisions, history_table, online_table, status_table

    settings = Settings()
    name = model_name or settings.model_name
    # a read-only command: the *_uncreated URLs, so an empty state dir (or none) stays as it was
    log_url = settings.prediction_log_url_uncreated
    if missing_sqlite(log_url, settings) is None:
        check_prediction_log(log_url)  # a bad log URL is one line, before MLflow says anything
    uri = settings.tracking_uri_uncreated
    missing = missing_sqlite(uri, settings)
    if missing is not None:
        if as_json:
            print_json({"model_name": name, "versions": [], "decisions": [], "online": None})
        else:
            make_console().print(f"nothing here yet: no MLflow store at {missing} (NASOPS_HOME={settings.home_path}); "
                            "run `nasops refresh` first", highlight=False, soft_wrap=True)
        return
    check_tracking_store(uri)
    versions = _versions(uri, name)
    online = _online(settings, window_s, name)
    if as_json:
        print_json({"model_name": name, "versions": versions, "decisions": decisions(versions), "online": online})
        return
    out = make_console()
    if not versions:
        out.print(f"no registered versions of {name!r} in {uri}; run `nasops refresh` first")
        return
    out.print(history_table(name, versions) if history else status_table(name, versions))
    if online and any(f["requests"] for f in online.values()):
        out.print(online_table(online, window_s))


def _versions(uri: str, name: str) -> list[dict]:
    """The registry's versions of ``name``: read without MLflow where the store allows (seconds, not tens of
    seconds: :mod:`pipelines.registry_view`), else through MLflow's client."""
    from pipelines.registry_view import list_versions

    versions = list_versions(uri, name)
    if versions is not None:
        return versions
    from mlflow.tracking import MlflowClient

    from pipelines import registry

    return registry.list_versions(MlflowClient(tracking_uri=uri, registry_uri=uri), name)


def _online(settings: Settings, window_s: float, model_name: str) -> dict | None:
    """The online summary of the last ``window_s`` seconds, or None without a prediction log yet."""
    import time

    from pipelines.cli.db import missing_sqlite

    url = settings.prediction_log_url_uncreated
    if missing_sqlite(url, settings) is not None:
        return None
    from monitoring.online import summarize_variants
    from monitoring.prediction_log import create_log_engine, read_predictions
    from monitoring.vocabulary import VARIANTS

    engine = create_log_engine(url)
    try:
        now = time.time()
        frame = read_predictions(engine, now - window_s, now + 1, include_shadow=False, model_name=model_name)
        return summarize_variants(frame, VARIANTS)
    except Exception as exc:  # the log is optional evidence here; the registry view must still print
        raise UserError(f"cannot read the prediction log at {url} ({type(exc).__name__}); check "
                        "NASOPS_PREDICTION_LOG_URL") from None
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    app.command("refresh")(refresh)
    app.command("schedule")(schedule)
    app.command("status")(status)
