"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 5 operations on the 6 edges of a 4-node cell.

A cell is a DAG on nodes 0 (input) .. 3 (output); node ``i`` is the sum of ``op(node j)`` over ``j < i``. The
architecture string is exactly the NAS-Bench-201 one, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: group ``i`` lists the
edges into node ``i`` with their source node. The macro skeleton (stem, three stages of ``N`` cells joined by residual
reduction blocks, BN-ReLU, global pooling, linear) is the published one; ``C=16, N=5`` is the benchmark's network, so
parameter counts equal the published table's.

Many strings compute the same function: an edge whose input is always zero or whose output never reaches the cell
output does nothing, and ``skip_connect`` only regroups a sum. :meth:`NB201Space.canonicalize` maps every string to
one representative of its class (the one with the most ``none`` edges, then the smallest string).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nas.spaces import register_space
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The 6 edges ``(source, target)`` in the order of the architecture string.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
_TOKEN = re.compile(r"^([A-Za-z0-9_]+)~(\d+)$")
_OP_INDEX = {op: i for i, op in enumerate(OPS)}


# -- strings ------------------------------------------------------------------------------------------------------
def ops_to_string(ops: Sequence[str]) -> str:
    """The NAS-Bench-201 string of the 6 edge operations given in :data:`EDGES` order."""
    groups = []
    k = 0
    for node in range(1, NUM_NODES):
        groups.append("|" + "|".join(f"{ops[k + j]}~{j}" for j in range(node)) + "|")
        k += node
    return "+".join(groups)


