"""Gateway configuration (pydantic settings, env prefix ``NASOPS_GATEWAY_``).

The store defaults are the core's (:class:`monitoring.core.settings.Settings`, one spelling for every plane): the
MLflow store is ``MLFLOW_TRACKING_URI`` or the SQLite file under ``$NASOPS_HOME`` (default ``./.nasops``), the
prediction log ``NASOPS_PREDICTION_LOG_URL`` or the SQLite file beside it, the model ``NASOPS_MODEL_NAME``. Reading
the settings creates nothing; the gateway creates the prediction log's directory when it opens the log.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from monitoring.core.enums import Mode
from monitoring.core.settings import Settings
from monitoring.log_journal import JournalBound
from monitoring.rollout_store import PRODUCTION_TARGET
from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from serving.tokens import check_token, read_token_file

CORE_DEFAULTS = {"tracking_uri": "tracking_uri_uncreated", "model_name": "model_name",
                 "prediction_log_url": "prediction_log_url_uncreated"}
"""Gateway field -> the core :class:`Settings` attribute its default is read from."""


class GatewaySettings(BaseSettings):
    """Everything one gateway needs; every field can be set as ``NASOPS_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NASOPS_GATEWAY_", extra="ignore")

    tracking_uri: str = Field(description="MLflow tracking/registry URI (default: the core's)")
    model_name: str = Field(description="registered model name (default: NASOPS_MODEL_NAME or nasops-classifier)")
    champion_alias: str = CHAMPION
    challenger_alias: str = CHALLENGER
    challenger_weight: float = Field(default=0.0, ge=0.0, le=1.0, description="share of traffic for the challenger "
                                     "until a rollout sets it (0: no caller reaches an unjudged challenger)")
    mode: Mode = Field(default=Mode.SPLIT, description="split: weighted routing; shadow: challenger gets a mirror copy "
                       "(the start-up split, until a rollout record sets one)")
    sticky_header: str = Field(default="X-Request-Key", description="header whose value pins a caller to a variant")
    challenger_timeout_s: float = Field(default=0.25, gt=0, description="slower challenger answers fall back")
    champion_timeout_s: float = Field(
        default=5.0, gt=0, description="a slower champion answer is abandoned: the challenger answers for it, or "
        "the caller gets a 504 JSON error (never a hang); longer than challenger_timeout_s, as the champion has no "
        "one to fall back on")
    admin_token: str | None = Field(default=None, description="bearer token of the admin API (None: admin off)")
    admin_token_file: str | None = Field(default=None, description="file holding the admin token (instead of "
                                         "admin_token)")
    feedback_token: str | None = Field(default=None, description="bearer token that /feedback requires (None: "
                                       "feedback off); must differ from the admin token")
    feedback_token_file: str | None = Field(default=None, description="file holding the feedback token")
    request_id_secret: str | None = Field(default=None, description="key of the client request-id namespaces "
                                          "(HMAC of the caller's sticky key); the same on every replica; default: "
                                          "the feedback token")
    max_abs_input: float = Field(default=1e9, gt=0, description="largest accepted |feature value|; larger values "
                                 "are answered 422 (the float32 range bounds it in any case)")
    unknown_columns: Literal["ignore", "reject"] = Field(
        default="ignore", description="a named column the model never saw (not even as one the refresh dropped): "
        "ignore (answered, counted in nasops_ignored_columns_total, as MLflow's pyfunc ignores extra columns) or "
        "reject (422 naming it)")
    max_feedback_items: int = Field(default=1024, ge=1, description="most items in one /feedback request")
    feedback_rate_per_s: float = Field(default=200.0, gt=0, description="/feedback requests per second per token "
                                       "and worker process, on average (beyond it: 429 with Retry-After)")
    feedback_burst: int = Field(default=400, ge=1, description="/feedback requests a token may send at once")
    log_mode: Literal["batched", "sync"] = Field(
        default="batched", description="batched: rows are committed in the background every log_interval_s (a "
        "hard kill loses at most the last interval); sync: every served row is committed before the answer")
    log_interval_s: float = Field(default=0.05, gt=0, le=5, description="batched mode: longest wait before a commit")
    log_journal_dir: str | None = Field(
        default=None, description="where rows wait (one file per worker) while the prediction log's database is "
        "away, replayed in order when it returns (None: log-journal beside a SQLite log, else under NASOPS_HOME)")
    log_journal_max_rows: int = Field(default=1_000_000, ge=1, description="most rows the journal holds; later "
                                      "batches are dropped and counted in nasops_log_dropped_rows_total")
    log_journal_max_mb: float = Field(default=512.0, gt=0, description="most megabytes the journal holds (per worker)")
    log_inputs: Literal["raw", "hash"] = Field(
        default="raw", description="raw: log the feature values (drift detection needs them); hash: a SHA-256 "
        "of each row instead (rows of a model fault are kept raw for diagnosis)")
    input_retention_days: float | None = Field(
        default=None, gt=0, description="logged inputs older than this many days are erased (None: kept)")
    prediction_log_url: str = Field(description="SQLAlchemy URL of the log (default: the core's)")
    max_batch: int = Field(default=1024, ge=1, description="most rows in one /predict request")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="largest accepted request body")
    poll_interval_s: float = Field(default=10.0, ge=0, description="alias poll period (0: poll off)")
    follow_rollouts: bool = Field(
        default=True, description="apply the rollout record of model_name (in the prediction-log database) that a "
        "canary controller writes: every worker and replica follows the same split")
    rollout_target: str = Field(
        default=PRODUCTION_TARGET, min_length=1, max_length=255, description="the rollouts this gateway follows: those "
        "started for this target (`production`: the gateway callers use; an embedded canary's private gateway "
        "follows its own `embedded:<session>`, so it never steers this one)")
    rollout_poll_s: float = Field(default=1.0, gt=0, le=60, description="how often the rollout record is re-read")
    control_file: str | None = Field(
        default=None, description="JSON file through which worker processes pass on POST /admin/reload (set by the "
        "launcher; it carries no routing: the split is the rollout record's)"
    )
    torch_threads: int = Field(default=1, ge=1, description="intra-op threads per model call")
    opentelemetry: bool = Field(
        default=False, description="FastAPI's native OpenTelemetry spans and HTTP metrics (on: for an installed "
        "OTel provider; off by default, the gateway's own Prometheus metrics cover it, and FastAPI's per-request "
        "provider check costs ~2 % of a small request)")
    gil_switch_interval_s: float = Field(
        default=0.0005, gt=0, le=0.1, description="sys.setswitchinterval of a worker process: how long a background "
        "thread (log writer, rollout follower) may hold the GIL while a request waits (Python's default, 5 ms, is a "
        "p99 floor)")
    flavour: Literal["pytorch", "onnx", "int8"] = Field(
        default="pytorch", description="the form of each version served: its logged PyTorch model, or the ONNX / "
        "int8 artifact registration logged next to it (a version without one is served in PyTorch, with a note)"
    )
    shadow_max_in_flight: int = Field(default=8, ge=1, description="mirrored calls beyond this are dropped")
    instance_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:16],
        description="answered by /healthz, so a launcher knows the server on its port is the one it started",
    )
    feedback_wait_s: float = Field(default=2.0, ge=0, description="how long /feedback waits for a row to be logged")
    shadow_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="extra aliases (e.g. candidate-1,candidate-2) that get a mirrored copy of every request; "
        "comma-separated or a JSON list in the environment",
    )

    @model_validator(mode="before")
    @classmethod
    def _core_defaults(cls, data: Any) -> Any:
        # One core Settings per gateway settings (built once by the entry point's factory), and only when a store
        # default is needed: explicit values and NASOPS_GATEWAY_* variables win.
        if isinstance(data, dict):
            missing = [name for name in CORE_DEFAULTS if data.get(name) is None]
            if missing:
                core = Settings()
                data = {**data, **{name: getattr(core, CORE_DEFAULTS[name]) for name in missing}}
        return data

    @field_validator("shadow_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value):
        # The environment gives one string: accept a JSON list or a comma-separated list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"shadow_aliases is not a valid JSON list: {exc}") from None
            else:
                value = [part for part in (p.strip() for p in text.split(",")) if part]
        return value

    @field_validator("shadow_aliases")
    @classmethod
    def _alias_names(cls, value: list[str]) -> list[str]:
        cleaned = [str(a).strip() for a in value]
        if any(not a for a in cleaned):
            raise ValueError("shadow_aliases must not contain empty alias names")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"shadow_aliases lists an alias twice: {cleaned}")
        return cleaned

    @field_validator("sticky_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"sticky_header must be an HTTP header name without spaces, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shadows_distinct(self) -> GatewaySettings:
        # A shadow alias is also its variant label: it must not collide with the champion/challenger variants.
        taken = {self.champion_alias, self.challenger_alias, *VARIANTS}
        clash = [a for a in self.shadow_aliases if a in taken]
        if clash:
            raise ValueError(f"shadow_aliases {clash} collide with the champion/challenger aliases; list only extra "
                             "aliases such as candidate-1, candidate-2")
        return self

    @model_validator(mode="after")
    def _tokens(self) -> GatewaySettings:
        # Tokens from files, then checked: a short or placeholder token refuses the start, never a silent weak one.
        for name in ("admin_token", "feedback_token"):
            path = getattr(self, f"{name}_file")
            if path:
                from_file = read_token_file(path, f"{name}_file")
                given = getattr(self, name)
                if given is not None and given != from_file:
                    raise ValueError(f"both {name} and {name}_file are set and differ; give only one of them")
                object.__setattr__(self, name, from_file)
            if getattr(self, name) is not None:
                check_token(getattr(self, name), name)
        if self.admin_token is not None and self.admin_token == self.feedback_token:
            raise ValueError("admin_token and feedback_token are the same; the feedback token must be a different "
                             "secret (label senders must not get admin rights)")
        return self

    @property
    def namespace_secret(self) -> bytes:
        """The key of client request-id namespaces (:mod:`serving.request_ids`)."""
        return (self.request_id_secret or self.feedback_token or "").encode()

    def journal_directory(self) -> str | None:
        """The prediction log's spill journal: ``log_journal_dir``, else ``log-journal`` beside a SQLite log file,
        else under ``$NASOPS_HOME`` (where a restarted gateway finds what a crashed one left); None: in memory
        (an in-memory SQLite log)."""
        if self.log_journal_dir is not None:
            return self.log_journal_dir
        from pathlib import Path

        from sqlalchemy.engine import make_url

        url = make_url(self.prediction_log_url)
        if url.get_backend_name() != "sqlite":
            return str(Settings().home_path / "log-journal")
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return None
        return str(Path(url.database).expanduser().parent / "log-journal")

    def journal_bound(self) -> JournalBound:
        """The journal's bound in rows and bytes (per worker process)."""
        return JournalBound(self.log_journal_max_rows, int(self.log_journal_max_mb * 1024 * 1024))

    def to_env(self) -> dict[str, str]:
        """These settings as ``NASOPS_GATEWAY_*`` variables (how a launcher hands them to worker processes)."""
        env = {}
        for name, value in self.model_dump(exclude={"admin_token_file", "feedback_token_file"}).items():
            if isinstance(value, list):
                env[f"NASOPS_GATEWAY_{name.upper()}"] = json.dumps(value)
            elif value is not None:
                env[f"NASOPS_GATEWAY_{name.upper()}"] = str(value)
        return env
