"""The worker's shell: one asyncio loop owns the transport, the heartbeats and the
handlers' reports; :class:`~._session.Session` holds the protocol's state.

- ``async def`` handlers run as tasks on this loop; plain ``def`` handlers run
  in a thread pool of ``slots`` threads, so a CPU-bound handler never delays a
  heartbeat (an ``async`` handler that blocks the loop does, and the heartbeat
  ticker reports such stalls on stderr).
- One writer task writes whatever the session queued, in order, one write
  per burst; reports from handler threads are handed to the loop, coalesced.
- Managed (stdio): the end of stdin means the server is gone, and the worker
  stops. Remote: a dropped socket is dialled again with backoff and jitter,
  ``hello.resume`` lists what still runs here, unacknowledged outcomes are
  sent again after ``welcome``.
- SIGTERM/SIGINT: ``draining``, the running attempts finish, ``bye``, then
  teardown. A second signal stops at once (the server treats the running
  attempts as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import threading
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from .. import errors
from .._util import Backoff, base_urls, loads
from ._context import AttemptState, Context, SyncContext, content_type_of, deadline_from
from ._session import (
    AnswerIn,
    Assign,
    CancelIn,
    Drain,
    Effect,
    Forget,
    ServerErrorIn,
    Session,
    Welcome,
)

if TYPE_CHECKING:
    import httpx

    from ._worker import Worker

__all__ = ["Runner", "WorkerRefused"]

#: A report from a handler thread waits at most this many log lines.
MAX_THREAD_LOGS = 1000
#: An outcome not acknowledged this long after the last attempt ended does
#: not hold up ``bye`` (a server that does not acknowledge it never will).
BYE_ACK_WAIT_S = 5.0
#: After a stop signal, a remote worker tries this long to reconnect and
#: deliver what it still holds, then gives up.
STOP_RECONNECT_S = 30.0
#: How long the server may take to answer ``hello`` with ``welcome``.
WELCOME_TIMEOUT_S = 15.0
#: How late a heartbeat tick may be before the loop counts as blocked.
STALL_WARN_S = 1.0
UPLOAD_CHUNK = 1024 * 1024


class WorkerRefused(errors.TaskwireError):
    """The server refused the worker's ``hello`` (e.g. an invalid input schema)."""


class Transport(Protocol):
    async def recv(self) -> str | None: ...
    async def send(self, lines: list[str]) -> None: ...
    async def close(self, code: int = 1000) -> None: ...


@dataclass(slots=True)
class _Running:
    state: AttemptState
    task: asyncio.Task[None]
    is_async: bool
    forgotten: bool = False
    #: The attempt's coroutine began (a task cancelled before would never run it).
    started: bool = False


