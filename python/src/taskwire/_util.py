"""Small helpers shared by the client and the worker: URLs, backoff, JSON."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Backoff", "base_urls", "dumps", "loads"]


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (what every message on the wire is)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def base_urls(url: str, ws_path: str) -> tuple[str, str]:
    """``(http_base, ws_url)`` from a server URL.

    ``url`` may be the server's base (``http://host:8080``, ``https://…/prefix``)
    or a WebSocket URL (``ws://host:8080/v1/ws``); the other form is derived.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"expected an http(s):// or ws(s):// URL, got {url!r}")
    path = parts.path.rstrip("/")
    for known in ("/v1/ws", "/v1/worker"):
        if path.endswith(known):
            path = path[: -len(known)]
    secure = scheme in ("https", "wss")
    http = urlunsplit(("https" if secure else "http", parts.netloc, path, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, path + ws_path, "", ""))
    return http, ws


class Backoff:
    """Capped exponential backoff with full jitter: delays for reconnects.

    ``next()`` gives a delay drawn uniformly from ``[initial/2, min(cap,
    initial * 2**n)]`` after ``n`` failures; ``reset()`` after a success.
    """

    def __init__(self, initial: float = 0.1, cap: float = 10.0) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * (2**self.failures))
        self.failures += 1
        return random.uniform(min(self.initial / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.failures = 0

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next()
