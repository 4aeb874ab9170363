"""The work on the cluster (issue 25, finding 10): the zero-cost scoring, the search's evaluations and the full
retrainings as tasks on the refresh's task runner, with the same results as a serial run, and the prepared data
reaching a worker through the artifact store rather than the refresh's local path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nas.prefilter import prefilter, score_chunk
from nas.spaces import get_space
from pipelines import cluster

_PROXIES = {"keep": 3, "input_shape": (16,), "num_classes": 3, "cheap": ["params", "synflow"], "costly": [],
            "ensemble": ["synflow", "params"]}


def test_prefilter_chunks_scored_elsewhere_give_the_serial_scores_in_the_serial_order():
    """The pre-filter's chunk seam: chunks scored by the caller (here in reverse order, as workers may finish)
    are merged in the pool's order; the survivors and every score equal the serial run's."""
    space = get_space("mlp")
    pool = space.sample_many(8, np.random.default_rng(0))
    asked: list[int] = []

    def backwards(chunks, names, needs_batch, setup):
        asked.append(len(chunks))
        return [score_chunk(c, names, needs_batch, setup) for c in chunks[::-1]][::-1]

    serial = prefilter(space, pool, None, **_PROXIES)
    mapped = prefilter(space, pool, None, workers=2, map_chunks=backwards, **_PROXIES)
    assert asked and asked[0] > 1  # split into chunks
    assert [s.to_dict() for s in mapped] == [s.to_dict() for s in serial]


def test_serial_is_one_slot_and_no_runner():
    assert cluster.slots(None) == 1
    assert cluster.make_task_runner(cluster.SERIAL, 4) is None


def test_a_refresh_on_dask_retrains_on_dask_too():
    from pipelines.config import RefreshConfig

    assert RefreshConfig().retrain.runner == "serial"  # a default refresh retrains as before
    on_dask = RefreshConfig(search={"runner": "dask", "dask_address": "tcp://s:8786", "workers": 3})
    assert (on_dask.retrain.runner, on_dask.retrain.dask_address, on_dask.retrain.workers) == (
        "dask", "tcp://s:8786", 3)
    own = RefreshConfig(search={"runner": "dask"}, retrain={"runner": "serial"})
    assert own.retrain.runner == "serial"


# -- with a real Prefect API (the tasks are Prefect tasks) -------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from nas.datasets import bundled_task

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    bundled_task("digits", seed=0).save(path)
    return str(path)


TINY_RETRAIN = {"epochs": 1, "patience": 1, "seed": 0}


def _serial_run(digits: str):
    """The small nb201 problem both runner tests compare against: its pool's scores and two finalists trained here."""
    from nas.data import TaskData
    from pipelines.config import RetrainConfig, SearchStageConfig
    from pipelines.finalists import train_finalists
    from pipelines.nas_stage import zero_cost_pool

    data = TaskData.load(digits)
    cfg = SearchStageConfig(pool_size=8, prefilter_keep=3, seed=0, workers=1)
    space = get_space("nb201", C=8, N=1)
    serial_pool, serial_scores = zero_cost_pool(space, data, cfg)
    config = RetrainConfig(**TINY_RETRAIN)
    jobs = [(space.name, space.config(), a.string) for a in serial_pool[:2]]
    return data, cfg, space, config, jobs, (serial_pool, serial_scores, train_finalists(None, None, jobs, config, data))


