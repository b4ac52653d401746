"""The worker protocol's session state, without IO (``docs/protocol.md`` Part II).

:class:`Session` is fed the server's messages (:meth:`Session.receive`) and
the handlers' reports (``progress``, ``complete`` …), and keeps the
outbox of messages to write; it returns what the shell must do as
:class:`Effect` values. The shell (``_runner.py``) owns the transport, the
clock and the handlers. Nothing here awaits, sleeps or touches a socket, so
the rules (attempt fencing, one outcome per attempt, replay of unacknowledged
terminal messages after a reconnect, progress coalescing, bounded logs) are
unit-tested with plain calls.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._util import dumps

__all__ = [
    "AnswerIn",
    "Assign",
    "CancelIn",
    "Drain",
    "Effect",
    "Forget",
    "OutMessage",
    "ProtocolError",
    "Session",
    "Welcome",
]

PROTOCOL = 1
#: Log lines waiting to be written, at most; past it the oldest are dropped
#: (and counted in one ``warn`` line).
MAX_PENDING_LOGS = 1000


class ProtocolError(Exception):
    """The server sent something this session cannot go on after."""


@dataclass(slots=True)
class OutMessage:
    """One message waiting in the outbox; a progress one may be replaced in place."""

    message: dict[str, Any]
    #: Terminal messages stay unacknowledged until ``ok`` (by ``ref``).
    ref: str | None = None
    #: The message already encoded (outcomes are encoded when given, so a
    #: result that is not JSON fails the task there).
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    worker_id: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    max_message_bytes: int
    max_file_bytes: int | None
    #: ``resumed`` entries: ``(task_id, attempt, kept)``.
    resumed: tuple[tuple[str, int, bool], ...]


@dataclass(frozen=True, slots=True)
class Assign:
    task_id: str
    attempt: int
    task: str
    input: Any
    deadline: str | None
    timeout_s: float | None
    interactive: bool
    output_dir: str | None
    upload_url: str | None
    #: ``assign.inputs``: the task's input files (protocol §19), as sent.
    inputs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class CancelIn:
    task_id: str
    attempt: int
    reason: str
    grace_s: float | None


@dataclass(frozen=True, slots=True)
class AnswerIn:
    task_id: str
    attempt: int
    question_id: str
    outcome: str
    has_value: bool
    value: Any
    deadline: str | None


@dataclass(frozen=True, slots=True)
class Drain:
    """The server asked the worker to take nothing new."""


@dataclass(frozen=True, slots=True)
class Forget:
    """The server did not keep this attempt after a reconnect: stop it, report nothing."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ServerErrorIn:
    ref: str | None
    code: str
    message: str


Effect = Welcome | Assign | CancelIn | AnswerIn | Drain | Forget | ServerErrorIn


@dataclass(slots=True)
class _Attempt:
    task_id: str
    attempt: int
    #: ``complete``/``fail``/``cancelled`` was queued: nothing more may be sent.
    finished: bool = False
    open_question: str | None = None


