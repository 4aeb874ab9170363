"""The NAS-Bench-201 supernet: every candidate operation of every edge of every cell holds its weights once.

A sub-network (a *path*) picks one operation per edge; as in NAS-Bench-201 the same cell is repeated at every cell
position of the skeleton, so one path is 6 operation indices. The supernet also runs as a DARTS network (Liu et al.
2019): each edge outputs the softmax-weighted sum of all its candidates. Stem, reduction blocks and classifier are
the published skeleton's (from :mod:`nas.spaces.nb201`) and are shared by every sub-network.

Module names mirror :class:`nas.spaces.nb201.NB201Network` with one extra level (``candidates.<op>``), so
:meth:`NB201Supernet.extract` copies a path's inherited weights into an ordinary stand-alone network that computes
exactly what the path computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nas.spaces.nb201 import EDGES, NUM_NODES, OPS, NB201Network, ReLUConvBN, ResidualReduction

Path = tuple[int, ...]


def make_candidate(op: str, channels: int, affine: bool = True) -> nn.Module:
    """The module of one candidate operation (``none`` has none); ``affine=False`` is DARTS's batch norm."""
    if op == "skip_connect":
        return nn.Identity()
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        module = ReLUConvBN(channels, channels, 1 if op == "nor_conv_1x1" else 3)
        if not affine:
            module[2] = nn.BatchNorm2d(channels, affine=False)
        return module
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"no module for nb201 operation {op!r}; valid: {', '.join(OPS)}")


class SuperEdge(nn.Module):
    """All candidates of one edge, each built once; ``none`` contributes nothing."""

    def __init__(self, channels: int, ops: Sequence[str] = OPS, affine: bool = True) -> None:
        super().__init__()
        self.op_names = tuple(ops)
        self.candidates = nn.ModuleDict({op: make_candidate(op, channels, affine) for op in ops if op != "none"})

    def single(self, x: torch.Tensor, index: int) -> torch.Tensor | None:
        """The output of candidate ``index``; ``None`` for ``none`` (the caller skips the summand)."""
        op = self.op_names[index]
        return None if op == "none" else self.candidates[op](x)

    def mixed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """DARTS's mixed operation: ``sum_k w_k * op_k(x)``, candidates with weight exactly 0 skipped."""
        total = x.mul(0.0)
        for k, op in enumerate(self.op_names):
            if op == "none":
                continue
            w = weights[k]
            if not w.requires_grad and float(w) == 0.0:
                continue
            total = total + w * self.candidates[op](x)
        return total


class SuperCell(nn.Module):
    """One cell position: node i = sum over j < i of edge (j, i) applied to node j, as in ``NB201Cell``."""

    def __init__(self, channels: int, ops: Sequence[str] = OPS, affine: bool = True) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({f"{s}_{t}": SuperEdge(channels, ops, affine) for s, t in EDGES})

    def forward(self, x: torch.Tensor, path: Path | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        nodes = [x]
        for target in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for source in range(target):
                k = EDGES.index((source, target))
                edge = self.edges[f"{source}_{target}"]
                out = edge.single(nodes[source], path[k]) if weights is None else edge.mixed(nodes[source], weights[k])
                if out is not None:
                    total = out if total is None else total + out
            nodes.append(x.mul(0.0) if total is None else total)  # zeros flow, exactly like NB201Cell
        return nodes[-1]


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 skeleton with a :class:`SuperCell` at every cell position.

    ``forward(x, path=...)`` runs one sub-network (6 operation indices into ``ops``); ``forward(x, weights=...)``
    runs the DARTS relaxation with a ``(6, len(ops))`` tensor of per-edge operation weights.
    """

    def __init__(
        self, C: int, N: int, in_channels: int, num_classes: int, *, ops: Sequence[str] = OPS, affine: bool = True
    ) -> None:
        super().__init__()
        self.C, self.N, self.op_names = C, N, tuple(ops)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        channels = C
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(channels, channels * 2))
                channels *= 2
            layers.extend(SuperCell(channels, ops, affine) for _ in range(N))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self._counts: tuple[int, np.ndarray] | None = None

    # -- paths ---------------------------------------------------------------------------------------------------
    def path_of(self, ops: Sequence[str]) -> Path:
        """The operation indices of 6 operation names."""
        return tuple(self.op_names.index(op) for op in ops)

    def ops_of(self, path: Path) -> tuple[str, ...]:
        return tuple(self.op_names[i] for i in path)

    def sample_paths(self, rng: np.random.Generator, fair: bool) -> list[Path]:
        """One uniform path (SPOS), or with ``fair`` as many paths as operations such that every operation of every
        edge appears exactly once (the strict fairness of FairNAS, Chu et al. 2021)."""
        k = len(self.op_names)
        if not fair:
            return [tuple(int(i) for i in rng.integers(k, size=len(EDGES)))]
        perms = np.stack([rng.permutation(k) for _ in EDGES])  # (edges, k)
        return [tuple(int(i) for i in perms[:, m]) for m in range(k)]

    # -- forward -------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, path: Path | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        if (path is None) == (weights is None):
            raise ValueError("give exactly one of path (one op index per edge) or weights (DARTS mixture)")
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, path, weights) if isinstance(layer, SuperCell) else layer(x)
        x = self.lastact(x)
        return self.classifier(self.pool(x).flatten(1))

    # -- sharing -------------------------------------------------------------------------------------------------
    def candidate_parameters(self, cell: int, edge: tuple[int, int], op: str) -> list[nn.Parameter]:
        """The parameter tensors of one candidate at one cell position (``cell`` counts cells only)."""
        cells = [m for m in self.cells if isinstance(m, SuperCell)]
        module = cells[cell].edges[f"{edge[0]}_{edge[1]}"].candidates[op] if op != "none" else None
        return list(module.parameters()) if module is not None else []

    def path_param_count(self, path: Path) -> int:
        """Trainable parameters of the stand-alone network of ``path``, without building it (skeleton + the
        chosen candidate of every edge at every cell position)."""
        if self._counts is None:
            skeleton = sum(p.numel() for n, p in self.named_parameters() if ".candidates." not in n)
            per = np.zeros((len(EDGES), len(self.op_names)), dtype=np.int64)
            for cell in (m for m in self.cells if isinstance(m, SuperCell)):
                for e, (s, t) in enumerate(EDGES):
                    for k, op in enumerate(self.op_names):
                        if op != "none":
                            per[e, k] += sum(p.numel() for p in cell.edges[f"{s}_{t}"].candidates[op].parameters())
            self._counts = (int(skeleton), per)
        skeleton, per = self._counts
        return skeleton + int(sum(per[e, k] for e, k in enumerate(path)))

    def extract(self, ops: Sequence[str]) -> NB201Network:
        """A stand-alone ``NB201Network`` of these operations carrying the path's inherited weights and BN stats."""
        net = NB201Network(tuple(ops), self.C, self.N, self.in_channels, self.num_classes)
        state = {}
        for key, value in self.state_dict().items():
            parts = key.split(".")
            if parts[0] == "cells" and "candidates" in parts:
                i = parts.index("candidates")
                edge_name, op = parts[i - 1], parts[i + 1]
                s, t = (int(v) for v in edge_name.split("_"))
                if ops[EDGES.index((s, t))] != op:
                    continue
                key = ".".join(parts[:i] + parts[i + 2:])
            state[key] = value
        net.load_state_dict(state, strict=True)
        return net
