"""The ``tabular`` space (numerical embeddings, RealMLP's input treatment, a TabM ensemble head) and the training
options it needs: old ``mlp`` strings keep their networks, data statistics are fitted on the training rows and
travel as buffers, the ONNX and int8 forms match, and the zero-cost proxies and predictors run on the new points."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nas.data import TaskData
from nas.deploy import check_onnx, export_onnx, quantize_int8
from nas.export import served_module
from nas.predictors import get_predictor
from nas.proxies import compute_scores, list_proxies
from nas.spaces import InvalidArchitectureError, architecture_from_dict, get_space
from nas.spaces.mlp import MLPNetwork, TabularMLP
from nas.tabular_layers import (
    PiecewiseLinearEncoding,
    RobustScaleClip,
    combine_members,
    quantile_edges,
    smooth_clip,
)
from nas.trainer import TrainConfig, tabular_config, train

OLD = "depth=2|widths=64-64|act=relu|norm=batch|dropout=0.1|residual=1"
PLE_ENSEMBLE = "depth=2|widths=32-32|act=relu|norm=batch|dropout=0|residual=1|prep=robust|embed=ple|ensemble=4"
PLR_ENSEMBLE = "depth=1|widths=32|act=gelu|norm=layer|dropout=0.1|residual=0|embed=plr|ensemble=8"
SMALL = {"max_depth": 1, "widths": [8, 16], "activations": ["relu"], "norms": ["none"], "dropouts": [0.0]}


def _table(n: int = 400, features: int = 6, *, regression: bool = False, seed: int = 0) -> TaskData:
    """A small table with skewed and binary columns; the target depends on them non-linearly."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.lognormal(size=n), rng.normal(size=n), (rng.random(n) < 0.3).astype(float),
                         *[rng.normal(size=n) for _ in range(features - 3)]]).astype(np.float32)
    signal = np.sin(2 * x[:, 1]) + np.log1p(x[:, 0]) + x[:, 2]
    y = signal.astype(np.float32) if regression else (signal > np.median(signal)).astype(np.int64)
    parts = np.split(np.arange(n), [n // 2, 3 * n // 4])
    train_x = x[parts[0]]
    return TaskData(x_train=train_x, y_train=y[parts[0]], x_val=x[parts[1]], y_val=y[parts[1]],
                    x_test=x[parts[2]], y_test=y[parts[2]], input_shape=(features,),
                    num_classes=1 if regression else 2, feature_mean=train_x.mean(0), feature_std=train_x.std(0),
                    meta={"task": "regression" if regression else "classification"})


# -- strings: the old space is unchanged, the new one parses it --------------------------------------------------------
def test_old_strings_keep_their_spelling_and_network():
    mlp, tabular = get_space("mlp"), get_space("tabular")
    for space in (mlp, tabular):
        arch = space.from_string(OLD)
        assert arch.string == OLD  # no tabular key written at its plain value
        assert type(arch.build(3, (20,))) is MLPNetwork  # exactly the network old registered models hold
    assert mlp.config() == {"max_depth": 4, "widths": [32, 64, 128, 256], "activations": ["relu", "gelu", "silu",
                            "tanh"], "norms": ["none", "batch", "layer"], "dropouts": [0.0, 0.1, 0.2, 0.3]}
    assert mlp.size() == 32640 and len(mlp.categorical()) == 9 and mlp.encode(mlp.from_string(OLD)).shape == (29,)
    # the plain space draws exactly what it drew before the tabular options existed
    assert [a.string for a in mlp.sample_many(3, np.random.default_rng(7))] == [
        a.string for a in mlp.sample_many(3, np.random.default_rng(7))]
    assert all("prep=" not in a.string for a in mlp.sample_many(20, np.random.default_rng(0)))


@pytest.mark.parametrize(("text", "message"), [
    (OLD + "|embed=ple", "embed=ple is not a choice of this space; valid: none"),
    (OLD + "|embed=pl", None),
    (OLD + "|ensemble=3", "ensemble=3 is not a choice"),
    (OLD + "|ensemble=x", "malformed number"),
    (OLD + "|prep=robust|prep=std", "given twice"),
])
def test_bad_tabular_keys_name_the_problem(text, message):
    space = get_space("mlp") if "embed=ple" in text else get_space("tabular")
    with pytest.raises(InvalidArchitectureError, match=message or "not a choice"):
        space.from_string(text)


def test_tabular_space_samples_mutates_enumerates_and_encodes_consistently():
    space = get_space("tabular", **SMALL)
    archs = list(space.enumerate())
    assert space.size() == len(archs) == len({a.string for a in archs}) == 2 * 2 * 2 * 3 * 3
    lengths = {space.encode(a).shape for a in archs}
    assert lengths == {(1 + 2 + 1 + 1 + 2 + 2 + 3 + 3,)}  # + one-hots of prep, embed, ensemble
    assert len({space.encode(a).tobytes() for a in archs}) == len(archs)
    for arch in archs:
        assert space.from_string(arch.string) == arch
        assert space.from_categorical(space.categorical_index(arch)) == arch
        assert architecture_from_dict(arch.to_dict()) == arch
    rng = np.random.default_rng(0)
    sampled = get_space("tabular").sample_many(30, rng)
    assert {get_space("tabular").parse(a.string).embed for a in sampled} == {"none", "ple", "plr"}
    for arch in sampled[:10]:
        child = arch.space.mutate(arch, rng)
        assert child != arch and child.string in {n.string for n in arch.space.neighbours(arch)}


# -- the layers, against their definitions -----------------------------------------------------------------------------
def test_piecewise_linear_encoding_follows_the_paper():
    enc = PiecewiseLinearEncoding(1, n_bins=3)
    enc.edges.copy_(torch.tensor([[0.0, 1.0, 2.0, 4.0]]))
    x = torch.tensor([[-1.0], [0.5], [1.5], [3.0], [5.0]])
    expected = torch.tensor([[-1.0, 0, 0], [0.5, 0, 0], [1, 0.5, 0], [1, 1, 0.5], [1, 1, 1.5]])
    assert torch.allclose(enc(x).squeeze(1), expected)  # first bin open below, last open above


def test_quantile_edges_are_increasing_even_for_binary_and_constant_columns():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.normal(size=500), rng.random(500) < 0.2, np.full(500, 3.0)])
    edges = quantile_edges(values, 8)
    assert edges.shape == (3, 9) and (np.diff(edges, axis=1) > 0).all()
    assert np.allclose(edges[0], np.quantile(values[:, 0], np.linspace(0, 1, 9)))
    assert edges[1, 0] == 0 and edges[1, 1] == 1  # the binary column's one real bin, then padding past it


