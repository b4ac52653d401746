"""What a handler gets as ``ctx``: :class:`Context` (``async def`` handlers) and
:class:`SyncContext` (plain ``def`` handlers, which run in a thread).

Both report through the worker's I/O loop, never from the handler's own
stack: ``progress`` and ``log`` only queue (a CPU-bound handler cannot stall
the heartbeats), ``ask`` waits for the answer. After the attempt is
cancelled every ``ctx`` call raises :class:`taskwire.Cancelled`.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import Cancelled, NotInteractive, QuestionTimeout
from ..events import parse_time

if TYPE_CHECKING:
    from ._runner import Runner

__all__ = ["Context", "FileOut", "InputFile", "SyncContext", "check_file_name"]

MAX_FILE_NAME_BYTES = 255


def check_file_name(name: str) -> str:
    """A file output's name: one path component, no control characters."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"invalid file name {name!r}")
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"invalid file name {name!r}: one path component, no control characters")
    if len(name.encode()) > MAX_FILE_NAME_BYTES:
        raise ValueError(f"file name longer than {MAX_FILE_NAME_BYTES} bytes")
    return name


@dataclass(slots=True)
class FileOut:
    """A file output of the attempt, listed in ``complete.files``."""

    name: str
    path: Path
    content_type: str | None
    #: An ``open_file`` handle still open (closed before the attempt completes).
    handle: IO[bytes] | None = None


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file of the attempt (an ``$upload`` or ``$url`` reference in
    its input, protocol §8.5 and §19), on this machine's disk."""

    #: Where its reference stands in the input, e.g. ``$.package``.
    json_path: str
    name: str
    size: int
    #: Lowercase hex; the bytes at :attr:`path` were checked against it.
    sha256: str
    content_type: str
    #: Managed workers: the server's own file (read it, never write or move it).
    #: Remote workers: a copy downloaded for this attempt, removed when it ends.
    path: Path

    def open(self) -> IO[bytes]:
        """Opens the file for reading (binary)."""
        return self.path.open("rb")

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


DOWNLOAD_CHUNK = 256 * 1024


@dataclass(slots=True)
class AttemptState:
    """One attempt as the runner and its ctx share it."""

    task_id: str
    attempt: int
    task: str
    interactive: bool
    deadline: datetime | None
    timeout_s: float | None
    #: Where files go: the server's directory (managed), or a local one (remote).
    output_dir_text: str
    managed: bool
    upload_url: str | None
    #: ``assign.inputs`` as sent (metadata and a link per file).
    inputs: tuple[dict[str, Any], ...] = ()
    #: The server's HTTP base, for links sent as paths (remote workers).
    http_base: str | None = None
    #: Input files made local so far, by JSON path.
    local_inputs: dict[str, InputFile] = field(default_factory=dict)
    #: Where a remote worker's input downloads go (removed when the attempt ends).
    input_dir: Path | None = None
    #: Set once by the loop; read from any thread (a plain bool is enough).
    cancel_requested: bool = False
    #: The handler looked at ``output_dir`` (a remote worker's local folder to remove).
    dir_used: bool = False
    cancel_reason: str | None = None
    files: dict[str, FileOut] = field(default_factory=dict)
    questions: int = 0
    answer: asyncio.Future[Any] | None = None
    # Made on first use: most attempts never need them.
    _async_event: asyncio.Event | None = None
    _thread_event: threading.Event | None = None
    _ask_lock: asyncio.Lock | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.output_dir_text)

    def was_cancelled(self) -> bool:
        return self.cancel_requested

    def request_cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self.cancel_requested = True
        if self._async_event is not None:
            self._async_event.set()
        if self._thread_event is not None:
            self._thread_event.set()

    def async_event(self) -> asyncio.Event:
        if self._async_event is None:
            self._async_event = asyncio.Event()
            if self.cancel_requested:
                self._async_event.set()
        return self._async_event

    def thread_event(self) -> threading.Event:
        if self._thread_event is None:
            event = threading.Event()
            if self.cancel_requested:
                event.set()
            self._thread_event = event
        return self._thread_event

    def ask_lock(self) -> asyncio.Lock:
        if self._ask_lock is None:
            self._ask_lock = asyncio.Lock()
        return self._ask_lock


