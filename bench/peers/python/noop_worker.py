"""The Python worker of bench/python.sh: one process serving `py_noop`, a task
that does nothing, as a managed (stdio) or remote (WebSocket) worker.
BENCH_SLOTS sets how many attempts it takes at once (default 64)."""

from __future__ import annotations

import os
from typing import Any

import taskwire

worker = taskwire.Worker("bench", slots=int(os.environ.get("BENCH_SLOTS", "64")))


@worker.task("py_noop", description="Does nothing.")
async def noop(input: Any, ctx: taskwire.Context) -> None:
    return None


if __name__ == "__main__":
    worker.run()
