"""A real uvicorn server on a free loopback port, for tests and benchmarks that go through HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from service.api.app import create_app
from service.bootstrap import Container
from service.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_APPS: dict[str, Any] = {}


def app_of(url: str) -> Any:
    """The FastAPI app behind a running test server (to reach its state, e.g. the rule reloader)."""
    return _APPS[url]


@contextmanager
def running_server(settings: Settings, container: Container | None = None, port: int | None = None) -> Iterator[str]:
    """Serve the app on 127.0.0.1:<port, default a free one>; yield its base URL; stop it afterwards."""
    port = port or free_port()
    app = create_app(settings, container)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    _APPS[url] = app
    try:
        yield url
    finally:
        _APPS.pop(url, None)
        server.should_exit = True
        thread.join(timeout=10)


def wait_until_ok(url: str, exited: Callable[[], str | None], timeout_s: float = 60, every_s: float = 0.1) -> None:
    """Poll `url` until it answers 200. `exited()` names why the process behind it is gone (None while it runs):
    then, or after `timeout_s`, raise RuntimeError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        why = exited()
        if why is not None:
            raise RuntimeError(why)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(every_s)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s")
