"""Tabular MLP spaces: depth, a width per layer, activation, normalisation, dropout and residual links; and the
``tabular`` space, the same MLPs with the choices the tabular deep-learning papers found to matter.

Strings read like ``depth=3|widths=64-128-64|act=relu|norm=batch|dropout=0.1|residual=1``. A layer is
``Linear -> norm -> activation -> dropout``; with ``residual=1`` a layer whose input and output widths match adds
its input back (He et al., 2016), so ``residual`` only changes the network when two consecutive layers share a width
(the canonical form sets it to 0 otherwise). Any input shape works: the network flattens it first.

Three optional keys follow, written only when they differ from the plain MLP (so every string of the old space,
and every model registered with one, keeps its exact spelling and network): ``prep=robust`` (RealMLP's robust
scaling, smooth clipping and scaling layer), ``embed=ple|plr`` (numerical feature embeddings) and ``ensemble=4|8``
(a TabM / BatchEnsemble head of that many members); see :mod:`nas.tabular_layers` for the papers. E.g.
``depth=2|widths=256-256|act=relu|norm=none|dropout=0.1|residual=1|prep=robust|embed=ple|ensemble=8``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nas.spaces import register_space
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace, parse_key_values
from nas.tabular_layers import (
    EMBED_DIM,
    EMBEDDINGS,
    BatchEnsembleLinear,
    EnsembleHead,
    FittedInput,
    RobustScaleClip,
    ScalingLayer,
    combine_members,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS: tuple[str, ...] = ("none", "batch", "layer")
KEYS: tuple[str, ...] = ("depth", "widths", "act", "norm", "dropout", "residual")
PREPS: tuple[str, ...] = ("std", "robust")
EMBEDS: tuple[str, ...] = ("none", *EMBEDDINGS)
OPTIONAL_KEYS: dict[str, str] = {"prep": "std", "embed": "none", "ensemble": "1"}
"""The tabular keys and their plain-MLP values: a string that leaves one out has that value."""


@dataclass(frozen=True)
class MLPConfig:
    """One point of the MLP space, as plain values."""

    widths: tuple[int, ...]
    act: str
    norm: str
    dropout: float
    residual: bool
    prep: str = "std"
    embed: str = "none"
    ensemble: int = 1

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def plain(self) -> bool:
        """None of the tabular options: the network is the original :class:`MLPNetwork`."""
        return self.prep == "std" and self.embed == "none" and self.ensemble == 1

    def replace(self, **changes: Any) -> MLPConfig:
        return dataclasses.replace(self, **changes)

    def to_string(self) -> str:
        text = (
            f"depth={self.depth}|widths={'-'.join(map(str, self.widths))}|act={self.act}|norm={self.norm}"
            f"|dropout={self.dropout:g}|residual={int(self.residual)}"
        )
        values = {"prep": self.prep, "embed": self.embed, "ensemble": str(self.ensemble)}
        return text + "".join(f"|{k}={values[k]}" for k, plain in OPTIONAL_KEYS.items() if values[k] != plain)


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


class EnsembleLayer(nn.Module):
    """:class:`ResidualLayer` for ``k`` BatchEnsemble members, ``(n, k, c_in) -> (n, k, c_out)``: the linear map is
    shared with rank-1 adapters per member; batch norm pools the members' rows (its statistics are shared)."""

    def __init__(self, c_in: int, c_out: int, k: int, cfg: MLPConfig, *, first: bool) -> None:
        super().__init__()
        self.linear = BatchEnsembleLinear(c_in, c_out, k, random_signs=first)
        self.k, self.width, self.batch_norm = k, c_out, cfg.norm == "batch"
        self.norm: nn.Module = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(cfg.norm, _identity)(c_out)
        self.act = ACTIVATIONS[cfg.act]()
        self.drop: nn.Module = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.residual = cfg.residual and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if self.batch_norm:
            out = self.norm(out.reshape(-1, self.width)).reshape(-1, self.k, self.width)
        else:
            out = self.norm(out)
        out = self.drop(self.act(out))
        return out + x if self.residual else out


def _identity(_width: int) -> nn.Module:
    return nn.Identity()


