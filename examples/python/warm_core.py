"""A warm worker: its setup takes about 2 s (a simulated heavy initialisation,
e.g. loading a model or logging in to a device), then it serves tasks one at
a time for as long as it runs. Only the first task ever waits for the init.

Managed by taskwire serve (the config's [[workers]] entry runs this file), or
remote: TASKWIRE_URL=http://127.0.0.1:8080 TASKWIRE_WORKER_KEY=... python warm_core.py
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import taskwire  # before anything that prints: a managed worker's stdout is the protocol

INIT_S = float(os.environ.get("WARM_CORE_INIT_S", "2.0"))

worker = taskwire.Worker("warm-core", slots=1, version="1.0")


@dataclass
class Core:
    """What the expensive setup builds once per process."""

    loaded_at: float
    init_s: float
    served: int = 0


@worker.setup
def load() -> Core:
    """Runs once, before the worker says hello: no task waits on it but the first."""
    start = time.monotonic()
    time.sleep(INIT_S)  # the heavy part (a plain def: it runs in a thread)
    return Core(loaded_at=time.time(), init_s=time.monotonic() - start)


@dataclass
class Job:
    """One unit of work for the warm core."""

    items: int = 3


@worker.task("warm_core", input=Job)
async def run(job: Job, ctx: taskwire.Context) -> dict[str, Any]:
    """Processes `items` items with the warm core, reporting progress."""
    core: Core = ctx.state
    started = time.monotonic()
    for i in range(1, job.items + 1):
        await asyncio.sleep(0.01)  # the work itself
        ctx.progress(i / job.items, f"item {i} of {job.items}")
    core.served += 1
    return {
        "pid": os.getpid(),
        "served": core.served,
        "init_s": round(core.init_s, 3),
        "loaded_at": core.loaded_at,
        "task_s": round(time.monotonic() - started, 3),
    }


if __name__ == "__main__":
    worker.run()
