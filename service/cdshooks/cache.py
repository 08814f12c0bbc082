"""`hookInstance` idempotency (cds-hooks.md §11.3): a repeated call with the same `hookInstance` **and** the
same body within the TTL gets the response already given. Keyed on both, because clients reuse
`hookInstance` values across patients and hooks (the conformance examples do).

A response is kept as its JSON bytes: one object the garbage collector never scans, instead of the thousands of
dicts and lists of its cards (up to `limit` of them would make every full collection pause the server for
100 ms and more; see docs/performance.md)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[str, str, str]


class ResponseCache:
    """Responses by (service, hookInstance, body digest) for `ttl_s` seconds (0: nothing is kept), at most
    `max_bytes` of JSON in all: the least recently stored go first. An evicted response is only evaluated again
    on a repeat: the answer is the same (stable card uuids, contract.md §3)."""

    def __init__(
        self, ttl_s: float = 300.0, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl, self._max_bytes, self._clock = ttl_s, max_bytes, clock
        self._entries: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(service_id: str, hook_instance: str, body: bytes) -> Key:
        return (service_id, hook_instance, hashlib.sha256(body).hexdigest())

    def get(self, key: Key) -> bytes | None:
        """The JSON of the response given to this call, if still kept."""
        with self._lock:
            self._expire()
            hit = self._entries.get(key)
        return hit[1] if hit else None

    def put(self, key: Key, stored: bytes) -> None:
        """Keep the JSON of a response (the bytes that were sent)."""
        if self._ttl <= 0:
            return
        if len(stored) > self._max_bytes:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = (self._clock() + self._ttl, stored)
            self._bytes += len(stored)
            while self._bytes > self._max_bytes:
                self._drop(next(iter(self._entries)))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])

    def _expire(self) -> None:
        now = self._clock()
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._drop(next(iter(self._entries)))