@pytest.mark.slow
def test_pool_scoring_and_retraining_on_a_thread_runner_equal_the_serial_run(prefect_server, digits):
    from pipelines.finalists import train_finalists
    from pipelines.nas_stage import _ProxySource, zero_cost_pool
    from pipelines.prepared import local_ref

    data, cfg, space, config, jobs, (serial_pool, serial_scores, serial_fits) = _serial_run(digits)
    mutants = space.sample_many(5, np.random.default_rng(1))  # the predictor's candidates outside the pool
    here = _ProxySource(space, data, {}, ["synflow", "params", "nwot"])
    serial_features = [here(a) for a in mutants]
    with cluster.started(cluster.make_task_runner("thread", 2)) as runner:
        assert cluster.slots(runner) == 2  # evaluations in flight: the runner's size
        pool, scores = zero_cost_pool(space, data, cfg, runner, workers=2)
        fits = train_finalists(runner, local_ref(digits), jobs, config, data)
        there = _ProxySource(space, data, {}, ["synflow", "params", "nwot"], runner, 2)
        there.prefetch(mutants)  # scored on the runner, all at once
        assert set(there.known) == {a.string for a in mutants}
    assert [there(a) for a in mutants] == serial_features and set(serial_features[0]) == {"synflow", "params"}
    assert [a.string for a in pool] == [a.string for a in serial_pool] and scores == serial_scores
    _same_training(fits, serial_fits)


def _same_training(fits, serial_fits) -> None:
    for x, y in zip(fits, serial_fits, strict=True):
        timings = ("latency_ms", "train_seconds")  # the rest is exact
        assert {k: v for k, v in x.metrics.items() if k not in timings} == {
            k: v for k, v in y.metrics.items() if k not in timings}
        assert x.history == y.history
        for (k, v), (k2, v2) in zip(x.net.state_dict().items(), y.net.state_dict().items(), strict=True):
            assert k == k2 and bool((v == v2).all()), k


def _store_run(root) -> tuple[str, str]:
    """A real SQLite MLflow store with a file artifact root, and one run in it: (tracking URI, run id)."""
    from mlflow.tracking import MlflowClient

    root.mkdir(exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ship", artifact_location=(root / "artifacts").as_uri())
    return uri, client.create_run(experiment).info.run_id


@pytest.mark.slow
def test_scoring_and_retraining_on_a_real_two_worker_local_cluster(prefect_server, tmp_path, digits):
    """Two Dask worker processes: two slots, the pool's scores and the finalists' weights equal the serial run's,
    the data read from the artifact store."""
    from pipelines.finalists import train_finalists
    from pipelines.nas_stage import zero_cost_pool
    from pipelines.prepared import publish_prepared

    data, cfg, space, config, jobs, (serial_pool, serial_scores, serial_fits) = _serial_run(digits)
    ref = publish_prepared(digits, *reversed(_store_run(tmp_path / "store")))
    with cluster.started(cluster.make_task_runner("dask", 2)) as runner:
        assert cluster.slots(runner) == 2
        pool, scores = zero_cost_pool(space, data, cfg, runner, workers=2)
        fits = train_finalists(runner, ref, jobs, config, data)
    assert [a.string for a in pool] == [a.string for a in serial_pool] and scores == serial_scores
    _same_training(fits, serial_fits)


@pytest.mark.slow
def test_a_worker_without_the_refresh_path_loads_the_data_from_the_artifact_store(tmp_path, digits):
    """The task's loader in another process, whose working directory is elsewhere and where the refresh's data
    file no longer exists: it reads the copy logged to the run's artifacts (and checks its digest)."""
    import shutil

    from pipelines.prepared import file_digest, publish_prepared

    uri, run_id = _store_run(tmp_path / "store")
    local = tmp_path / "refresh" / "prepared.npz"
    local.parent.mkdir()
    shutil.copy(digits, local)
    ref = publish_prepared(str(local), run_id, uri)
    assert ref["sha256"] == file_digest(digits) and "/prepared/" in ref["uri"]
    shutil.rmtree(local.parent)  # the refresh's local path is gone
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    code = ("import sys, json; from pipelines.prepared import load_shipped; "
            "d = load_shipped(json.loads(sys.argv[1])); print(len(d.y_train), d.num_classes)")
    import json

    out = subprocess.run([sys.executable, "-c", code, json.dumps(ref)], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from nas.data import TaskData

    assert out.stdout.split() == [str(len(TaskData.load(digits).y_train)), "10"]
