"""The rollout state machine: which phase the challenger is in, and the one rule that turns a verdict into the
next step (pass -> advance, fail beyond the limit -> roll back, the last step passed -> promote)."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.core.enums import Decision, Mode, Outcome, VerdictKind
from monitoring.judge import Verdict
from pipelines.control.config import CanaryConfig


@dataclass
class Phase:
    """One rollout step: ``mode`` shadow or split, and the challenger's share in split mode."""

    mode: Mode
    weight: float


def schedule(cfg: CanaryConfig) -> list[Phase]:
    """Shadow first (if configured), then one split phase per step weight."""
    phases = [Phase(Mode.SHADOW, 0.0)] if cfg.shadow_first else []
    return phases + [Phase(Mode.SPLIT, float(w)) for w in cfg.steps]


@dataclass
class RolloutState:
    """Where the rollout is; :meth:`advance` applies one interval's outcome (the decision rule in one place)."""

    phases: list[Phase]
    cfg: CanaryConfig
    phase_index: int = 0
    passes_in_phase: int = 0
    failures: int = 0
    intervals: int = 0
    decision: Decision | None = None
    reason: str = ""
    history: list[dict] = field(default_factory=list)

    @property
    def phase(self) -> Phase:
        return self.phases[min(self.phase_index, len(self.phases) - 1)]

    @property
    def needed_passes(self) -> int:
        phase = self.phase
        return self.cfg.shadow_intervals if phase.mode == Mode.SHADOW else self.cfg.intervals_per_step

    def outcome(self, verdict: Verdict) -> Outcome:
        """pass / fail / hold for one interval: marginal per ``on_marginal``; no data, or a promotion that would
        rest on critical metrics without data, holds."""
        last = self.phase_index == len(self.phases) - 1
        if verdict.verdict == VerdictKind.MARGINAL and getattr(verdict, "method", "") == "sequential":
            # sequential: marginal = the guards are fine, the primary's gain not yet proven — safe to ramp, not to
            # promote. The last step holds until superiority is proven or the budget ends, and so does a step
            # followed by 100 %: there the champion serves nothing, so the gain must be proven before it.
            nxt = self.phases[self.phase_index + 1] if not last else None
            result = Outcome.HOLD if last or (nxt is not None and nxt.weight >= 1.0) else Outcome.PASS
        elif verdict.verdict == VerdictKind.MARGINAL:
            result = {"hold": Outcome.HOLD, "advance": Outcome.PASS, "fail": Outcome.FAIL}[self.cfg.on_marginal]
        elif verdict.verdict == VerdictKind.NODATA:
            result = Outcome.HOLD
        else:
            result = Outcome(verdict.verdict)
        if result == Outcome.PASS and last and verdict.critical_nodata:
            result = Outcome.HOLD
        return result

    def advance(self, verdict: Verdict) -> Outcome:
        """Apply one interval's verdict. Reasons name the phase that was *judged*, never the one it advanced to."""
        self.intervals += 1
        judged = self.phase
        outcome = self.outcome(verdict)
        if outcome == Outcome.FAIL:
            self.failures += 1
            if self.failures > self.cfg.failure_limit:
                self.decision = Decision.ROLLED_BACK
                self.reason = (f"judge failed {self.failures} interval(s) (limit {self.cfg.failure_limit}) at "
                               f"{_where(judged)}: " + "; ".join(verdict.reasons))
        elif outcome == Outcome.PASS:
            self.passes_in_phase += 1
            if self.passes_in_phase >= self.needed_passes:
                self.phase_index += 1
                self.passes_in_phase = 0
                if self.phase_index >= len(self.phases):
                    self.decision = Decision.PROMOTED
                    self.reason = (f"passed every step ({', '.join(f'{w:.0%}' for w in self.cfg.steps)}) with "
                                   f"score {verdict.score:.0f}/100 (failed intervals: {self.failures})")
        if self.decision is None and self.intervals >= self.cfg.interval_budget:
            self.decision = Decision.ROLLED_BACK
            self.reason = (f"no passing decision within {self.intervals} intervals (budget spent at "
                           f"{_where(judged)}, last verdict {verdict.verdict} -> {outcome}): "
                           + ("; ".join(verdict.reasons) or "not proven better in time"))
        return outcome

    @property
    def highest_weight(self) -> float:
        """The largest challenger share any judged interval ran at (0 for shadow only)."""
        return max((float(s.get("weight", 0.0)) for s in self.history if s.get("mode") == Mode.SPLIT), default=0.0)


def _where(phase: Phase) -> str:
    return "shadow" if phase.mode == Mode.SHADOW else f"{phase.weight:.0%} traffic"


