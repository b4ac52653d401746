"""Task events (``docs/protocol.md`` §6) as typed, read-only objects.

Every event has ``type``, ``task_id``, ``seq`` (1, 2, 3 … per task) and
``at`` (the server's time, an aware :class:`datetime.datetime`); ``raw`` is
the JSON object as received, so a field this version does not know is still
there. An event type this version does not know becomes :class:`Event`
itself (a client ignores what it does not know, and so may you).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "TERMINAL",
    "Accepted",
    "Answered",
    "Cancelled",
    "Choice",
    "Completed",
    "Event",
    "Failed",
    "File",
    "Progress",
    "Question",
    "Requeued",
    "Started",
    "event_from_wire",
    "parse_time",
]

#: The event types that end a task.
TERMINAL = frozenset({"completed", "failed", "cancelled"})

#: The event types of the protocol, by name (the others are Event).
EVENT_TYPES = frozenset(
    {"accepted", "started", "progress", "question", "answered", "requeued"} | TERMINAL
)


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time as the server writes it (``2026-12-01T10:00:00.012Z``)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class File:
    """A file output of a completed task (§8): download it with ``client.download``."""

    name: str
    size: int
    content_type: str
    sha256: str
    url: str
    expires_at: datetime | None
    #: Where the file was written on this machine, for ``delivery="stream"``.
    path: str | None = None

    @staticmethod
    def from_wire(obj: dict[str, Any], path: str | None = None) -> File:
        return File(
            name=str(obj.get("name", "")),
            size=int(obj.get("size", 0)),
            content_type=str(obj.get("content_type", "application/octet-stream")),
            sha256=str(obj.get("sha256", "")),
            url=str(obj.get("url", "")),
            expires_at=parse_time(obj.get("expires_at")),
            path=path,
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a question: ``value`` is what an answer sends."""

    value: Any
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A task event of a type this version does not know, and the base of the others."""

    type: str
    task_id: str
    seq: int
    at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``."""
        return self.type in TERMINAL


@dataclass(frozen=True, slots=True)
class Accepted(Event):
    position: int = 0
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Started(Event):
    worker: str = ""
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Progress(Event):
    progress: float | None = None
    message: str | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class Question(Event):
    """The task asks its submitter; answer with ``task.answer(event.question_id, value)``."""

    question_id: str = ""
    prompt: str = ""
    choices: tuple[Choice, ...] | None = None
    schema: dict[str, Any] | None = None
    default: Any = None
    has_default: bool = False
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """``outcome`` is ``answered``, ``timed_out`` or ``cancelled``."""

    question_id: str = ""
    outcome: str = "answered"
    value: Any = None


@dataclass(frozen=True, slots=True)
class Requeued(Event):
    """The attempt was lost; the task waits again and will have a new ``started``."""

    attempt: int = 1
    reason: str = ""
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Completed(Event):
    result: Any = None
    files: tuple[File, ...] = ()
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Failed(Event):
    """``error`` is the error object; ``task.result()`` raises it as an exception."""

    error: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cancelled(Event):
    """``reason`` is ``client``, ``disconnect`` or ``shutdown``."""

    reason: str = ""


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def event_from_wire(obj: dict[str, Any], files_at: dict[str, str] | None = None) -> Event:
    """The typed event of a JSON object that has ``type``, ``task_id`` and ``seq``.

    ``files_at`` maps file names to local paths (stream delivery).
    """
    kind = str(obj.get("type"))
    base: dict[str, Any] = {
        "type": kind,
        "task_id": str(obj.get("task_id")),
        "seq": _int(obj.get("seq")),
        "at": parse_time(obj.get("at")),
        "raw": obj,
    }
    if kind == "accepted":
        return Accepted(
            **base, position=_int(obj.get("position")), duplicate=obj.get("duplicate") is True
        )
    if kind == "started":
        return Started(
            **base, worker=str(obj.get("worker", "")), attempt=_int(obj.get("attempt"), 1)
        )
    if kind == "progress":
        fraction = obj.get("progress")
        return Progress(
            **base,
            progress=float(fraction) if isinstance(fraction, int | float) else None,
            message=_str(obj.get("message")),
            data=obj.get("data"),
        )
    if kind == "question":
        raw_choices = obj.get("choices")
        choices = (
            tuple(
                Choice(value=c.get("value"), label=_str(c.get("label")))
                for c in raw_choices
                if isinstance(c, dict)
            )
            if isinstance(raw_choices, list)
            else None
        )
        schema = obj.get("schema")
        return Question(
            **base,
            question_id=str(obj.get("question_id", "")),
            prompt=str(obj.get("prompt", "")),
            choices=choices,
            schema=schema if isinstance(schema, dict) else None,
            default=obj.get("default"),
            has_default="default" in obj,
            expires_at=parse_time(obj.get("expires_at")),
        )
    if kind == "answered":
        return Answered(
            **base,
            question_id=str(obj.get("question_id", "")),
            outcome=str(obj.get("outcome", "answered")),
            value=obj.get("value"),
        )
    if kind == "requeued":
        details = obj.get("details")
        return Requeued(
            **base,
            attempt=_int(obj.get("attempt"), 1),
            reason=str(obj.get("reason", "")),
            details=details if isinstance(details, dict) else None,
        )
    if kind == "completed":
        raw_files = obj.get("files")
        files = tuple(
            File.from_wire(f, (files_at or {}).get(str(f.get("name"))))
            for f in (raw_files if isinstance(raw_files, list) else [])
            if isinstance(f, dict)
        )
        duration = obj.get("duration_ms")
        return Completed(
            **base,
            result=obj.get("result"),
            files=files,
            duration_ms=duration if isinstance(duration, int) else None,
        )
    if kind == "failed":
        error = obj.get("error")
        return Failed(**base, error=error if isinstance(error, dict) else {})
    if kind == "cancelled":
        return Cancelled(**base, reason=str(obj.get("reason", "")))
    return Event(**base)
