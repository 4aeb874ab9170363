"""The zero-cost pre-filter cascade: what it keeps, the journal it resumes from, worker processes, without data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.datasets import bundled_task, load_bundled
from nas.ensemble import ENSEMBLES, rank_aggregate
from nas.pool import dedupe_canonical, sample_pool
from nas.prefilter import ScoredArchitecture, prefilter
from nas.proxies import needs_data
from nas.spaces import get_space

ENSEMBLE = ["synflow", "nwot"]  # the cheapest ensemble that still needs data in stage 2


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", C=4, N=1)


@pytest.fixture(scope="module")
def data():
    return bundled_task("digits", seed=0)


@pytest.fixture(scope="module")
def pool(space):
    return sample_pool(space, 24, seed=0)


class Interrupted(Exception):
    pass


def test_bundled_datasets_have_the_documented_shapes():
    x, y, shape = load_bundled("digits")
    assert shape == (1, 8, 8) and x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= 0 and x.max() <= 1
    with pytest.raises(KeyError, match="digits, mnist5k"):
        load_bundled("cifar10")


def test_pool_is_unique_by_canonical_form(space):
    pool = sample_pool(space, 300, seed=1)
    assert len({space.canonicalize(a).string for a in pool}) == len(pool) == 300
    assert all(space.canonicalize(a) == a for a in pool)
    assert [a.string for a in sample_pool(space, 300, seed=1)] == [a.string for a in pool]
    # a finite space stops when it runs out instead of looping forever
    assert len(sample_pool(get_space("vit", depths=[1], heads=[1], embed_dims=[32], mlp_ratios=[1]), 50)) == 4


def test_cascade_keeps_the_best_of_the_finalists(space, pool, data):
    calls = []
    out = prefilter(space, pool, data, keep=4, costly_fraction=0.25, ensemble=ENSEMBLE, batch_size=32,
                    progress=lambda done, total: calls.append((done, total)))
    assert len(out) == 4 and all(isinstance(s, ScoredArchitecture) for s in out)
    assert [s.rank_score for s in out] == sorted((s.rank_score for s in out), reverse=True)
    assert len({s.arch.string for s in out}) == 4 and {s.arch.string for s in out} <= {a.string for a in pool}
    assert all(set(ENSEMBLE) | {"params", "flops"} <= set(s.scores) for s in out)
    assert calls[-1] == (24 + 6, 24 + 6)  # 24 cheap scorings + the best quarter (6) scored by the costly stage

    # the winners came from the cheap stage's best quarter, ordered by the ensemble's aggregate over it
    again = prefilter(space, pool, data, keep=6, costly_fraction=0.25, ensemble=ENSEMBLE, batch_size=32)
    finalists = [s.arch.string for s in again]
    scores = {m: [s.scores[m] for s in again] for m in ENSEMBLE}
    expected = np.argsort(-rank_aggregate(scores, {m: 1.0 for m in ENSEMBLE}), kind="stable")
    assert finalists == [finalists[i] for i in expected]
    assert finalists[:4] == [s.arch.string for s in out]


def test_an_interrupted_prefilter_resumes_from_its_journal(space, pool, data, tmp_path):
    journal = tmp_path / "prefilter.jsonl"
    kwargs = dict(keep=3, costly_fraction=0.25, ensemble=ENSEMBLE, batch_size=32, journal=journal)

    def stop_after_ten(done, total):
        if done >= 10:
            raise Interrupted

    with pytest.raises(Interrupted):
        prefilter(space, pool, data, progress=stop_after_ten, **kwargs)
    scored_before = len(journal.read_text().splitlines()) - 1  # minus the header
    assert scored_before == 10

    seen = []
    resumed = prefilter(space, pool, data, progress=lambda d, t: seen.append(d), **kwargs)
    lines = journal.read_text().splitlines()
    assert json.loads(lines[0])["header"]["space_config"] == {"C": 4, "N": 1}
    assert len(lines) - 1 == 24 + 6  # nothing scored twice
    assert seen[0] == 10  # the resumed run started where the first one stopped

    fresh = prefilter(space, pool, data, **{**kwargs, "journal": None})
    assert [s.arch.string for s in resumed] == [s.arch.string for s in fresh]
    assert [s.scores for s in resumed] == [s.scores for s in fresh]

    with pytest.raises(ValueError, match="other settings"):
        prefilter(space, pool, data, **{**kwargs, "batch_size": 16})


@pytest.mark.slow  # spawns two worker processes that import torch
def test_worker_processes_give_the_serial_result(space, pool, data):
    small = pool[:12]
    serial = prefilter(space, small, data, keep=3, costly_fraction=0.25, ensemble=ENSEMBLE, batch_size=32)
    parallel = prefilter(space, small, data, keep=3, costly_fraction=0.25, ensemble=ENSEMBLE, batch_size=32, workers=2)
    assert [(s.arch.string, s.scores) for s in parallel] == [(s.arch.string, s.scores) for s in serial]


def test_without_data_the_cascade_is_data_free(space, pool):
    out = prefilter(space, pool, None, keep=3, costly_fraction=0.25, input_shape=(1, 8, 8), num_classes=10)
    assert len(out) == 3
    data_free = {m for m in ENSEMBLES["ensemble"] if not needs_data(m)} | {"synflow", "params", "flops"}
    assert all(set(s.scores) == data_free for s in out)
    with pytest.raises(ValueError, match="needs data"):
        prefilter(space, pool, None, keep=3, costly=["nwot"], input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="input_shape and num_classes"):
        prefilter(space, pool, None, keep=3)


def test_bad_arguments_are_explained(space, pool, data):
    with pytest.raises(ValueError, match="exceeds the 24 unique"):
        prefilter(space, pool, data, keep=25)
    with pytest.raises(KeyError, match="valid proxies"):
        prefilter(space, pool, data, keep=2, cheap=["synflow", "magic"])
    with pytest.raises(KeyError, match="choose one of"):
        prefilter(space, pool, data, keep=2, ensemble="best")
    with pytest.raises(ValueError, match="costly_fraction"):
        prefilter(space, pool, data, keep=2, costly_fraction=0)
    with pytest.raises(ValueError, match="empty"):
        prefilter(space, [], data, keep=1)
    mlp = get_space("mlp")
    assert dedupe_canonical(mlp.sample_many(3, np.random.default_rng(0)))  # mlp pools dedupe too
    with pytest.raises(ValueError, match="channels, height, width"):
        prefilter(space, pool, None, keep=2, input_shape=(64,), num_classes=10)
