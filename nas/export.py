"""The network as it is served: raw flat features in, logits out.

Training works on standardised ``(n, *input_shape)`` tensors (see :class:`nas.data.TaskData`); a client of the
gateway sends the raw feature vector it has. :class:`FlatInputClassifier` carries the training split's
standardisation and the reshape with the weights, so the logged model and the training data can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class FlatInputClassifier(nn.Module):
    """``(n, F)`` raw float features -> standardise -> reshape to ``(n, *input_shape)`` -> ``net`` -> logits."""

    def __init__(self, net: nn.Module, input_shape: Sequence[int], mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.input_shape = tuple(int(d) for d in input_shape)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    @property
    def num_features(self) -> int:
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.to(torch.float32) - self.mean) / self.std
        return self.net(x.reshape(x.shape[0], *self.input_shape))


class FlatInputRegressor(FlatInputClassifier):
    """A regression network as served: like :class:`FlatInputClassifier`, then the training split's target scaling
    inverted, so the model answers ``(n, 1)`` values in the target's own units (the network learnt the standardised
    target)."""

    def __init__(self, net: nn.Module, input_shape: Sequence[int], mean: np.ndarray, std: np.ndarray,
                 target_mean: float, target_std: float) -> None:
        super().__init__(net, input_shape, mean, std)
        self.register_buffer("target_mean", torch.tensor(float(target_mean), dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(float(target_std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).reshape(x.shape[0], 1) * self.target_std + self.target_mean


def served_module(net: nn.Module, data) -> FlatInputClassifier:
    """The served form of ``net`` trained on ``data`` (a :class:`nas.data.TaskData`): logits, or a regression's
    values in the target's units."""
    if data.is_regression:
        mean, std = data.target_scale
        return FlatInputRegressor(net, data.input_shape, data.feature_mean, data.feature_std, mean, std)
    return FlatInputClassifier(net, data.input_shape, data.feature_mean, data.feature_std)
