"""The search spaces: NAS-Bench-201 strings, sizes and equivalences against the published benchmark; MLP and ViT."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nas.spaces import InvalidArchitectureError, architecture_from_dict, get_space, list_spaces
from nas.spaces.nb201 import EDGES, OPS, nb201_unique_str

BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201", C=16, N=5)


@pytest.fixture(scope="module")
def tiny():
    return get_space("nb201", C=4, N=1)


def test_registry_lists_all_four_spaces():
    assert list_spaces() == ["mlp", "nb201", "tabular", "vit"]
    with pytest.raises(KeyError, match="mlp, nb201, tabular, vit"):
        get_space("darts")


# -- NAS-Bench-201: strings ---------------------------------------------------------------------------------------
def test_all_15625_strings_round_trip(nb201):
    strings = [a.string for a in nb201.enumerate()]
    assert len(strings) == len(set(strings)) == nb201.size() == 15625
    for text in strings:
        assert nb201.from_string(text).string == text
    # the string format is exactly NAS-Bench-201's
    assert nb201.to_ops(nb201.from_string(BEST_CIFAR10)) == (
        "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "valid operations: none, skip_connect"),
        ("|none~0|+|none~0|", "expected 3 groups"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "must come from node 1"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "must hold 2 edge"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "expected 'op~0'"),
    ],
)
def test_bad_strings_name_the_problem(nb201, text, message):
    with pytest.raises(InvalidArchitectureError, match=message):
        nb201.from_string(text)


# -- NAS-Bench-201: sizes against the published table ------------------------------------------------------------
def test_parameter_counts_match_the_published_network(nb201):
    """Published NB201 ranges (params in MB = millions): CIFAR-10 0.073306..1.531546, CIFAR-100 max 1.537396,
    ImageNet16-120 min 0.080456. The best CIFAR-10 cell has 5 of the 6 convolutions of the largest one:
    1,531,546 - 5 stages*cells x (9C²+2C summed over C=16,32,64) = 1,531,546 - 5 x 48,608 = 1,288,506."""
    count = nb201.count_params
    assert count(nb201.from_string(ALL_NONE), 10, (3, 32, 32)) == 73_306
    assert count(nb201.from_string(ALL_CONV3), 10, (3, 32, 32)) == 1_531_546
    assert count(nb201.from_string(ALL_CONV3), 100, (3, 32, 32)) == 1_537_396
    assert count(nb201.from_string(ALL_NONE), 120, (3, 16, 16)) == 80_456
    assert count(nb201.from_string(BEST_CIFAR10), 10, (3, 32, 32)) == 1_288_506


def test_flops_match_the_published_range(nb201):
    """NB201 reports multiply-accumulates in MFLOPs: 7.78305 (all none) .. 220.11969 (all 3x3 conv) on CIFAR-10;
    torch's counter counts 2 FLOPs per multiply-accumulate."""
    flops_none = nb201.count_flops(nb201.from_string(ALL_NONE), 10, (3, 32, 32))
    flops_max = nb201.count_flops(nb201.from_string(ALL_CONV3), 10, (3, 32, 32))
    assert flops_none / 2e6 == pytest.approx(7.78305, abs=2e-5)
    assert flops_max / 2e6 == pytest.approx(220.11969, abs=2e-5)


# -- NAS-Bench-201: equivalence ---------------------------------------------------------------------------------
def test_unique_network_counts(nb201):
    every = list(itertools.product(OPS, repeat=len(EDGES)))
    # The NAS-Bench-201 API's isomorphism key reproduces the published 6,466 "unique" cells ...
    assert len({nb201_unique_str(ops) for ops in every}) == 6466
    # ... and our key, which also drops zero summands and regroups skip sums, merges some of those further.
    assert nb201.num_unique() == 4930
    canon = {nb201.canonicalize(nb201.from_ops(ops)).string for ops in every}
    assert len(canon) == 4930


