"""Small real models for gateway tests, and deliberately faulty ones (importable by module path for unpickling).

The faulty wrappers keep a real trained model inside and break it in one way each: raise on a fixed share of
calls, add latency, or return garbage. They are logged to MLflow like any other version.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn


def digits_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.3, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def train_small(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 60, lr: float = 0.05,
                seed: int = 0) -> nn.Module:
    """A few full-batch Adam steps: enough for a real, clearly-better-than-chance classifier."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def linear_classifier(n_features: int = 64, n_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, n_classes))


def mlp_classifier(n_features: int = 64, n_classes: int = 10, hidden: int = 32, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


class FlakyModel(nn.Module):
    """Raises on every ``period``-th call (period 5: 20% of requests), otherwise answers like ``inner``."""

    def __init__(self, inner: nn.Module, period: int = 5) -> None:
        super().__init__()
        self.inner = inner
        self.period = period
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % self.period == 0:
            raise RuntimeError("injected challenger failure")
        return self.inner(x)


class SlowModel(nn.Module):
    """Answers like ``inner`` after sleeping ``delay_s`` (a challenger slower than its timeout)."""

    def __init__(self, inner: nn.Module, delay_s: float = 0.05) -> None:
        super().__init__()
        self.inner = inner
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return self.inner(x)


class GarbageModel(nn.Module):
    """Returns garbage in turn: NaN logits, the wrong number of classes, the wrong number of rows, a non-tensor."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor):
        self.calls += 1
        out = self.inner(x)
        kind = self.calls % 4
        if kind == 0:
            return torch.full_like(out, float("nan"))
        if kind == 1:
            return out[:, :3]
        if kind == 2:
            return torch.cat([out, out])
        return out.detach().numpy().tolist()
