"""The proxy registry (the timm way): proxies are looked up by name, each knowing whether it needs real data.

A proxy is registered either *standalone* (``compute(model, ctx) -> float`` on its own private copy of the network,
for proxies that change weights, precision or mode) or as a member of a *family* that shares one set of passes
(``compute(record, ctx) -> float`` reading what the family's pass recorded). The fused scorer groups the names it
is asked for by family, so asking for many proxies at once runs each shared pass only once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PROXIES: dict[str, ProxyInfo] = {}
_FAMILIES: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class ProxyInfo:
    """One registered proxy. Call it as ``info(model, batch)`` to score a single ``nn.Module`` (the Proxy seam)."""

    name: str
    needs_data: bool
    compute: Callable[..., float]
    family: str | None = None
    is_cost: bool = False  # a cost (params, flops) stays its true value even for degenerate networks
    doc: str = ""

    def __call__(self, model: Any, batch: Any = None, *, input_shape: Any = None, seed: int = 0) -> float:
        from nas.proxies.scorer import score_model

        return score_model(model, [self.name], batch=batch, input_shape=input_shape, seed=seed)[self.name]


def register_proxy(
    name: str, needs_data: bool, *, family: str | None = None, is_cost: bool = False
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator registering ``compute`` under ``name``; ``family`` names a shared pass (:func:`register_family`)."""

    def deco(compute: Callable[..., float]) -> Callable[..., float]:
        if name in _PROXIES:
            raise ValueError(f"proxy {name!r} is already registered")
        doc = (compute.__doc__ or "").strip()
        _PROXIES[name] = ProxyInfo(name, needs_data, compute, family, is_cost, doc)
        return compute

    return deco


def register_family(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a shared pass ``run(model, ctx, names) -> record`` for the proxies of one family."""

    def deco(run: Callable[..., Any]) -> Callable[..., Any]:
        _FAMILIES[name] = run
        return run

    return deco


def family_runner(name: str) -> Callable[..., Any]:
    return _FAMILIES[name]


def _load_builtin() -> None:
    import importlib

    for module in ("cost", "weight_norm", "synflow", "data_pass", "saliency", "zico", "jacobian", "naswot",
                   "grasp", "zen", "meco"):
        importlib.import_module(f"nas.proxies.{module}")


def list_proxies() -> list[str]:
    """Every registered proxy name, sorted."""
    _load_builtin()
    return sorted(_PROXIES)


def get_proxy(name: str) -> ProxyInfo:
    """The proxy ``name``; unknown names raise ``KeyError`` listing the valid ones."""
    _load_builtin()
    if name not in _PROXIES:
        raise KeyError(f"unknown proxy {name!r}; choose from: {', '.join(sorted(_PROXIES))}")
    return _PROXIES[name]


def needs_data(name: str) -> bool:
    """Whether ``name`` needs a labelled batch (``False``: it scores from random or all-ones inputs)."""
    return get_proxy(name).needs_data