def test_canonical_form_is_an_idempotent_representative(nb201):
    rng = np.random.default_rng(3)
    for arch in nb201.sample_many(300, rng, unique=False):
        canon = nb201.canonicalize(arch)
        assert nb201.canonicalize(canon) == canon
        assert canon.string.count("none") >= arch.string.count("none")
    assert nb201.canonicalize(nb201.from_string(
        "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    )).string == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert nb201.canonicalize(nb201.from_string(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"  # nodes 1, 2 never reach 3
    )).string == "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"


def test_pruned_edges_really_do_nothing(tiny):
    """Load the canonical network's weights into the original: the extra (dead) edges must not change the output."""
    rng = np.random.default_rng(0)
    x = torch.randn(6, 3, 8, 8)
    checked = 0
    for arch in tiny.sample_many(80, rng):
        canon = tiny.canonicalize(arch)
        orig_ops, canon_ops = tiny.to_ops(arch), tiny.to_ops(canon)
        if canon == arch or any(c != "none" and c != o for c, o in zip(canon_ops, orig_ops, strict=True)):
            continue  # only pure pruning is weight-compatible; skip regrouping is covered by the key test
        torch.manual_seed(0)
        small = canon.build(10, (3, 8, 8)).eval()
        big = arch.build(10, (3, 8, 8)).eval()
        missing, unexpected = big.load_state_dict(small.state_dict(), strict=False)
        assert not unexpected and all(".edges." in k for k in missing)
        with torch.no_grad():
            torch.testing.assert_close(big(x), small(x))
        checked += 1
    assert checked >= 10


# -- NAS-Bench-201: sampling, neighbours, encodings -------------------------------------------------------------
def test_sampling_is_seeded_and_mutation_changes_one_edge(nb201):
    a = [s.string for s in nb201.sample_many(20, np.random.default_rng(7))]
    b = [s.string for s in nb201.sample_many(20, np.random.default_rng(7))]
    assert a == b and len(set(a)) == 20
    rng = np.random.default_rng(1)
    arch = nb201.from_string(BEST_CIFAR10)
    for _ in range(20):
        child = nb201.mutate(arch, rng)
        diff = sum(x != y for x, y in zip(nb201.to_ops(arch), nb201.to_ops(child), strict=True))
        assert diff == 1
    neighbours = nb201.neighbours(arch)
    assert len(neighbours) == len({n.string for n in neighbours}) == 24


def test_encodings(nb201):
    arch = nb201.from_string(BEST_CIFAR10)
    onehot = arch.encode()
    assert onehot.shape == (30,) and onehot.dtype == np.float32 and onehot.sum() == 6
    assert onehot.reshape(6, 5)[3, OPS.index("skip_connect")] == 1
    path = nb201.encode(arch, encoding="path")
    assert path.shape == (84,) and path.sum() == 4  # all four input-to-output paths are live
    assert nb201.encode(nb201.from_string(ALL_NONE), encoding="path").sum() == 0
    with pytest.raises(ValueError, match="onehot, path"):
        nb201.encode(arch, encoding="adjacency")


# -- NAS-Bench-201: networks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 7, 5)])
def test_reduced_skeleton_builds_for_small_images(tiny, shape):
    arch = tiny.from_string(BEST_CIFAR10)
    out = arch.build(10, shape)(torch.randn(4, *shape))
    assert out.shape == (4, 10)


def test_degenerate_cell_builds_runs_and_backpropagates(tiny):
    arch = tiny.from_string("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|none~2|")
    assert tiny.is_degenerate(arch) and tiny.canonicalize(arch).string == ALL_NONE
    model = arch.build(10, (1, 8, 8)).eval()
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    out = model(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out[:1].expand_as(out))  # zeros flow: the input cannot matter
    out.sum().backward()


