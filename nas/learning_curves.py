"""Learning-curve extrapolation: predict a training's final accuracy from its first epochs and stop hopeless ones.

After Domhan, Springenberg & Hutter (IJCAI 2015), "Speeding up automatic hyperparameter optimization of deep neural
networks by extrapolation of learning curves": the partial curve ``y(1..n)`` is fitted by several parametric
families of saturating curves (their Table 1: pow3, pow4, log-power, exp3, MMF, Janoschek, Weibull, ilog2), the
families are combined into one predictive distribution of ``y(T)``, and a training is stopped when
``P(y(T) > y_best) < δ`` (they use δ = 0.05). Simplification, said plainly: the paper samples the combination
weights and parameters by MCMC; here each family is a least-squares fit (``scipy.optimize.curve_fit``), the families
are weighted by their BIC (Schwarz, 1978), and the predictive variance is the weighted within-family residual
variance, inflated with the extrapolation horizon, plus the between-family spread, with a floor. Like the paper, a
fit whose final value lies below the last observed one (a curve that would fall) is discarded.

:class:`LearningCurveStopper` is the trainer's per-epoch hook (``nas.trainer.train(..., stop_when=stopper)``);
after a stop, :attr:`LearningCurveStopper.last_prediction` is the predicted final accuracy, the score a search can
rank the stopped architecture by.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import norm


@dataclass(frozen=True)
class CurveFamily:
    """A parametric curve ``f(x, *theta)`` with a starting point and bounds for the least-squares fit."""

    fn: Callable[..., np.ndarray]
    p0: tuple[float, ...]
    bounds: tuple[tuple[float, ...], tuple[float, ...]]

    @property
    def n_params(self) -> int:
        return len(self.p0)


def _pow3(x, c, a, alpha):
    return c - a * x ** (-alpha)


def _pow4(x, c, a, b, alpha):
    return c - (a * x + b) ** (-alpha)


def _log_power(x, a, b, c):
    return a / (1.0 + (x / np.exp(b)) ** (-c))


def _exp3(x, c, a, b):
    return c - np.exp(-a * x + b)


def _mmf(x, alpha, beta, kappa, delta):
    return alpha - (alpha - beta) / (1.0 + (kappa * x) ** delta)


def _janoschek(x, alpha, beta, kappa, delta):
    return alpha - (alpha - beta) * np.exp(-kappa * x**delta)


def _weibull(x, alpha, beta, kappa, delta):
    return alpha - (alpha - beta) * np.exp(-((kappa * x) ** delta))


def _ilog2(x, c, a):
    return c - a / np.log(x + 1.0)


#: The families of Domhan et al. (2015), Table 1 (vapor pressure, log-log-linear and Hill omitted: they fit
#: accuracy curves no better than these and are the least stable to fit on a handful of points).
FAMILIES: dict[str, CurveFamily] = {
    "pow3": CurveFamily(_pow3, (0.9, 0.5, 0.5), ((0, 0, 0), (1.2, 10, 10))),
    "pow4": CurveFamily(_pow4, (0.9, 1.0, 1.0, 0.5), ((0, 0, 1e-3, 0), (1.2, 50, 50, 10))),
    "log_power": CurveFamily(_log_power, (0.9, 0.5, 1.0), ((0, -10, 0), (1.2, 10, 10))),
    "exp3": CurveFamily(_exp3, (0.9, 0.5, 0.0), ((0, 0, -10), (1.2, 10, 10))),
    "mmf": CurveFamily(_mmf, (0.9, 0.1, 0.5, 1.0), ((0, 0, 1e-3, 0.1), (1.2, 1.0, 10, 10))),
    "janoschek": CurveFamily(_janoschek, (0.9, 0.1, 0.5, 1.0), ((0, 0, 0, 0.1), (1.2, 1.0, 10, 5))),
    "weibull": CurveFamily(_weibull, (0.9, 0.1, 0.5, 1.0), ((0, 0, 1e-3, 0.1), (1.2, 1.0, 10, 5))),
    "ilog2": CurveFamily(_ilog2, (0.9, 0.5), ((0, 0), (1.2, 10))),
}


@dataclass(frozen=True)
class CurvePrediction:
    """The predictive distribution of the final value: Normal(``mean``, ``std``) and each family's point guess."""

    mean: float
    std: float
    epochs_seen: int
    total_epochs: int
    families: Mapping[str, float] = field(default_factory=dict)

    def prob_above(self, bar: float) -> float:
        """``P(y(T) > bar)``."""
        return float(norm.sf(bar, loc=self.mean, scale=self.std))


