"""The worker SDK: serve tasks for a taskwire server (``docs/protocol.md`` Part II).

::

    worker = Worker("core")

    @worker.setup
    def load():                      # once per process, before the first task
        return HeavyThing()

    @worker.task("sync", input_schema={...}, retry_safe=True)
    async def sync(input, ctx):
        ctx.progress(0.5, "half-way")
        if await ctx.ask("Continue?", choices=["continue", "abort"]) == "abort":
            raise RuntimeError("aborted by the user")
        await ctx.write_file("report.txt", b"...")
        return {"ok": True}

    worker.run()                      # managed (stdio) or remote (url=, key=)
"""

from __future__ import annotations

from ._context import Context, InputFile, SyncContext
from ._runner import WorkerRefused
from ._worker import TaskSpec, Worker

__all__ = ["Context", "InputFile", "SyncContext", "TaskSpec", "Worker", "WorkerRefused"]
