"""Search spaces, looked up by name (the timm way): ``get_space("nb201", C=16, N=5)``.

Each space class registers itself with ``@register_space(name, paper=...)`` next to its definition; the registry
(:data:`SPACES`, a :class:`nas.registry.Registry`) lists them with their metadata and names the valid ones when a
lookup fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.registry import Registry
from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace

SPACES: Registry[Callable[..., SearchSpace]] = Registry(
    "search space", modules=("nas.spaces.nb201", "nas.spaces.mlp", "nas.spaces.vit")
)


def register_space(name: str, *, summary: str = "", **metadata: Any
                   ) -> Callable[[Callable[..., SearchSpace]], Callable[..., SearchSpace]]:
    """Class decorator adding a space builder to :data:`SPACES` under ``name`` (metadata: e.g. ``paper``)."""
    return SPACES.register(name, summary=summary, **metadata)


def list_spaces() -> list[str]:
    """Names accepted by :func:`get_space`, sorted."""
    return sorted(SPACES.names())


def get_space(name: str, **config: Any) -> SearchSpace:
    """Build the space ``name`` with its configuration; unknown names raise ``KeyError`` listing the valid ones."""
    if name not in SPACES:  # sorted, as list_spaces
        raise KeyError(f"unknown search space {name!r}; choose one of: {', '.join(list_spaces())}")
    return SPACES.get(name)(**config)


def architecture_from_dict(data: dict[str, Any]) -> Architecture:
    """Inverse of :meth:`Architecture.to_dict`."""
    space = get_space(data["space"], **data.get("space_config", {}))
    return space.from_string(data["arch"])


__all__ = [
    "SPACES",
    "Architecture",
    "InvalidArchitectureError",
    "SearchSpace",
    "architecture_from_dict",
    "get_space",
    "list_spaces",
    "register_space",
]
