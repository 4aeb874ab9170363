"""The fused scorer: many proxies for one network, each shared pass run once.

Every call builds the network from the factory under ``torch.manual_seed(seed)`` (:func:`seed_cpu`); each pass family
and each standalone proxy then works on its own deep copy of that pristine network, so a proxy's value does not
depend on which other proxies were asked for (fused and one-at-a-time results agree) and the caller's model is never
touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas.proxies.context import (
    WORST_SCORE,
    ScoringContext,
    finite_or_worst,
    output_ignores_input,
    seed_cpu,
    sequence_shape,
)
from nas.proxies.registry import ProxyInfo, family_runner, get_proxy


def _resolve(names: Sequence[str]) -> list[ProxyInfo]:
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("no proxy names given; pass at least one (see nas.proxies.list_proxies())")
    return [get_proxy(n) for n in dict.fromkeys(names)]


def _context(
    infos: list[ProxyInfo],
    batch: tuple[torch.Tensor, torch.Tensor] | None,
    input_shape: Sequence[int] | None,
    num_classes: int | None,
    seed: int,
) -> ScoringContext:
    hungry = [i.name for i in infos if i.needs_data]
    if hungry and batch is None:
        raise ValueError(
            f"proxy {hungry[0]!r} needs data: pass --dataset / a batch (data-dependent here: {', '.join(hungry)}; "
            "data-free: params, flops, synflow, l2_norm, zen, meco)"
        )
    if batch is not None:
        x, y = batch
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"batch must hold >= 2 inputs with one label each, got {len(x)} inputs, {len(y)} labels")
        # class indices must fit the head; a regression's float targets (one output) have no classes
        if num_classes is not None and not y.is_floating_point() and int(y.max()) >= num_classes:
            raise ValueError(f"batch has label {int(y.max())} but num_classes={num_classes}")
        shape = sequence_shape(x.shape[1:])
        if input_shape is not None and sequence_shape(input_shape) != shape:
            raise ValueError(f"input_shape {tuple(input_shape)} does not match the batch's inputs {shape}")
        batch = (x.float(), y.float() if y.is_floating_point() else y.long())  # a regression keeps its targets
    elif input_shape is None:
        raise ValueError("pass input_shape (or a batch) so data-free proxies know what to feed the network")
    else:
        shape = sequence_shape(input_shape)
    return ScoringContext(batch=batch, input_shape=shape, seed=int(seed))


def score_model(
    model: nn.Module,
    names: Sequence[str],
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Score an existing network (left unchanged) with every proxy in ``names``; see :func:`compute_scores`."""
    return _score(model, names, batch=batch, input_shape=input_shape, num_classes=num_classes, seed=seed, owned=False)


def _score(
    model: nn.Module,
    names: Sequence[str],
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None,
    input_shape: Sequence[int] | None,
    num_classes: int | None,
    seed: int,
    owned: bool,
) -> dict[str, float]:
    """The scoring itself. ``owned``: the network is ours to change, so its last user needs no copy.

    Cost proxies only read the network (their mode change is undone), so they run first on it without a copy; every
    other standalone proxy or pass family works on a pristine deep copy, except the last one when ``owned``. Copies
    were a large share of a cheap proxy's time on small networks.
    """
    infos = _resolve(names)
    ctx = _context(infos, batch, input_shape, num_classes, seed)
    # the degeneracy probe (a forward and a backward) only matters to non-cost proxies
    degenerate = not all(info.is_cost for info in infos) and output_ignores_input(model, ctx)
    scores: dict[str, float] = {}
    families: dict[str, list[ProxyInfo]] = {}
    standalone: list[ProxyInfo] = []
    for info in infos:
        if info.is_cost:
            modes = [(m, m.training) for m in model.modules()]
            seed_cpu(ctx.seed)
            scores[info.name] = finite_or_worst(info.compute(model, ctx))
            for module, training in modes:
                module.training = training
        elif degenerate:
            scores[info.name] = WORST_SCORE
        elif info.family is not None:
            families.setdefault(info.family, []).append(info)
        else:
            standalone.append(info)
    jobs = [("proxy", info) for info in standalone] + [("family", fam) for fam in families]
    for i, (kind, job) in enumerate(jobs):
        net = model if owned and i == len(jobs) - 1 else copy.deepcopy(model)
        seed_cpu(ctx.seed)
        if kind == "proxy":
            scores[job.name] = finite_or_worst(job.compute(net, ctx))
        else:
            members = families[job]
            record = family_runner(job)(net, ctx, {m.name for m in members})
            for info in members:
                scores[info.name] = finite_or_worst(info.compute(record, ctx))
            del record
        del net
    return {info.name: scores[info.name] for info in infos}


def compute_scores(
    model_factory: Callable[[], nn.Module],
    names: Sequence[str],
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Zero-cost proxy scores of the network ``model_factory()`` builds, higher = predicted better.

    Proxies sharing a pass (the data pass: snip, grad_norm, plain, fisher, zico, jacob_cov, epe_nas, nwot) run it
    once; synflow, zen, grasp and meco get their own copy (they change precision, weights or mode). Every value is
    a finite float; non-cost proxies of a network whose output ignores its input get ``WORST_SCORE``.

    Raises ``KeyError`` for unknown names (listing the valid ones) and ``ValueError`` when a data-dependent proxy
    has no ``batch``.
    """
    infos = _resolve(names)
    _context(infos, batch, input_shape, num_classes, seed)  # fail on bad arguments before building anything
    seed_cpu(int(seed))
    model = model_factory()
    return _score(model, names, batch=batch, input_shape=input_shape, num_classes=num_classes, seed=seed, owned=True)
