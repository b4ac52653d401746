"""The worker SDK (filled in below)."""

from __future__ import annotations


class Worker:  # placeholder until the SDK lands
    pass


class Context:
    pass


class SyncContext:
    pass
