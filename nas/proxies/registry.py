"""The proxy registry: :data:`PROXIES`, a :class:`nas.registry.Registry` of :class:`ProxyInfo`, filled by
:func:`register_proxy` next to each proxy's definition (the timm way, as spaces, strategies and predictors are).

A proxy is registered either *standalone* (``compute(model, ctx) -> float`` on its own private copy of the network,
for proxies that change weights, precision or mode) or as a member of a *family* that shares one set of passes
(``compute(record, ctx) -> float`` reading what the family's pass recorded). The fused scorer groups the names it
is asked for by family, so asking for many proxies at once runs each shared pass only once.

Every entry's metadata: ``needs_data`` (a labelled batch is required), ``family`` (the shared pass, or ``None``),
``is_cost`` (a cost keeps its true value even for degenerate networks) and ``paper`` (where it is defined).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.registry import Registry

_BUILTIN = ("cost", "weight_norm", "synflow", "data_pass", "saliency", "zico", "jacobian", "naswot", "grasp", "zen",
            "meco")


@dataclass(frozen=True)
class ProxyInfo:
    """One registered proxy. Call it as ``info(model, batch)`` to score a single ``nn.Module`` (the Proxy seam)."""

    name: str
    needs_data: bool
    compute: Callable[..., float]
    family: str | None = None
    is_cost: bool = False  # a cost (params, flops) stays its true value even for degenerate networks
    doc: str = ""
    paper: str = ""

    def __call__(self, model: Any, batch: Any = None, *, input_shape: Any = None, seed: int = 0) -> float:
        from nas.proxies.scorer import score_model

        return score_model(model, [self.name], batch=batch, input_shape=input_shape, seed=seed)[self.name]


_MODULES = tuple(f"nas.proxies.{m}" for m in _BUILTIN)
PROXIES: Registry[ProxyInfo] = Registry("proxy", modules=_MODULES)
"""Every zero-cost proxy by name; ``PROXIES.describe()`` lists them with their metadata."""

FAMILIES: Registry[Callable[..., Any]] = Registry("proxy family", modules=_MODULES)
"""Shared passes by family name: ``run(model, ctx, names) -> record``."""


def register_proxy(
    name: str, needs_data: bool, *, family: str | None = None, is_cost: bool = False, paper: str = "",
    summary: str = "",
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator registering ``compute`` under ``name``; ``family`` names a shared pass (:func:`register_family`)."""

    def deco(compute: Callable[..., float]) -> Callable[..., float]:
        doc = (compute.__doc__ or "").strip()
        info = ProxyInfo(name, needs_data, compute, family, is_cost, doc, paper)
        PROXIES.register(name, summary=summary or doc.split("\n")[0], needs_data=needs_data, family=family,
                         is_cost=is_cost, paper=paper)(info)
        return compute

    return deco


def register_family(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a shared pass ``run(model, ctx, names) -> record`` for the proxies of one family."""
    return FAMILIES.register(name)


def family_runner(name: str) -> Callable[..., Any]:
    return FAMILIES.get(name)


def list_proxies() -> list[str]:
    """Every registered proxy name, sorted."""
    return sorted(PROXIES.names())


def get_proxy(name: str) -> ProxyInfo:
    """The proxy ``name``; unknown names raise ``KeyError`` listing the valid ones."""
    return PROXIES.get(name)


def needs_data(name: str) -> bool:
    """Whether ``name`` needs a labelled batch (``False``: it scores from random or all-ones inputs)."""
    return get_proxy(name).needs_data