def test_robust_scaling_and_smooth_clip():
    x = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [100.0, 5.0]])
    layer = RobustScaleClip(2)
    layer.fit(x)
    assert layer.center.tolist() == [2.0, 5.0] and layer.scale[0] == pytest.approx(0.5) and layer.scale[1] == 0
    out = layer(x)
    assert out[:, 1].abs().max() == 0 and out[-1, 0] < 3.0  # the outlier is clipped smoothly below 3
    assert torch.allclose(smooth_clip(torch.tensor([0.01])), torch.tensor([0.01]), atol=1e-6)


def test_ensemble_prediction_is_the_mean_of_member_probabilities():
    torch.manual_seed(0)
    net = get_space("tabular").from_string(PLR_ENSEMBLE).build(3, (5,)).eval()
    x = torch.randn(7, 5)
    members = net.member_outputs(x)
    assert members.shape == (7, 8, 3)
    assert not torch.allclose(members[:, 0], members[:, 1])  # random-sign adapters: members differ from the start
    assert torch.allclose(torch.softmax(net(x), 1), torch.softmax(members, -1).mean(1), atol=1e-6)
    assert torch.allclose(combine_members(members[..., :1], regression=True), members[..., :1].mean(1))


# -- training: statistics fitted on the training rows, AdamW and the schedule --------------------------------------
def test_training_fits_the_bins_on_the_training_rows_once_and_the_state_dict_carries_them():
    data = _table()
    net = get_space("tabular").from_string(PLE_ENSEMBLE).build(2, data.input_shape)
    assert isinstance(net, TabularMLP) and not bool(net.embedding.encoding.fitted)
    train(net, data, tabular_config(epochs=2))
    x = data.tensors("train")[0]
    robust = net.prep(x)
    assert torch.allclose(net.embedding.encoding.edges,
                          torch.as_tensor(quantile_edges(robust.numpy(), 16), dtype=torch.float32))
    assert net.prep.center.tolist() == pytest.approx(np.median(x.numpy(), axis=0).tolist(), abs=1e-5)
    edges = net.embedding.encoding.edges.clone()
    train(net, _table(seed=1), tabular_config(epochs=1))  # trained on: never refitted under its weights
    assert torch.equal(net.embedding.encoding.edges, edges)
    fresh = get_space("tabular").from_string(PLE_ENSEMBLE).build(2, data.input_shape)
    fresh.load_state_dict(net.state_dict())
    net.eval(), fresh.eval()
    assert torch.equal(fresh(x), net(x)) and bool(fresh.embedding.encoding.fitted)
    assert torch.equal(pickle.loads(pickle.dumps(net))(x), net(x))  # how MLflow's PyTorch flavour stores it


