"""Hand-designed networks: the champion a first refresh compares its search result against.

A NAS result is only worth deploying if it beats what an engineer would have written without search, so the very
first refresh registers one of these as ``champion``: a small LeNet-style CNN for images, a two-layer MLP otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def build_baseline(input_shape: Sequence[int], num_classes: int) -> tuple[nn.Module, str]:
    """A sensible fixed network for the input, and a short description of it for the registry."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        channels = shape[0]
        net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2 if min(shape[1:]) >= 16 else 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )
        return net, "baseline-cnn(conv16-conv32-gap)"
    width = 1
    for d in shape:
        width *= d
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(width, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
    return net, "baseline-mlp(128-128)"
