"""Gateway configuration (pydantic settings, env prefix ``NASOPS_GATEWAY_``).

The defaults follow the rest of nasops without importing it (serving never imports pipelines): the MLflow store is
``MLFLOW_TRACKING_URI`` or the SQLite file under ``$NASOPS_HOME`` (default ``./.nasops``), and so is the prediction
log.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from monitoring.vocabulary import CHALLENGER, CHAMPION, VARIANTS
from serving.tokens import check_token, read_token_file


def _home() -> Path:
    path = Path(os.environ.get("NASOPS_HOME", ".nasops")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_home() / 'mlflow.db'}"


def _default_log_url() -> str:
    return os.environ.get("NASOPS_PREDICTION_LOG_URL") or f"sqlite:///{_home() / 'predictions.db'}"


def _default_model_name() -> str:
    return os.environ.get("NASOPS_MODEL_NAME", "nasops-classifier")


Mode = Literal["split", "shadow"]


class GatewaySettings(BaseSettings):
    """Everything one gateway needs; every field can be set as ``NASOPS_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NASOPS_GATEWAY_", extra="ignore")

    tracking_uri: str = Field(default_factory=_default_tracking_uri, description="MLflow tracking/registry URI")
    model_name: str = Field(default_factory=_default_model_name, description="registered model name")
    champion_alias: str = CHAMPION
    challenger_alias: str = CHALLENGER
    challenger_weight: float = Field(default=0.0, ge=0.0, le=1.0, description="share of traffic for the challenger "
                                     "until a rollout sets it (0: no caller reaches an unjudged challenger)")
    mode: Mode = Field(default="split", description="split: weighted routing; shadow: challenger gets a mirror copy")
    sticky_header: str = Field(default="X-Request-Key", description="header whose value pins a caller to a variant")
    challenger_timeout_s: float = Field(default=0.25, gt=0, description="slower challenger answers fall back")
    admin_token: str | None = Field(default=None, description="bearer token of the admin API (None: admin off)")
    admin_token_file: str | None = Field(default=None, description="file holding the admin token (instead of "
                                         "admin_token)")
    feedback_token: str | None = Field(default=None, description="bearer token that /feedback requires (None: "
                                       "feedback off); must differ from the admin token")
    feedback_token_file: str | None = Field(default=None, description="file holding the feedback token")
    max_abs_input: float = Field(default=1e9, gt=0, description="largest accepted |feature value|; larger values "
                                 "are answered 422 (the float32 range bounds it in any case)")
    max_feedback_items: int = Field(default=1024, ge=1, description="most items in one /feedback request")
    log_mode: Literal["batched", "sync"] = Field(
        default="batched", description="batched: rows are committed in the background every log_interval_s (a "
        "hard kill loses at most the last interval); sync: every served row is committed before the answer")
    log_interval_s: float = Field(default=0.05, gt=0, le=5, description="batched mode: longest wait before a commit")
    log_inputs: Literal["raw", "hash"] = Field(
        default="raw", description="raw: log the feature values (drift detection needs them); hash: a SHA-256 "
        "of each row instead (rows of a model fault are kept raw for diagnosis)")
    input_retention_days: float | None = Field(
        default=None, gt=0, description="logged inputs older than this many days are erased (None: kept)")
    prediction_log_url: str = Field(default_factory=_default_log_url, description="SQLAlchemy URL of the log")
    max_batch: int = Field(default=1024, ge=1, description="most rows in one /predict request")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="largest accepted request body")
    poll_interval_s: float = Field(default=10.0, ge=0, description="alias poll period (0: poll off)")
    follow_rollouts: bool = Field(
        default=True, description="apply the rollout record of model_name (in the prediction-log database) that a "
        "canary controller writes: every worker and replica follows the same split")
    rollout_poll_s: float = Field(default=1.0, gt=0, le=60, description="how often the rollout record is re-read")
    control_file: str | None = Field(
        default=None, description="JSON file shared by worker processes for admin changes (set by the launcher)"
    )
    champion_inline_max_rows: int = Field(
        default=64, ge=0, description="champion batches up to this size run on the event loop (no thread hop)"
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

    def to_env(self) -> dict[str, str]:
        """These settings as ``NASOPS_GATEWAY_*`` variables (how a launcher hands them to worker processes)."""
        env = {}
        for name, value in self.model_dump(exclude={"admin_token_file", "feedback_token_file"}).items():
            if isinstance(value, list):
                env[f"NASOPS_GATEWAY_{name.upper()}"] = json.dumps(value)
            elif value is not None:
                env[f"NASOPS_GATEWAY_{name.upper()}"] = str(value)
        return env
