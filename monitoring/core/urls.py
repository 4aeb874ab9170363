"""Credentials in service URLs (``http://user:password@prometheus:9090``): kept out of everything that is stored
or shown.

Why: a canary configuration is written to the rollout record, to an MLflow artifact and to ``canary status
--json``; a password inside its Prometheus URL went everywhere with it. The URL is split once, where the
configuration enters: the bare URL is stored, the password stays in memory (or comes from an environment variable
in another process) and is put back only on the request that needs it.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["redact_url", "split_password", "with_password"]


def _netloc(parts: SplitResult, password: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username is None:
        return host
    user = parts.username if password is None else f"{parts.username}:{password}"
    return f"{user}@{host}"


def split_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, the password or None)``; the user name stays (it is not a secret)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a port that is not a number: leave it to the caller's own validation
        return url, None
    if password is None:
        return url, None
    return urlunsplit(parts._replace(netloc=_netloc(parts, None))), password


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` for its user (no user: the URL as it is)."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.username is None:
        return url
    return urlunsplit(parts._replace(netloc=_netloc(parts, password)))


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (for messages)."""
    bare, password = split_password(url)
    return url if password is None else with_password(bare, "***")