def test_supports_input_explains_shapes(tiny):
    assert tiny.supports_input((1, 8, 8)) is None
    assert "(channels, height, width)" in tiny.supports_input((64,))
    assert "at least 4" in tiny.supports_input((3, 2, 2))
    with pytest.raises(ValueError, match="channels, height, width"):
        tiny.from_string(ALL_NONE).build(10, (64,))


def test_to_dict_round_trip_keeps_the_skeleton(tiny):
    arch = tiny.from_string(BEST_CIFAR10)
    back = architecture_from_dict(arch.to_dict())
    assert back == arch and back.space.config() == {"C": 4, "N": 1}
    with pytest.raises(ValueError, match="positive integer"):
        get_space("nb201", C=0)


# -- MLP and ViT ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "shape"), [("mlp", (20,)), ("mlp", (1, 8, 8)), ("vit", (1, 8, 8)), ("vit", (3, 7, 5))]
)
def test_mlp_and_vit_sample_build_and_round_trip(name, shape):
    space = get_space(name)
    rng = np.random.default_rng(0)
    archs = space.sample_many(6, rng)
    for arch in archs:
        assert space.from_string(arch.string) == arch
        assert architecture_from_dict(arch.to_dict()) == arch
        model = arch.build(3, shape).eval()
        assert model(torch.randn(4, *shape)).shape == (4, 3)
        assert arch.encode().shape == archs[0].encode().shape
        assert space.count_params(arch, 3, shape) > 0 and space.count_flops(arch, 3, shape) > 0
        child = space.mutate(arch, rng)
        assert child != arch and child.string in {n.string for n in space.neighbours(arch)}


def test_mlp_space_details():
    space = get_space("mlp")
    assert space.size() == sum(1 for _ in space.enumerate()) == 32640
    arch = space.from_string("depth=2|widths=64-32|act=gelu|norm=layer|dropout=0.1|residual=1")
    assert space.canonicalize(arch).string.endswith("residual=0")  # no two equal widths: residual is a no-op
    same = space.from_string("depth=2|widths=64-64|act=gelu|norm=layer|dropout=0.1|residual=1")
    assert space.canonicalize(same) == same
    assert space.supports_input((13,)) is None
    for text, message in [
        ("depth=2|widths=64|act=relu|norm=none|dropout=0|residual=0", "needs 2 widths"),
        ("depth=1|widths=64|act=swish|norm=none|dropout=0|residual=0", "valid: relu, gelu, silu, tanh"),
        ("depth=1|widths=65|act=relu|norm=none|dropout=0|residual=0", "valid widths: 32, 64, 128, 256"),
        ("depth=1|widths=64", "lacks act"),
    ]:
        with pytest.raises(InvalidArchitectureError, match=message):
            space.from_string(text)


def test_vit_space_details():
    space = get_space("vit", patch_sizes=[4], depths=[1, 2], heads=[2], embed_dims=[32], mlp_ratios=[2])
    assert [a.string for a in space.enumerate()] == [
        "patch=4|depth=1|heads=2|embed=32|mlp_ratio=2", "patch=4|depth=2|heads=2|embed=32|mlp_ratio=2"
    ]
    assert "(channels, height, width)" in space.supports_input((64,))
    # FLOPs include the attention itself: 5 tokens (4 patches + class), width 32, 2 heads, MLP ratio 2, 2 per MAC:
    # patch conv 4096 + qkv 30720 + QK^T and AV 3200 + out-proj 10240 + MLP 40960 + head 640
    arch = space.from_string("patch=4|depth=1|heads=2|embed=32|mlp_ratio=2")
    assert space.count_flops(arch, 10, (1, 8, 8)) == 89856
    with pytest.raises(InvalidArchitectureError, match="valid: 4"):
        space.from_string("patch=3|depth=1|heads=2|embed=32|mlp_ratio=2")
    with pytest.raises(ValueError, match="divisible"):
        get_space("vit", embed_dims=[30], heads=[4])
