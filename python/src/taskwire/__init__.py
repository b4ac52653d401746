"""taskwire: the Python client and worker SDK of the taskwire compute-task service.

Client side (submit tasks, follow them, answer their questions, download
their files)::

    async with taskwire.AsyncClient("http://127.0.0.1:8080", key) as client:
        task = await client.submit("echo", {"hello": "world"})
        print(await task.result())

Worker side (serve tasks, managed by ``taskwire serve`` over stdio or
dialling in as a remote worker)::

    worker = taskwire.Worker("demo")

    @worker.task("greet", input_schema={"type": "object"})
    async def greet(input, ctx):
        ctx.progress(0.5, "halfway")
        return {"greeting": f"hello {input['name']}"}

    if __name__ == "__main__":
        worker.run()

See the package README for the whole tour.
"""

from __future__ import annotations

import os as _os

if _os.environ.get("TASKWIRE_TRANSPORT") == "stdio":
    # A managed worker: stdout is the protocol channel. Move it aside before
    # any user code can print to it (see taskwire.worker._stdio).
    from .worker._stdio import claim_stdout as _claim_stdout

    _claim_stdout()

from . import errors, events
from ._version import __version__
from .client import AsyncClient, Task, TaskInfo
from .errors import (
    AlreadyAnswered,
    AlreadyFinished,
    BadMessage,
    Cancelled,
    ConnectionLost,
    DownloadError,
    InternalError,
    InvalidInput,
    NotFound,
    NotInteractive,
    NoWorker,
    QuestionTimeout,
    QueueFull,
    RateLimited,
    ServerError,
    ShuttingDown,
    StorageFull,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    TaskwireError,
    Unauthorized,
    UnknownTask,
    WorkerLost,
)
from .events import File
from .sync import Client, SyncTask
from .worker import Context, SyncContext, Worker

__all__ = [
    "AlreadyAnswered",
    "AlreadyFinished",
    "AsyncClient",
    "BadMessage",
    "Cancelled",
    "Client",
    "ConnectionLost",
    "Context",
    "DownloadError",
    "File",
    "InternalError",
    "InvalidInput",
    "NoWorker",
    "NotFound",
    "NotInteractive",
    "QuestionTimeout",
    "QueueFull",
    "RateLimited",
    "ServerError",
    "ShuttingDown",
    "StorageFull",
    "SyncContext",
    "SyncTask",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskInfo",
    "TaskTimeout",
    "TaskwireError",
    "Unauthorized",
    "UnknownTask",
    "Worker",
    "WorkerLost",
    "__version__",
    "errors",
    "events",
]
