"""Train one network on a :class:`~nas.data.TaskData` — the only place in ``nas`` that runs optimisers.

Used at low fidelity by the search (a few epochs, a fraction of the data) and at full fidelity by the retraining
stage (early stopping on validation accuracy, best weights restored).

A regression task (:attr:`nas.data.TaskData.is_regression`) trains its one output with MSE (or L1) on the
standardised target and is scored by ``val_neg_rmse`` (minus the validation RMSE in the target's own units), so
"higher is better" holds for every task and the search, early stopping and selection need no second direction.

The defaults (SGD with Nesterov momentum, per-epoch cosine annealing, no label smoothing) are the image path's and
stay as they were. :func:`tabular_config` gives the settings the tabular papers train with: AdamW (Loshchilov &
Hutter, ICLR 2019) with decoupled weight decay, a linear warm-up then cosine decay per step (``schedule=
"warmup_cosine"``), label smoothing 0.1 for classifiers (RealMLP, Holzmüller et al. 2024) and a batch of 128.
Two hooks serve the ``tabular`` space's networks (:mod:`nas.tabular_layers`): a model with ``fit_inputs(x)`` has its
data statistics (robust scaling, PLE bin edges) fitted on the training rows before the first epoch, and a model
with ``ensemble_size > 1`` and ``member_outputs(x)`` (a TabM / BatchEnsemble head) is trained as its members, the
mean of their losses (Gorishniy et al., ICLR 2025).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from nas.data import TaskData
from nas.tabular_layers import combine_members, fit_inputs

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "warmup_cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``patience=None`` trains every epoch; otherwise stop after that many epochs without gain."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    optimizer: str = "sgd"
    patience: int | None = None
    data_fraction: float = 1.0
    seed: int = 0
    label_smoothing: float = 0.0
    regression_loss: str = "mse"
    schedule: str = "cosine"
    """``cosine``: annealed to 0 over the epochs, stepped per epoch (the image path's); ``warmup_cosine``: linear
    warm-up over ``warmup_fraction`` of the steps, then cosine to 0, stepped per batch; ``constant``."""
    warmup_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.regression_loss not in ("mse", "mae"):
            raise ValueError(f"regression_loss must be 'mse' or 'mae', got {self.regression_loss!r}")


def tabular_config(*, regression: bool = False, **overrides) -> TrainConfig:
    """The training settings for the ``tabular`` space: AdamW (lr 2e-3, weight decay 1e-4 decoupled), batch 128,
    linear warm-up (5% of the steps) then cosine decay, label smoothing 0.1 for a classifier (none for a
    regression, where it does not apply); ``overrides`` replace any of them (epochs, patience, seed, ...)."""
    values = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 128, "schedule": "warmup_cosine",
              "warmup_fraction": 0.05, "label_smoothing": 0.0 if regression else 0.1, **overrides}
    return TrainConfig(**values)


_OPTIMISER_KEYS = ("lr", "batch_size", "optimizer", "weight_decay", "momentum", "schedule", "label_smoothing")


def space_training_config(space: str, *, regression: bool = False, **values) -> TrainConfig:
    """The trainer's settings for an architecture of ``space``: the ``tabular`` space trains with its papers'
    defaults (:func:`tabular_config`: AdamW, warm-up then cosine, label smoothing), keeping the run's budget
    (epochs, patience, data fraction, seed, ...) from ``values``; every other space with ``values`` as given."""
    if space == "tabular":
        return tabular_config(regression=regression, **{k: v for k, v in values.items() if k not in _OPTIMISER_KEYS})
    return TrainConfig(**values)


@dataclass
class TrainResult:
    """What a training run produced: per-epoch history, the best validation accuracy and the time spent."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_accuracy: float = 0.0
    val_loss: float = float("inf")
    train_seconds: float = 0.0
    epochs_run: int = 0
    stopped_early: bool = False
    val_score: float = float("-inf")
    """The best (or last) value of the task's score key: accuracy, or minus the RMSE of a regression."""
    val_rmse: float = float("nan")
    val_mae: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)`` in eval mode."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    correct = 0
    total_loss = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = model(xb)
            total_loss += float(loss_fn(logits, yb))
            correct += int((logits.argmax(1) == yb).sum())
    n = max(len(x), 1)
    return correct / n, total_loss / n


def evaluate_regression(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target_std: float,
                        batch_size: int = 512) -> dict[str, float]:
    """RMSE and MAE in the target's units (``y`` standardised, ``target_std`` its scale) and the standardised MSE."""
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size]).reshape(-1)
            errors.append(out.double() - y[start : start + batch_size].double())
    err = torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64)
    if not bool(torch.isfinite(err).all()):
        return {"rmse": float("inf"), "mae": float("inf"), "loss": float("inf")}
    mse = float((err**2).mean()) if len(err) else 0.0
    return {"rmse": float(np.sqrt(mse)) * target_std, "mae": float(err.abs().mean()) * target_std if len(err) else 0.0,
            "loss": mse}


def _regression_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    loss = nn.MSELoss() if name == "mse" else nn.L1Loss()
    return lambda out, y: loss(out.reshape(-1), y)