class Runner:
    """Serves one :class:`~taskwire.Worker` over one transport at a time."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.session = Session(
            name=worker.name,
            tasks=[spec.wire() for spec in worker.tasks.values()],
            slots=worker.slots,
            version=worker.version,
            sdk=worker.sdk,
        )
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.executor = ThreadPoolExecutor(worker.slots, thread_name_prefix="taskwire-task")
        self.running: dict[str, _Running] = {}
        self.transport: Transport | None = None
        self.managed = False
        self._key: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._connected = False
        self._last_sent = self.loop.time()
        self._last_recv = self.loop.time()
        self._stopping = False
        self._stopped_at = 0.0
        self._finished = asyncio.Event()
        self._last_end = self.loop.time()
        self._scratch: Path | None = None
        # Reports from handler threads, handed to the loop in one callback.
        self._lock = threading.Lock()
        self._thread_progress: dict[str, tuple[AttemptState, Any, Any, Any]] = {}
        self._thread_logs: deque[tuple[AttemptState, str, str]] = deque(maxlen=MAX_THREAD_LOGS)
        self._thread_scheduled = False

    # -- entry points -----------------------------------------------------------------

    async def serve_stdio(self, transport: Any) -> None:
        self.managed = True
        self._signals()
        try:
            await self.worker.run_setup()
            await transport.open()
            await self._connect(transport, resume=False)
            await self._session_loop(transport)
        finally:
            await self._shutdown()

    async def serve_remote(self, url: str, key: str) -> None:
        self.managed = False
        self._key = key
        http_base, ws_url = base_urls(url, "/v1/worker")
        self.http_base = http_base
        from ._remote import WebSocketTransport

        self._signals()
        backoff = Backoff(initial=0.2, cap=15.0)
        connected_before = False
        try:
            await self.worker.run_setup()
            while not self._finished.is_set():
                try:
                    transport = await WebSocketTransport.connect(
                        ws_url, key, open_timeout=10.0, max_message_bytes=64 * 1024 * 1024
                    )
                except errors.Unauthorized:
                    raise
                except (OSError, TimeoutError, errors.TaskwireError, Exception) as e:
                    delay = backoff.next()
                    print(
                        f"taskwire: cannot reach {ws_url} ({e}); again in {delay:.1f} s",
                        file=sys.stderr,
                    )
                    await self._sleep_or_finish(delay)
                    continue
                try:
                    await self._connect(transport, resume=connected_before)
                except WorkerRefused:
                    raise
                except ConnectionError:
                    await self._sleep_or_finish(backoff.next())
                    continue
                connected_before = True
                backoff.reset()
                await self._session_loop(transport)
                if self._finished.is_set():
                    break
                if self._stopping and (
                    self.session.idle or self.loop.time() - self._stopped_at > STOP_RECONNECT_S
                ):
                    break
                delay = backoff.next()
                print(
                    f"taskwire: connection to {ws_url} lost (code {transport.close_code}); "
                    f"again in {delay:.1f} s",
                    file=sys.stderr,
                )
                await self._sleep_or_finish(delay)
        finally:
            await self._shutdown()

    async def _sleep_or_finish(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._finished.wait()

    # -- one connection ---------------------------------------------------------------

    async def _connect(self, transport: Transport, *, resume: bool) -> None:
        """Sends ``hello`` and waits for ``welcome`` (what came before is dropped)."""
        self.session.disconnected()
        hello = self.session.hello(resume=resume)
        try:
            await transport.send([json.dumps(hello, separators=(",", ":"))])
        except (ConnectionError, OSError) as e:
            await transport.close()
            raise ConnectionError(str(e)) from e
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT_S):
                await self._await_welcome(transport)
        except TimeoutError:
            await transport.close(4408)
            raise ConnectionError("no welcome in time") from None

    async def _await_welcome(self, transport: Transport) -> None:
        refused: str | None = None
        while True:
            raw = await transport.recv()
            if raw is None:
                await transport.close()
                if refused is not None:
                    raise WorkerRefused(refused)
                code = getattr(transport, "close_code", None)
                if code in (4400, 4401):
                    raise WorkerRefused(f"the server closed the session ({code})")
                raise ConnectionError("closed before welcome")
            message = _parse(raw)
            if not isinstance(message, dict):
                continue
            if message.get("type") == "error":
                error = message.get("error") or {}
                refused = f"{error.get('code')}: {error.get('message')}"
                continue
            if message.get("type") == "welcome":
                self.transport = transport
                self._connected = True
                self._last_recv = self._last_sent = self.loop.time()
                self._apply(self.session.receive(message))
                return

    async def _session_loop(self, transport: Transport) -> None:
        writer = asyncio.create_task(self._writer(transport), name="taskwire-writer")
        ticker = asyncio.create_task(self._heartbeats(transport), name="taskwire-heartbeats")
        self._kick()
        try:
            while (raw := await transport.recv()) is not None:
                self._last_recv = self.loop.time()
                message = _parse(raw)
                if message is None:
                    continue
                self._apply(self.session.receive(message))
        finally:
            self._connected = False
            self.transport = None
            ticker.cancel()
            writer.cancel()
            for job in (ticker, writer):
                with contextlib.suppress(BaseException):
                    await job
            self.session.disconnected()
            await transport.close()
            if self.managed:
                # No server: nothing can be reported any more.
                self._finished.set()

    async def _writer(self, transport: Transport) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            lines = self.session.take_lines()
            if not lines:
                continue
            try:
                await transport.send(lines)
            except (ConnectionError, OSError):
                await transport.close()
                return
            self._last_sent = self.loop.time()
            if self._stopping and not self._finished.is_set():
                self._maybe_bye()

    async def _heartbeats(self, transport: Transport) -> None:
        welcome = self.session.welcome
        interval = welcome.heartbeat_interval_s if welcome else 5.0
        timeout = welcome.heartbeat_timeout_s if welcome else 15.0
        tick = max(0.05, interval / 4)
        while True:
            expected = self.loop.time() + tick
            await asyncio.sleep(tick)
            now = self.loop.time()
            if now - expected > STALL_WARN_S:
                note = (
                    f"the worker's event loop was blocked for {now - expected:.1f} s: "
                    "an async handler runs blocking code (make it a plain def handler, "
                    "or use asyncio.to_thread)"
                )
                print(f"taskwire: {note}", file=sys.stderr)
                self.session.log(note, "warn")
                self._kick()
            if now - self._last_sent >= interval:
                self.session.heartbeat()
                self._kick()
            if not self.managed and now - self._last_recv > timeout:
                print(
                    "taskwire: nothing heard from the server in time; reconnecting", file=sys.stderr
                )
                await transport.close(4408)
                return
            if self._stopping:
                self._maybe_bye()

    def _kick(self) -> None:
        self._wake.set()

    # -- effects ----------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Assign):
                self._start(effect)
            elif isinstance(effect, CancelIn):
                self._cancel(effect.task_id, effect.reason)
            elif isinstance(effect, AnswerIn):
                running = self.running.get(effect.task_id)
                future = running.state.answer if running else None
                if future is not None and not future.done():
                    future.set_result(
                        (effect.outcome, effect.has_value, effect.value, effect.deadline)
                    )
            elif isinstance(effect, Forget):
                running = self.running.get(effect.task_id)
                if running is not None and running.state.attempt == effect.attempt:
                    running.forgotten = True
                    self._cancel(effect.task_id, "superseded")
            elif isinstance(effect, Drain):
                pass  # take nothing new: the server sends nothing new either
            elif isinstance(effect, ServerErrorIn):
                print(
                    f"taskwire: the server answered {effect.code}: {effect.message}",
                    file=sys.stderr,
                )
            elif isinstance(effect, Welcome):
                pass
        self._kick()

    def _start(self, assign: Assign) -> None:
        spec = self.worker.tasks.get(assign.task)
        if spec is None:
            self.session.fail(
                assign.task_id,
                assign.attempt,
                f"this worker does not serve the task {assign.task!r}",
                code="UnknownTask",
            )
            return
        if assign.output_dir is not None:
            output_dir = assign.output_dir
        else:
            output_dir = str(self._scratch_dir() / f"{assign.task_id}-{assign.attempt}")
        state = AttemptState(
            task_id=assign.task_id,
            attempt=assign.attempt,
            task=assign.task,
            interactive=assign.interactive,
            deadline=deadline_from(assign.deadline, assign.timeout_s),
            timeout_s=assign.timeout_s,
            output_dir_text=output_dir,
            managed=assign.output_dir is not None,
            upload_url=assign.upload_url,
            inputs=assign.inputs,
            http_base=getattr(self, "http_base", None),
        )
        job = asyncio.create_task(
            self._attempt(spec, state, assign.input), name=f"taskwire-attempt-{assign.task_id}"
        )
        self.running[assign.task_id] = _Running(state, job, spec.is_async)

    def _cancel(self, task_id: str, reason: str) -> None:
        running = self.running.get(task_id)
        if running is None:
            return
        state = running.state
        if state.was_cancelled():
            return
        state.request_cancel(reason)
        if state.answer is not None and not state.answer.done():
            state.answer.set_result(("cancelled", False, None, None))
        if running.is_async and running.started:
            running.task.cancel()

    async def _attempt(self, spec: Any, state: AttemptState, raw_input: Any) -> None:
        session = self.session
        running = self.running.get(state.task_id)
        if running is not None:
            running.started = True
        try:
            if state.was_cancelled():
                raise errors.Cancelled("cancelled before it started")
            value = spec.build_input(raw_input)
            if spec.is_async:
                result = await spec.handler(value, Context(self, state, raw_input))
            else:
                ctx = SyncContext(self, state, raw_input)
                result = await self.loop.run_in_executor(self.executor, spec.handler, value, ctx)
            result = _jsonable(result)
            files = await self._files(state)
            if state.was_cancelled():
                session.cancelled(state.task_id, state.attempt)
            else:
                session.complete(state.task_id, state.attempt, result, files)
        except asyncio.CancelledError:
            if not state.was_cancelled():
                raise  # the worker itself is stopping
            session.cancelled(state.task_id, state.attempt)
        except Exception as e:
            if state.was_cancelled():
                session.cancelled(state.task_id, state.attempt)
            else:
                code, message, details = self._describe(e)
                session.fail(state.task_id, state.attempt, message, code, details)
        finally:
            self.running.pop(state.task_id, None)
            if not state.managed and (state.files or state.dir_used):
                _remove_tree(state.output_dir)
            if state.input_dir is not None:
                _remove_tree(state.input_dir)
            self._last_end = self.loop.time()
            self._kick()
            if self._stopping:
                self._maybe_bye()

    def _describe(self, error: Exception) -> tuple[str, str, dict[str, Any] | None]:
        code = getattr(error, "code", None)
        code = code if isinstance(code, str) and code else type(error).__name__
        message = str(error) or type(error).__name__
        details: dict[str, Any] = {}
        extra = getattr(error, "details", None)
        if isinstance(extra, dict):
            details.update(extra)
        if self.worker.debug:
            details["traceback"] = "".join(traceback.format_exception(error))
        return code, message, details or None

    # -- files ------------------------------------------------------------------------

    def input_dir(self, state: AttemptState) -> Path:
        """A fresh local folder for one attempt's downloaded input files."""
        path = self._scratch_dir() / f"{state.task_id}-{state.attempt}-inputs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="taskwire-worker-"))
        return self._scratch

    async def _files(self, state: AttemptState) -> list[dict[str, Any]]:
        """Closes open outputs and lists those that exist; a remote worker uploads them."""
        listed: list[dict[str, Any]] = []
        for file in state.files.values():
            if file.handle is not None and not file.handle.closed:
                file.handle.close()
            if not file.path.is_file():
                continue
            entry: dict[str, Any] = {"name": file.name, "content_type": content_type_of(file)}
            if state.managed:
                entry["path"] = file.path.relative_to(state.output_dir).as_posix()
            else:
                await self._upload(state, file.name, file.path, entry["content_type"])
            listed.append(entry)
        return listed

    async def _upload(self, state: AttemptState, name: str, path: Path, content_type: str) -> None:
        if state.upload_url is None:
            raise RuntimeError("the server gave no upload_url for this attempt's files")
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        url = state.upload_url
        if "://" not in url:
            url = self.http_base + url

        async def body() -> Any:
            with path.open("rb") as source:
                while chunk := source.read(UPLOAD_CHUNK):
                    yield chunk

        size = path.stat().st_size  # noqa: ASYNC240 - one stat
        response = await self._http.put(
            f"{url.rstrip('/')}/{quote(name, safe='')}",
            content=body(),
            headers={
                "Authorization": f"Bearer {self._key}",
                "Content-Type": content_type,
                "Content-Length": str(size),
            },
        )
        if response.status_code != 201:
            try:
                error = response.json().get("error") or {}
            except ValueError:
                error = {}
            raise RuntimeError(
                f"upload of an output file answered {response.status_code} "
                f"{error.get('code', '')}: {error.get('message', '')}".rstrip(": ")
            )

    # -- reports from ctx -------------------------------------------------------------

    def _in_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def report_progress(self, state: AttemptState, fraction: Any, message: Any, data: Any) -> None:
        if self._in_loop():
            if self.session.progress(state.task_id, state.attempt, fraction, message, data):
                self._kick()
            return
        with self._lock:
            self._thread_progress[state.task_id] = (state, fraction, message, data)
            self._schedule_thread_reports()

    def report_log(self, state: AttemptState, message: str, level: str) -> None:
        if self._in_loop():
            self.session.log(message, level, state.task_id, state.attempt)
            self._kick()
            return
        with self._lock:
            self._thread_logs.append((state, message, level))
            self._schedule_thread_reports()

    def _schedule_thread_reports(self) -> None:
        # Called with the lock held: at most one callback waits on the loop.
        if not self._thread_scheduled:
            self._thread_scheduled = True
            self.loop.call_soon_threadsafe(self._take_thread_reports)

    def _take_thread_reports(self) -> None:
        with self._lock:
            progress = list(self._thread_progress.values())
            logs = list(self._thread_logs)
            self._thread_progress.clear()
            self._thread_logs.clear()
            self._thread_scheduled = False
        # Logs first: a handler logs, then reports the progress it made.
        for state, message, level in logs:
            self.session.log(message, level, state.task_id, state.attempt)
        for state, fraction, text, data in progress:
            self.session.progress(state.task_id, state.attempt, fraction, text, data)
        self._kick()

    def report_ask(self, state: AttemptState, question_id: str, prompt: str, **kwargs: Any) -> None:
        self.session.ask(state.task_id, state.attempt, question_id, prompt, **kwargs)
        self._kick()

    # -- stopping ---------------------------------------------------------------------

    def _signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            print("taskwire: second signal: stopping now", file=sys.stderr)
            self._finished.set()
            for running in self.running.values():
                running.task.cancel()
            if self.transport is not None:
                self.loop.create_task(self.transport.close(1001))
            return
        print(
            f"taskwire: {signal.Signals(sig).name}: draining (finishing "
            f"{len(self.running)} running task(s))",
            file=sys.stderr,
        )
        self._stopping = True
        self._stopped_at = self.loop.time()
        self.session.draining_message(signal.Signals(sig).name)
        self._kick()
        self._maybe_bye()

    def _maybe_bye(self) -> None:
        if self._finished.is_set() or self.running:
            return
        waited = self.loop.time() - self._last_end
        if self.session.unacked and waited < BYE_ACK_WAIT_S:
            return
        if not self._connected or self.transport is None:
            self._finished.set()
            return
        self.session.bye("drained")
        self._finished.set()
        transport = self.transport
        lines = self.session.take_lines()

        async def goodbye() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await transport.send(lines)
            await transport.close(1000)

        self.loop.create_task(goodbye())

    async def _shutdown(self) -> None:
        self._finished.set()
        for running in list(self.running.values()):
            running.task.cancel()
        for running in list(self.running.values()):
            with contextlib.suppress(BaseException):
                await running.task
        self.executor.shutdown(wait=False, cancel_futures=True)
        try:
            await self.worker.run_teardown()
        finally:
            if self._http is not None:
                await self._http.aclose()
            if self._scratch is not None:
                _remove_tree(self._scratch)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self.loop.remove_signal_handler(sig)


def _parse(raw: str) -> Any:
    try:
        return loads(raw)
    except ValueError:
        return None


def _jsonable(value: Any) -> Any:
    """A handler's return value as JSON: dataclasses become objects; anything that
    does not serialise fails the task with a clear message."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return value


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
