"""Always-valid sequential tests for the canary judge: a decision may be read after every interval.

Why: the judge looks after every interval at the cumulative samples. A fixed-horizon test read at every look
rejects far more often than its nominal ``alpha`` (the repeated-significance-testing problem; Kayenta's known
weakness). A *confidence sequence* is valid at every look at once: with probability at least ``1 - alpha`` it
contains the true difference at all times, so stopping whenever it excludes a value costs no extra error.

The confidence sequence used here is the one obtained by inverting the mixture sequential probability ratio test
(mSPRT) with a normal mixture over the effect:

* Robbins, H. (1970). "Statistical methods related to the law of the iterated logarithm." Ann. Math. Stat. 41 —
  the normal-mixture martingale and its boundary;
* Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017/2022). "Peeking at A/B tests: why it matters, and what to do
  about it" (KDD 2017) / "Always valid inference: continuous monitoring of A/B tests" (Operations Research 2022) —
  the two-sample mSPRT: with an estimate ``d`` of the difference whose variance is ``v`` and a mixture variance
  ``tau2``, ``Lambda = sqrt(v / (v + tau2)) * exp(tau2 (d - theta)^2 / (2 v (v + tau2)))``; rejecting
  ``theta`` when ``Lambda >= 1/alpha`` gives the interval ``|d - theta| <= r(v)`` of :func:`mixture_radius`;
* Howard, S., Ramdas, A., McAuliffe, J., Sekhon, J. (2021). "Time-uniform, nonparametric, nonasymptotic confidence
  sequences." Ann. Statist. 49 — the same normal-mixture boundary as a uniform boundary (their eq. (14)); with the
  variance estimated from the data (plug-in, as here) the guarantee is asymptotic (Waudby-Smith et al. 2023,
  "Time-uniform central limit theory and asymptotic confidence sequences").

Each claim the judge makes is one-sided ("better than", "not worse by the margin", "worse"), so each bound is the
*one-sided* normal mixture of Howard et al. (2021; their one-sided normal-mixture boundary, here with a
half-normal mixing distribution): at level ``alpha`` it lies between the two-sided radius at ``2 alpha`` and at
``alpha``, i.e. about one ``log 2`` of evidence closer than the two-sided boundary used before (measured effect in
docs/benchmarks-canary.md). The mixture variance is ``(TAU_SCALE * threshold)^2``: the boundary in standard
errors, ``sqrt((1 + v/tau2)(2 log(1/alpha) + log(1 + tau2/v)))``, is flattest near ``tau2 ~ 5-10 v``, and at the
canary's decision points ``v`` is about ``(threshold / 3)^2``.

Counts (errors, timeouts) get their own test for the "worse" claim, :func:`count_log_bayes_factor`: conditional on
the total number of events, the challenger's share of them is binomial with a null share fixed by the traffic
split, and a conjugate Beta prior gives the Bayes factor in closed form (Lindon & Malek 2022; Lindon et al. 2022).
It decides a 2-point error increase at a 5 % traffic share from a handful of events, where the normal
approximation of a rate near 0 needs hundreds.

Everything here is vectorised over leading array axes, so the simulation benchmark runs thousands of canaries with
the very code the judge uses.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

# Outcome codes of one metric at one look (int arrays, so that thousands of canaries are decided at once).
NODATA, UNDECIDED, NON_INFERIOR, INFERIOR, SUPERIOR, NOT_SUPERIOR = range(6)
OUTCOME_NAMES = ("nodata", "undecided", "non_inferior", "inferior", "superior", "not_superior")
SUPERIORITY, NON_INFERIORITY = "superiority", "non_inferiority"
# Variance floor of a continuous metric: two constant samples must not give a zero-width interval.
_VAR_FLOOR = 1e-12
# Mixture standard deviation of the normal mixture, in units of the metric's threshold (margin / minimum effect).
TAU_SCALE = 1.0
# Prior concentration of the count test's Beta mixture (Lindon & Malek's Dirichlet "k"): Beta(k theta0, k (1-theta0)).
COUNT_CONCENTRATION = 5.0


def mixture_radius(variance, alpha: float, tau2):
    """Half-width of the normal-mixture (mSPRT) confidence sequence for a difference whose estimate has variance
    ``variance``: ``sqrt(2 v (v + tau2) / tau2 * log(sqrt((v + tau2) / v) / alpha))`` (Johari et al. 2017, inverted).

    ``tau2`` is the mixture variance: the squared effect size the test is tuned for (Johari et al. recommend the
    effect one expects); any positive value keeps the guarantee, it only moves where the test is most powerful.
    """
    v = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau2 = np.asarray(tau2, dtype=float)
    return np.sqrt(2.0 * v * (v + tau2) / tau2 * np.log(np.sqrt((v + tau2) / v) / alpha))


def one_sided_log_lr(d, variance, tau2):
    """Log of the one-sided (half-normal) mixture likelihood ratio of an estimate ``d >= 0`` with variance ``v``
    against 0: ``log(2 sqrt(v / (v + tau2)) exp(tau2 d^2 / (2 v (v + tau2))) Phi(d tau / sqrt(v (v + tau2))))``.

    Howard et al. (2021), one-sided normal mixture with mixing density ``2 N(0, tau2)`` on the positive half-line
    (in the mSPRT parametrisation of Johari et al.: ``s = d / v``, ``V = 1 / v``, ``rho = 1 / tau2``).
    """
    v = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau2 = np.asarray(tau2, dtype=float)
    d = np.asarray(d, dtype=float)
    z = d * np.sqrt(tau2 / (v * (v + tau2)))
    return (np.log(2.0) + 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))
            + stats.norm.logcdf(z))


def one_sided_radius(variance, alpha: float, tau2, iterations: int = 40):
    """Distance below the estimate of the one-sided always-valid bound at level ``alpha``: the ``d`` where
    :func:`one_sided_log_lr` reaches ``log(1 / alpha)`` (bisection, vectorised).

    Bracketed by the two-sided radius at ``2 alpha`` (``Phi <= 1``) and at ``alpha`` (``Phi >= 1/2`` for
    ``d >= 0``), so the one-sided bound is never wider than the two-sided one it replaces.
    """
    lo = mixture_radius(variance, min(2.0 * alpha, 0.999), tau2)
    hi = mixture_radius(variance, alpha, tau2)
    target = np.log(1.0 / alpha)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = one_sided_log_lr(mid, variance, tau2) >= target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return hi


def count_log_bayes_factor(events_c, events_b, exposure_c, exposure_b, *, ratio: float = 1.0,
                           concentration: float | None = None):
    """Log Bayes factor (an e-process in the events) that the challenger's event rate exceeds ``ratio`` times the
    champion's, from event counts and exposures (requests).

    Lindon, M., Malek, A. (2022). "Anytime-valid inference for multinomial count data." NeurIPS 2022; Lindon, M.,
    Sanden, C., Shirikian, V. (2022). "Rapid regression detection in software deployments through
    sequential testing." KDD 2022. With Poisson event streams of rates ``l_c, l_b`` on exposures ``n_c, n_b``,
    conditional on the total ``T`` the challenger's count is ``Binomial(T, theta)`` with
    ``theta = n_c l_c / (n_c l_c + n_b l_b)``; under ``l_c = ratio * l_b`` the share is the known
    ``theta0 = ratio n_c / (ratio n_c + n_b)``. A conjugate ``Beta(k theta0, k (1 - theta0))`` prior (their
    Dirichlet centred on the null), restricted to ``theta > theta0`` for the one-sided claim "worse", gives

        BF = B(a + x, b + T - x) / B(a, b) * P_post(theta > theta0) / P_prior(theta > theta0)
             / (theta0^x (1 - theta0)^(T - x)).

    Rejecting "not worse" when ``BF >= 1 / beta`` is wrong with probability at most ``beta`` (Ville's inequality;
    for ``theta <= theta0`` the one-sided mixture is a supermartingale). The null share is taken from the
    cumulative exposures: exact while the split is constant, and the canary's few split changes are checked in
    the simulation (A/A false rollback, docs/benchmarks-canary.md).
    """
    concentration = COUNT_CONCENTRATION if concentration is None else concentration
    x = np.asarray(events_c, dtype=float)
    total = x + np.asarray(events_b, dtype=float)
    n_c = np.asarray(exposure_c, dtype=float)
    n_b = np.asarray(exposure_b, dtype=float)
    theta0 = np.clip(ratio * n_c / np.maximum(ratio * n_c + n_b, 1e-300), 1e-12, 1 - 1e-12)
    a, b = concentration * theta0, concentration * (1.0 - theta0)
    with np.errstate(divide="ignore"):
        log_bf = (special.betaln(a + x, b + total - x) - special.betaln(a, b)
                  + np.log(special.betaincc(a + x, b + total - x, theta0)) - np.log(special.betaincc(a, b, theta0))
                  - x * np.log(theta0) - (total - x) * np.log1p(-theta0))
    return np.where(total > 0, log_bf, 0.0)


def mean_and_variance(n, total, total_sq, *, binary: bool):
    """Plug-in mean and per-sample variance from sufficient statistics (count, sum, sum of squares).

    A binary metric's variance uses the smoothed rate ``(k + 1) / (n + 2)`` so that zero errors on both sides still
    leave an honest interval (without it, 0 of 10 against 0 of 10 would "prove" equality).
    """
    n = np.asarray(n, dtype=float)
    safe = np.maximum(n, 1.0)
    mean = np.asarray(total, dtype=float) / safe
    if binary:
        p = (np.asarray(total, dtype=float) + 1.0) / (n + 2.0)
        return mean, p * (1.0 - p)
    var = (np.asarray(total_sq, dtype=float) - safe * mean**2) / np.maximum(n - 1.0, 1.0)
    return mean, np.maximum(var, _VAR_FLOOR)


def difference_bounds(champion: tuple, challenger: tuple, *, sign: float, alpha: float, beta: float, tau2,
                      binary: bool):
    """Estimate and bounds of the *good-direction* difference ``g = sign * (challenger - champion)``.

    ``champion`` / ``challenger``: ``(n, sum, sum of squares)`` (arrays). ``sign`` is +1 when higher is better
    (accuracy), -1 when lower is better (errors, latency). Returns ``(g, lower, upper)``: ``lower`` from the
    ``alpha`` confidence sequence (claims of "good" use it), ``upper`` from the ``beta`` one (claims of "bad").
    """
    mean_b, var_b = mean_and_variance(*champion, binary=binary)
    mean_c, var_c = mean_and_variance(*challenger, binary=binary)
    n_b = np.maximum(np.asarray(champion[0], dtype=float), 1.0)
    n_c = np.maximum(np.asarray(challenger[0], dtype=float), 1.0)
    v = var_b / n_b + var_c / n_c
    g = sign * (mean_c - mean_b)
    return g, g - one_sided_radius(v, alpha, tau2), g + one_sided_radius(v, beta, tau2)


def log_rms_ratio_bounds(champion: tuple, challenger: tuple, *, sign: float, alpha: float, beta: float, tau2):
    """Estimate and bounds of the good-direction log RMSE ratio ``g = sign * (log RMSE_c - log RMSE_b)``.

    ``champion`` / ``challenger``: ``(n, sum of e^2, sum of e^4)`` of the per-row errors ``e``. An RMSE is the root
    of a mean, not a mean, so it is tested on its log: ``log RMSE = log(mean e^2) / 2`` and, by the delta method,
    ``Var(log mean e^2) ~ Var(e^2) / (n (mean e^2)^2)``; the difference of two independent arms then goes through
    the same normal-mixture confidence sequence as :func:`difference_bounds` (asymptotic, with the variance
    plugged in, as there). A relative margin ``m`` on the RMSE is the threshold ``log(1 + m)`` on this scale.
    """
    mean_b, var_b = mean_and_variance(*champion, binary=False)
    mean_c, var_c = mean_and_variance(*challenger, binary=False)
    n_b = np.maximum(np.asarray(champion[0], dtype=float), 1.0)
    n_c = np.maximum(np.asarray(challenger[0], dtype=float), 1.0)
    mean_b, mean_c = np.maximum(mean_b, _VAR_FLOOR), np.maximum(mean_c, _VAR_FLOOR)  # all-zero errors: no 0/0
    v = 0.25 * (var_b / (n_b * mean_b**2) + var_c / (n_c * mean_c**2))
    g = sign * 0.5 * (np.log(mean_c) - np.log(mean_b))
    return g, g - one_sided_radius(v, alpha, tau2), g + one_sided_radius(v, beta, tau2)


def count_worse(champion: tuple, challenger: tuple, *, beta: float):
    """Whether the challenger's event rate is proven higher than the champion's, from ``(n, events)`` of each
    (:func:`count_log_bayes_factor` at ``1 / beta``): the "worse" claim of a count metric (errors, timeouts)."""
    return count_log_bayes_factor(challenger[1], champion[1], challenger[0], champion[0]) >= np.log(1.0 / beta)


def decide(rule: str, lower, upper, threshold: float, estimate=None, worse=None):
    """One metric's outcome code from its bounds (see :data:`OUTCOME_NAMES`).

    * ``non_inferiority`` with margin ``threshold``: ``non_inferior`` once ``lower > -margin`` (wrongly, with
      probability <= alpha, when the challenger is worse by the margin or more); ``inferior`` once it is proven
      worse than the champion at all (``upper < 0``: wrongly, with probability <= beta, when it is not worse) *and*
      the estimate lies beyond the margin (``estimate < -margin``). Proving "worse" rather than "worse by more than
      the margin" decides a clearly broken challenger several times sooner, while a challenger proven slightly
      worse but inside the margin is never rolled back.
    * ``superiority`` with minimum effect ``threshold``: ``superior`` once ``lower > 0`` (wrongly, with
      probability <= alpha, when it is not better); ``not_superior`` once ``upper < min_effect`` (wrongly, with
      probability <= beta, when its true gain is at least ``min_effect``: the effect the test is powered for).
      A proven gain wins over a proven small gain (both can hold when ``0 < gain < min_effect``).

    ``worse`` (bool array) replaces ``upper < 0`` as the proof of "worse at all" where a better test of it exists
    (:func:`count_worse` for counts).
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    out = np.full(np.broadcast(lower, upper).shape, UNDECIDED, dtype=np.int8)
    if rule == SUPERIORITY:
        out[upper < threshold] = NOT_SUPERIOR
        out[lower > 0] = SUPERIOR
    elif rule == NON_INFERIORITY:
        est = (lower + upper) / 2 if estimate is None else np.asarray(estimate, dtype=float)
        proven_worse = upper < 0 if worse is None else np.asarray(worse, dtype=bool)
        out[proven_worse & (est < -threshold)] = INFERIOR
        out[lower > -threshold] = NON_INFERIOR
    else:
        raise ValueError(f"rule must be {SUPERIORITY!r} or {NON_INFERIORITY!r}, got {rule!r}")
    return out


