"""One registry style for everything looked up by name (the timm way): spaces, proxies, strategies, predictors,
ensembles.

A :class:`Registry` maps a name to a builder plus metadata, is filled by a decorator next to the builder's
definition, lists its names with a one-line summary each, and answers an unknown name with a ``KeyError`` that
names every valid one, so each lookup site gives users the same message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered builder with its metadata (free-form, e.g. ``needs_data``, ``paper``)."""

    name: str
    builder: T
    summary: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Builders of one kind by name. ``modules`` are imported on first lookup, so the built-ins register
    themselves lazily (``import nas`` stays cheap and free of import cycles)."""

    def __init__(self, kind: str, modules: Iterable[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._modules = tuple(modules)
        self._loaded = not self._modules

    def register(self, name: str, *, summary: str = "", **metadata: Any) -> Callable[[T], T]:
        """Decorator: ``@SPACES.register("nb201", paper="Dong & Yang 2020")`` above a builder."""

        def deco(builder: T) -> T:
            if name in self._entries and self._entries[name].builder is not builder:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = summary or (getattr(builder, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, builder, doc, dict(metadata))
            return builder

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load()
        return list(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
        self._load()
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).builder

    def describe(self) -> list[dict[str, Any]]:
        """Every entry as a plain dict (name, summary, metadata), for ``--list`` style CLI output and docs."""
        self._load()
        return [{"name": e.name, "summary": e.summary, **e.metadata} for e in self._entries.values()]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