def predict_final(values: Sequence[float], total_epochs: int, *, families: Sequence[str] | None = None,
                  min_std: float = 0.01) -> CurvePrediction | None:
    """The predicted value at epoch ``total_epochs`` of a curve observed at epochs ``1..len(values)``.

    ``None`` when no family can be fitted (fewer points than any family has parameters, or every fit failed).
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    names = tuple(FAMILIES) if families is None else tuple(families)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown curve families {unknown}; valid: {', '.join(FAMILIES)}")
    return _predict(tuple(float(v) for v in values), int(total_epochs), names, float(min_std))


@lru_cache(maxsize=65536)
def _predict(values: tuple[float, ...], total: int, names: tuple[str, ...], min_std: float) -> CurvePrediction | None:
    """Cached: a search asks once per epoch with a growing prefix; the benchmark replays the same prefixes."""
    y = np.asarray(values)
    n = len(y)
    if n == 0:
        return None
    if n >= total:
        return CurvePrediction(float(y[-1]), min_std, n, total, {})
    x = np.arange(1, n + 1, dtype=float)
    fits: dict[str, tuple[float, float, float]] = {}  # name -> (final, residual variance, BIC)
    for name in names:
        fam = FAMILIES[name]
        k = fam.n_params
        if n < k:  # under-determined: the fit would pass through every point and say nothing
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
                theta, cov = curve_fit(fam.fn, x, y, p0=fam.p0, bounds=fam.bounds, maxfev=2000)
                resid = y - fam.fn(x, *theta)
                final = float(fam.fn(np.array([float(total)]), *theta)[0])
                spread = _parameter_spread(fam, theta, cov, total, float(y[-1]))
        except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        rss = float(np.sum(resid**2))
        if not (math.isfinite(final) and math.isfinite(rss)) or final < y[-1] - 0.02 or final > 1.2:
            continue  # a falling or exploding extrapolation (Domhan et al. rule such curves out by their prior)
        var = rss / max(n - k, 1) + spread**2
        bic = n * math.log(max(rss / n, 1e-12)) + k * math.log(n)
        fits[name] = (min(final, 1.0), var, bic)
    if not fits:
        return None
    bics = np.array([f[2] for f in fits.values()])
    weights = np.exp(-0.5 * (bics - bics.min()))
    weights /= weights.sum()
    finals = np.array([f[0] for f in fits.values()])
    within = np.array([f[1] for f in fits.values()])
    mean = float(weights @ finals)
    std = math.sqrt(float(weights @ (within + (finals - mean) ** 2)))
    return CurvePrediction(mean, max(std, min_std), n, total, {k: v[0] for k, v in fits.items()})


def _parameter_spread(fam: CurveFamily, theta: np.ndarray, cov: np.ndarray, total: int, last: float,
                      samples: int = 128) -> float:
    """Std of ``f(T)`` over parameters drawn from the fit's Laplace approximation ``N(theta, cov)`` (clipped to the
    bounds, outcomes clipped to ``[last, 1]``): the stand-in for the paper's MCMC posterior over parameters.
    An unidentified fit (infinite covariance) gets the widest spread, so it never justifies a stop."""
    if not np.all(np.isfinite(cov)):
        return 0.5
    rng = np.random.default_rng(0)
    draws = rng.multivariate_normal(theta, cov, size=samples, method="eigh", check_valid="ignore")
    draws = np.clip(draws, fam.bounds[0], fam.bounds[1])
    finals = np.array([fam.fn(np.array([float(total)]), *d)[0] for d in draws])
    finals = np.clip(finals[np.isfinite(finals)], last, 1.0)
    return float(finals.std()) if len(finals) > 1 else 0.5


class LearningCurveStopper:
    """Say stop when the curve so far makes beating ``best_so_far`` unlikely: ``P(y(T) > best) < threshold``.

    ``best_so_far=None`` (the first training of a search) never stops. Call it with the trainer's history (a list
    of per-epoch rows holding ``metric``); it never stops before ``min_epochs`` epochs or at the last epoch.
    """

    def __init__(self, best_so_far: float | None, total_epochs: int, *, threshold: float = 0.05, min_epochs: int = 3,
                 metric: str = "val_accuracy", min_std: float = 0.01, families: Sequence[str] | None = None) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if total_epochs < 1 or min_epochs < 1:
            raise ValueError(f"total_epochs and min_epochs must be >= 1, got {total_epochs}, {min_epochs}")
        self.best_so_far = best_so_far
        self.total_epochs = int(total_epochs)
        self.threshold = float(threshold)
        self.min_epochs = int(min_epochs)
        self.metric = metric
        self.min_std = float(min_std)
        self.families = None if families is None else tuple(families)
        self.last_prediction: CurvePrediction | None = None
        self.stopped_at: int | None = None

    def __call__(self, history: Sequence[Mapping[str, float]]) -> bool:
        n = len(history)
        if self.best_so_far is None or n < self.min_epochs or n >= self.total_epochs:
            return False
        values = [float(row[self.metric]) for row in history]
        self.last_prediction = predict_final(values, self.total_epochs, families=self.families, min_std=self.min_std)
        if self.last_prediction is None:
            return False
        if self.last_prediction.prob_above(self.best_so_far) < self.threshold:
            self.stopped_at = n
            return True
        return False
