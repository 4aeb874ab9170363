"""Request ids: generated ones are random, client-chosen ones are namespaced by the caller's key.

A generated id is 128 random bits (``secrets.token_hex``), so nobody can guess another caller's id and label its
prediction. A client-chosen id (``"request_id": "order-42"``) becomes ``order-42@<namespace>``: the namespace is an
HMAC-SHA256 (RFC 2104) of the caller's sticky key header (``X-Request-Key``) under the gateway's secret
(``request_id_secret``, else the feedback token: every replica that takes labels shares it), or ``anon`` without a
key, so two callers who both pick ``order-42`` get two different ids — and knowing another caller's sticky key is
not enough to compute its namespace and claim its ids (an unkeyed hash let anyone make them unlabelable, 409). The
answer of ``/predict`` carries the id to send to ``/feedback``; ``/feedback`` also takes the client's own id as it
was sent (``order-42``, with the same key header) and namespaces it the same way (:func:`feedback_request_id`), so
a client need not store the gateway's spelling of its own id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading

ANONYMOUS = "anon"
SEPARATOR = "@"


class _EntropyPool:
    """OS randomness read 4 KiB at a time (one syscall per 256 ids instead of one per request: system calls are
    expensive in sandboxed containers); reset in a forked child so two processes never hand out the same bytes."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buffer, self._offset = b"", 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._offset + n > len(self._buffer):
                self._buffer, self._offset = secrets.token_bytes(self.size), 0
            chunk = self._buffer[self._offset:self._offset + n]
            self._offset += n
        return chunk


_POOL = _EntropyPool()


def new_request_id() -> str:
    """32 hex digits (128 bits) of OS randomness."""
    return _POOL.take(16).hex()


def namespace_of(key: str | None, secret: bytes = b"") -> str:
    """The namespace of a caller: 16 hex digits of the HMAC of its key under ``secret``, or ``anon`` for callers
    without a key."""
    if not key:
        return ANONYMOUS
    mac = hmac.new(b"nasops-request-id:" + secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return mac.hexdigest()[:16]


def effective_request_id(client_id: str | None, key: str | None, secret: bytes = b"") -> str:
    """The id a request is logged and answered under (``secret``: the gateway's namespace key)."""
    if client_id is None:
        return new_request_id()
    return f"{client_id}{SEPARATOR}{namespace_of(key, secret)}"


_GENERATED = re.compile(r"^[0-9a-f]{32}$")


def feedback_request_id(given: str, key: str | None, secret: bytes = b"") -> str:
    """The logged id ``/feedback``'s ``given`` names: as answered (``order-42@<namespace>``, or a generated id),
    or a client's own bare id, namespaced by the feedback caller's key as :func:`effective_request_id` did. A
    client id that looks like a generated one (32 lowercase hex digits) must be sent as answered."""
    if SEPARATOR in given or _GENERATED.match(given):
        return given
    return f"{given}{SEPARATOR}{namespace_of(key, secret)}"
