"""PNG plots of weight-sharing runs: supernet training curves and DARTS architecture-weight evolution.

matplotlib is imported inside each function (Agg backend), so importing :mod:`nas.supernet` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.spaces.nb201 import EDGES, OPS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_supernet_history(history: Sequence[Mapping[str, float]], path: str | Path,
                          title: str = "supernet training") -> Path:
    """Training loss and accuracy per epoch (and the probe sub-networks' validation accuracy when recorded)."""
    if not history:
        raise ValueError("plot_supernet_history needs at least one history row")
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [row["train_loss"] for row in history], marker="o", ms=3)
    left.set_xlabel("epoch")
    left.set_ylabel("train loss (sampled paths)")
    right.plot(epochs, [row["train_accuracy"] for row in history], marker="o", ms=3, label="train (sampled paths)")
    if all("probe_val_accuracy" in row for row in history):
        right.plot(epochs, [row["probe_val_accuracy"] for row in history], marker="s", ms=3,
                   label="val (probe sub-networks, BN recalibrated)")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_darts_alphas(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "DARTS") -> Path:
    """One panel per edge: the softmax weight of every operation across epochs."""
    if not history:
        raise ValueError("plot_darts_alphas needs at least one history row")
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True, sharey=True)
    for ax, (s, t) in zip(axes.flat, EDGES, strict=True):
        for op in OPS:
            ax.plot(epochs, [row[f"alpha.{s}_{t}.{op}"] for row in history], label=op)
        ax.set_title(f"edge {s}->{t}", fontsize=9)
        ax.set_xlabel("epoch")
    axes[0, 0].set_ylabel("softmax(alpha)")
    axes[1, 0].set_ylabel("softmax(alpha)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title}: final argmax {history[-1].get('arch', '')}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
