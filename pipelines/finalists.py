"""The full retrainings of a refresh's finalists as tasks on the cluster (:mod:`pipelines.cluster`).

Each finalist (a search candidate or a compound-scaled member) is one :func:`retrain_finalist` task: it reads the
prepared data from the artifact store (:func:`pipelines.prepared.load_shipped`), trains under the refresh's seed and
returns the trained weights, the per-epoch history and the measured figures. MLflow stays in the refresh's process
(:mod:`pipelines.retrain` logs and registers what comes back), so a worker needs no tracking access; the same seed
gives the same weights and figures as a serial run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nas.data import TaskData
from nas.spaces import get_space
from pipelines import cluster
from pipelines.config import RetrainConfig
from pipelines.prepared import load_shipped, local_ref, publish_prepared

Job = tuple[str, dict, str]
"""One finalist to train: its space's name, the space's config and the architecture string."""


def _build(job: Job, data: TaskData) -> Any:
    space, space_config, arch = job
    return get_space(space, **space_config).from_string(arch).build(data.num_classes, data.input_shape)


def _fit(job: Job, data: TaskData, config: RetrainConfig) -> Any:
    from pipelines.retrain import fit_network

    with cluster.RNG_LOCK:  # the network is built and trained under the seed: one at a time per process
        return fit_network(lambda: _build(job, data), data, config, job[0])


@task(name="retrain_finalist", cache_policy=NO_CACHE, task_run_name="retrain {arch}")
def retrain_finalist(data_ref: dict, space: str, space_config: dict, arch: str, config: dict) -> dict:
    """One finalist's full training on whichever worker the runner picks (no MLflow there): its weights, history
    and figures."""
    cluster.pin_worker_threads()
    fitted = _fit((space, space_config, arch), load_shipped(data_ref), RetrainConfig(**config))
    return {"state": {k: v.detach().clone() for k, v in fitted.net.state_dict().items()},
            "history": fitted.history, "metrics": fitted.metrics}


def train_finalists(runner: Any, data_ref: dict | None, jobs: Sequence[Job], config: RetrainConfig,
                    data: TaskData) -> list[Any]:
    """Each job's :class:`pipelines.retrain.Fitted`, in the jobs' order: all submitted at once to ``runner`` (the
    network rebuilt here from the weights that come back), or trained here one after another (``runner`` None)."""
    from pipelines.retrain import Fitted

    if runner is None:
        return [_fit(job, data, config) for job in jobs]
    outs = cluster.map_ordered(runner, retrain_finalist, [
        {"data_ref": data_ref, "space": s, "space_config": dict(c), "arch": a,
         "config": config.model_dump(mode="json")} for s, c, a in jobs])
    fitted = []
    for job, out in zip(jobs, outs, strict=True):
        net = _build(job, data)
        net.load_state_dict(out["state"])
        fitted.append(Fitted(net.eval(), out["history"], out["metrics"]))
    return fitted


@contextlib.contextmanager
def finalists_runner(config: RetrainConfig, data_path: str) -> Iterator[tuple[Any, dict | None]]:
    """The started runner the config names and the data reference its tasks read: on Dask the prepared file logged
    once to the active MLflow run's artifacts; threads read the file itself; serial needs neither."""
    runner = cluster.make_task_runner(config.runner, config.workers, config.dask_address)
    with cluster.started(runner) as started:
        if started is None:
            yield None, None
        elif config.runner == "dask":
            yield started, _publish(data_path)
        else:
            yield started, local_ref(data_path)


def _publish(data_path: str) -> dict:
    import mlflow

    run = mlflow.active_run()
    if run is not None:
        return publish_prepared(data_path, run.info.run_id, mlflow.get_tracking_uri())
    with mlflow.start_run(run_name="retrain-data") as own:
        return publish_prepared(data_path, own.info.run_id, mlflow.get_tracking_uri())
