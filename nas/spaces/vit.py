"""A patch-transformer (ViT-style, Dosovitskiy et al., 2021) space for image classifiers.

Strings read like ``patch=4|depth=2|heads=2|embed=64|mlp_ratio=2``. The image is cut into ``patch x patch`` tiles
(zero-padded up to a multiple of the patch size, so every patch size works on every image), each tile is embedded
linearly, a class token and learned position embeddings are added, ``depth`` pre-norm transformer blocks follow, and
the class token's final LayerNorm feeds a linear head. Every string is its own canonical form.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.spaces import register_space
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace, parse_key_values

KEYS: tuple[str, ...] = ("patch", "depth", "heads", "embed", "mlp_ratio")


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (qkv projection, softmax(QK^T/sqrt(d))V, output projection).

    Written with plain matmuls rather than ``nn.MultiheadAttention``, whose eval-mode fast path hides the attention
    from ``torch.utils.flop_counter`` (and from per-layer proxy hooks).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MHSA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width ``ratio * dim``."""

    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchTransformer(nn.Module):
    """Patch embedding -> [cls] + positions -> blocks -> LayerNorm -> linear head on the class token."""

    def __init__(self, choice: dict[str, int], input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.patch = choice["patch"]
        dim = choice["embed"]
        tokens = math.ceil(height / self.patch) * math.ceil(width / self.patch)
        self.embed = nn.Conv2d(channels, dim, kernel_size=self.patch, stride=self.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, choice["heads"], choice["mlp_ratio"])
                                      for _ in range(choice["depth"])))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = (-x.shape[-2]) % self.patch
        pad_w = (-x.shape[-1]) % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@register_space("vit")
@dataclass(frozen=True)
class ViTSpace(SearchSpace):
    """Patch size, depth, heads, embedding width and MLP ratio, each from a configurable list."""

    patch_sizes: tuple[int, ...] = (2, 4, 7, 8)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    heads: tuple[int, ...] = (1, 2, 4)
    embed_dims: tuple[int, ...] = (32, 64, 128)
    mlp_ratios: tuple[int, ...] = (1, 2, 4)
    name: ClassVar[str] = "vit"

    def __post_init__(self) -> None:
        for key in ("patch_sizes", "depths", "heads", "embed_dims", "mlp_ratios"):
            values = tuple(int(v) for v in getattr(self, key))
            if not values or min(values) < 1 or len(set(values)) != len(values):
                raise ValueError(f"vit {key} must be distinct positive integers, got {list(values)}")
            object.__setattr__(self, key, values)
        bad = [(e, h) for e in self.embed_dims for h in self.heads if e % h]
        if bad:
            raise ValueError(f"every vit embed_dim must be divisible by every head count; {bad[0][0]} % {bad[0][1]}")

    def config(self) -> dict[str, Any]:
        return {
            "patch_sizes": list(self.patch_sizes), "depths": list(self.depths), "heads": list(self.heads),
            "embed_dims": list(self.embed_dims), "mlp_ratios": list(self.mlp_ratios),
        }

    @property
    def choices(self) -> dict[str, tuple[int, ...]]:
        return {
            "patch": self.patch_sizes, "depth": self.depths, "heads": self.heads, "embed": self.embed_dims,
            "mlp_ratio": self.mlp_ratios,
        }

    # -- strings -----------------------------------------------------------------------------------------------
    @staticmethod
    def _format(choice: dict[str, int]) -> str:
        return "|".join(f"{k}={choice[k]}" for k in KEYS)

    def parse(self, text: str) -> dict[str, int]:
        """``{"patch": 4, "depth": 2, ...}`` of a string; ``InvalidArchitectureError`` names valid choices."""
        example = "patch=4|depth=2|heads=2|embed=64|mlp_ratio=2"
        found: dict[str, int] = {}
        for key, value in parse_key_values(text, KEYS, "vit", example).items():
            try:
                number = int(value)
            except ValueError:
                raise InvalidArchitectureError(f"vit {key} must be an integer, got {value!r} in {text!r}") from None
            if number not in self.choices[key]:
                raise InvalidArchitectureError(
                    f"vit {key}={number} is not a choice; valid: {', '.join(map(str, self.choices[key]))}"
                )
            found[key] = number
        return found

    def from_string(self, text: str) -> Architecture:
        return Architecture(self, self._format(self.parse(text)))

    # -- sampling ----------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Architecture:
        choice = {k: int(v[int(rng.integers(len(v)))]) for k, v in self.choices.items()}
        return Architecture(self, self._format(choice))

    def _variants(self, choice: dict[str, int]) -> list[dict[str, int]]:
        return [{**choice, k: v} for k, values in self.choices.items() for v in values if v != choice[k]]

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        variants = self._variants(self.parse(arch.string))
        if not variants:
            raise ValueError("this vit space has a single architecture; nothing to mutate to")
        return Architecture(self, self._format(variants[int(rng.integers(len(variants)))]))

    def neighbours(self, arch: Architecture) -> list[Architecture]:
        return [Architecture(self, self._format(v)) for v in self._variants(self.parse(arch.string))]

    def enumerate(self) -> Iterator[Architecture]:
        for values in itertools.product(*self.choices.values()):
            yield Architecture(self, self._format(dict(zip(KEYS, values, strict=True))))

    def size(self) -> int:
        return int(np.prod([len(v) for v in self.choices.values()]))

    # -- numbers -----------------------------------------------------------------------------------------------
    def encode(self, arch: Architecture) -> np.ndarray:
        """One-hot of each decision, concatenated."""
        choice = self.parse(arch.string)
        parts = [np.eye(len(v), dtype=np.float32)[v.index(choice[k])] for k, v in self.choices.items()]
        return np.concatenate(parts)

    def supports_input(self, input_shape: Sequence[int]) -> str | None:
        shape = tuple(input_shape)
        if len(shape) != 3:
            return (
                f"vit builds patch transformers for images shaped (channels, height, width); input shape {shape} "
                f"has {len(shape)} dimension(s) (use the mlp space for flat features)"
            )
        if min(shape) < 1:
            return f"vit needs positive image dimensions, got {shape}"
        return None

    def build(self, arch: Architecture, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        self.check_build_args(input_shape, num_classes)
        c, h, w = (int(d) for d in input_shape)
        return PatchTransformer(self.parse(arch.string), (c, h, w), int(num_classes))
