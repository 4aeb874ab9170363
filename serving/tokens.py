"""Bearer tokens of the gateway (admin, feedback): read from the environment or a file, checked before start.

A token is refused when it is shorter than :data:`MIN_TOKEN_BYTES` or looks like a placeholder copied from an
example manifest (``change-me`` and the like): a guessable token is no credential. Files let a secret store (a
Kubernetes secret volume, Docker secrets) hand the token over without putting it on a command line, where every
user of the machine can read it in the process list.
"""

from __future__ import annotations

from pathlib import Path

MIN_TOKEN_BYTES = 32

# Substrings of tokens that were obviously never meant to be secret (compared lower-case).
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "replace_me", "placeholder",
                       "your-token", "your_token", "example", "dummy", "not-a-secret", "insecure")
MIN_DISTINCT_CHARS = 8


def check_token(value: str, what: str) -> str:
    """``value`` if it is usable as the ``what`` bearer token; otherwise ValueError saying how to make one."""
    fix = f"generate one with: python -c 'import secrets; print(secrets.token_urlsafe({MIN_TOKEN_BYTES}))'"
    if len(value.encode()) < MIN_TOKEN_BYTES:
        raise ValueError(f"{what} is {len(value.encode())} bytes; it needs at least {MIN_TOKEN_BYTES} random bytes "
                         f"({fix})")
    lowered = value.lower()
    marker = next((m for m in PLACEHOLDER_MARKERS if m in lowered), None)
    if marker is not None or len(set(value)) < MIN_DISTINCT_CHARS:
        raise ValueError(f"{what} looks like a placeholder ({marker or 'too few distinct characters'}), not a "
                         f"secret; {fix}")
    return value


def read_token_file(path: str, what: str) -> str:
    """The token stored in ``path`` (surrounding whitespace and the trailing newline stripped)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {path!r} cannot be read ({type(exc).__name__}: {exc}); give a readable file "
                         "holding only the token") from None
    token = text.strip()
    if not token:
        raise ValueError(f"{what} file {path!r} is empty; write the token into it")
    return token