@dataclass
class Session:
    """One worker's protocol state across connections (a reconnect keeps it)."""

    name: str
    tasks: list[dict[str, Any]]
    slots: int = 1
    version: str | None = None
    sdk: str | None = None

    #: Attempts assigned and not finished, by task id.
    running: dict[str, _Attempt] = field(default_factory=dict)
    #: Terminal messages sent or queued but not acknowledged (``ok``), by ref.
    unacked: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[OutMessage] = field(default_factory=list)
    welcome: Welcome | None = None
    draining: bool = False
    #: Log lines dropped since the last flush (the outbox's log bound).
    dropped_logs: int = 0

    _progress_slot: dict[str, OutMessage] = field(default_factory=dict)
    #: Questions queued but not written when the transport dropped.
    _unsent_asks: list[OutMessage] = field(default_factory=list)
    _logs: deque[OutMessage] = field(default_factory=deque)
    _next_ref: int = 0

    # -- connection lifecycle ---------------------------------------------------------

    def hello(self, resume: bool) -> dict[str, Any]:
        """The ``hello`` of a new connection; ``resume`` on a reconnect (remote only)
        lists what still runs here and the attempts whose outcome is unacknowledged."""
        worker: dict[str, Any] = {"name": self.name}
        if self.version:
            worker["version"] = self.version
        if self.sdk:
            worker["sdk"] = self.sdk
        message: dict[str, Any] = {
            "type": "hello",
            "protocol": PROTOCOL,
            "worker": worker,
            "slots": self.slots,
            "tasks": self.tasks,
        }
        if resume:
            held = {(a.task_id, a.attempt) for a in self.running.values()}
            held |= {(m["task_id"], m["attempt"]) for m in self.unacked.values()}
            if held:
                message["resume"] = [{"task_id": t, "attempt": n} for t, n in sorted(held)]
        return message

    def disconnected(self) -> None:
        """The transport dropped: what was queued is not sent (progress and logs are
        stale); terminal messages stay in :attr:`unacked` for :meth:`replay`, and
        questions that were not written yet are asked after the next ``welcome``."""
        self._unsent_asks = [e for e in self.outbox if e.message.get("type") == "ask"]
        self.outbox.clear()
        self._progress_slot.clear()
        self._logs.clear()
        self.welcome = None

    def replay(self) -> None:
        """After a new ``welcome``: every unacknowledged terminal message again."""
        for ref, message in self.unacked.items():
            self.outbox.append(OutMessage(message, ref))

    # -- the handlers' reports --------------------------------------------------------

    def _current(self, task_id: str, attempt: int) -> _Attempt | None:
        held = self.running.get(task_id)
        if held is None or held.attempt != attempt or held.finished:
            return None
        return held

    def progress(
        self,
        task_id: str,
        attempt: int,
        fraction: float | None = None,
        message: str | None = None,
        data: Any = None,
    ) -> bool:
        """Queues a progress report; one not yet written is replaced (coalesced)."""
        if self._current(task_id, attempt) is None:
            return False
        out: dict[str, Any] = {"type": "progress", "task_id": task_id, "attempt": attempt}
        if fraction is not None:
            value = float(fraction)
            if math.isfinite(value):
                out["progress"] = min(1.0, max(0.0, value))
        if message is not None:
            out["message"] = message
        if data is not None:
            out["data"] = data
        waiting = self._progress_slot.get(task_id)
        if waiting is not None:
            waiting.message = out
        else:
            entry = OutMessage(out)
            self._progress_slot[task_id] = entry
            self.outbox.append(entry)
        return True

    def log(
        self,
        message: str,
        level: str = "info",
        task_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Queues a log line (at most :data:`MAX_PENDING_LOGS` wait; older ones drop)."""
        out: dict[str, Any] = {"type": "log", "level": level, "message": message}
        if task_id is not None and attempt is not None:
            out["task_id"] = task_id
            out["attempt"] = attempt
        entry = OutMessage(out)
        if len(self._logs) >= MAX_PENDING_LOGS:
            oldest = self._logs.popleft()
            oldest.message = {}
            self.dropped_logs += 1
        self._logs.append(entry)
        self.outbox.append(entry)

    def ask(
        self,
        task_id: str,
        attempt: int,
        question_id: str,
        prompt: str,
        *,
        choices: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
        default: Any = None,
        has_default: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        held = self._current(task_id, attempt)
        if held is None:
            return False
        if held.open_question is not None:
            raise RuntimeError("a task asks one question at a time")
        if (choices is None) == (schema is None):
            raise ValueError("a question has either choices or a schema")
        out: dict[str, Any] = {
            "type": "ask",
            "task_id": task_id,
            "attempt": attempt,
            "question_id": question_id,
            "prompt": prompt,
        }
        if choices is not None:
            out["choices"] = choices
        if schema is not None:
            out["schema"] = schema
        if has_default:
            out["default"] = default
        if timeout_s is not None:
            out["timeout_s"] = timeout_s
        held.open_question = question_id
        self.outbox.append(OutMessage(out))
        return True

    def complete(
        self, task_id: str, attempt: int, result: Any, files: list[dict[str, Any]] | None = None
    ) -> bool:
        out: dict[str, Any] = {
            "type": "complete",
            "task_id": task_id,
            "attempt": attempt,
            "result": result,
        }
        if files:
            out["files"] = files
        return self._finish(out)

    def fail(
        self,
        task_id: str,
        attempt: int,
        message: str,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        error: dict[str, Any] = {"message": message}
        if code is not None:
            error["code"] = code
        if details:
            error["details"] = details
        return self._finish(
            {"type": "fail", "task_id": task_id, "attempt": attempt, "error": error}
        )

    def cancelled(self, task_id: str, attempt: int) -> bool:
        return self._finish({"type": "cancelled", "task_id": task_id, "attempt": attempt})

    def forget(self, task_id: str, attempt: int) -> None:
        """Drops an attempt without a report (the server did not keep it)."""
        held = self.running.get(task_id)
        if held is not None and held.attempt == attempt:
            del self.running[task_id]

    def _finish(self, out: dict[str, Any]) -> bool:
        held = self._current(out["task_id"], out["attempt"])
        if held is None:
            return False
        ref = f"t{self._next_ref + 1}"
        out["ref"] = ref
        try:
            text = dumps(out)
        except (TypeError, ValueError) as e:
            del out["ref"]
            raise TypeError(f"the task's result is not JSON: {e}") from e
        self._next_ref += 1
        held.finished = True
        del self.running[held.task_id]
        # A progress still queued stays where it is, before the outcome.
        self._progress_slot.pop(held.task_id, None)
        self.unacked[ref] = out
        self.outbox.append(OutMessage(out, ref, text))
        return True

    def draining_message(self, reason: str | None = None) -> None:
        self.draining = True
        out: dict[str, Any] = {"type": "draining"}
        if reason:
            out["reason"] = reason
        self.outbox.append(OutMessage(out))

    def bye(self, reason: str | None = None) -> None:
        out: dict[str, Any] = {"type": "bye"}
        if reason:
            out["reason"] = reason
        self.outbox.append(OutMessage(out))

    def heartbeat(self) -> None:
        self.outbox.append(OutMessage({"type": "heartbeat"}))

    @property
    def idle(self) -> bool:
        """Nothing runs and every outcome was acknowledged."""
        return not self.running and not self.unacked

    # -- writing ----------------------------------------------------------------------

    def take_lines(self) -> list[str]:
        """The outbox as JSON texts, in order; the outbox is emptied."""
        lines: list[str] = []
        for entry in self.outbox:
            if entry.text is not None:
                lines.append(entry.text)
            elif entry.message:
                try:
                    lines.append(dumps(entry.message))
                except (TypeError, ValueError) as e:
                    note = f"a {entry.message.get('type')} report was dropped: not JSON ({e})"
                    lines.append(dumps({"type": "log", "level": "warn", "message": note}))
        self.outbox.clear()
        self._progress_slot.clear()
        self._logs.clear()
        if self.dropped_logs:
            dropped = {
                "type": "log",
                "level": "warn",
                "message": f"{self.dropped_logs} log lines were dropped (too many at once)",
            }
            lines.insert(0, dumps(dropped))
            self.dropped_logs = 0
        return lines

    # -- reading ----------------------------------------------------------------------

    def receive(self, message: Any) -> list[Effect]:
        """What one server message means for the shell (unknown types are ignored)."""
        if not isinstance(message, dict):
            return []
        kind = message.get("type")
        if kind == "welcome":
            return self._welcome(message)
        if kind == "assign":
            return self._assign(message)
        if kind == "cancel":
            task_id, attempt = _ids(message)
            held = self.running.get(task_id)
            if held is None or held.attempt != attempt:
                return []
            grace = message.get("grace_s")
            return [
                CancelIn(
                    task_id,
                    attempt,
                    str(message.get("reason", "")),
                    float(grace) if isinstance(grace, int | float) else None,
                )
            ]
        if kind == "answer":
            task_id, attempt = _ids(message)
            held = self.running.get(task_id)
            question_id = str(message.get("question_id", ""))
            if held is None or held.attempt != attempt or held.open_question != question_id:
                return []
            held.open_question = None
            deadline = message.get("deadline")
            return [
                AnswerIn(
                    task_id,
                    attempt,
                    question_id,
                    str(message.get("outcome", "")),
                    "value" in message,
                    message.get("value"),
                    deadline if isinstance(deadline, str) else None,
                )
            ]
        if kind == "ok":
            self.unacked.pop(str(message.get("ref")), None)
            return []
        if kind == "drain":
            self.draining = True
            return [Drain()]
        if kind == "error":
            error = message.get("error")
            error = error if isinstance(error, dict) else {}
            ref = message.get("ref")
            ref = ref if isinstance(ref, str) else None
            code = str(error.get("code", ""))
            # A replayed outcome the server cannot apply (the attempt is gone) is
            # answered once: it will never be acknowledged, so stop holding it.
            if ref is not None and code in ("stale_attempt", "not_assigned"):
                self.unacked.pop(ref, None)
            return [ServerErrorIn(ref, code, str(error.get("message", "")))]
        return []

    def _welcome(self, message: dict[str, Any]) -> list[Effect]:
        limits = message.get("limits")
        limits = limits if isinstance(limits, dict) else {}
        resumed: list[tuple[str, int, bool]] = []
        for entry in message.get("resumed") or []:
            if isinstance(entry, dict):
                resumed.append(
                    (
                        str(entry.get("task_id")),
                        _int(entry.get("attempt")),
                        entry.get("kept") is True,
                    )
                )
        welcome = Welcome(
            worker_id=str(message.get("worker_id", "")),
            heartbeat_interval_s=_num(message.get("heartbeat_interval_s"), 5.0),
            heartbeat_timeout_s=_num(message.get("heartbeat_timeout_s"), 15.0),
            max_message_bytes=_int(limits.get("max_message_bytes"), 64 * 1024 * 1024),
            max_file_bytes=_int(limits.get("max_file_bytes"), 0) or None,
            resumed=tuple(resumed),
        )
        self.welcome = welcome
        effects: list[Effect] = [welcome]
        # Attempts still running here go on only if the server kept them.
        kept = {(t, n) for t, n, k in resumed if k}
        for held in list(self.running.values()):
            if (held.task_id, held.attempt) not in kept:
                del self.running[held.task_id]
                effects.append(Forget(held.task_id, held.attempt))
        for entry in self._unsent_asks:
            if self._current(entry.message["task_id"], entry.message["attempt"]) is not None:
                self.outbox.append(entry)
        self._unsent_asks = []
        self.replay()
        return effects

    def _assign(self, message: dict[str, Any]) -> list[Effect]:
        task_id, attempt = _ids(message)
        if not task_id or attempt < 1:
            raise ProtocolError(f"assign without task_id/attempt: {message!r}")
        previous = self.running.get(task_id)
        if previous is not None and previous.attempt >= attempt:
            return []
        self.running[task_id] = _Attempt(task_id, attempt)
        timeout = message.get("timeout_s")
        deadline = message.get("deadline")
        output_dir = message.get("output_dir")
        upload_url = message.get("upload_url")
        return [
            Assign(
                task_id=task_id,
                attempt=attempt,
                task=str(message.get("task", "")),
                input=message.get("input"),
                deadline=deadline if isinstance(deadline, str) else None,
                timeout_s=float(timeout) if isinstance(timeout, int | float) else None,
                interactive=message.get("interactive") is not False,
                output_dir=output_dir if isinstance(output_dir, str) else None,
                upload_url=upload_url if isinstance(upload_url, str) else None,
                inputs=_inputs(message.get("inputs")),
            )
        ]


def _inputs(value: Any) -> tuple[dict[str, Any], ...]:
    """The well-formed entries of ``assign.inputs`` (a path and a link each)."""
    if not isinstance(value, list):
        return ()
    return tuple(
        item
        for item in value
        if isinstance(item, dict)
        and isinstance(item.get("path"), str)
        and isinstance(item.get("url"), str)
    )


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _num(value: Any, default: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else default


def _ids(message: dict[str, Any]) -> tuple[str, int]:
    task_id = message.get("task_id")
    return (task_id if isinstance(task_id, str) else "", _int(message.get("attempt")))
