"""An ensemble of small MLPs trained together as one batched network (BANANAS uses five feed-forward nets).

Members differ by initialisation and by a bootstrap of the training set, which is what makes their disagreement a
usable uncertainty. Batching the members into one ``bmm`` keeps a refit cheap enough to run after every result.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from nas.predictors.base import PREDICTORS, Predictor, Standardizer


@PREDICTORS.register(
    "mlp", paper="White et al., AAAI 2021 (BANANAS: ensemble of feed-forward predictors)",
    kwargs=("members", "hidden", "layers", "steps", "lr", "weight_decay", "seed"),
)
class MLPEnsemble(Predictor):
    name = "mlp"

    def __init__(
        self, members: int = 5, hidden: int = 32, layers: int = 2, steps: int = 200, lr: float = 0.01,
        weight_decay: float = 1e-4, seed: int = 0,
    ) -> None:
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members to report a spread, got {members}")
        self.members, self.hidden, self.layers = members, hidden, layers
        self.steps, self.lr, self.weight_decay, self.seed = steps, lr, weight_decay, seed

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.members, -1, -1)
        for i, (w, b) in enumerate(self.params):
            h = torch.baddbmm(b, h, w)
            if i < len(self.params) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.scaler = Standardizer().fit(x)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        gen = torch.Generator().manual_seed(self.seed)
        sizes = [x.shape[1]] + [self.hidden] * self.layers + [1]
        self.params = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / np.sqrt(fan_in)
            w = (torch.rand(self.members, fan_in, fan_out, generator=gen) * 2 - 1) * bound
            b = torch.zeros(self.members, 1, fan_out)
            self.params.append((w.requires_grad_(), b.requires_grad_()))
        xt = torch.from_numpy(self.scaler.transform(x))
        yt = torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32))
        n = len(x)
        # bootstrap weights per member: how often each row was drawn
        draws = torch.randint(0, n, (self.members, n), generator=gen)
        weight = torch.zeros(self.members, n).scatter_add_(1, draws, torch.ones(self.members, n))
        opt = torch.optim.Adam([p for pair in self.params for p in pair], lr=self.lr,
                               weight_decay=self.weight_decay, foreach=True)
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            loss = (weight * (self._forward(xt) - yt) ** 2).sum() / weight.sum()
            loss.backward()
            opt.step()
        return self

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self._forward(torch.from_numpy(self.scaler.transform(np.asarray(x, dtype=np.float64))))
        return out.numpy().astype(np.float64) * self.y_std + self.y_mean