def _choices(choices: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for choice in choices:
        if isinstance(choice, dict):
            if "value" not in choice:
                raise ValueError("a choice given as a dict needs a 'value'")
            out.append({k: v for k, v in choice.items() if k in ("value", "label")})
        elif isinstance(choice, tuple) and len(choice) == 2:
            out.append({"value": choice[0], "label": str(choice[1])})
        else:
            out.append({"value": choice})
    if not out:
        raise ValueError("a question needs at least one choice")
    return out


class _Base:
    def __init__(self, runner: Runner, state: AttemptState, input: Any) -> None:
        self._runner = runner
        self._state = state
        #: The task's input as the server sent it (JSON), before any conversion.
        self.raw_input = input

    # -- what the attempt is ------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self._state.task_id

    @property
    def attempt(self) -> int:
        """1 for the first run of the task, 2 … after a re-queue (retry-safe tasks)."""
        return self._state.attempt

    @property
    def task(self) -> str:
        """The task's name."""
        return self._state.task

    @property
    def deadline(self) -> datetime | None:
        """When the attempt must have ended (UTC); moved by time spent on questions."""
        return self._state.deadline

    def time_left(self) -> float | None:
        """Seconds until :attr:`deadline` (negative once passed), or None without one."""
        if self._state.deadline is None:
            return None
        return (self._state.deadline - datetime.now(UTC)).total_seconds()

    @property
    def interactive(self) -> bool:
        """False when the submitter said nobody will answer questions."""
        return self._state.interactive

    @property
    def is_cancelled(self) -> bool:
        """True once the server cancelled the attempt (readable from any thread)."""
        return self._state.cancel_requested

    @property
    def cancel_reason(self) -> str | None:
        """``client``, ``disconnect``, ``timeout``, ``shutdown`` or ``superseded``."""
        return self._state.cancel_reason

    @property
    def output_dir(self) -> Path:
        """Where this attempt's files go (managed: the server's directory for it;
        remote: a local folder uploaded on completion)."""
        self._state.dir_used = True
        path = self._state.output_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def state(self) -> Any:
        """What the worker's ``setup`` hook returned (the warm, shared resources)."""
        return self._runner.worker.state

    def _check(self) -> None:
        if self._state.cancel_requested:
            raise Cancelled(f"task {self.task_id} was cancelled ({self._state.cancel_reason})")

    # -- reports (queue only, from any thread) ----------------------------------------

    def progress(
        self, fraction: float | None = None, message: str | None = None, data: Any = None
    ) -> None:
        """Reports progress (``fraction`` 0.0 to 1.0). Never blocks: reports not yet
        written are replaced by the newest one."""
        self._check()
        self._runner.report_progress(self._state, fraction, message, data)

    def log(self, message: str, level: str = "info") -> None:
        """A log line for the server's log (``debug``, ``info``, ``warn``, ``error``).
        Never blocks; at most 1000 wait to be written (older ones are dropped)."""
        self._check()
        if level not in ("debug", "info", "warn", "error"):
            raise ValueError("level is one of debug, info, warn, error")
        self._runner.report_log(self._state, str(message), level)

    # -- input files ------------------------------------------------------------------

    @property
    def inputs(self) -> list[str]:
        """The JSON paths of the task's input files (``$.package``), in path order."""
        return [str(item["path"]) for item in self._state.inputs]

    def _input_file(self, json_path: str | None) -> InputFile:
        self._check()
        state = self._state
        items = state.inputs
        if json_path is None:
            if len(items) != 1:
                raise KeyError(f"the task has {len(items)} input files: name one of {self.inputs}")
            json_path = str(items[0]["path"])
        found = state.local_inputs.get(json_path)
        if found is not None:
            return found
        item = next((i for i in items if i["path"] == json_path), None)
        if item is None:
            raise KeyError(f"no input file at {json_path} (the task has {self.inputs})")
        name = str(item.get("name") or "input")
        size = int(item.get("size") or 0)
        sha256 = str(item.get("sha256") or "")
        local = item.get("local_path")
        if isinstance(local, str) and local:
            path = Path(local)
        else:
            if state.input_dir is None:
                state.input_dir = self._runner.input_dir(state)
            path = state.input_dir / f"{len(state.local_inputs)}-{check_file_name(name)}"
            _download(self._absolute(str(item["url"])), path, size, sha256)
        file = InputFile(
            json_path=json_path,
            name=name,
            size=size,
            sha256=sha256,
            content_type=str(item.get("content_type") or "application/octet-stream"),
            path=path,
        )
        state.local_inputs[json_path] = file
        return file

    def _absolute(self, url: str) -> str:
        if "://" in url:
            return url
        base = self._state.http_base
        if base is None:
            raise RuntimeError("the input link is a path and the server's URL is unknown")
        return base.rstrip("/") + url

    # -- files ------------------------------------------------------------------------

    def output_path(self, name: str, content_type: str | None = None) -> Path:
        """A path in :attr:`output_dir` to write the file ``name`` at (e.g. by a
        subprocess); it is listed as an output if it exists when the task returns."""
        self._check()
        path = self.output_dir / check_file_name(name)
        self._state.files[name] = FileOut(name, path, content_type)
        return path

    def open_file(self, name: str, content_type: str | None = None) -> IO[bytes]:
        """Opens the output file ``name`` for writing (binary); closed for you at the end."""
        path = self.output_path(name, content_type)
        handle = open(path, "wb")  # noqa: SIM115 - the caller closes it, or completion does
        self._state.files[name].handle = handle
        return handle

    def _write(self, name: str, data: bytes | str, content_type: str | None) -> Path:
        path = self.output_path(name, content_type)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def _add(
        self, path: str | os.PathLike[str], name: str | None, content_type: str | None
    ) -> Path:
        self._check()
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        name = check_file_name(name or source.name)
        if not self._state.managed:
            # Uploaded from where it is.
            self._state.files[name] = FileOut(name, source, content_type)
            return source
        target = self.output_path(name, content_type)
        if source.resolve() != target.resolve():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return target


def _download(url: str, path: Path, size: int, sha256: str) -> None:
    """GETs an input link into ``path`` (no key: the link is the capability),
    checking its size and SHA-256."""
    import httpx

    digest = hashlib.sha256()
    written = 0
    with (
        httpx.stream("GET", url, timeout=httpx.Timeout(60.0, connect=10.0)) as response,
        path.open("wb") as out,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"the input link answered {response.status_code}")
        for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
            digest.update(chunk)
            written += len(chunk)
            out.write(chunk)
    if written != size or (sha256 and digest.hexdigest() != sha256):
        path.unlink(missing_ok=True)
        raise RuntimeError("the input file arrived damaged (size or sha256 differ)")


def _deadline(text: str | None) -> datetime | None:
    return parse_time(text)


class Context(_Base):
    """The ``ctx`` of an ``async def`` handler."""

    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the server cancels the attempt (the handler also gets
        :class:`asyncio.CancelledError` at its next ``await``)."""
        return self._state.async_event()

    async def ask(
        self,
        prompt: str,
        *,
        choices: Sequence[Any] | None = None,
        schema: dict[str, Any] | None = None,
        default: Any = ...,
        timeout_s: float | None = None,
    ) -> Any:
        """Asks the task's submitter and returns the answer's value.

        Give ``choices`` (values, ``(value, label)`` pairs or ``{"value",
        "label"}`` dicts) or a JSON ``schema`` for a free answer. Without an
        answer in time the ``default`` is returned when there is one; else
        :class:`~taskwire.QuestionTimeout` is raised
        (:class:`~taskwire.NotInteractive` when the submitter said nobody
        answers). Time spent waiting is added to the deadline.
        """
        self._check()
        if (choices is None) == (schema is None):
            raise ValueError("ask takes either choices= or schema=")
        state = self._state
        async with state.ask_lock():
            self._check()
            state.questions += 1
            question_id = f"q{state.questions}"
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            state.answer = future
            self._runner.report_ask(
                state,
                question_id,
                prompt,
                choices=_choices(choices) if choices is not None else None,
                schema=schema,
                default=None if default is ... else default,
                has_default=default is not ...,
                timeout_s=timeout_s,
            )
            try:
                outcome, has_value, value, deadline = await future
            finally:
                state.answer = None
            if deadline is not None:
                state.deadline = _deadline(deadline) or state.deadline
            if outcome == "answered" or has_value:
                return value
            if outcome == "cancelled":
                raise Cancelled(f"task {self.task_id} was cancelled while asking")
            if outcome == "not_interactive":
                raise NotInteractive(question_id)
            raise QuestionTimeout(question_id)

    async def input_file(self, json_path: str | None = None) -> InputFile:
        """The input file whose reference is at ``json_path`` in the input
        (``"$.package"``; may be left out when there is only one), on local
        disk: a managed worker reads the server's file, a remote one downloads
        it once (in a thread) through the attempt's link, checked by sha256."""
        return await asyncio.to_thread(self._input_file, json_path)

    async def write_file(
        self, name: str, data: bytes | str, content_type: str | None = None
    ) -> Path:
        """Writes the output file ``name`` (in a thread: the loop keeps serving)."""
        return await asyncio.to_thread(self._write, name, data, content_type)

    async def add_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        content_type: str | None = None,
    ) -> Path:
        """Adds an existing file as an output (managed: linked or copied into
        :attr:`output_dir`; remote: uploaded from where it is)."""
        return await asyncio.to_thread(self._add, path, name, content_type)


