"""Exceptions of the taskwire package.

Every error the server reports carries a protocol code (``docs/protocol.md``
§11): it is raised as the subclass of :class:`ServerError` named after that
code, with ``code``, ``message``, ``details`` and ``retry_after_ms`` as the
server sent them. A task that ends ``failed`` raises the class of its error's
code from :meth:`taskwire.Task.result` (``TaskError`` for a worker's
exception, ``WorkerLost``, ``TaskTimeout`` ...), with ``task_id`` set.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "AlreadyAnswered",
    "AlreadyFinished",
    "BadMessage",
    "Cancelled",
    "ConnectionLost",
    "DownloadError",
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
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "TaskwireError",
    "Unauthorized",
    "UnknownTask",
    "WorkerLost",
    "error_from_wire",
]


class TaskwireError(Exception):
    """Base class of every exception this package raises on purpose."""


class ServerError(TaskwireError):
    """An error object from the server: ``{code, message, details?, retry_after_ms?}``.

    ``task_id`` is set when the error is a task's ``failed`` event.
    """

    code: str = "unknown"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_ms: int | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.retry_after_ms = retry_after_ms
        self.task_id = task_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadMessage(ServerError):
    """The server could not read a message, or an option is ill-typed."""

    code = "bad_message"


class Unauthorized(ServerError):
    """No key, a wrong key or token, or a token not allowed this task."""

    code = "unauthorized"


class UnknownTask(ServerError):
    """No task of that name is offered."""

    code = "unknown_task"


class InvalidInput(ServerError):
    """The input (or an answer) does not fit the schema: see ``path`` and ``reason``."""

    code = "invalid_input"

    @property
    def path(self) -> str | None:
        value = self.details.get("path")
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str | None:
        value = self.details.get("reason")
        return value if isinstance(value, str) else None


class QueueFull(ServerError):
    """A queue bound is reached; ``retry_after_ms`` says when to try again."""

    code = "queue_full"


class RateLimited(ServerError):
    """Too many tokens, or too many connections."""

    code = "rate_limited"


class NotFound(ServerError):
    """No such task (or not yours), no such open question, no such token."""

    code = "not_found"


class AlreadyFinished(ServerError):
    """Cancel of a task that already ended."""

    code = "already_finished"


class AlreadyAnswered(ServerError):
    """A question that someone answered first."""

    code = "already_answered"


class TaskTimeout(ServerError):
    """The task ran past its ``timeout_s``."""

    code = "timeout"


class TaskError(ServerError):
    """The task failed; a worker's exception type is in ``worker_code``."""

    code = "task_error"

    @property
    def worker_code(self) -> str | None:
        value = self.details.get("worker_code")
        return value if isinstance(value, str) else None


class WorkerLost(ServerError):
    """The worker running the task died, hung or disconnected."""

    code = "worker_lost"


class NoWorker(ServerError):
    """No worker serving the task's name came in time."""

    code = "no_worker"


class InternalError(ServerError):
    """A bug or an IO error on the server's side."""

    code = "internal"


class StorageFull(ServerError):
    """The server's temporary area is full."""

    code = "storage_full"


class ShuttingDown(ServerError):
    """The server is draining."""

    code = "shutting_down"


_BY_CODE: dict[str, type[ServerError]] = {
    cls.code: cls
    for cls in (
        BadMessage,
        Unauthorized,
        UnknownTask,
        InvalidInput,
        QueueFull,
        RateLimited,
        NotFound,
        AlreadyFinished,
        AlreadyAnswered,
        TaskTimeout,
        TaskError,
        WorkerLost,
        NoWorker,
        InternalError,
        StorageFull,
        ShuttingDown,
    )
}


def error_from_wire(error: Any, *, task_id: str | None = None) -> ServerError:
    """The exception for an error object as the server sent it (unknown codes included)."""
    if not isinstance(error, dict):
        return ServerError(f"malformed error object: {error!r}", code="unknown", task_id=task_id)
    code = error.get("code")
    code = code if isinstance(code, str) else "unknown"
    message = error.get("message")
    message = message if isinstance(message, str) else code
    details = error.get("details")
    retry = error.get("retry_after_ms")
    cls = _BY_CODE.get(code, ServerError)
    return cls(
        message,
        code=code,
        details=details if isinstance(details, dict) else None,
        retry_after_ms=retry if isinstance(retry, int) else None,
        task_id=task_id,
    )


class TaskCancelled(TaskwireError):
    """The task ended ``cancelled``; ``reason`` is ``client``, ``disconnect`` or ``shutdown``."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} was cancelled ({reason})")
        self.task_id = task_id
        self.reason = reason


class ConnectionLost(TaskwireError):
    """The connection dropped before the server answered a request that is not safe to resend."""


class DownloadError(TaskwireError):
    """A download failed: an HTTP error status, a short body or a sha256 mismatch."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(asyncio.CancelledError):
    """Raised inside a worker's handler once its attempt is cancelled.

    A subclass of :class:`asyncio.CancelledError` (so ``except Exception``
    does not swallow it): an ``async`` handler gets the asyncio cancellation
    at its next ``await``; any handler gets this exception from its next
    ``ctx`` call.
    """


class QuestionTimeout(TaskwireError):
    """``ctx.ask`` got no answer in time and the question had no default."""

    def __init__(self, question_id: str) -> None:
        super().__init__(f"nobody answered question {question_id} in time")
        self.question_id = question_id


class NotInteractive(QuestionTimeout):
    """``ctx.ask`` in a task submitted with ``interactive: false``, for a question without default.

    A subclass of :class:`QuestionTimeout`: in both cases nobody will answer.
    """

    def __init__(self, question_id: str) -> None:
        TaskwireError.__init__(
            self, f"question {question_id} cannot be answered: the task is not interactive"
        )
        self.question_id = question_id