def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities, ``(n, num_classes)``."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(torch.softmax(model(x[start : start + batch_size]), dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def train(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    stop_when: Callable[[list[dict[str, float]]], bool] | None = None,
    scorer: Callable[[np.ndarray, np.ndarray], float] | None = None,
    class_weights: Sequence[float] | None = None,
) -> TrainResult:
    """Train ``model`` in place; with ``patience`` the best-validation weights are restored at the end.

    ``stop_when(history)`` is asked after every epoch (e.g. a :class:`nas.learning_curves.LearningCurveStopper`);
    ``True`` ends the training there with ``stopped_early`` set.

    ``scorer(y_true, output) -> float`` (higher is better) is the metric the caller ranks by (balanced accuracy,
    minus the log loss, ...): given, every epoch records it as ``val_metric`` from the validation split (class
    probabilities, or predictions in the target's units) and early stopping and :attr:`TrainResult.val_score`
    follow it instead of :attr:`TaskData.score_key`. ``class_weights`` (one per class) weight the cross-entropy
    (an imbalanced target, under a metric that rewards finding the rare class).
    """
    torch.manual_seed(config.seed)
    task = data.subset(config.data_fraction, seed=config.seed)
    x, y = task.tensors("train")
    x_val, y_val = task.tensors("val")
    fit_inputs(model, x)  # data statistics (robust scaling, PLE bins) from the training rows, once
    opt = _optimizer(model, config)
    sched, per_step = _scheduler(opt, config, steps_per_epoch=math.ceil(len(x) / config.batch_size))
    members = getattr(model, "member_outputs", None) if getattr(model, "ensemble_size", 1) > 1 else None
    regression = task.is_regression
    target_std = task.target_scale[1]
    weight = None if class_weights is None or regression else torch.tensor(list(class_weights), dtype=torch.float32)
    loss_fn = (_regression_loss(config.regression_loss) if regression
               else nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing))
    score_key = task.score_key if scorer is None else "val_metric"
    gen = torch.Generator().manual_seed(config.seed)

    result = TrainResult()
    best_state = None
    bad_epochs = 0
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        seen, running_loss, correct = 0, 0.0, 0
        for i in range(0, len(x), config.batch_size):
            idx = perm[i : i + config.batch_size]
            if len(idx) < 2 and seen:  # a batch of one breaks batch-norm; drop the remainder
                continue
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            if members is None:
                logits = model(xb)
                loss = loss_fn(logits, yb)
            else:  # an ensemble's members learn as k models: the mean of their losses
                out = members(xb)
                loss = loss_fn(out.reshape(-1, out.shape[-1]), yb.repeat_interleave(out.shape[1]))
                logits = combine_members(out.detach(), regression)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss={float(loss)}); lower the lr")
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if per_step:
                sched.step()
            seen += len(idx)
            running_loss += loss.item() * len(idx)
            if not regression:
                correct += int((logits.argmax(1) == yb).sum())
        if not per_step:
            sched.step()
        if regression:
            reg = evaluate_regression(model, x_val, y_val, target_std)
            row = {"epoch": epoch, "train_loss": running_loss / max(seen, 1), "val_loss": reg["loss"],
                   "val_rmse": reg["rmse"], "val_mae": reg["mae"], "val_neg_rmse": -reg["rmse"],
                   "lr": sched.get_last_lr()[0]}
        else:
            val_acc, val_loss = evaluate(model, x_val, y_val)
            row = {
                "epoch": epoch,
                "train_loss": running_loss / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": sched.get_last_lr()[0],
            }
        if scorer is not None:
            row["val_metric"] = float(scorer(task.y_val, validation_output(model, task, x_val)))
        result.history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        result.epochs_run = epoch
        curve_stop = stop_when is not None and epoch < config.epochs and bool(stop_when(result.history))
        if row[score_key] > result.val_score or best_state is None:
            _keep(result, row, score_key)
            result.best_epoch = epoch
            bad_epochs = 0
            if config.patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if config.patience is not None and bad_epochs >= config.patience:
                result.stopped_early = True
                break
        if curve_stop:
            result.stopped_early = True
            break
    if config.patience is None:
        # Without early stopping the reported figure is the last epoch's (what the weights actually give).
        _keep(result, result.history[-1], score_key)
        result.best_epoch = result.epochs_run
    elif best_state is not None:
        model.load_state_dict(best_state)
    result.train_seconds = time.perf_counter() - start
    return result


def validation_output(model: nn.Module, data: TaskData, x: torch.Tensor) -> np.ndarray:
    """What a scorer reads: class probabilities ``(n, k)``, or a regression's predictions in the target's units."""
    if not data.is_regression:
        return predict_proba(model, x)
    model.eval()
    mean, std = data.target_scale
    with torch.no_grad():
        out = torch.cat([model(x[i : i + 512]).reshape(-1) for i in range(0, len(x), 512)]) if len(x) else None
    return np.zeros(0) if out is None else out.double().numpy() * std + mean


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=True)
    if config.optimizer == "adamw":  # decoupled weight decay (Loshchilov & Hutter, 2019)
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
               ) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The learning-rate schedule and whether it is stepped per batch (else per epoch)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs), False
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0), True
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = int(config.warmup_fraction * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), True


def _keep(result: TrainResult, row: dict[str, float], score_key: str) -> None:
    """Record an epoch's validation figures as the result's."""
    result.val_score, result.val_loss = float(row[score_key]), float(row["val_loss"])
    if "val_accuracy" in row:
        result.val_accuracy = float(row["val_accuracy"])
    else:
        result.val_accuracy = float("nan")
        result.val_rmse, result.val_mae = float(row["val_rmse"]), float(row["val_mae"])


def measure_latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 30) -> float:
    """Median single-call CPU inference latency in milliseconds (after a warm-up), for hardware-aware search."""
    model.eval()
    x = torch.zeros(batch_size, *input_shape)
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)
