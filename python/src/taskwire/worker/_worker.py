"""The :class:`Worker`: tasks declared by decorator, setup and teardown hooks, ``run``."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._version import __version__
from ._schema import build_input, schema_of

__all__ = ["TaskSpec", "Worker"]

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[[], Any]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task a worker serves (``hello.tasks``)."""

    name: str
    handler: Callable[..., Any]
    description: str | None
    input_schema: dict[str, Any] | None
    input_type: Any
    retry_safe: bool
    timeout_s: float | None
    is_async: bool

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.input_schema is not None:
            out["input_schema"] = self.input_schema
        if self.retry_safe:
            out["retry_safe"] = True
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        return out

    def build_input(self, value: Any) -> Any:
        return build_input(self.input_type, value) if self.input_type is not None else value


class Worker:
    """A process that serves tasks for a taskwire server.

    ``name`` defaults to ``TASKWIRE_WORKER_NAME`` (set by ``taskwire serve``
    for managed workers), else ``<host>-<pid>``. ``slots`` is how many
    attempts may run at once (1: strictly one after the other). ``debug``
    (or ``TASKWIRE_DEBUG=1``) puts a failing handler's traceback on the wire.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        slots: int = 1,
        version: str | None = None,
        debug: bool | None = None,
    ) -> None:
        if not 1 <= slots <= 1024:
            raise ValueError("slots is 1 to 1024")
        env_name = os.environ.get("TASKWIRE_WORKER_NAME")
        self.name = env_name or name or f"{socket.gethostname()}-{os.getpid()}"
        self.slots = slots
        self.version = version
        self.debug = debug if debug is not None else os.environ.get("TASKWIRE_DEBUG") == "1"
        self.tasks: dict[str, TaskSpec] = {}
        self._setup: list[Hook] = []
        self._teardown: list[Hook] = []
        #: What the last ``setup`` hook returned; handlers see it as ``ctx.state``.
        self.state: Any = None
        self._setup_done = False

    def __repr__(self) -> str:
        return f"<Worker {self.name} tasks={sorted(self.tasks)} slots={self.slots}>"

    def task(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        input: Any = None,
        retry_safe: bool = False,
        timeout_s: float | None = None,
    ) -> Callable[[F], F]:
        """Declares a task served by the decorated handler ``(input, ctx)``.

        ``input_schema`` is a JSON Schema dict; or give ``input=`` a dataclass
        or TypedDict: its schema is derived, and a dataclass is built from the
        input before the handler sees it. ``retry_safe=True`` lets the server
        run the task again on another worker if this one is lost half-way.
        ``description`` defaults to the handler's docstring (first paragraph).
        """
        if input_schema is not None and input is not None:
            raise ValueError("give input_schema= or input=, not both")

        def register(handler: F) -> F:
            if not callable(handler):
                raise TypeError("a task handler must be callable")
            task_name = name or handler.__name__
            if task_name in self.tasks:
                raise ValueError(f"task {task_name!r} is declared twice")
            doc = inspect.getdoc(handler)
            schema = (
                input_schema
                if input_schema is not None
                else (schema_of(input) if input is not None else None)
            )
            self.tasks[task_name] = TaskSpec(
                name=task_name,
                handler=handler,
                description=description or (doc.split("\n\n")[0] if doc else None),
                input_schema=schema,
                input_type=input,
                retry_safe=retry_safe,
                timeout_s=timeout_s,
                is_async=inspect.iscoroutinefunction(handler),
            )
            return handler

        return register

    def setup(self, hook: F) -> F:
        """Runs ``hook`` once per process before the first task (before ``hello``:
        the server sends no task until it returned). Its return value becomes
        ``ctx.state``. ``async def`` or plain ``def`` (run in a thread)."""
        self._setup.append(hook)
        return hook

    def teardown(self, hook: F) -> F:
        """Runs ``hook`` once when the worker stops (after the last task)."""
        self._teardown.append(hook)
        return hook

    async def run_setup(self) -> None:
        if self._setup_done:
            return
        for hook in self._setup:
            value = await _call(hook)
            if value is not None:
                self.state = value
        self._setup_done = True

    async def run_teardown(self) -> None:
        for hook in self._teardown:
            await _call(hook)

    @property
    def sdk(self) -> str:
        return f"taskwire-python {__version__}"

    # -- running ----------------------------------------------------------------------

    def run(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        transport: str | None = None,
    ) -> None:
        """Serves until stopped (SIGTERM/SIGINT: drain, finish, ``bye``).

        Managed by ``taskwire serve`` (``TASKWIRE_TRANSPORT=stdio``), it speaks
        over stdin/stdout. Otherwise it dials ``url`` (or ``TASKWIRE_URL``)
        with the worker key ``key`` (or ``TASKWIRE_WORKER_KEY``) and reconnects
        with backoff after a drop.
        """
        from .. import errors
        from ._runner import WorkerRefused

        try:
            asyncio.run(self.serve(url, key, transport=transport))
        except (WorkerRefused, errors.Unauthorized) as e:
            # A refusal is the operator's business: one clear line, no traceback.
            print(f"taskwire: the server refused worker {self.name}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    async def serve(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        transport: str | None = None,
    ) -> None:
        """:meth:`run` for a program that already runs an event loop."""
        from ._runner import Runner

        if not self.tasks:
            raise ValueError("the worker declares no task (use @worker.task)")
        from . import _stdio

        mode = transport or ("websocket" if url else None)
        if mode is None and (_stdio.claimed() or os.environ.get("TASKWIRE_TRANSPORT") == "stdio"):
            mode = "stdio"
        if mode is None and os.environ.get("TASKWIRE_URL"):
            mode = "websocket"
        if mode == "stdio":
            await Runner(self).serve_stdio(_stdio.StdioTransport.claim())
            return
        if mode in ("websocket", "remote"):
            url = url or os.environ.get("TASKWIRE_URL")
            key = key or os.environ.get("TASKWIRE_WORKER_KEY")
            if not url or not key:
                raise ValueError(
                    "a remote worker needs url= and key= (or TASKWIRE_URL and TASKWIRE_WORKER_KEY)"
                )
            await Runner(self).serve_remote(url, key)
            return
        raise ValueError(
            "no transport: run me from taskwire serve's [[workers]] (TASKWIRE_TRANSPORT=stdio), "
            "or give worker.run(url=..., key=...)"
        )


async def _call(hook: Callable[[], Any]) -> Any:
    if inspect.iscoroutinefunction(hook):
        return await hook()
    value = await asyncio.to_thread(hook)
    if inspect.isawaitable(value):
        return await value
    return value
