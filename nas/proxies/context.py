"""What every proxy shares: the scoring context, the worst score, which tensors count as weights, and modes.

Conventions (documented in docs/proxies.md):

- *Weights* are the parameters with two or more dimensions (conv kernels, linear and attention projections,
  embeddings). Per-weight proxies (SNIP, GraSP, SynFlow, grad_norm, ...) sum over these, as Abdelfattah et al.
  (2021) sum over conv/linear layers; biases and normalisation affines are left out.
- *Proxy mode*: batch-norm uses batch statistics (train mode, as SNIP/GraSP/NASWOT/Zen score freshly initialised
  networks) while dropout is off, so a score depends on the network and the seed only, not on dropout noise.
- A network whose output does not depend on its input, or a proxy that comes out NaN/inf, gets
  :data:`WORST_SCORE`, a finite number below every real score, so rankings put it last and nothing crashes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

WORST_SCORE: float = -1.0e300
"""The score of a degenerate network (output independent of input) or a proxy that is not finite."""

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_NORM = (nn.modules.batchnorm._BatchNorm,)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardswish, nn.Mish, nn.PReLU, nn.SELU)
FEATURE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ScoringContext:
    """The inputs of one scoring call: an optional labelled batch, the input shape and the seed."""

    batch: tuple[torch.Tensor, torch.Tensor] | None
    input_shape: tuple[int, ...]
    seed: int = 0

    def generator(self, offset: int = 0) -> torch.Generator:
        """A private generator, so a proxy's random inputs do not depend on what ran before it."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def gaussian(self, n: int, offset: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` seeded standard-normal inputs of the network's input shape."""
        return torch.randn((n, *self.input_shape), generator=self.generator(offset), dtype=torch.float64).to(dtype)

    def require_batch(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch is None:
            raise ValueError(f"proxy {name!r} needs data: pass --dataset / a batch")
        return self.batch


_FAST_PATHS = [True]


@contextmanager
def fast_paths(enabled: bool = True) -> Iterator[None]:
    """Switch the scorer's exact shortcuts on or off (the benchmark times both paths; tests pin them equal).

    The shortcuts change no score: seeding only the CPU generator (what ``torch.manual_seed`` does for the CPU, without
    its ~0.5 ms of lazy CUDA/XPU/MTIA seed bookkeeping per call) and closed-form FLOPs for networks whose count is
    exact (:func:`nas.proxies.cost.analytic_flops`).
    """
    previous = _FAST_PATHS[0]
    _FAST_PATHS[0] = bool(enabled)
    try:
        yield
    finally:
        _FAST_PATHS[0] = previous


def fast_paths_enabled() -> bool:
    return _FAST_PATHS[0]


def seed_cpu(seed: int) -> None:
    """Seed the default CPU generator as ``torch.manual_seed(seed)`` does: proxies run on the CPU only.

    ``torch.manual_seed`` also queues a seed for every lazily initialised accelerator backend, formatting a stack
    trace each time (a third of a small network's cheap-proxy time); the CPU random stream is identical either way.
    Once CUDA is initialised, or with the fast paths off, it is ``torch.manual_seed`` itself.
    """
    if not _FAST_PATHS[0] or torch.cuda.is_initialized():
        torch.manual_seed(int(seed))
    else:
        torch.default_generator.manual_seed(int(seed))


def weight_params(model: nn.Module) -> list[nn.Parameter]:
    """The parameters per-weight proxies sum over (see the module docstring)."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def finite_or_worst(value: float | torch.Tensor) -> float:
    """``value`` as a float, or :data:`WORST_SCORE` if it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else WORST_SCORE


def proxy_mode(model: nn.Module) -> nn.Module:
    """Batch-norm on batch statistics, dropout off (see the module docstring)."""
    model.train()
    for module in model.modules():
        if isinstance(module, _DROPOUT):
            module.eval()
    return model


def forward_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` in the dtype of the model's first floating parameter."""
    for p in model.parameters():
        if p.is_floating_point():
            return x.to(p.dtype)
    return x


@contextmanager
def hooks_removed_after() -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    """Collect hook handles and remove every one on exit, even on error (memory stays flat over thousands)."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def output_ignores_input(model: nn.Module, ctx: ScoringContext, n: int = 1) -> bool:
    """Whether the network's logits do not depend on its input at all (e.g. an NB201 cell cut by ``none``).

    Decided by the input gradient, not by comparing outputs: a random projection of the logits of ``n`` random
    inputs is differentiated with respect to those inputs, in eval mode (running statistics, so batch-norm cannot
    create a dependence between samples). A network cut off from its input multiplies it by zero somewhere, so
    that gradient is exactly zero; a real network's is not, however small. Comparing outputs with a relative
    tolerance is wrong for deep networks at initialisation: with PyTorch's default initialisation and eval-mode
    batch-norm the input's contribution to a C=16, N=5 NB201 network's logits can fall below float32 resolution
    next to the classifier bias, which flagged about a sixth of the real NB201 cells as degenerate. A NaN/inf
    output also counts as degenerate. The caller's model is left unchanged (no ``.grad`` is written).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        x = forward_input(ctx.gaussian(n, offset=7), model).detach().requires_grad_(True)
        with torch.enable_grad():
            y = model(x)
            if not torch.isfinite(y).all():
                return True
            weights = torch.randn(y.shape, generator=ctx.generator(offset=8), dtype=torch.float64).to(y.dtype)
            (grad,) = torch.autograd.grad((y * weights).sum(), x, allow_unused=True)
    finally:
        for module, training in modes:
            module.training = training
    return grad is None or not bool(torch.isfinite(grad).all()) or not bool(grad.any())


def sequence_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)
