"""The two seams every search strategy, proxy and evaluator is written against.

An :class:`Architecture` is an immutable value: a search space plus that space's canonical string. It can be
hashed, compared, sent through Prefect as its string, and turned back into a ``torch.nn.Module``. A
:class:`SearchSpace` knows how to sample, mutate, enumerate, canonicalise, encode and build its architectures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn


class InvalidArchitectureError(ValueError):
    """An architecture string that does not belong to a space; the message names the valid choices."""


def parse_key_values(text: object, keys: Sequence[str], space: str, example: str) -> dict[str, str]:
    """``"k1=v1|k2=v2"`` -> ``{"k1": "v1", ...}`` with every key of ``keys`` exactly once (spaces like mlp, vit)."""
    if not isinstance(text, str):
        raise InvalidArchitectureError(f"a {space} architecture is a string like {example!r}")
    fields: dict[str, str] = {}
    for part in text.strip().split("|"):
        key, sep, value = part.partition("=")
        if not sep or key not in keys or key in fields:
            raise InvalidArchitectureError(
                f"malformed {space} architecture {text!r}: {part!r} is not one of the keys {', '.join(keys)} "
                f"given once as key=value; example: {example!r}"
            )
        fields[key] = value.strip()
    missing = [k for k in keys if k not in fields]
    if missing:
        raise InvalidArchitectureError(
            f"{space} architecture {text!r} lacks {', '.join(missing)}; example: {example!r}"
        )
    return fields


@dataclass(frozen=True)
class Architecture:
    """One point of a search space: the space and its canonical string (e.g. the NAS-Bench-201 string)."""

    space: SearchSpace
    string: str

    def __str__(self) -> str:
        return self.string

    def build(self, num_classes: int, input_shape: Sequence[int]) -> nn.Module:
        """A fresh, randomly initialised network taking ``(batch, *input_shape)`` and returning logits."""
        return self.space.build(self, num_classes, tuple(input_shape))

    def encode(self) -> np.ndarray:
        """A fixed-length float vector for performance predictors."""
        return self.space.encode(self)

    def to_dict(self) -> dict[str, Any]:
        """A plain, serialisable description: enough for :func:`nas.spaces.architecture_from_dict`."""
        return {"space": self.space.name, "space_config": self.space.config(), "arch": self.string}


class SearchSpace(ABC):
    """A family of architectures. Subclasses must be hashable values (frozen dataclasses)."""

    name: str = ""

    # -- identity -----------------------------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this space through the registry (e.g. ``{"C": 16, "N": 5}``)."""

    # -- strings ------------------------------------------------------------------------------------
    @abstractmethod
    def from_string(self, text: str) -> Architecture:
        """Parse a string; raise :class:`InvalidArchitectureError` naming what is wrong and the valid choices."""

    def canonicalize(self, arch: Architecture) -> Architecture:
        """The representative of ``arch``'s equivalence class (same network function). Default: itself."""
        return arch

    # -- sampling -----------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Architecture:
        """One architecture drawn uniformly (as the space defines it) using ``rng`` only."""

    def sample_many(self, n: int, rng: np.random.Generator, *, unique: bool = True) -> list[Architecture]:
        """``n`` samples; with ``unique`` no two share a canonical form (stops early if the space runs out)."""
        out: list[Architecture] = []
        seen: set[str] = set()
        attempts = 0
        limit = max(100, 50 * n)
        while len(out) < n and attempts < limit:
            attempts += 1
            arch = self.sample(rng)
            key = self.canonicalize(arch).string
            if unique and key in seen:
                continue
            seen.add(key)
            out.append(arch)
        return out

    @abstractmethod
    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """A random neighbour that differs from ``arch`` in one decision."""

    @abstractmethod
    def neighbours(self, arch: Architecture) -> list[Architecture]:
        """Every architecture one decision away (for local search); may be a sample for huge spaces."""

    def enumerate(self) -> Iterator[Architecture]:
        """Every architecture of a finite space; infinite or huge spaces raise ``NotImplementedError``."""
        raise NotImplementedError(f"search space {self.name!r} is not enumerable")

    def size(self) -> int | None:
        """How many architecture strings the space holds (``None`` if not finite)."""
        return None

    # -- categorical view (RL controllers, Bayesian optimisation) ---------------------------------------
    def categorical(self) -> list[tuple[str, tuple[str, ...]]]:
        """The space as a fixed list of categorical decisions, ``(name, options)`` each, for strategies that model
        a distribution over decisions. Spaces without such a view raise ``NotImplementedError``."""
        raise NotImplementedError(f"search space {self.name!r} has no categorical view of its decisions")

    def categorical_index(self, arch: Architecture) -> tuple[int, ...]:
        """The option index of every decision of :meth:`categorical` for ``arch`` (a decision that does not apply,
        e.g. the width of a layer beyond the depth, takes option 0)."""
        raise NotImplementedError(f"search space {self.name!r} has no categorical view of its decisions")

    def from_categorical(self, index: Sequence[int]) -> Architecture:
        """The architecture of one option index per decision; ``InvalidArchitectureError`` when that combination
        is not in the space (a benchmark table need not hold every combination)."""
        raise NotImplementedError(f"search space {self.name!r} has no categorical view of its decisions")

    # -- numbers ------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, arch: Architecture) -> np.ndarray:
        """A fixed-length float32 vector for predictors (the same length for every arch of this space)."""

    @abstractmethod
    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """A network for ``(batch, *input_shape)`` inputs and ``num_classes`` logits."""

    def supports_input(self, input_shape: Sequence[int]) -> str | None:
        """``None`` if the space can build for this input shape, else a sentence saying why not."""
        return None

    def check_build_args(self, input_shape: Sequence[int], num_classes: int) -> None:
        """Raise ``ValueError`` (saying why) if :meth:`build` cannot make a network for these arguments."""
        problem = self.supports_input(input_shape)
        if problem is not None:
            raise ValueError(problem)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    def count_params(self, arch: Architecture, num_classes: int, input_shape: Sequence[int]) -> int:
        """Trainable parameters of the built network."""
        model = self.build(arch, num_classes, tuple(input_shape))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def count_flops(self, arch: Architecture, num_classes: int, input_shape: Sequence[int]) -> int:
        """FLOPs of one forward pass for a single input, counted by ``torch.utils.flop_counter``."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        model = self.build(arch, num_classes, tuple(input_shape)).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape))
        return int(counter.get_total_flops())
