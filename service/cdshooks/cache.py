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
from typing import Any

import orjson

Key = tuple[str, str, str]


class ResponseCache:
    def __init__(self, ttl_s: float = 300.0, limit: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._ttl, self._limit, self._clock = ttl_s, limit, clock
        self._entries: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(service_id: str, hook_instance: str, body: bytes) -> Key:
        return (service_id, hook_instance, hashlib.sha256(body).hexdigest())

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            self._expire()
            hit = self._entries.get(key)
        return orjson.loads(hit[1]) if hit else None

    def put(self, key: Key, response: dict[str, Any]) -> None:
        stored = orjson.dumps(response)
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl, stored)
            self._entries.move_to_end(key)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._entries.popitem(last=False)
