"""Reinforcement-learning search: a REINFORCE controller over the space's categorical decisions.

Zoph & Le (ICLR 2017, "Neural architecture search with reinforcement learning") sample architectures from a
controller policy and update it with REINFORCE (Williams 1992), ``∇J = E[(R - b) ∇ log π(a)]``, where the baseline
``b`` is an exponential moving average of past rewards. Their controller is an RNN emitting one decision after
another; over a fixed list of categorical decisions (:meth:`SearchSpace.categorical`) we use the factorised softmax
policy that the NAS-Bench-201 REINFORCE baseline uses (Dong & Yang 2020): one vector of logits per decision.

The reward is the searched metric or, with ``latency_target_ms``, MnasNet's soft latency objective
(Tan et al., CVPR 2019): ``R = acc * (lat / target)^w`` with ``w = -0.07``. The advantage ``R - b`` is divided by
the running standard deviation of rewards (a scale-free step size: accuracies differ by hundredths), and the
logits follow Adam (Kingma & Ba 2015). Proposals never repeat (the seam's contract): a sampled architecture that
was already proposed, or a combination the space does not hold, is drawn again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.spaces.base import Architecture, InvalidArchitectureError, SearchSpace
from nas.strategies.base import STRATEGIES, Observation, Strategy


def categorical_view(space: SearchSpace, strategy: str) -> list[tuple[str, tuple[str, ...]]]:
    """The space's decisions, or a ``ValueError`` naming the strategies that do not need them."""
    try:
        decisions = space.categorical()
    except NotImplementedError:
        raise ValueError(f"strategy {strategy!r} needs a space with categorical decisions; space {space.name!r} has "
                         "none (use random, evolution, local or predictor)") from None
    if not decisions:
        raise ValueError(f"space {space.name!r} has no decision with more than one option")
    return decisions


@STRATEGIES.register(
    "rl", paper="Zoph & Le, ICLR 2017 (REINFORCE controller); Tan et al., CVPR 2019 (MnasNet latency reward)",
    kwargs=("lr", "baseline_decay", "latency_target_ms", "latency_weight", "entropy_weight"),
)
class ReinforceController(Strategy):
    """REINFORCE over a factorised softmax policy, moving-average baseline, optional MnasNet latency reward."""

    name = "rl"

    def __init__(self, space: SearchSpace, *, lr: float = 0.1, baseline_decay: float = 0.9,
                 latency_target_ms: float | None = None, latency_weight: float = -0.07,
                 entropy_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        if latency_target_ms is not None and not latency_target_ms > 0:
            raise ValueError(f"latency_target_ms must be > 0 (or None), got {latency_target_ms}")
        self.decisions = categorical_view(space, self.name)
        self.lr, self.decay = lr, baseline_decay
        self.latency_target, self.latency_weight = latency_target_ms, latency_weight
        self.entropy_weight = entropy_weight
        self.logits = [np.zeros(len(options)) for _, options in self.decisions]
        self._m = [np.zeros_like(x) for x in self.logits]
        self._v = [np.zeros_like(x) for x in self.logits]
        self._steps = 0
        self.baseline: float | None = None
        self._reward_var = 0.0
        self.rewards: list[float] = []

    # -- policy ---------------------------------------------------------------------------------------
    def probabilities(self) -> list[np.ndarray]:
        out = []
        for z in self.logits:
            e = np.exp(z - z.max())
            out.append(e / e.sum())
        return out

    def _sample(self, m: int) -> np.ndarray:
        """``m`` decision vectors drawn from the policy, ``(m, decisions)``."""
        return np.stack([self.rng.choice(len(p), size=m, p=p) for p in self.probabilities()], axis=1)

    def propose(self, n: int) -> list[Architecture]:
        out: list[Architecture] = []
        keys: set[str] = set()
        for _ in range(10):  # up to 10 rounds of 5n draws; the base class fills any shortfall uniformly
            for index in self._sample(5 * n):
                try:
                    arch = self.space.from_categorical(index)
                except InvalidArchitectureError:
                    continue  # a combination the space does not hold (a benchmark table's gap)
                key = self.key(arch)
                if not self.is_seen(arch) and key not in keys:
                    keys.add(key)
                    out.append(arch)
                    if len(out) >= n:
                        return out
        return out

    # -- learning -------------------------------------------------------------------------------------
    def reward(self, obs: Observation) -> float | None:
        """The searched metric, MnasNet-weighted by latency when a target is set; ``None`` for no signal."""
        if not np.isfinite(obs.score):
            return min(self.rewards) if self.rewards else None  # infeasible: as bad as the worst seen
        value = float(obs.score)
        if self.latency_target is not None:
            latency = obs.result.metrics.get("latency_ms")
            if latency is not None and latency > 0:
                value *= (latency / self.latency_target) ** self.latency_weight
        return value

    def observe(self, obs: Observation) -> None:
        r = self.reward(obs)
        if r is None:
            return
        self.rewards.append(r)
        if self.baseline is None:  # the first reward only sets the baseline (no advantage to learn from)
            self.baseline = r
            return
        advantage = r - self.baseline
        self._reward_var = self.decay * self._reward_var + (1 - self.decay) * advantage**2
        self.baseline = self.decay * self.baseline + (1 - self.decay) * r
        self._update(self.space.categorical_index(obs.arch), advantage / (np.sqrt(self._reward_var) + 1e-8))

    def _update(self, action: Sequence[int], advantage: float) -> None:
        """One Adam ascent step on ``advantage * ∇ log π(action)`` (+ entropy bonus)."""
        self._steps += 1
        b1, b2 = 0.9, 0.999
        for k, (z, p) in enumerate(zip(self.logits, self.probabilities(), strict=True)):
            grad = -p.copy()
            grad[action[k]] += 1.0  # ∇_z log softmax(z)[a] = onehot(a) - p
            grad *= advantage
            if self.entropy_weight:
                logp = np.log(p + 1e-12)
                grad += self.entropy_weight * -p * (logp - (p * logp).sum())  # ∇_z H(softmax(z))
            self._m[k] = b1 * self._m[k] + (1 - b1) * grad
            self._v[k] = b2 * self._v[k] + (1 - b2) * grad**2
            m_hat = self._m[k] / (1 - b1**self._steps)
            v_hat = self._v[k] / (1 - b2**self._steps)
            z += self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
