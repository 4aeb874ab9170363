"""The gateway's core, free of HTTP: route a validated batch to a variant, fall back, mirror, log, count.

Guarantees: a challenger that raises, stalls past ``challenger_timeout_s`` or returns garbage never reaches the
caller (the champion answers, the failure is counted and logged); a champion that stalls past
``champion_timeout_s`` is answered for by the challenger, or the caller gets a 504 (never a hang); champion and
challenger calls take one execution path (a thread pool of :data:`MODEL_POOL_THREADS` each, a timeout, the model's
compute time measured on the worker thread), so a latency difference between them is the models'; shadow calls
(the challenger in shadow mode, and every ``shadow_aliases`` model, e.g. a tournament's candidates) run after the
response is ready, never raise into the caller's request and are bounded (``shadow_max_in_flight``,
``challenger_timeout_s``); alias changes swap whole :class:`~serving.backend.ServedModel` objects, so requests in
flight finish on the model they started with.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from monitoring.core.enums import Mode, Phase
from monitoring.log_journal import LogJournal
from monitoring.metrics import GatewayMetrics, drop_series
from monitoring.prediction_log import (
    FeedbackResult,
    LabelItem,
    PredictionLogWriter,
    apply_feedback_batch,
    create_log_engine,
    erase_old_inputs,
    find_request_rows,
    prediction_rows,
)
from monitoring.rollout_store import Rollout, RolloutStore
from serving.backend import InvalidModelOutput, ModelBackend, ServedModel
from serving.config import GatewaySettings
from serving.manual_rollout import is_manual, steer
from serving.reload_signal import ReloadSignal
from serving.request_ids import new_request_id
from serving.rollout_follower import RolloutFollower
from serving.routing import CHALLENGER, CHAMPION, Split, choose_variant, split_of

log = logging.getLogger("nasops.gateway")

RETENTION_PERIOD_S = 3600.0
MODEL_POOL_THREADS = 4
"""Threads of the champion's pool and of the challenger's (the same number: one execution path for both variants;
a pool each, so a stalled challenger cannot take the champion's threads)."""


class NotReady(RuntimeError):
    """No champion is loaded: the gateway cannot answer (503, a server-side condition)."""


class ChampionFailed(RuntimeError):
    """The champion failed on a valid request and no challenger could answer for it (500, a model fault)."""


class ChampionTimedOut(ChampionFailed):
    """The champion did not answer within ``champion_timeout_s`` and no challenger could answer for it (504)."""


class LogUnavailable(RuntimeError):
    """Synchronous log mode: the answer could not be made durable, so it is not given (503)."""


@dataclass
class Answer:
    request_id: str
    variant: str
    model_version: str
    predictions: list
    probabilities: np.ndarray

    def to_json(self) -> dict:
        return {
            "request_id": self.request_id,
            "variant": self.variant,
            "model_version": self.model_version,
            "predictions": self.predictions,
            "probabilities": np.round(self.probabilities.astype(np.float64), 6).tolist(),
        }


class Gateway:
    """Champion and challenger by alias, routing state, metrics and the prediction log of one worker process."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None,
                 backend: ModelBackend | None = None) -> None:
        self.settings = settings
        self._model = settings.model_name  # the ``model`` label of every metric this gateway writes
        self.metrics = metrics or GatewayMetrics.create()
        self.backend = backend if backend is not None else registry_backend(settings)
        self.models: dict[str, ServedModel | None] = {CHAMPION: None, CHALLENGER: None}
        self.alias_absent: dict[str, bool] = {CHAMPION: True, CHALLENGER: True}
        self.load_errors: dict[str, str] = {}
        # Extra aliases served only in shadow (keyed by alias name, which is also their variant label).
        self.shadow_models: dict[str, ServedModel | None] = {a: None for a in settings.shadow_aliases}
        self.reload_signal = ReloadSignal(settings.control_file)
        self._seen_generation = self.reload_signal.generation
        self._default_split = Split(Mode(settings.mode), settings.challenger_weight)
        self._split = self._default_split  # set only from the rollout record (see _on_rollout)
        # Every model call runs on a pool thread named after its variant (model-champion_0, ...), never on the
        # event loop: the champion used to run small batches inline, so under CPU contention the challenger alone
        # paid the thread hop and the GIL wait (an A/A canary was rolled back on p99 47.9 vs 8.7 ms).
        self._pools = {v: ThreadPoolExecutor(max_workers=MODEL_POOL_THREADS, thread_name_prefix=f"model-{v}")
                       for v in (CHAMPION, CHALLENGER)}
        for alias in settings.shadow_aliases:
            # One thread per shadow alias: a slow or stuck candidate cannot starve the others (their latencies
            # stay comparable), and the thread count stays k.
            self._pools[alias] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-shadow-{alias}")
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._retention: threading.Thread | None = None
        self._shadow_tasks: set[asyncio.Task] = set()
        self._shadow_by_request: dict[str, list[asyncio.Task]] = {}
        ensure_sqlite_dir(settings.prediction_log_url)  # the one place the gateway writes: create it here
        self.log_engine = create_log_engine(settings.prediction_log_url, durable=settings.log_mode == "sync")
        journal = LogJournal(settings.journal_directory(), settings.journal_bound())  # rows kept while the DB is away
        self.log_writer = PredictionLogWriter(self.log_engine, interval_s=settings.log_interval_s, journal=journal,
                                              observe=self._observe_log)
        self._worker = str(os.getpid())
        self._started_at = time.time()
        store = RolloutStore(self.log_engine if settings.follow_rollouts else private_store_engine())
        self.rollouts = RolloutFollower(store, settings.model_name, settings.rollout_poll_s, self._on_rollout,
                                        target=settings.rollout_target)
        self.metrics.challenger_weight.labels(self._model).set(self.effective_weight())

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load both aliases (failures are recorded, not raised: /readyz tells) and start the alias poller."""
        self.backend.start()
        self.reload()
        self.rollouts.start()
        self._warn_if_startup_split_overridden()
        if self.settings.poll_interval_s > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="alias-poller", daemon=True)
            self._poller.start()
        if self.settings.input_retention_days is not None:
            self._retention = threading.Thread(target=self._retention_loop, name="input-retention", daemon=True)
            self._retention.start()

    def _warn_if_startup_split_overridden(self) -> None:
        """The rollout record is the one routing source, so an active rollout (an operator's manual split that
        outlived the gateway that set it included) wins over this worker's start-up split: say so once, with the
        way out, rather than serve another split than ``--weight`` asked for in silence."""
        current = self.rollouts.active
        if current is None or self._split == self._default_split:
            return
        kind = "manual split" if current.manual else "rollout"
        log.warning("start-up split %s at %.0f%% is not applied: %s %s (%s at %.0f%%) steers routing; end it with "
                    "`nasops canary abort`%s", self._default_split.mode, 100 * self._default_split.weight, kind,
                    current.rollout_id, current.mode, 100 * current.weight,
                    " or POST /admin/weight 0" if current.manual else "")

    def _observe_log(self, event: str, n: int) -> None:
        """The log writer's events as metrics (failed commits, rows journaled or lost, journal depth)."""
        m, model = self.metrics, self.settings.model_name
        if event == "depth":
            m.log_spill_depth.labels(model).set(n)
        else:
            {"failure": m.log_write_failures, "spilled": m.log_spilled, "dropped": m.log_dropped}[event].labels(
                model).inc(n)

    def erase_expired_inputs(self) -> int:
        """Erase logged inputs older than ``input_retention_days`` (run at start and then hourly)."""
        cutoff = time.time() - self.settings.input_retention_days * 86400.0
        return erase_old_inputs(self.log_engine, cutoff)

    def _retention_loop(self) -> None:
        while True:
            try:
                self.erase_expired_inputs()
            except Exception:  # a busy or unreachable log: try again at the next round
                log.exception("erasing expired inputs failed")
            if self._stop.wait(RETENTION_PERIOD_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self.rollouts.stop()
        for thread in (self._poller, self._retention):
            if thread is not None:
                thread.join(timeout=5)
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self.log_writer.close()
        self.log_engine.dispose()
        if self.rollouts.store.engine is not self.log_engine:
            self.rollouts.store.engine.dispose()  # the private store of a gateway that does not follow rollouts

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.reload()
            except Exception:  # the registry may be briefly unreachable: keep serving what is loaded
                log.exception("alias poll failed")

    # -- models ------------------------------------------------------------------------------------------
    def reload(self) -> dict[str, str | None]:
        """Follow the aliases: load any version that changed and swap it in; returns alias -> version now served.

        A failed load keeps the old model serving (recorded in ``load_errors``). A removed challenger alias stops
        challenger traffic; a removed champion alias keeps the last champion serving (never drop all traffic).
        """
        with self._reload_lock:
            for alias_key, alias in ((CHAMPION, self.settings.champion_alias),
                                     (CHALLENGER, self.settings.challenger_alias)):
                current = self.models[alias_key]
                outcome, loaded = self._fetch(alias_key, alias, alias_key, current)
                if outcome == "unresolved":
                    continue
                self.alias_absent[alias_key] = outcome == "absent"
                if outcome == "absent" and alias_key == CHALLENGER and current is not None:
                    self._swap(alias_key, None)
                elif outcome == "loaded":
                    self._swap(alias_key, loaded)
            for alias in self.settings.shadow_aliases:
                self._reload_shadow(alias)
            self.metrics.challenger_weight.labels(self._model).set(self.effective_weight())
            return self.versions()

    def _reload_shadow(self, alias: str) -> None:
        """Follow one shadow alias; a failure is recorded and the old model (if any) keeps shadowing."""
        key = f"shadow:{alias}"
        outcome, loaded = self._fetch(key, alias, alias, self.shadow_models.get(alias))
        if outcome == "absent":
            self.load_errors[key] = f"alias {alias!r} does not exist"
            self._swap_shadow(alias, None)
        elif outcome == "loaded":
            self._swap_shadow(alias, loaded)

    def _fetch(
        self, key: str, alias: str, load_as: str, current: ServedModel | None
    ) -> tuple[str, ServedModel | None]:
        """Resolve ``alias`` and load its version if it changed, recording failures under ``key``.

        Returns ``(outcome, model)``: outcome is ``unresolved`` (registry error), ``absent`` (no such alias),
        ``same`` (already serving it), ``failed`` (load error; keep the old model) or ``loaded`` (swap it in).
        """
        try:
            version = self.backend.resolve(alias)
        except Exception as exc:
            self.load_errors[key] = f"cannot resolve alias {alias!r}: {exc}"
            return "unresolved", None
        if version is None:
            return "absent", None
        if current is not None and current.version == version:
            return "same", None
        try:
            loaded = self.backend.load(alias, version, load_as)
        except Exception as exc:
            self.load_errors[key] = f"version {version}: {type(exc).__name__}: {exc}"
            log.warning("loading %s version %s failed: %s", alias, version, exc)
            return "failed", None
        self.load_errors.pop(key, None)
        if getattr(loaded, "flavour_note", None):  # served, but not in the flavour asked for (serving.flavours)
            self.load_errors[f"flavour:{key}"] = loaded.flavour_note
        else:
            self.load_errors.pop(f"flavour:{key}", None)
        return "loaded", loaded

    def _swap_shadow(self, alias: str, loaded: ServedModel | None) -> None:
        old = self.shadow_models.get(alias)
        if old is not None:
            drop_series(self.metrics.model_info, self._model, alias, old.version)
        self.shadow_models[alias] = loaded
        if loaded is not None:
            self.metrics.model_info.labels(self._model, alias, loaded.version).set(1)
            log.info("shadowing %s version %s", alias, loaded.version)

    def _swap(self, alias_key: str, loaded: ServedModel | None) -> None:
        old = self.models[alias_key]
        if old is not None:
            drop_series(self.metrics.model_info, self._model, alias_key, old.version)
        self.models[alias_key] = loaded  # one reference assignment: requests in flight keep their model
        if loaded is not None:
            self.metrics.model_info.labels(self._model, alias_key, loaded.version).set(1)
            log.info("serving %s version %s", alias_key, loaded.version)

    def versions(self) -> dict[str, str | None]:
        """Variant -> version served (shadow aliases included, under their alias names)."""
        return {k: (m.version if m else None) for k, m in {**self.models, **self.shadow_models}.items()}

    def ready(self) -> tuple[bool, str]:
        champion, challenger = self.models[CHAMPION], self.models[CHALLENGER]
        if champion is None:
            return False, self.load_errors.get(CHAMPION, f"alias {self.settings.champion_alias!r} not loaded")
        if challenger is None and not self.alias_absent[CHALLENGER]:
            return False, self.load_errors.get(CHALLENGER, f"alias {self.settings.challenger_alias!r} not loaded")
        return True, "ok"

    def contract(self) -> ServedModel:
        """The model whose signature requests are validated against (the champion's)."""
        champion = self.models[CHAMPION]
        if champion is None:
            raise NotReady(self.ready()[1])
        return champion

    # -- routing state -----------------------------------------------------------------------------------
    def routing(self) -> Split:
        """The split to apply now: what the newest rollout record says (a controller's or an operator's manual
        rollout), kept by :meth:`_on_rollout`; also picks up a reload another worker asked for."""
        generation = self.reload_signal.poll()
        if generation > self._seen_generation:
            self._seen_generation = generation
            self._reload_in_background("admin-reload")
        return self._split

    def _reload_in_background(self, name: str) -> None:
        threading.Thread(target=self._safe_reload, name=name, daemon=True).start()

    def _on_rollout(self, previous: Rollout | None, current: Rollout) -> None:
        """A new generation of the rollout record: apply its split; while a controller's rollout is active, serve
        its versions; at its end (weight 0), once the controller moved the aliases after a promotion, reload."""
        manual = is_manual(current)  # an operator's split: it follows the aliases, it does not pin versions
        if current.active and not manual:
            served = (self.versions().get(CHAMPION), self.versions().get(CHALLENGER))
            if served != (current.champion_version, current.challenger_version):
                self._reload_in_background("rollout-reload")  # the aliases are the record's versions
        elif current.terminal and current.applied and not manual and (
                previous is not None or current.updated_at >= self._started_at):
            self._reload_in_background("rollout-reload")
        self._split = split_of(current, self._default_split, self._started_at, previous is not None)
        self._publish_rollout(current, manual)
        log.info("rollout %s generation %d%s: %s, %s %.0f%%", current.rollout_id, current.generation,
                 " (manual)" if manual else "", current.phase, current.mode, 100 * current.weight)

    def _publish_rollout(self, current: Rollout, manual: bool) -> None:
        """The record as gauges: the split applied, the last interval's drift, and the controller's clock (what the
        dead-controller and stuck-rollout alerts read; the controller itself has nothing to scrape)."""
        m, model = self.metrics, self._model
        m.challenger_weight.labels(model).set(self.effective_weight())
        drift = (current.last_verdict or {}).get("drift") or {}  # the last judged interval's (routing read)
        for variant in (CHAMPION, CHALLENGER):
            if isinstance(drift.get(variant), int | float):
                m.drift_share.labels(model, variant).set(float(drift[variant]))
        judging = not manual and current.phase in (Phase.SHADOW, Phase.SPLIT)
        m.rollout_active.labels(model).set(1 if judging else 0)
        m.rollout_last_judged.labels(model).set(current.last_judged_at)
        m.rollout_step_started.labels(model).set(current.step_started_at)
        interval = (current.config or {}).get("interval_s")
        if isinstance(interval, int | float):
            m.rollout_interval.labels(model).set(float(interval))

    def _safe_reload(self) -> None:
        try:
            self.reload()
        except Exception:
            log.exception("reload failed")

    def effective_weight(self) -> float:
        return self._split.effective_weight

    def set_weight(self, weight: float) -> Split:
        """The operator's challenger share, as a manual rollout (refused while a controller's rollout is active)."""
        return self._steer(lambda split: Split(split.mode, float(weight)))

    def set_mode(self, mode: str) -> Split:
        """The operator's mode, as a manual rollout (refused while a controller's rollout is active)."""
        return self._steer(lambda split: Split(Mode(mode), split.weight))

    def _steer(self, change) -> Split:
        """Write the change into the rollout record and apply it here at once (the other workers and replicas
        follow within ``rollout_poll_s``)."""
        served = self.versions()
        versions = (served.get(CHAMPION) or "none", served.get(CHALLENGER) or "none")
        record = steer(self.rollouts.store, self.settings.model_name, change, self._split, versions,
                       gateways=self.settings.rollout_target)
        if record is not None:
            self.rollouts.observe(record)
        return self._split

    def request_reload(self) -> dict[str, str | None]:
        """Reload here now and tell the other workers (through the reload signal file) to do the same."""
        self._seen_generation = self.reload_signal.bump()
        return self.reload()

    def state(self) -> dict:
        s = self.routing()
        ready, why = self.ready()
        return {
            "model_name": self.settings.model_name,
            "pid": os.getpid(),
            "mode": s.mode,
            "weight": s.weight,
            "ready": ready,
            "ready_detail": why,
            "models": {k: (m.describe() if m else None) for k, m in self.models.items()},
            "shadow_models": {k: (m.describe() if m else None) for k, m in self.shadow_models.items()},
            "aliases": {CHAMPION: self.settings.champion_alias, CHALLENGER: self.settings.challenger_alias},
            "load_errors": dict(self.load_errors),
            "shadow_in_flight": len(self._shadow_tasks),
            "prediction_log_errors": self.log_writer.errors,
            "prediction_log_journal_rows": self.log_writer.spilled_rows,  # waiting for the database to return
            "rollout": self.rollouts.describe(),
        }

    # -- prediction --------------------------------------------------------------------------------------
    async def _call(self, model: ServedModel, x: np.ndarray, timeout: float) -> tuple[np.ndarray, float]:
        """``model.predict_proba(x)`` on the model's pool, bounded by ``timeout``: (probabilities, compute seconds).

        The one execution path of every variant (champion, challenger, shadow): the same pool kind, the same
        timeout protection, the compute time measured on the worker thread (what the judge compares)."""
        future = asyncio.get_running_loop().run_in_executor(self._pools[model.alias], _timed_predict, model, x)
        return await asyncio.wait_for(future, timeout)

    def _timeout(self, variant: str) -> float:
        return self.settings.champion_timeout_s if variant == CHAMPION else self.settings.challenger_timeout_s

    def _record(self, model: ServedModel, variant: str, status: str, request_id: str, x: np.ndarray,
                probs: np.ndarray | None, labels: list | None, seconds: float, shadow: bool = False,
                compute_s: float | None = None) -> dict:
        """Count one model call and return the prediction log entry for it (written by :meth:`_persist`).

        ``seconds``: the variant's end-to-end time (queue, thread hop, model, post-processing); ``compute_s``: the
        model call alone, measured on the worker thread (None when the call did not finish)."""
        m = self.metrics
        m.requests.labels(self._model, variant, model.version, status).inc()
        m.duration.labels(self._model, variant).observe(seconds)
        if compute_s is not None:
            m.compute.labels(self._model, variant).observe(compute_s)
        if labels is not None and not model.regression:  # a regression's values: one series each would explode
            for label, count in collections.Counter(labels).items():
                m.predictions.labels(self._model, variant, str(label)).inc(count)
        # A failed call keeps its raw input whatever log_inputs says: it is what a model fault is diagnosed from.
        inputs_mode = "raw" if probs is None else self.settings.log_inputs
        return dict(request_id=request_id, variant=variant, model_version=model.version, inputs=x,
                    predictions_=labels, probabilities=None if model.regression else probs,
                    latency_ms=seconds * 1000.0, status=status,
                    compute_ms=None if compute_s is None else compute_s * 1000.0,
                    shadow=shadow, ts=time.time(), inputs_mode=inputs_mode, model_name=self.settings.model_name,
                    instance=self.settings.instance_id)

    async def _persist(self, entries: list[dict]) -> None:
        """Log entries: queued (batched mode) or committed before the caller is answered (sync mode)."""
        if self.settings.log_mode == "batched":
            for entry in entries:
                self.log_writer.append_later(prediction_rows, **entry)
            return
        rows = [row for entry in entries for row in prediction_rows(**entry)]
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.log_writer.write, rows)
        except Exception as exc:
            log.exception("synchronous prediction log write failed")
            raise LogUnavailable("the prediction log cannot be written") from exc

    async def _attempt(self, model: ServedModel, variant: str, status: str, x: np.ndarray, request_id: str,
                       entries: list[dict]) -> tuple[Answer | None, str | None]:
        """One model call: ``(answer, None)``, or ``(None, reason)`` with the fault counted and logged."""
        t0 = time.perf_counter()
        try:
            probs, compute_s = await self._call(model, x, self._timeout(variant))
            labels = model.labels(probs)
        except Exception as exc:
            reason = ("timeout" if isinstance(exc, TimeoutError) else
                      "invalid_output" if isinstance(exc, InvalidModelOutput) else "error")
            if reason == "error":
                log.warning("%s version %s failed on a valid request: %s: %s", variant, model.version,
                            type(exc).__name__, exc)
            self.metrics.model_faults.labels(self._model, variant, reason).inc()
            row_status = "timeout" if reason == "timeout" else "error"
            entries.append(self._record(model, variant, row_status, request_id, x, None, None,
                                        time.perf_counter() - t0))
            return None, reason
        entries.append(self._record(model, variant, status, request_id, x, probs, labels, time.perf_counter() - t0,
                                    compute_s=compute_s))
        return Answer(request_id, variant, model.version, labels, probs[:, :0] if model.regression else probs), None

    async def predict(self, x: np.ndarray, request_id: str | None, key: str | None) -> Answer:
        """Answer one batch as a unit (one variant for all its rows); a failing variant is answered by the other.

        ``request_id`` is the id to log under (None: a random one is generated)."""
        split = self.routing()
        champion, challenger = self.models[CHAMPION], self.models[CHALLENGER]
        if champion is None:
            raise NotReady(self.ready()[1])
        request_id = request_id or new_request_id()
        weight = split.weight if (challenger is not None and split.mode == Mode.SPLIT) else 0.0
        variant = choose_variant(weight, key)
        applied = Mode.SHADOW if split.mode == Mode.SHADOW else f"{weight:g}"
        self.metrics.routed.labels(self._model, self._worker, applied).inc()
        entries: list[dict] = []
        answer, champion_status = None, "ok"
        if variant == CHALLENGER:
            answer, failure = await self._attempt(challenger, CHALLENGER, "ok", x, request_id, entries)
            if answer is None:
                self.metrics.fallback.labels(self._model, failure).inc()
                champion_status = "fallback"
        if answer is None:
            answer, failure = await self._attempt(champion, CHAMPION, champion_status, x, request_id, entries)
        if answer is None and challenger is not None and variant != CHALLENGER:
            # A champion fault on a valid request (e.g. non-finite logits): the challenger answers for it.
            answer, _ = await self._attempt(challenger, CHALLENGER, "fallback", x, request_id, entries)
        await self._persist(entries)
        if answer is None:
            fault = ChampionTimedOut if failure == "timeout" else ChampionFailed
            raise fault(f"champion version {champion.version} failed ({failure}) and no challenger could answer "
                        "for it")
        if split.mode == Mode.SHADOW and challenger is not None:
            self._mirror(challenger, CHALLENGER, x, request_id)
        for alias, model in list(self.shadow_models.items()):
            if model is not None:
                self._mirror(model, alias, x, request_id)
        return answer

    def _mirror(self, model: ServedModel, variant: str, x: np.ndarray, request_id: str) -> None:
        """Start one shadow call in the background (dropped, and counted, beyond ``shadow_max_in_flight``)."""
        if len(self._shadow_tasks) >= self.settings.shadow_max_in_flight:
            self.metrics.shadow.labels(self._model, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._shadow(model, variant, x, request_id))
        self._shadow_tasks.add(task)
        self._shadow_by_request.setdefault(request_id, []).append(task)
        task.add_done_callback(lambda t: self._shadow_done(t, request_id))

    def _shadow_done(self, task: asyncio.Task, request_id: str) -> None:
        self._shadow_tasks.discard(task)
        tasks = self._shadow_by_request.get(request_id)
        if tasks is not None:
            with contextlib.suppress(ValueError):
                tasks.remove(task)
            if not tasks:
                self._shadow_by_request.pop(request_id, None)

    async def shadow_settled(self, request_ids: list[str]) -> None:
        """Wait (bounded) until the mirrored calls of these requests are logged, so their labels join them too."""
        pending = [t for rid in request_ids for t in self._shadow_by_request.get(rid, ())]
        if pending:
            await asyncio.wait(pending, timeout=self.settings.feedback_wait_s)

    async def _shadow(self, model: ServedModel, variant: str, x: np.ndarray, request_id: str) -> None:
        t0 = time.perf_counter()
        probs = labels = None
        compute_s: float | None = None
        timeout = self._timeout(variant)
        try:
            probs, compute_s = await self._call(model, x, timeout)
            if time.perf_counter() - t0 > timeout:
                # answered, but after its deadline: the event loop was busy when both the timer and the result were
                # due, and wait_for handed over the result. A mirrored call serves nobody: count it as what it was.
                raise TimeoutError
            labels = model.labels(probs)
            status = "ok"
        except TimeoutError:
            probs, compute_s, status = None, None, "timeout"
        except InvalidModelOutput:
            status = "invalid_output"
        except Exception:
            status = "error"
        self.metrics.shadow.labels(self._model, status).inc()
        row_status = status if status in ("ok", "timeout") else "error"
        try:
            # A shadow alias's latency is its compute time: the wait in its one-thread queue is an artefact of
            # mirroring (no caller waits for it), and would make k candidates' latencies incomparable.
            seconds = compute_s if compute_s is not None and variant != CHALLENGER else time.perf_counter() - t0
            entry = self._record(model, variant, row_status, request_id, x, probs, labels, seconds, shadow=True,
                                 compute_s=compute_s)
            self.log_writer.append_later(prediction_rows, **entry)
        except Exception:  # a shadow must never surface an error anywhere (it runs after the answer is sent)
            log.exception("recording the shadow call of %s failed", variant)

    # -- feedback ----------------------------------------------------------------------------------------
    def feedback(self, items: list[LabelItem]) -> FeedbackResult:
        """Join labels to the logged rows of every item, all or nothing, and count them once.

        Bounded work: one flush of this worker's log, one batched lookup, and (several workers only) one shared
        wait of at most ``feedback_wait_s`` for rows another worker has not committed yet, however many ids are
        unknown. Raises KeyError (unknown ids), ValueError (label count) or LabelConflict (already labelled).
        """
        self.log_writer.flush(timeout=self.settings.feedback_wait_s)
        ids = [item.request_id for item in items]
        rows = find_request_rows(self.log_engine, ids)
        if self.settings.control_file is not None:  # other workers may hold rows still queued in their writer
            deadline = time.monotonic() + self.settings.feedback_wait_s
            missing = [i for i in ids if i not in rows]
            while missing and time.monotonic() < deadline:
                time.sleep(0.05)
                rows.update(find_request_rows(self.log_engine, missing))
                missing = [i for i in missing if i not in rows]
        result = apply_feedback_batch(self.log_engine, items, rows_by_id=rows)
        for (variant, correct), count in result.counts.items():
            self.metrics.feedback.labels(self._model, variant, "true" if correct else "false").inc(count)
        for (variant, correct), count in result.retracted.items():
            self.metrics.feedback_retracted.labels(self._model, variant, "true" if correct else "false").inc(count)
        return result


def _timed_predict(model: ServedModel, x: np.ndarray) -> tuple[np.ndarray, float]:
    """``model.predict_proba(x)`` and the seconds the call itself took (measured on the worker thread)."""
    t0 = time.perf_counter()
    probs = model.predict_proba(x)
    return probs, time.perf_counter() - t0


def registry_backend(settings: GatewaySettings) -> ModelBackend:
    """The production backend (the MLflow registry); imported here so a stand-in never loads PyTorch or MLflow."""
    from serving.registry_backend import MlflowRegistryBackend

    return MlflowRegistryBackend(settings.tracking_uri, settings.model_name, flavour=settings.flavour,
                                 torch_threads=settings.torch_threads)


def private_store_engine() -> sa.engine.Engine:
    """A rollout store only this process sees (``follow_rollouts=False``): its admin changes stay here."""
    from sqlalchemy.pool import StaticPool

    return sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite file URL (the state directory, for the default prediction log)."""
    if not url.startswith("sqlite"):
        return
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
