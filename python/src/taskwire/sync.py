"""The blocking client: :class:`Client` and its :class:`SyncTask` handles.

The same client as :class:`taskwire.AsyncClient` (same transports, reconnects
and errors), for programs that are not asyncio: it runs the asyncio client on
an event loop in a background thread of its own and blocks the calling thread
until each call is done. Safe to use from several threads.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar

from .client import AsyncClient, Delivery, Priority, Task, TaskInfo
from .events import Answered, Completed, Event, File, Question

__all__ = ["Client", "SyncTask"]

T = TypeVar("T")


class _Portal:
    """An event loop on a daemon thread, and a way to run coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name="taskwire-client", daemon=True)
        self.thread.start()
        started.wait()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a taskwire.Client call from inside its own event loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self.call(step())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self.loop.is_running():

                async def close() -> None:
                    await aclose()

                self.call(close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class SyncTask:
    """A task followed by a blocking :class:`Client` (see :class:`taskwire.Task`)."""

    def __init__(self, portal: _Portal, task: Task) -> None:
        self._portal = portal
        #: The asyncio handle behind this one.
        self.task = task

    def __repr__(self) -> str:
        return repr(self.task)

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def name(self) -> str | None:
        return self.task.name

    @property
    def state(self) -> str:
        return self.task.state

    @property
    def done(self) -> bool:
        return self.task.done

    @property
    def last_seq(self) -> int:
        return self.task.last_seq

    @property
    def position(self) -> int | None:
        return self.task.position

    @property
    def duplicate(self) -> bool:
        return self.task.duplicate

    @property
    def question(self) -> Question | None:
        return self.task.question

    def events(self, after_seq: int = 0) -> Iterator[Event]:
        """Every event with ``seq > after_seq``, then live ones, up to the terminal one."""
        return self._portal.iterate(self.task.events(after_seq))

    def questions(self) -> Iterator[Question]:
        return self._portal.iterate(self.task.questions())

    def wait(self, timeout: float | None = None) -> Completed:
        """The ``completed`` event; raises the failure or ``TaskCancelled``."""
        return self._portal.call(self.task.wait(timeout))

    def result(self, timeout: float | None = None) -> Any:
        return self._portal.call(self.task.result(timeout))

    def cancel(self) -> None:
        self._portal.call(self.task.cancel())

    def answer(self, question_id: str, value: Any) -> Answered:
        return self._portal.call(self.task.answer(question_id, value))

    def status(self) -> dict[str, Any]:
        return self._portal.call(self.task.status())


class Client:
    """A blocking taskwire client; the arguments are :class:`taskwire.AsyncClient`'s.

    ``with Client(url, key) as client: print(client.run("echo", {"hi": 1}))``
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        transport: Literal["websocket", "rest"] = "websocket",
        reconnect: bool = True,
        reconnect_for: float = 600.0,
        open_timeout: float = 10.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        stream_dir: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._portal = _Portal()

        async def make() -> AsyncClient:
            return AsyncClient(
                url,
                key,
                transport=transport,
                reconnect=reconnect,
                reconnect_for=reconnect_for,
                open_timeout=open_timeout,
                max_message_bytes=max_message_bytes,
                stream_dir=stream_dir,
                headers=headers,
            )

        try:
            #: The asyncio client behind this one (its methods run on the portal's loop).
            self.aio = self._portal.call(make())
        except BaseException:
            self._portal.stop()
            raise

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self._portal.call(self.aio.connect())

    def close(self) -> None:
        try:
            self._portal.call(self.aio.close())
        finally:
            self._portal.stop()

    @property
    def welcome(self) -> dict[str, Any] | None:
        return self.aio.welcome

    @property
    def tasks(self) -> list[TaskInfo]:
        return self.aio.tasks

    def submit(
        self,
        task: str,
        input: Any = None,
        *,
        priority: Priority | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        delivery: Delivery | None = None,
        cancel_on_disconnect: bool | None = None,
        interactive: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SyncTask:
        handle = self._portal.call(
            self.aio.submit(
                task,
                input,
                priority=priority,
                timeout_s=timeout_s,
                idempotency_key=idempotency_key,
                concurrency_key=concurrency_key,
                delivery=delivery,
                cancel_on_disconnect=cancel_on_disconnect,
                interactive=interactive,
                options=options,
            )
        )
        return SyncTask(self._portal, handle)

    def run(self, task: str, input: Any = None, **options: Any) -> Any:
        return self.submit(task, input, **options).result()

    def attach(self, task_id: str, after_seq: int = 0) -> SyncTask:
        return SyncTask(self._portal, self._portal.call(self.aio.attach(task_id, after_seq)))

    def cancel(self, task_id: str) -> None:
        self._portal.call(self.aio.cancel(task_id))

    def answer(self, task_id: str, question_id: str, value: Any) -> Answered:
        return self._portal.call(self.aio.answer(task_id, question_id, value))

    def status(self, task_id: str) -> dict[str, Any]:
        return self._portal.call(self.aio.status(task_id))

    def ping(self) -> None:
        self._portal.call(self.aio.ping())

    def download(
        self, file: File | str, dest: str | os.PathLike[str], *, sha256: str | None = None
    ) -> Path:
        return self._portal.call(self.aio.download(file, dest, sha256=sha256))

    def read(self, file: File) -> bytes:
        return self._portal.call(self.aio.read(file))
