"""The handle of one task: its events as they arrive, its result, what can be done to it."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors
from .events import Accepted, Answered, Completed, Event, Failed, Progress, Question
from .events import Cancelled as CancelledEvent

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["MAX_HELD_EVENTS", "Task"]

#: Events a Task holds for replay; past it a new progress replaces the last one
#: held (the server's own rule, §6).
MAX_HELD_EVENTS = 1000


class Task:
    """One task: its events as they arrive, its result, and what you can do to it.

    Get one from :meth:`AsyncClient.submit` or :meth:`AsyncClient.attach`.
    """

    def __init__(self, client: AsyncClient, task_id: str, name: str | None = None) -> None:
        self.id = task_id
        #: The task's name, when this client submitted it.
        self.name = name
        self._client = client
        self._events: list[Event] = []
        self._seqs: list[int] = []
        self._last_seq = 0
        self._changed = asyncio.Event()
        self._error: BaseException | None = None
        self._terminal: Event | None = None
        self._stream_dir: Path | None = None
        self._streamed: dict[str, str] = {}
        self._stream_error: str | None = None
        #: Queued tasks that start before this one when it was accepted (0 = next).
        self.position: int | None = None
        #: True when the submit repeated an earlier one's ``idempotency_key``.
        self.duplicate = False

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name or ''} {self.state}>"

    # -- what is known -----------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` received (0 before any event)."""
        return self._last_seq

    @property
    def done(self) -> bool:
        """True once the terminal event arrived."""
        return self._terminal is not None

    def _finished(self) -> bool:
        return self._terminal is not None

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``waiting``, ``completed``, ``failed``, ``cancelled``
        (``unknown`` before the first event), from the events received so far."""
        state = "unknown"
        open_question = False
        for event in self._events:
            match event.type:
                case "accepted" | "requeued":
                    state, open_question = "queued", False
                case "started":
                    state = "running"
                case "question":
                    open_question = True
                case "answered":
                    open_question = False
                case "completed" | "failed" | "cancelled":
                    return event.type
        return "waiting" if state == "running" and open_question else state

    @property
    def question(self) -> Question | None:
        """The open question, if the task is waiting for an answer."""
        current: Question | None = None
        for event in self._events:
            if isinstance(event, Question):
                current = event
            elif (
                isinstance(event, Answered) and current and event.question_id == current.question_id
            ) or event.terminal:
                current = None
        return current

    @property
    def events_held(self) -> tuple[Event, ...]:
        """The events received and held so far (see :meth:`events` to wait for more)."""
        return tuple(self._events)

    # -- feeding (the client calls these) --------------------------------------------

    def _push(self, event: Event) -> bool:
        """Adds an event; False when it is a repeat (its seq was seen)."""
        if event.seq <= self._last_seq:
            return False
        if len(self._events) >= MAX_HELD_EVENTS and isinstance(event, Progress):
            for i in range(len(self._events) - 1, -1, -1):
                if isinstance(self._events[i], Progress):
                    del self._events[i]
                    del self._seqs[i]
                    break
        if isinstance(event, Accepted):
            self.position = event.position
            self.duplicate = self.duplicate or event.duplicate
        self._events.append(event)
        self._seqs.append(event.seq)
        self._last_seq = event.seq
        if event.terminal:
            self._terminal = event
        self._wake()
        return True

    def _fail(self, error: BaseException) -> None:
        if self._terminal is None and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- waiting ----------------------------------------------------------------------

    async def events(self, after_seq: int = 0) -> AsyncIterator[Event]:
        """Every event with ``seq > after_seq``, held ones first, then live ones,
        ending after the terminal event. Each event comes once, in ``seq`` order.

        Raises the error that ended the following (e.g. ``NotFound``, or
        ``ConnectionLost`` once reconnecting gave up).
        """
        self._client._follow(self)
        last = after_seq
        while True:
            i = bisect_right(self._seqs, last)
            if i < len(self._events):
                event = self._events[i]
                last = event.seq
                yield event
                if event.terminal:
                    return
                continue
            if self._terminal is not None:
                return
            if self._error is not None:
                raise self._error
            await self._changed.wait()

    async def questions(self) -> AsyncIterator[Question]:
        """The task's questions as they are asked (open or not), until it ends."""
        async for event in self.events():
            if isinstance(event, Question):
                yield event

    async def wait(self, timeout: float | None = None) -> Completed:
        """The ``completed`` event (result, files, duration).

        Raises the failure as a :class:`~taskwire.errors.ServerError` subclass
        (``TaskError``, ``WorkerLost``, ``TaskTimeout`` …, with ``task_id``
        set), :class:`~taskwire.errors.TaskCancelled`, or ``TimeoutError``
        after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            async for _ in self.events(self._last_seq):
                pass
        terminal = self._terminal
        if isinstance(terminal, Failed):
            raise errors.error_from_wire(terminal.error, task_id=self.id)
        if isinstance(terminal, CancelledEvent):
            raise errors.TaskCancelled(self.id, terminal.reason)
        if not isinstance(terminal, Completed):
            raise errors.ConnectionLost(f"task {self.id} ended without a terminal event")
        if self._stream_dir is not None:
            terminal = await self._client._complete_stream(self, terminal)
        return terminal

    async def result(self, timeout: float | None = None) -> Any:
        """The task's JSON result; raises as :meth:`wait` does."""
        return (await self.wait(timeout)).result

    # -- acting -----------------------------------------------------------------------

    async def cancel(self) -> None:
        """Cancels the task (a queued one never starts). ``AlreadyFinished`` if it ended."""
        await self._client.cancel(self.id)

    async def answer(self, question_id: str, value: Any) -> Answered:
        """Answers the task's open question; returns the ``answered`` event.

        ``InvalidInput`` when the value does not fit (the question stays open),
        ``AlreadyAnswered``, ``NotFound`` when no such question is open.
        """
        return await self._client.answer(self.id, question_id, value)

    async def status(self) -> dict[str, Any]:
        """The server's snapshot of the task (REST ``GET /v1/tasks/{id}``)."""
        return await self._client.status(self.id)
