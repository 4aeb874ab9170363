"""A tabular MLP space: depth, a width per layer, activation, normalisation, dropout and residual links.

Strings read like ``depth=3|widths=64-128-64|act=relu|norm=batch|dropout=0.1|residual=1``. A layer is
``Linear -> norm -> activation -> dropout``; with ``residual=1`` a layer whose input and output widths match adds
its input back (He et al., 2016), so ``residual`` only changes the network when two consecutive layers share a width
(the canonical form sets it to 0 otherwise). Any input shape works: the network flattens it first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nas.spaces import register_space
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace, parse_key_values

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS: tuple[str, ...] = ("none", "batch", "layer")
KEYS: tuple[str, ...] = ("depth", "widths", "act", "norm", "dropout", "residual")


@dataclass(frozen=True)
class MLPConfig:
    """One point of the MLP space, as plain values."""

    widths: tuple[int, ...]
    act: str
    norm: str
    dropout: float
    residual: bool

    @property
    def depth(self) -> int:
        return len(self.widths)

    def to_string(self) -> str:
        return (
            f"depth={self.depth}|widths={'-'.join(map(str, self.widths))}|act={self.act}|norm={self.norm}"
            f"|dropout={self.dropout:g}|residual={int(self.residual)}"
        )


class ResidualLayer(nn.Module):
    """``Linear -> norm -> act -> dropout``, plus the input when ``residual`` (widths must match)."""

    def __init__(self, c_in: int, c_out: int, act: str, norm: str, dropout: float, residual: bool) -> None:
        super().__init__()
        parts: list[nn.Module] = [nn.Linear(c_in, c_out)]
        if norm == "batch":
            parts.append(nn.BatchNorm1d(c_out))
        elif norm == "layer":
            parts.append(nn.LayerNorm(c_out))
        parts.append(ACTIVATIONS[act]())
        if dropout > 0:
            parts.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*parts)
        self.residual = residual and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class MLPNetwork(nn.Module):
    """Flatten -> hidden layers -> linear classifier (``num_classes`` 1: a regression head, one output and no softmax
    anywhere in the network; the trainer fits it with MSE on the standardised target)."""

    def __init__(self, cfg: MLPConfig, in_features: int, num_classes: int) -> None:
        super().__init__()
        layers = []
        width = in_features
        for w in cfg.widths:
            layers.append(ResidualLayer(width, w, cfg.act, cfg.norm, cfg.dropout, cfg.residual))
            width = w
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(x.flatten(1)))


@register_space("mlp", paper="tabular MLP family (no single paper)", input="flat features")
@dataclass(frozen=True)
class MLPSpace(SearchSpace):
    """MLPs of 1..``max_depth`` hidden layers; every choice list is configurable."""

    max_depth: int = 4
    widths: tuple[int, ...] = (32, 64, 128, 256)
    activations: tuple[str, ...] = ("relu", "gelu", "silu", "tanh")
    norms: tuple[str, ...] = NORMS
    dropouts: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    name: ClassVar[str] = "mlp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "activations", tuple(self.activations))
        object.__setattr__(self, "norms", tuple(self.norms))
        object.__setattr__(self, "dropouts", tuple(float(p) for p in self.dropouts))
        if not isinstance(self.max_depth, int) or self.max_depth < 1:
            raise ValueError(f"mlp max_depth must be a positive integer, got {self.max_depth!r}")
        if not self.widths or min(self.widths) < 1 or len(set(self.widths)) != len(self.widths):
            raise ValueError(f"mlp widths must be distinct positive integers, got {list(self.widths)}")
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if not self.activations or bad:
            raise ValueError(f"unknown mlp activation(s) {bad}; valid: {', '.join(ACTIVATIONS)}")
        bad = [n for n in self.norms if n not in NORMS]
        if not self.norms or bad:
            raise ValueError(f"unknown mlp norm(s) {bad}; valid: {', '.join(NORMS)}")
        if not self.dropouts or any(not 0 <= p < 1 for p in self.dropouts):
            raise ValueError(f"mlp dropouts must lie in [0, 1), got {list(self.dropouts)}")

    def config(self) -> dict[str, Any]:
        return {
            "max_depth": self.max_depth, "widths": list(self.widths), "activations": list(self.activations),
            "norms": list(self.norms), "dropouts": list(self.dropouts),
        }

    # -- strings -----------------------------------------------------------------------------------------------
    def parse(self, text: str) -> MLPConfig:
        """The :class:`MLPConfig` of a string; ``InvalidArchitectureError`` names the problem and valid choices."""
        example = "depth=2|widths=64-32|act=relu|norm=batch|dropout=0.1|residual=0"
        fields = parse_key_values(text, KEYS, "mlp", example)
        try:
            depth = int(fields["depth"])
            widths = tuple(int(w) for w in fields["widths"].split("-"))
            dropout = float(fields["dropout"])
        except ValueError as exc:
            raise InvalidArchitectureError(f"malformed number in mlp architecture {text!r}: {exc}") from None
        if not 1 <= depth <= self.max_depth:
            raise InvalidArchitectureError(f"mlp depth must be 1..{self.max_depth}, got {depth}")
        if len(widths) != depth:
            raise InvalidArchitectureError(f"mlp depth={depth} needs {depth} widths, got {len(widths)} in {text!r}")
        bad = [w for w in widths if w not in self.widths]
        if bad:
            raise InvalidArchitectureError(
                f"mlp width {bad[0]} is not a choice; valid widths: {', '.join(map(str, self.widths))}"
            )
        if fields["act"] not in self.activations:
            raise InvalidArchitectureError(
                f"unknown mlp activation {fields['act']!r}; valid: {', '.join(self.activations)}"
            )
        if fields["norm"] not in self.norms:
            raise InvalidArchitectureError(f"unknown mlp norm {fields['norm']!r}; valid: {', '.join(self.norms)}")
        matches = [p for p in self.dropouts if abs(p - dropout) < 1e-9]
        if not matches:
            raise InvalidArchitectureError(
                f"mlp dropout {dropout:g} is not a choice; valid: {', '.join(f'{p:g}' for p in self.dropouts)}"
            )
        if fields["residual"] not in ("0", "1"):
            raise InvalidArchitectureError(f"mlp residual must be 0 or 1, got {fields['residual']!r}")
        return MLPConfig(widths, fields["act"], fields["norm"], matches[0], fields["residual"] == "1")

    def from_string(self, text: str) -> Architecture:
        return Architecture(self, self.parse(text).to_string())

    def from_config(self, cfg: MLPConfig) -> Architecture:
        return self.from_string(cfg.to_string())

    def canonicalize(self, arch: Architecture) -> Architecture:
        cfg = self.parse(arch.string)
        if cfg.residual and not any(a == b for a, b in itertools.pairwise(cfg.widths)):
            cfg = MLPConfig(cfg.widths, cfg.act, cfg.norm, cfg.dropout, False)
        return Architecture(self, cfg.to_string())

    # -- sampling ----------------------------------------------------------------------------------------------
    def _pick(self, rng: np.random.Generator, options: Sequence):
        return options[int(rng.integers(len(options)))]

    def sample(self, rng: np.random.Generator) -> Architecture:
        depth = int(rng.integers(1, self.max_depth + 1))
        widths = tuple(self._pick(rng, self.widths) for _ in range(depth))
        cfg = MLPConfig(
            widths, self._pick(rng, self.activations), self._pick(rng, self.norms), self._pick(rng, self.dropouts),
            bool(rng.integers(2)),
        )
        return Architecture(self, cfg.to_string())

    def _variants(self, cfg: MLPConfig) -> list[MLPConfig]:
        """Every config one decision away: depth +-1 (a layer added/removed at the end), one width, or one knob."""
        out: list[MLPConfig] = []
        if cfg.depth < self.max_depth:
            out += [MLPConfig((*cfg.widths, w), cfg.act, cfg.norm, cfg.dropout, cfg.residual) for w in self.widths]
        if cfg.depth > 1:
            out.append(MLPConfig(cfg.widths[:-1], cfg.act, cfg.norm, cfg.dropout, cfg.residual))
        for i, w_old in enumerate(cfg.widths):
            for w in self.widths:
                if w != w_old:
                    widths = (*cfg.widths[:i], w, *cfg.widths[i + 1:])
                    out.append(MLPConfig(widths, cfg.act, cfg.norm, cfg.dropout, cfg.residual))
        out += [MLPConfig(cfg.widths, a, cfg.norm, cfg.dropout, cfg.residual) for a in self.activations if a != cfg.act]
        out += [MLPConfig(cfg.widths, cfg.act, n, cfg.dropout, cfg.residual) for n in self.norms if n != cfg.norm]
        out += [MLPConfig(cfg.widths, cfg.act, cfg.norm, p, cfg.residual) for p in self.dropouts if p != cfg.dropout]
        out.append(MLPConfig(cfg.widths, cfg.act, cfg.norm, cfg.dropout, not cfg.residual))
        return out

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        variants = self._variants(self.parse(arch.string))
        return Architecture(self, variants[int(rng.integers(len(variants)))].to_string())

    def neighbours(self, arch: Architecture) -> list[Architecture]:
        return [Architecture(self, v.to_string()) for v in self._variants(self.parse(arch.string))]

    def categorical(self) -> list[tuple[str, tuple[str, ...]]]:
        """Depth, one width per layer slot (slots past the depth are ignored), activation, norm, dropout,
        residual."""
        widths = tuple(str(w) for w in self.widths)
        return ([("depth", tuple(str(d) for d in range(1, self.max_depth + 1)))]
                + [(f"width{i + 1}", widths) for i in range(self.max_depth)]
                + [("act", self.activations), ("norm", self.norms), ("dropout", tuple(f"{p:g}" for p in self.dropouts)),
                   ("residual", ("0", "1"))])

    def categorical_index(self, arch: Architecture) -> tuple[int, ...]:
        cfg = self.parse(arch.string)
        slots = [self.widths.index(w) for w in cfg.widths] + [0] * (self.max_depth - cfg.depth)
        return (cfg.depth - 1, *slots, self.activations.index(cfg.act), self.norms.index(cfg.norm),
                self.dropouts.index(cfg.dropout), int(cfg.residual))

    def from_categorical(self, index: Sequence[int]) -> Architecture:
        i = [int(v) for v in index]
        if len(i) != self.max_depth + 5:
            raise InvalidArchitectureError(f"an mlp choice has {self.max_depth + 5} entries, got {len(i)}")
        depth = i[0] + 1
        widths = tuple(self.widths[w] for w in i[1 : 1 + depth])
        k = 1 + self.max_depth
        cfg = MLPConfig(widths, self.activations[i[k]], self.norms[i[k + 1]], self.dropouts[i[k + 2]], bool(i[k + 3]))
        return Architecture(self, cfg.to_string())

    def enumerate(self) -> Iterator[Architecture]:
        for depth in range(1, self.max_depth + 1):
            for widths in itertools.product(self.widths, repeat=depth):
                for act, norm, p, res in itertools.product(self.activations, self.norms, self.dropouts, (False, True)):
                    yield Architecture(self, MLPConfig(widths, act, norm, p, res).to_string())

    def size(self) -> int:
        layers = sum(len(self.widths) ** d for d in range(1, self.max_depth + 1))
        return layers * len(self.activations) * len(self.norms) * len(self.dropouts) * 2

    # -- numbers -----------------------------------------------------------------------------------------------
    def encode(self, arch: Architecture) -> np.ndarray:
        """Depth one-hot, per-slot width one-hot (zeros past the depth), act/norm one-hot, dropout, residual."""
        cfg = self.parse(arch.string)
        depth = np.zeros(self.max_depth, dtype=np.float32)
        depth[cfg.depth - 1] = 1
        widths = np.zeros((self.max_depth, len(self.widths)), dtype=np.float32)
        for i, w in enumerate(cfg.widths):
            widths[i, self.widths.index(w)] = 1
        act = np.eye(len(self.activations), dtype=np.float32)[self.activations.index(cfg.act)]
        norm = np.eye(len(self.norms), dtype=np.float32)[self.norms.index(cfg.norm)]
        return np.concatenate([depth, widths.ravel(), act, norm, [cfg.dropout, float(cfg.residual)]]).astype(
            np.float32
        )

    def supports_input(self, input_shape: Sequence[int]) -> str | None:
        shape = tuple(input_shape)
        if not shape or min(shape) < 1:
            return f"mlp needs a non-empty input shape of positive sizes, got {shape}"
        return None

    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        self.check_build_args(input_shape, num_classes)
        return MLPNetwork(self.parse(arch.string), int(np.prod(input_shape)), int(num_classes))
