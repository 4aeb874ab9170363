"""Search spaces, looked up by name (the timm way): ``get_space("nb201", C=16, N=5)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace

_BUILDERS: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str) -> Callable[[Callable[..., SearchSpace]], Callable[..., SearchSpace]]:
    """Class decorator adding a space builder to the registry under ``name``."""

    def deco(builder: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
        _BUILDERS[name] = builder
        return builder

    return deco


def list_spaces() -> list[str]:
    """Names accepted by :func:`get_space`."""
    _load_builtin()
    return sorted(_BUILDERS)


def get_space(name: str, **config: Any) -> SearchSpace:
    """Build the space ``name`` with its configuration; unknown names raise ``KeyError`` listing the valid ones."""
    _load_builtin()
    if name not in _BUILDERS:
        raise KeyError(f"unknown search space {name!r}; choose one of: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](**config)


def architecture_from_dict(data: dict[str, Any]) -> Architecture:
    """Inverse of :meth:`Architecture.to_dict`."""
    space = get_space(data["space"], **data.get("space_config", {}))
    return space.from_string(data["arch"])


def _load_builtin() -> None:
    # Imported lazily so that ``import nas.spaces`` stays cheap and free of import cycles.
    import importlib

    for module in ("nas.spaces.nb201", "nas.spaces.mlp", "nas.spaces.vit"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a space still being written must not break the others
            if exc.name != module:
                raise


__all__ = [
    "Architecture",
    "InvalidArchitectureError",
    "SearchSpace",
    "architecture_from_dict",
    "get_space",
    "list_spaces",
    "register_space",
]