def parse_ops(text: str) -> tuple[str, ...]:
    """The 6 edge operations of a NAS-Bench-201 string; ``InvalidArchitectureError`` says what is wrong."""
    example = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    if not isinstance(text, str):
        raise InvalidArchitectureError(f"an nb201 architecture is a string like {example!r}, got {type(text).__name__}")
    text = text.strip()
    groups = text.split("+")
    if len(groups) != NUM_NODES - 1:
        raise InvalidArchitectureError(
            f"malformed nb201 architecture {text!r}: expected 3 groups joined by '+' "
            f"(edges into nodes 1, 2, 3), got {len(groups)}; example: {example!r}"
        )
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise InvalidArchitectureError(
                f"malformed nb201 architecture {text!r}: group {node} {group!r} must look like '|op~0|...|'; "
                f"example: {example!r}"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise InvalidArchitectureError(
                f"malformed nb201 architecture {text!r}: group {node} must hold {node} edge(s) "
                f"(from nodes {', '.join(map(str, range(node)))}), got {len(tokens)}; example: {example!r}"
            )
        for source, token in enumerate(tokens):
            match = _TOKEN.match(token)
            if match is None:
                raise InvalidArchitectureError(
                    f"malformed nb201 edge {token!r} in {text!r}: expected 'op~{source}' with op one of "
                    f"{', '.join(OPS)}"
                )
            op, index = match.group(1), int(match.group(2))
            if op not in _OP_INDEX:
                raise InvalidArchitectureError(
                    f"unknown nb201 operation {op!r} in {text!r}; valid operations: {', '.join(OPS)}"
                )
            if index != source:
                raise InvalidArchitectureError(
                    f"malformed nb201 edge {token!r} in {text!r}: edge {source + 1} into node {node} must come "
                    f"from node {source} ('{op}~{source}')"
                )
            ops.append(op)
    return tuple(ops)


# -- equivalence ----------------------------------------------------------------------------------------------------
def function_key(ops: Sequence[str]) -> str:
    """A string that two cells share exactly when they compute the same function of the cell input.

    Each node is the multiset of its non-zero summands. ``none`` and any operation applied to an all-zero node
    contribute nothing (zeros flow, as in the NAS-Bench-201 code, where an edge's op on a zero feature map is
    treated as zero); ``skip_connect`` passes its input's summands through; a convolution or pooling is an opaque
    term of its input's sum. Edges that never reach node 3 do not appear in node 3's key at all.
    """
    nodes: list[tuple[str, ...]] = [("x",)]
    for target in range(1, NUM_NODES):
        terms: list[str] = []
        for source in range(target):
            op = ops[EDGES.index((source, target))]
            value = nodes[source]
            if op == "none" or not value:
                continue
            if op == "skip_connect":
                terms.extend(value)
            else:
                terms.append(f"{op}({'+'.join(value)})")
        nodes.append(tuple(sorted(terms)))
    return "+".join(nodes[-1]) or "0"


def nb201_unique_str(ops: Sequence[str]) -> str:
    """The key of the NAS-Bench-201 API (``Structure.to_unique_str(consider_zero=True)``), re-derived from its paper.

    Kept to reproduce the published count of 6,466 "unique" cells; it keeps a ``#`` for every zero summand, so a
    few cells that compute the same function (e.g. a skip reached through a zero branch) still count twice.
    :func:`function_key` drops those.
    """
    nodes = {0: "0"}
    for target in range(1, NUM_NODES):
        current = []
        for source in range(target):
            op = ops[EDGES.index((source, target))]
            if op == "none" or nodes[source] == "#":
                current.append("#")
            elif op == "skip_connect":
                current.append(nodes[source])
            else:
                current.append(f"({nodes[source]})@{op}")
        nodes[target] = "+".join(sorted(current))
    return nodes[NUM_NODES - 1]


def _representative_order(ops: tuple[str, ...]) -> tuple[int, str]:
    return (-sum(op == "none" for op in ops), ops_to_string(ops))


@lru_cache(maxsize=1)
def _canonical_table() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Every cell -> the representative of its class; 15,625 entries, built once per process (~0.1 s)."""
    best: dict[str, tuple[str, ...]] = {}
    keys: dict[tuple[str, ...], str] = {}
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        key = function_key(ops)
        keys[ops] = key
        if key not in best or _representative_order(ops) < _representative_order(best[key]):
            best[key] = ops
    return {ops: best[key] for ops, key in keys.items()}


# -- the network ----------------------------------------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BatchNorm: the ``nor_conv`` operation and the halves of the reduction block."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class ResidualReduction(nn.Module):
    """The NAS-Bench-201 residual block between stages: halves H and W, doubles channels.

    The shortcut pools with ``ceil_mode`` so that odd sizes (e.g. 7x7) line up with the strided conv; for even sizes
    that is exactly the published block.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def _make_op(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"no module for nb201 operation {op!r}")


class NB201Cell(nn.Module):
    """One cell: node i = sum of op(node j). ``none`` edges hold no module; a node with no live input is zeros."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleDict()
        for (source, target), op in zip(EDGES, self.ops, strict=True):
            if op != "none":
                self.edges[f"{source}_{target}"] = _make_op(op, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for source in range(target):
                name = f"{source}_{target}"
                if name in self.edges:
                    out = self.edges[name](nodes[source])
                    total = out if total is None else total + out
            nodes.append(x.mul(0.0) if total is None else total)  # zeros flow (keeps the graph, like NB201's Zero)
        return nodes[-1]


class NB201Network(nn.Module):
    """Stem -> N cells (C) -> reduction -> N cells (2C) -> reduction -> N cells (4C) -> BN-ReLU -> pool -> linear."""

    def __init__(self, ops: Sequence[str], C: int, N: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        channels = C
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(channels, channels * 2))
                channels *= 2
            layers.extend(NB201Cell(ops, channels) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


# -- the space ------------------------------------------------------------------------------------------------------
@register_space("nb201", paper="Dong & Yang, ICLR 2020 (NAS-Bench-201)", config=("C", "N"))
@dataclass(frozen=True)
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space with a configurable skeleton (``C=16, N=5`` is the published network)."""

    C: int = 16
    N: int = 5
    name: ClassVar[str] = "nb201"
    ops: ClassVar[tuple[str, ...]] = OPS
    edges: ClassVar[tuple[tuple[int, int], ...]] = EDGES
    encodings: ClassVar[tuple[str, ...]] = ("onehot", "path")

    def __post_init__(self) -> None:
        for field_name in ("C", "N"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"nb201 {field_name} must be a positive integer, got {value!r}")

    def config(self) -> dict[str, Any]:
        return {"C": self.C, "N": self.N}

    # -- strings -----------------------------------------------------------------------------------------------
    def from_string(self, text: str) -> Architecture:
        return Architecture(self, ops_to_string(parse_ops(text)))

    def from_ops(self, ops: Sequence[str]) -> Architecture:
        """The architecture with these 6 edge operations (in :data:`EDGES` order)."""
        ops = tuple(ops)
        bad = [op for op in ops if op not in _OP_INDEX]
        if len(ops) != len(EDGES) or bad:
            raise InvalidArchitectureError(
                f"an nb201 cell needs {len(EDGES)} operations from {', '.join(OPS)}; got {list(ops)}"
            )
        return Architecture(self, ops_to_string(ops))

    def to_ops(self, arch: Architecture) -> tuple[str, ...]:
        """The 6 edge operations of ``arch`` in :data:`EDGES` order."""
        return parse_ops(arch.string)

    def canonicalize(self, arch: Architecture) -> Architecture:
        return Architecture(self, ops_to_string(_canonical_table()[self.to_ops(arch)]))

    def is_degenerate(self, arch: Architecture) -> bool:
        """True when ``none`` edges cut the cell output off from its input (the network then predicts a constant)."""
        return function_key(self.to_ops(arch)) == "0"

    def num_unique(self) -> int:
        """How many different networks (functions) the 15,625 strings hold: canonical forms counted once."""
        return len(set(_canonical_table().values()))

    # -- sampling ----------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Architecture:
        return self.from_ops([OPS[int(i)] for i in rng.integers(len(OPS), size=len(EDGES))])

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        ops = list(self.to_ops(arch))
        edge = int(rng.integers(len(EDGES)))
        choices = [op for op in OPS if op != ops[edge]]
        ops[edge] = choices[int(rng.integers(len(choices)))]
        return self.from_ops(ops)

    def neighbours(self, arch: Architecture) -> list[Architecture]:
        ops = self.to_ops(arch)
        out = []
        for edge in range(len(EDGES)):
            for op in OPS:
                if op != ops[edge]:
                    out.append(self.from_ops((*ops[:edge], op, *ops[edge + 1:])))
        return out

    def categorical(self) -> list[tuple[str, tuple[str, ...]]]:
        """One decision per edge ``i->j``, its options the five operations."""
        return [(f"edge{i}->{j}", OPS) for i, j in EDGES]

    def categorical_index(self, arch: Architecture) -> tuple[int, ...]:
        return tuple(_OP_INDEX[op] for op in self.to_ops(arch))

    def from_categorical(self, index: Sequence[int]) -> Architecture:
        return self.from_ops([OPS[int(i)] for i in index])

    def enumerate(self) -> Iterator[Architecture]:
        """All 15,625 strings (the first edge varies slowest, operations in :data:`OPS` order)."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield Architecture(self, ops_to_string(ops))

    def size(self) -> int:
        return len(OPS) ** len(EDGES)

    # -- numbers -----------------------------------------------------------------------------------------------
    def encode(self, arch: Architecture, *, encoding: str = "onehot") -> np.ndarray:
        """``onehot``: 6 edges x 5 ops (30 floats, the standard). ``path``: BANANAS path encoding (White et al.,
        2021): one count per input-to-output path of non-``none`` operations, 4 + 16 + 64 = 84 floats."""
        ops = self.to_ops(arch)
        if encoding == "onehot":
            vec = np.zeros((len(EDGES), len(OPS)), dtype=np.float32)
            vec[np.arange(len(EDGES)), [_OP_INDEX[op] for op in ops]] = 1.0
            return vec.ravel()
        if encoding == "path":
            return _path_encoding(ops)
        raise ValueError(f"unknown nb201 encoding {encoding!r}; choose one of: {', '.join(self.encodings)}")

    def supports_input(self, input_shape: Sequence[int]) -> str | None:
        shape = tuple(input_shape)
        if len(shape) != 3:
            return (
                f"nb201 builds convolutional networks for images shaped (channels, height, width); "
                f"input shape {shape} has {len(shape)} dimension(s) (use the mlp space for flat features)"
            )
        if min(shape) < 1:
            return f"nb201 needs positive image dimensions, got {shape}"
        if shape[1] < 4 or shape[2] < 4:
            return f"nb201 halves the image twice, so height and width must be at least 4; got {shape[1]}x{shape[2]}"
        return None

    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        self.check_build_args(input_shape, num_classes)
        return NB201Network(self.to_ops(arch), self.C, self.N, int(input_shape[0]), int(num_classes))


def _path_encoding(ops: Sequence[str]) -> np.ndarray:
    live = [op for op in OPS if op != "none"]
    index = {op: i for i, op in enumerate(live)}
    k = len(live)
    offsets = {1: 0, 2: k, 3: k + k**2}
    vec = np.zeros(k + k**2 + k**3, dtype=np.float32)
    edge_op = {edge: ops[i] for i, edge in enumerate(EDGES)}
    for path in ((0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3)):
        path_ops = [edge_op[(a, b)] for a, b in itertools.pairwise(path)]
        if "none" in path_ops:
            continue
        position = 0
        for op in path_ops:
            position = position * k + index[op]
        vec[offsets[len(path_ops)] + position] += 1.0
    return vec