def good(rule: str, codes):
    """Outcome codes that let the challenger through on this metric."""
    return np.asarray(codes) == (SUPERIOR if rule == SUPERIORITY else NON_INFERIOR)


def bad(rule: str, codes):
    """Outcome codes that reject the challenger on this metric."""
    return np.asarray(codes) == (NOT_SUPERIOR if rule == SUPERIORITY else INFERIOR)


# Verdict codes of :func:`combine` (the judge turns them into its verdict strings).
HOLD, RAMP, PROMOTE, REJECT = range(4)


def within_margin(rule: str, codes, estimate, threshold: float):
    """Codes of a guard that may take more traffic without proof: not proven bad, and for non-inferiority the
    estimate inside the margin (a challenger that *looks* worse than the margin holds its step)."""
    codes = np.asarray(codes)
    if rule == NON_INFERIORITY:
        return good(rule, codes) | ((codes != INFERIOR) & (codes != NODATA)
                                    & (np.asarray(estimate, dtype=float) > -threshold))
    return ~bad(rule, codes)


def combine(rules: list[str], critical: list[bool], codes: list, ramp_ok: list | None = None) -> np.ndarray:
    """The promotion rule over the critical metrics, vectorised over canaries.

    * ``REJECT``: a critical metric is proven bad (inferior beyond its margin, or its gain proven below the minimum
      effect);
    * ``PROMOTE``: every critical metric is proven good (non-inferior, and superior where the rule is superiority);
    * ``RAMP``: nothing is proven bad and every critical non-inferiority metric is proven non-inferior, but a
      superiority metric is still undecided (safe to take more traffic, not yet to promote);
    * ``HOLD``: otherwise (too little data or undecided).

    Metrics with rule ``report`` and non-critical metrics never decide. ``ramp_ok`` (per metric, bool arrays, e.g.
    :func:`within_margin`) relaxes the ramp condition of the non-inferiority guards from "proven non-inferior" to
    that; promotion still needs the proof.
    """
    shape = np.shape(codes[0]) if codes else ()
    reject = np.zeros(shape, dtype=bool)
    all_good = np.ones(shape, dtype=bool)
    guards_good = np.ones(shape, dtype=bool)
    ramp_ok = ramp_ok if ramp_ok is not None else [None] * len(codes)
    for rule, crit, code, relaxed in zip(rules, critical, codes, ramp_ok, strict=True):
        if not crit or rule not in (SUPERIORITY, NON_INFERIORITY):
            continue
        reject |= bad(rule, code)
        ok = good(rule, code)
        all_good &= ok
        if rule == NON_INFERIORITY:
            guards_good &= ok if relaxed is None else (ok | np.asarray(relaxed, dtype=bool))
    out = np.full(shape, HOLD, dtype=np.int8)
    out[guards_good] = RAMP
    out[all_good] = PROMOTE
    out[reject] = REJECT
    return out
