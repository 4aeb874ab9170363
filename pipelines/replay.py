"""Drive production-like traffic at a gateway: rows at a steady rate, optional drift, true labels sent back.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to earlier ones (at most
``max_in_flight`` outstanding), so a slow variant shows up as latency, not as a lower offered rate. Each answered
request's true labels go to ``/feedback`` when ``y`` is given, which is what makes online accuracy measurable.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np

from pipelines.errors import UserError

DRIFT_KINDS = ("noise", "shift", "scale")


class DriftSpecError(UserError, ValueError):
    """A drift specification the user can fix (unknown kind, not a number)."""


def parse_drift(spec: str | None) -> list[tuple[str, float]]:
    """``"noise=0.3,shift=0.5"`` -> ``[("noise", 0.3), ("shift", 0.5)]`` (applied in that order)."""
    if spec is None or not spec.strip():
        return []
    steps = []
    for part in spec.split(","):
        kind, sep, value = part.strip().partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in DRIFT_KINDS:
            raise DriftSpecError(
                f"bad drift spec {spec!r}: {part.strip()!r} is not KIND=NUMBER with KIND one of "
                f"{', '.join(DRIFT_KINDS)} (e.g. 'noise=0.3', 'shift=0.5', 'scale=1.5', combinable with commas)"
            )
        try:
            number = float(value)
        except ValueError:
            raise DriftSpecError(
                f"bad drift spec {spec!r}: {value.strip()!r} after '{kind}=' is not a number"
            ) from None
        if not math.isfinite(number) or (kind == "noise" and number < 0):
            need = "a finite number >= 0" if kind == "noise" else "a finite number"
            raise DriftSpecError(f"bad drift spec {spec!r}: {kind} needs {need}, got {value.strip()!r}")
        steps.append((kind, number))
    return steps


def apply_drift(x: np.ndarray, spec: str | None, seed: int = 0, reference_std: np.ndarray | None = None) -> np.ndarray:
    """Shifted copy of ``x``: ``noise=a`` adds N(0, (a·std)²), ``shift=b`` adds b·std, ``scale=c`` multiplies by c
    (std per feature, from ``reference_std`` or ``x`` itself; constant features stay constant under noise/shift).

    A table model's raw rows (an object array: text, booleans, ``None`` for a missing cell) drift in their number
    columns only (:func:`_drift_raw_rows`)."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return _drift_raw_rows(x, spec, seed)
    steps = parse_drift(spec)
    x = np.array(x, dtype=np.float32, copy=True)
    if not steps:
        return x
    std = np.asarray(reference_std if reference_std is not None else x.std(axis=0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for kind, value in steps:
        if kind == "noise":
            x = x + rng.normal(size=x.shape).astype(np.float32) * (value * std)
        elif kind == "shift":
            x = x + value * std
        else:
            x = x * value
    return x.astype(np.float32)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _drift_raw_rows(rows: np.ndarray, spec: str | None, seed: int) -> np.ndarray:
    """Raw rows with the drift applied to every column whose present values are all numbers; text, booleans and
    missing cells are left as they are, and an integer column stays integer (rounded), as its schema type wants."""
    steps = parse_drift(spec)
    out = np.array(rows, dtype=object, copy=True)
    if not steps:
        return out
    rng = np.random.default_rng(seed)
    moved = 0
    for j in range(out.shape[1]):
        present = [i for i, v in enumerate(out[:, j]) if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if not present or not all(_is_number(out[i, j]) for i in present):
            continue
        integer = all(isinstance(out[i, j], (int, np.integer)) for i in present)
        values = np.array([out[i, j] for i in present], dtype=np.float64)
        drifted = apply_drift(values[:, None], spec, seed=int(rng.integers(2**31)))[:, 0].astype(np.float64)
        for i, v in zip(present, drifted, strict=True):
            out[i, j] = int(np.rint(v)) if integer else float(v)
        moved += 1
    if not moved:
        raise DriftSpecError(f"drift {spec!r}: these rows have no number column to drift (only text, booleans or "
                             "missing cells); leave --drift out for this table")
    return out


@dataclass
class ReplaySummary:
    """What a replay did and saw."""

    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    throughput_rps: float = 0.0
    duration_s: float = 0.0
    rows: int = 0
    variants: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    feedback_sent: int = 0
    feedback_errors: int = 0
    target_rate: float = 0.0
    drift: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    arr = np.asarray(latencies) * 1000.0
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max()), "mean": float(arr.mean())}


def _label_of(value, classes):
    if classes is None:  # class indices as they are, or a regression's target values (floats)
        return float(value) if isinstance(value, float | np.floating) else int(value)
    label = classes[int(value)]
    return label.item() if hasattr(label, "item") else label


def replay(
    url: str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    rate: float,
    duration: float | None = None,
    batch_size: int = 1,
    drift: str | None = None,
    feedback: bool = True,
    seed: int = 0,
    classes: list | None = None,
    request_key_fn: Callable[[int], str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_in_flight: int = 32,
    timeout_s: float = 10.0,
    sticky_header: str = "X-Request-Key",
    feedback_token: str | None = None,
    label_delay_s: float = 0.0,
    fresh_connections: bool = False,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Send ``x`` (rows, in a seeded order) to ``url``/predict at ``rate`` requests per second.

    ``duration=None`` sends each row once; otherwise it cycles through the rows for ``duration`` seconds.
    ``y`` holds class indices (a regression: the target values, sent as numbers); with ``feedback`` their
    labels (``classes[y]`` when ``classes`` is given) are posted
    to ``/feedback``. ``request_key_fn(i)`` gives request ``i`` its sticky routing key. ``progress(done, total)`` is
    called after every request. ``feedback_token`` is the gateway's feedback bearer token (``/feedback`` refuses
    labels without it; each refusal counts in ``feedback_errors``). ``label_delay_s`` > 0 sends each answer's
    labels that many seconds later, batched, as a labelling system would (the replay waits for the last ones).
    ``fresh_connections`` opens a connection per request (``Connection: close``), so that several gateway worker
    processes behind one port all get traffic, as they do from many real callers. Setting ``stop`` ends the replay
    early (requests in flight and delayed labels due by then are still sent).
    """
    x = _checked(x, y, rate=rate, duration=duration, batch_size=batch_size, label_delay_s=label_delay_s)
    parse_drift(drift)  # fail fast on a bad spec
    x = apply_drift(x, drift, seed=seed)
    order = np.random.default_rng(seed).permutation(len(x))
    n_batches = math.ceil(len(x) / batch_size)
    total = n_batches if duration is None else max(1, round(rate * duration))
    plan = _Plan(url=url.rstrip("/"), x=x, y=y, order=order, total=total, rate=rate, batch_size=batch_size,
                 feedback=feedback, classes=classes, request_key_fn=request_key_fn, progress=progress,
                 max_in_flight=max_in_flight, timeout_s=timeout_s, sticky_header=sticky_header, drift=drift,
                 single_pass=duration is None, feedback_token=feedback_token, label_delay_s=label_delay_s,
                 fresh_connections=fresh_connections, stop=stop)
    return asyncio.run(_Replayer(plan).run())


def _checked(x: np.ndarray, y: np.ndarray | None, *, rate: float, duration: float | None, batch_size: int,
             label_delay_s: float) -> np.ndarray:
    """The rows as they are sent, after every argument mistake is refused as a UserError."""
    if label_delay_s < 0 or not math.isfinite(label_delay_s):
        raise UserError(f"label_delay_s must be >= 0 seconds, got {label_delay_s}")
    if rate <= 0 or not math.isfinite(rate):
        raise UserError(f"rate must be a positive number of requests per second, got {rate}")
    if duration is not None and duration <= 0:
        raise UserError(f"duration must be positive seconds (or omitted to send every row once), got {duration}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    # a table model's raw rows (object array: text, booleans, None for missing) are sent as they are
    raw = isinstance(x, np.ndarray) and x.dtype == object
    x = np.asarray(x, dtype=object if raw else np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"x must be a non-empty 2-D array of rows, got shape {x.shape}")
    if y is not None and len(y) != len(x):
        raise UserError(f"x has {len(x)} rows but y has {len(y)} labels")
    return x


@dataclass
class _Plan:
    """What one replay sends, where, how fast and with which labels (``replay``'s arguments, checked)."""

    url: str
    x: np.ndarray
    y: np.ndarray | None
    order: np.ndarray
    total: int
    rate: float
    batch_size: int
    feedback: bool
    classes: list | None
    request_key_fn: Callable[[int], str] | None
    progress: Callable[[int, int], None] | None
    max_in_flight: int
    timeout_s: float
    sticky_header: str
    drift: str | None
    single_pass: bool
    feedback_token: str | None
    label_delay_s: float = 0.0
    fresh_connections: bool = False
    stop: threading.Event | None = None


class _Replayer:
    """One replay's loop: requests paced at the plan's rate (at most ``max_in_flight`` at once), each answer's
    labels posted at once or ``label_delay_s`` later, batched; the counts go to a :class:`ReplaySummary`."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.summary = ReplaySummary(target_rate=plan.rate, drift=plan.drift)
        self.errors: Counter = Counter()
        self.variants: Counter = Counter()
        self.latencies: list[float] = []
        self.done = 0
        self.pending: list[tuple[float, dict]] = []  # (due time, feedback item) of delayed labels, in due order
        self.feedback_headers = {"Authorization": f"Bearer {plan.feedback_token}"} if plan.feedback_token else None
        self.finished = asyncio.Event()
        self.slots = asyncio.Semaphore(plan.max_in_flight)
        self.client: httpx.AsyncClient

    async def run(self) -> ReplaySummary:
        plan, summary = self.plan, self.summary
        limits = httpx.Limits(max_connections=plan.max_in_flight, max_keepalive_connections=plan.max_in_flight)
        async with httpx.AsyncClient(timeout=plan.timeout_s, limits=limits,
                                     headers={"Connection": "close"} if plan.fresh_connections else None) as client:
            self.client = client
            start = time.perf_counter()
            labeller = asyncio.create_task(self.label_loop()) if plan.label_delay_s > 0 else None
            await self.send_all(start)
            summary.duration_s = time.perf_counter() - start
            if labeller is not None:
                self.finished.set()
                await labeller
                if self.pending:  # the last labels arrive after their delay, not at once
                    await asyncio.sleep(max(0.0, self.pending[-1][0] - time.perf_counter()))
                await self.flush_due(final=True)
        summary.errors = dict(self.errors)
        summary.variants = dict(self.variants)
        summary.latency_ms = _percentiles(self.latencies)
        summary.throughput_rps = summary.ok / summary.duration_s if summary.duration_s > 0 else 0.0
        return summary

    async def send_all(self, start: float) -> None:
        """Request ``i`` is due at ``start + i / rate``; a set ``stop`` ends the sending (in flight ones finish)."""
        plan, tasks = self.plan, []
        for i in range(plan.total):
            delay = start + i / plan.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if plan.stop is not None and plan.stop.is_set():
                break
            await self.slots.acquire()
            self.summary.sent += 1
            tasks.append(asyncio.create_task(self.one(i)))
        await asyncio.gather(*tasks)

    async def send_labels(self, items: list[dict] | dict, count: int) -> None:
        try:
            fb = await self.client.post(f"{self.plan.url}/feedback", json=items, headers=self.feedback_headers)
            self.summary.feedback_sent += count
            if fb.status_code != 200:
                self.summary.feedback_errors += count
        except httpx.HTTPError:
            self.summary.feedback_errors += count

    async def flush_due(self, final: bool = False) -> None:
        while self.pending:
            due = [item for t, item in self.pending if final or t <= time.perf_counter()]
            if not due:
                return
            del self.pending[:len(due)]
            for start_at in range(0, len(due), 512):
                batch = due[start_at:start_at + 512]
                await self.send_labels(batch, len(batch))

    async def label_loop(self) -> None:
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), 0.25)
            await self.flush_due()

    def rows(self, i: int) -> np.ndarray:
        plan = self.plan
        if plan.single_pass:
            return plan.order[i * plan.batch_size : (i + 1) * plan.batch_size]
        return plan.order[np.arange(i * plan.batch_size, (i + 1) * plan.batch_size) % len(plan.order)]

    async def one(self, i: int) -> None:
        plan, idx = self.plan, self.rows(i)
        headers = {plan.sticky_header: plan.request_key_fn(i)} if plan.request_key_fn else None
        t0 = time.perf_counter()
        try:
            response = await self.client.post(f"{plan.url}/predict", json={"inputs": plan.x[idx].tolist()},
                                              headers=headers)
            self.latencies.append(time.perf_counter() - t0)
            if response.status_code == 200:
                await self.answered(response.json(), idx)
            else:
                self.errors[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
        finally:
            self.slots.release()
            self.done += 1
            if plan.progress is not None:
                plan.progress(self.done, plan.total)

    async def answered(self, body: dict, idx: np.ndarray) -> None:
        """Count an answer and send (or schedule) its labels."""
        plan, summary = self.plan, self.summary
        summary.ok += 1
        summary.rows += len(idx)
        self.variants[body["variant"]] += 1
        summary.versions[body["variant"]] = body["model_version"]
        if not plan.feedback or plan.y is None:
            return
        item = {"request_id": body["request_id"], "labels": [_label_of(v, plan.classes) for v in plan.y[idx]]}
        if plan.label_delay_s > 0:
            self.pending.append((time.perf_counter() + plan.label_delay_s, item))
        else:
            await self.send_labels(item, 1)