class TabularMLP(nn.Module):
    """An MLP with the ``tabular`` options: ``flatten -> [robust scale + smooth clip -> scaling layer] ->
    [numerical embedding] -> hidden layers -> head``, the hidden layers and head BatchEnsemble'd over
    ``cfg.ensemble`` members when that is above 1 (:mod:`nas.tabular_layers` cites the papers).

    ``forward`` answers ``(n, num_classes)`` logits like every network of the spaces (for an ensemble: the log of
    the members' mean probability, or a regression's mean value); :meth:`member_outputs` answers each member's
    ``(n, k, C)`` for the trainer, which fits the members as ``k`` models; :meth:`fit_inputs` fits the data
    statistics (medians, quartiles, bin edges) on the training rows once, as buffers."""

    def __init__(self, cfg: MLPConfig, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.ensemble_size, self.regression = int(cfg.ensemble), num_classes == 1
        robust = cfg.prep == "robust"
        self.prep: nn.Module = RobustScaleClip(in_features) if robust else nn.Identity()
        self.scaling: nn.Module = ScalingLayer(in_features) if robust else nn.Identity()
        self.embedding: nn.Module = EMBEDDINGS[cfg.embed](in_features) if cfg.embed != "none" else nn.Identity()
        width = in_features * EMBED_DIM if cfg.embed != "none" else in_features
        layers: list[nn.Module] = []
        for i, w in enumerate(cfg.widths):
            if self.ensemble_size == 1:
                layers.append(ResidualLayer(width, w, cfg.act, cfg.norm, cfg.dropout, cfg.residual))
            else:
                layers.append(EnsembleLayer(width, w, self.ensemble_size, cfg, first=i == 0))
            width = w
        self.hidden = nn.Sequential(*layers)
        self.head: nn.Module = (nn.Linear(width, num_classes) if self.ensemble_size == 1
                                else EnsembleHead(width, num_classes, self.ensemble_size))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.scaling(self.prep(x.flatten(1))))

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's outputs, ``(n, k, num_classes)``."""
        h = self._features(x)
        if self.ensemble_size == 1:
            return self.head(self.hidden(h)).unsqueeze(1)
        h = h.unsqueeze(1).expand(-1, self.ensemble_size, -1)
        return self.head(self.hidden(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ensemble_size == 1:
            return self.head(self.hidden(self._features(x)))
        return combine_members(self.member_outputs(x), self.regression)

    @torch.no_grad()
    def fit_inputs(self, x: torch.Tensor) -> bool:
        """Fit the not-yet-fitted input statistics on training rows ``x`` (as ``forward`` takes them), each on the
        rows as the layers before it transform them; ``True`` if anything was fitted."""
        fitted = []
        h = x.flatten(1).float()
        if isinstance(self.prep, FittedInput) and not bool(self.prep.fitted):
            self.prep.fit(h)
            fitted.append(self.prep)
        h = self.scaling(self.prep(h))
        encoding = getattr(self.embedding, "encoding", None)
        if isinstance(encoding, FittedInput) and not bool(encoding.fitted):
            encoding.fit(h)
            fitted.append(encoding)
        return bool(fitted)


@register_space("mlp", paper="tabular MLP family (no single paper)", input="flat features")
@dataclass(frozen=True)
class MLPSpace(SearchSpace):
    """MLPs of 1..``max_depth`` hidden layers; every choice list is configurable. ``preps``, ``embeddings`` and
    ``ensembles`` hold the tabular options (:class:`TabularSpace` turns them all on); a list of one value is no
    decision at all: it draws nothing from the generator and adds nothing to the encodings, so the plain space
    samples, encodes and enumerates exactly as before these options existed."""

    max_depth: int = 4
    widths: tuple[int, ...] = (32, 64, 128, 256)
    activations: tuple[str, ...] = ("relu", "gelu", "silu", "tanh")
    norms: tuple[str, ...] = NORMS
    dropouts: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    preps: tuple[str, ...] = ("std",)
    embeddings: tuple[str, ...] = ("none",)
    ensembles: tuple[int, ...] = (1,)
    name: ClassVar[str] = "mlp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "activations", tuple(self.activations))
        object.__setattr__(self, "norms", tuple(self.norms))
        object.__setattr__(self, "dropouts", tuple(float(p) for p in self.dropouts))
        object.__setattr__(self, "preps", tuple(self.preps))
        object.__setattr__(self, "embeddings", tuple(self.embeddings))
        object.__setattr__(self, "ensembles", tuple(int(k) for k in self.ensembles))
        if not isinstance(self.max_depth, int) or self.max_depth < 1:
            raise ValueError(f"mlp max_depth must be a positive integer, got {self.max_depth!r}")
        if not self.widths or min(self.widths) < 1 or len(set(self.widths)) != len(self.widths):
            raise ValueError(f"mlp widths must be distinct positive integers, got {list(self.widths)}")
        for what, values, valid in (("activation", self.activations, tuple(ACTIVATIONS)), ("norm", self.norms, NORMS),
                                    ("prep", self.preps, PREPS), ("embedding", self.embeddings, EMBEDS)):
            bad = [v for v in values if v not in valid]
            if not values or bad or len(set(values)) != len(values):
                raise ValueError(f"mlp {what}s must be distinct values of {', '.join(valid)}; got {list(values)}")
        if not self.dropouts or any(not 0 <= p < 1 for p in self.dropouts):
            raise ValueError(f"mlp dropouts must lie in [0, 1), got {list(self.dropouts)}")
        if not self.ensembles or min(self.ensembles) < 1 or len(set(self.ensembles)) != len(self.ensembles):
            raise ValueError(f"mlp ensembles must be distinct positive integers, got {list(self.ensembles)}")

    def config(self) -> dict[str, Any]:
        """The options; the tabular ones only where they differ from this class's defaults, so a plain space's
        configuration (in journals, tags, cache keys) reads exactly as it did before they existed."""
        out: dict[str, Any] = {
            "max_depth": self.max_depth, "widths": list(self.widths), "activations": list(self.activations),
            "norms": list(self.norms), "dropouts": list(self.dropouts),
        }
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in ("preps", "embeddings", "ensembles"):
            if getattr(self, key) != defaults[key]:
                out[key] = list(getattr(self, key))
        return out

    # -- strings -----------------------------------------------------------------------------------------------
    def parse(self, text: str) -> MLPConfig:
        """The :class:`MLPConfig` of a string; ``InvalidArchitectureError`` names the problem and valid choices."""
        example = "depth=2|widths=64-32|act=relu|norm=batch|dropout=0.1|residual=0"
        extra, text_core = _split_optional(text, self.name, example)
        fields = parse_key_values(text_core, KEYS, self.name, example)
        try:
            depth = int(fields["depth"])
            widths = tuple(int(w) for w in fields["widths"].split("-"))
            dropout = float(fields["dropout"])
            ensemble = int(extra["ensemble"])
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
        for key, value, valid in (("prep", extra["prep"], self.preps), ("embed", extra["embed"], self.embeddings),
                                  ("ensemble", ensemble, self.ensembles)):
            if value not in valid:
                raise InvalidArchitectureError(
                    f"{self.name} {key}={value} is not a choice of this space; valid: {', '.join(map(str, valid))}"
                )
        return MLPConfig(widths, fields["act"], fields["norm"], matches[0], fields["residual"] == "1",
                         extra["prep"], extra["embed"], ensemble)

    def from_string(self, text: str) -> Architecture:
        return Architecture(self, self.parse(text).to_string())

    def from_config(self, cfg: MLPConfig) -> Architecture:
        return self.from_string(cfg.to_string())

    def canonicalize(self, arch: Architecture) -> Architecture:
        cfg = self.parse(arch.string)
        if cfg.residual and not any(a == b for a, b in itertools.pairwise(cfg.widths)):
            cfg = cfg.replace(residual=False)
        return Architecture(self, cfg.to_string())

    # -- the tabular decisions -----------------------------------------------------------------------------------
    def _tabular(self) -> list[tuple[str, tuple]]:
        """The tabular options that are decisions here (more than one value), as ``(field, values)``."""
        return [(f, v) for f, v in (("prep", self.preps), ("embed", self.embeddings), ("ensemble", self.ensembles))
                if len(v) > 1]

    def _plain_values(self) -> dict[str, Any]:
        """The tabular fields' values when they are not decisions (each list's only value)."""
        return {"prep": self.preps[0], "embed": self.embeddings[0], "ensemble": self.ensembles[0]}

    # -- sampling ----------------------------------------------------------------------------------------------
    def _pick(self, rng: np.random.Generator, options: Sequence):
        return options[int(rng.integers(len(options)))]

    def sample(self, rng: np.random.Generator) -> Architecture:
        depth = int(rng.integers(1, self.max_depth + 1))
        widths = tuple(self._pick(rng, self.widths) for _ in range(depth))
        cfg = MLPConfig(
            widths, self._pick(rng, self.activations), self._pick(rng, self.norms), self._pick(rng, self.dropouts),
            bool(rng.integers(2)), **self._plain_values(),
        )
        tabular = {key: self._pick(rng, values) for key, values in self._tabular()}  # after the old draws
        return Architecture(self, cfg.replace(**tabular).to_string())

    def _variants(self, cfg: MLPConfig) -> list[MLPConfig]:
        """Every config one decision away: depth +-1 (a layer added/removed at the end), one width, or one knob."""
        out: list[MLPConfig] = []
        if cfg.depth < self.max_depth:
            out += [cfg.replace(widths=(*cfg.widths, w)) for w in self.widths]
        if cfg.depth > 1:
            out.append(cfg.replace(widths=cfg.widths[:-1]))
        for i, w_old in enumerate(cfg.widths):
            for w in self.widths:
                if w != w_old:
                    out.append(cfg.replace(widths=(*cfg.widths[:i], w, *cfg.widths[i + 1:])))
        out += [cfg.replace(act=a) for a in self.activations if a != cfg.act]
        out += [cfg.replace(norm=n) for n in self.norms if n != cfg.norm]
        out += [cfg.replace(dropout=p) for p in self.dropouts if p != cfg.dropout]
        out.append(cfg.replace(residual=not cfg.residual))
        for key, values in self._tabular():
            out += [cfg.replace(**{key: v}) for v in values if v != getattr(cfg, key)]
        return out

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        variants = self._variants(self.parse(arch.string))
        return Architecture(self, variants[int(rng.integers(len(variants)))].to_string())

    def neighbours(self, arch: Architecture) -> list[Architecture]:
        return [Architecture(self, v.to_string()) for v in self._variants(self.parse(arch.string))]

    def categorical(self) -> list[tuple[str, tuple[str, ...]]]:
        """Depth, one width per layer slot (slots past the depth are ignored), activation, norm, dropout,
        residual, then the tabular decisions (prep, embed, ensemble) this space has."""
        widths = tuple(str(w) for w in self.widths)
        return ([("depth", tuple(str(d) for d in range(1, self.max_depth + 1)))]
                + [(f"width{i + 1}", widths) for i in range(self.max_depth)]
                + [("act", self.activations), ("norm", self.norms), ("dropout", tuple(f"{p:g}" for p in self.dropouts)),
                   ("residual", ("0", "1"))]
                + [(key, tuple(map(str, values))) for key, values in self._tabular()])

    def categorical_index(self, arch: Architecture) -> tuple[int, ...]:
        cfg = self.parse(arch.string)
        slots = [self.widths.index(w) for w in cfg.widths] + [0] * (self.max_depth - cfg.depth)
        return (cfg.depth - 1, *slots, self.activations.index(cfg.act), self.norms.index(cfg.norm),
                self.dropouts.index(cfg.dropout), int(cfg.residual),
                *(values.index(getattr(cfg, key)) for key, values in self._tabular()))

    def from_categorical(self, index: Sequence[int]) -> Architecture:
        i = [int(v) for v in index]
        tabular = self._tabular()
        if len(i) != self.max_depth + 5 + len(tabular):
            raise InvalidArchitectureError(
                f"an {self.name} choice has {self.max_depth + 5 + len(tabular)} entries, got {len(i)}")
        depth = i[0] + 1
        widths = tuple(self.widths[w] for w in i[1 : 1 + depth])
        k = 1 + self.max_depth
        cfg = MLPConfig(widths, self.activations[i[k]], self.norms[i[k + 1]], self.dropouts[i[k + 2]], bool(i[k + 3]),
                        **self._plain_values())
        cfg = cfg.replace(**{key: values[i[k + 4 + j]] for j, (key, values) in enumerate(tabular)})
        return Architecture(self, cfg.to_string())

    def enumerate(self) -> Iterator[Architecture]:
        for depth in range(1, self.max_depth + 1):
            for widths in itertools.product(self.widths, repeat=depth):
                for act, norm, p, res in itertools.product(self.activations, self.norms, self.dropouts, (False, True)):
                    for prep, embed, k in itertools.product(self.preps, self.embeddings, self.ensembles):
                        yield Architecture(self, MLPConfig(widths, act, norm, p, res, prep, embed, k).to_string())

    def size(self) -> int:
        layers = sum(len(self.widths) ** d for d in range(1, self.max_depth + 1))
        tabular = len(self.preps) * len(self.embeddings) * len(self.ensembles)
        return layers * len(self.activations) * len(self.norms) * len(self.dropouts) * 2 * tabular

    # -- numbers -----------------------------------------------------------------------------------------------
    def encode(self, arch: Architecture) -> np.ndarray:
        """Depth one-hot, per-slot width one-hot (zeros past the depth), act/norm one-hot, dropout, residual, then
        a one-hot per tabular decision this space has."""
        cfg = self.parse(arch.string)
        depth = np.zeros(self.max_depth, dtype=np.float32)
        depth[cfg.depth - 1] = 1
        widths = np.zeros((self.max_depth, len(self.widths)), dtype=np.float32)
        for i, w in enumerate(cfg.widths):
            widths[i, self.widths.index(w)] = 1
        act = np.eye(len(self.activations), dtype=np.float32)[self.activations.index(cfg.act)]
        norm = np.eye(len(self.norms), dtype=np.float32)[self.norms.index(cfg.norm)]
        tabular = [np.eye(len(values), dtype=np.float32)[values.index(getattr(cfg, key))]
                   for key, values in self._tabular()]
        return np.concatenate([depth, widths.ravel(), act, norm, [cfg.dropout, float(cfg.residual)], *tabular]).astype(
            np.float32
        )

    def supports_input(self, input_shape: Sequence[int]) -> str | None:
        shape = tuple(input_shape)
        if not shape or min(shape) < 1:
            return f"{self.name} needs a non-empty input shape of positive sizes, got {shape}"
        return None

    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """The plain :class:`MLPNetwork` (exactly the network of the space before the tabular options), or a
        :class:`TabularMLP` when the string has one."""
        self.check_build_args(input_shape, num_classes)
        cfg = self.parse(arch.string)
        network = MLPNetwork if cfg.plain else TabularMLP
        return network(cfg, int(np.prod(input_shape)), int(num_classes))


@register_space("tabular", input="flat features",
                paper="Gorishniy et al. 2022 (PLE/PLR embeddings); Holzmüller et al. 2024 (RealMLP); "
                      "Gorishniy et al. 2025 (TabM) / Wen et al. 2020 (BatchEnsemble)")
@dataclass(frozen=True)
class TabularSpace(MLPSpace):
    """The ``mlp`` space with every tabular option a decision: input treatment (standardised, or RealMLP's robust
    scaling + smooth clip + scaling layer), numerical embedding (none, PLE, PLR) and ensemble head (1, 4 or 8
    BatchEnsemble members). It parses every ``mlp`` string (they are its plain points)."""

    preps: tuple[str, ...] = PREPS
    embeddings: tuple[str, ...] = EMBEDS
    ensembles: tuple[int, ...] = (1, 4, 8)
    name: ClassVar[str] = "tabular"


def _split_optional(text: object, space: str, example: str) -> tuple[dict[str, str], object]:
    """The tabular keys of a string (each at most once; absent ones at their plain value) and the rest of it."""
    if not isinstance(text, str):
        return dict(OPTIONAL_KEYS), text
    extra: dict[str, str] = {}
    core = []
    for part in text.strip().split("|"):
        key, sep, value = part.partition("=")
        if sep and key.strip() in OPTIONAL_KEYS:
            if key.strip() in extra:
                raise InvalidArchitectureError(f"malformed {space} architecture {text!r}: {key.strip()!r} is given "
                                               f"twice; example: {example!r}")
            extra[key.strip()] = value.strip()
        else:
            core.append(part)
    return {**OPTIONAL_KEYS, **extra}, "|".join(core)
