"""Request ids: generated ones are random, client-chosen ones are namespaced by the caller's key.

A generated id is 128 random bits (``secrets.token_hex``), so nobody can guess another caller's id and label its
prediction. A client-chosen id (``"request_id": "order-42"``) becomes ``order-42@<namespace>``: the namespace is a
keyed BLAKE2b hash of the caller's sticky key header (``X-Request-Key``), or ``anon`` without one, so two callers
who both pick ``order-42`` get two different ids. The answer of ``/predict`` carries the id to send to
``/feedback``.
"""

from __future__ import annotations

import hashlib
import os
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


def namespace_of(key: str | None) -> str:
    """The namespace of a caller: 16 hex digits of its key's hash, or ``anon`` for callers without a key."""
    if not key:
        return ANONYMOUS
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"nasops-request")
    return digest.hexdigest()


def effective_request_id(client_id: str | None, key: str | None) -> str:
    """The id a request is logged and answered under."""
    if client_id is None:
        return new_request_id()
    return f"{client_id}{SEPARATOR}{namespace_of(key)}"