class SyncContext(_Base):
    """The ``ctx`` of a plain ``def`` handler (running in a worker thread)."""

    @property
    def cancelled(self) -> threading.Event:
        """Set when the server cancels the attempt; check it in long loops (or call
        any ``ctx`` method, which raises :class:`taskwire.Cancelled` then)."""
        return self._state.thread_event()

    def ask(
        self,
        prompt: str,
        *,
        choices: Sequence[Any] | None = None,
        schema: dict[str, Any] | None = None,
        default: Any = ...,
        timeout_s: float | None = None,
    ) -> Any:
        """Blocks until the answer (see :meth:`Context.ask`)."""
        self._check()
        inner = Context(self._runner, self._state, self.raw_input)
        coro = inner.ask(
            prompt, choices=choices, schema=schema, default=default, timeout_s=timeout_s
        )
        return asyncio.run_coroutine_threadsafe(coro, self._runner.loop).result()

    def input_file(self, json_path: str | None = None) -> InputFile:
        """The input file at ``json_path`` on local disk (see :meth:`Context.input_file`)."""
        return self._input_file(json_path)

    def write_file(self, name: str, data: bytes | str, content_type: str | None = None) -> Path:
        """Writes the output file ``name``."""
        return self._write(name, data, content_type)

    def add_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        content_type: str | None = None,
    ) -> Path:
        """Adds an existing file as an output (see :meth:`Context.add_file`)."""
        return self._add(path, name, content_type)


def content_type_of(file: FileOut) -> str:
    if file.content_type:
        return file.content_type
    guessed, _ = mimetypes.guess_type(file.name)
    return guessed or "application/octet-stream"


def deadline_from(text: str | None, timeout_s: float | None) -> datetime | None:
    parsed = _deadline(text)
    if parsed is None and timeout_s is not None:
        parsed = datetime.now(UTC) + timedelta(seconds=timeout_s)
    return parsed
