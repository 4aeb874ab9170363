"""PNG figures logged next to a model: what a reviewer looks at before trusting the numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix

from monitoring.core.tasks import TaskKind, get_task


def learning_curves(history: Sequence[dict], path: Path, title: str = "",
                    task: TaskKind | str | None = None) -> Path:
    """Loss per epoch, train against validation, beside the task kind's curve metrics (accuracy, a regression's
    validation RMSE)."""
    kind = get_task(task)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel(kind.loss_axis_label)
    ax_loss.legend()
    for key in kind.curve_metrics:
        ax_metric.plot(epochs, [h[key] for h in history], label="train" if key.startswith("train_") else "validation")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(kind.metric_axis_label)
    ax_metric.legend()
    fig.suptitle(title or "learning curves", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence, path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix on the test split."""
    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(2 + 0.5 * len(classes), 12)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(labels, [str(c) for c in classes], rotation=90 if len(classes) > 12 else 0)
    ax.set_yticks(labels, [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in labels:
            for j in labels:
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (test)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str = "") -> Path:
    """A regression's test predictions against the true values (the diagonal is perfect), in the target's units."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(y_true, y_pred, s=10, alpha=0.6)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], "r--", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title or "test predictions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