def test_tabular_training_learns_and_the_schedule_warms_up_then_decays():
    data = _table(600)
    net = get_space("tabular").from_string(PLE_ENSEMBLE).build(2, data.input_shape)
    result = train(net, data, tabular_config(epochs=8, batch_size=64, warmup_fraction=0.2))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] < lrs[1] and lrs[1] == max(lrs) and lrs[-1] < lrs[2]
    assert result.val_accuracy > 0.75
    reg = _table(600, regression=True)
    net = get_space("tabular").from_string(PLR_ENSEMBLE).build(1, reg.input_shape)
    assert train(net, reg, tabular_config(regression=True, epochs=8)).val_rmse < reg.target_scale[1]


def test_training_options_and_unchanged_defaults():
    config = tabular_config()
    assert (config.optimizer, config.schedule, config.label_smoothing) == ("adamw", "warmup_cosine", 0.1)
    assert tabular_config(regression=True).label_smoothing == 0.0
    default = TrainConfig()
    assert (default.optimizer, default.schedule, default.label_smoothing, default.lr) == ("sgd", "cosine", 0.0, 0.05)
    for bad, message in [({"schedule": "step"}, "schedule must be one of"), ({"optimizer": "lion"}, "adamw"),
                         ({"label_smoothing": 1.0}, "label_smoothing")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    # the image path's schedule: cosine over epochs, stepped per epoch, as before
    data = _table()
    result = train(get_space("mlp").from_string(OLD).build(2, data.input_shape), data, TrainConfig(epochs=4))
    assert [row["lr"] for row in result.history] == pytest.approx(
        [0.05 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(1, 5)])


# -- the served forms --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [PLE_ENSEMBLE, PLR_ENSEMBLE])
@pytest.mark.parametrize("regression", [False, True])
def test_onnx_export_and_int8_match_torch(arch, regression, tmp_path):
    data = _table(regression=regression)
    torch.manual_seed(0)
    net = get_space("tabular").from_string(arch).build(data.num_classes, data.input_shape)
    train(net, data, tabular_config(regression=regression, epochs=2))
    served = served_module(net, data).eval()
    path = export_onnx(served, tmp_path / "m.onnx")
    rows = np.concatenate([data.x_test, data.x_test[:5] * 50])  # beyond the training range too
    check = check_onnx(served, path, rows)
    assert check.max_abs_diff < 1e-4 and (regression or check.ok)
    q = quantize_int8(served, data.x_train)
    with torch.no_grad():
        fp32, int8 = served(torch.from_numpy(data.x_test)), q(torch.from_numpy(data.x_test))
    assert int8.shape == fp32.shape and torch.isfinite(int8).all()


# -- the zero-cost and predictor stages --------------------------------------------------------------------------------
def test_zero_cost_proxies_and_predictors_run_on_the_tabular_space():
    data = _table()
    space = get_space("tabular")
    archs = space.sample_many(6, np.random.default_rng(3))
    batch = data.batch(32)
    names = list_proxies()
    scores = [compute_scores(lambda a=a: a.build(2, data.input_shape), names, batch=batch,
                             input_shape=data.input_shape, num_classes=2) for a in archs]
    assert all(set(s) == set(names) and all(np.isfinite(v) for v in s.values()) for s in scores)
    x = np.stack([a.encode() for a in space.sample_many(40, np.random.default_rng(4))])
    y = x[:, :4].sum(1) + x[:, -3:].argmax(1)  # any function of the encoding
    for name in ("mlp", "lgbm"):
        mean, std = get_predictor(name, seed=0).fit(x, y).predict(x[:5])
        assert mean.shape == std.shape == (5,) and np.isfinite(mean).all()


def test_the_tabular_space_trains_with_its_own_defaults_in_search_and_retraining():
    """The search's evaluator and retraining give a tabular architecture AdamW with warm-up cosine (the papers'
    recipe), whatever SGD defaults the stage carries; other spaces keep the stage's settings."""
    from nas.trainer import space_training_config
    from pipelines.config import RetrainConfig
    from pipelines.retrain import train_config

    tab = train_config(RetrainConfig(epochs=7, patience=3), "tabular", regression=False)
    assert (tab.optimizer, tab.schedule, tab.lr, tab.epochs, tab.patience, tab.label_smoothing) == \
        ("adamw", "warmup_cosine", 2e-3, 7, 3, 0.1)
    assert train_config(RetrainConfig(epochs=7), "tabular", regression=True).label_smoothing == 0.0
    plain = train_config(RetrainConfig(epochs=7), "mlp")
    assert (plain.optimizer, plain.lr, plain.epochs) == ("sgd", 0.05, 7)
    assert space_training_config("tabular", epochs=2, data_fraction=0.5, lr=0.05, optimizer="sgd").data_fraction \
        == 0.5
