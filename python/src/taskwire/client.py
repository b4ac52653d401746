"""The asyncio client: submit tasks, follow their events, answer, download.

:class:`AsyncClient` speaks the client protocol (``docs/protocol.md`` Part I)
over one WebSocket (``transport="websocket"``, the default) or over plain
HTTP (``transport="rest"``: REST calls and one Server-Sent Events stream per
followed task) for environments without WebSockets. Both give the same
:class:`Task` handles.

Reconnects are the client's business, not yours: when the socket drops, the
client dials again with backoff and jitter and re-subscribes every task it
follows with ``after_seq`` = the last ``seq`` it holds, so an iteration over
``task.events()`` sees every event once, in order. A request that was in
flight when the socket dropped is sent again if that is safe (a ``submit``
with an ``idempotency_key``, a ``cancel``, a ``subscribe``); any other raises
:class:`~taskwire.errors.ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import errors
from ._http import download_to, read_checked, safe_name, sse_data
from ._task import Task
from ._util import Backoff, base_urls, dumps, loads
from .events import (
    EVENT_TYPES,
    Answered,
    Completed,
    Event,
    File,
    event_from_wire,
)

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

__all__ = ["AsyncClient", "Task", "TaskInfo"]

SUBPROTOCOL = "taskwire.v1"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Priority = Literal["high", "normal", "low"]
Delivery = Literal["link", "stream"]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task name the server offers (``welcome.tasks``)."""

    name: str
    description: str
    input_schema: Any
    served_by: str | None = None
    workers: int | None = None


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    kind: str
    message: dict[str, Any]
    resend: bool
    generation: int
    task_id: str | None = None


@dataclass(slots=True)
class _StreamIn:
    task_id: str
    name: str
    path: Path
    part: Path
    file: Any
    digest: Any = field(default_factory=hashlib.sha256)


class AsyncClient:
    """A connection to a taskwire server.

    ``url`` is the server's base URL (``http://127.0.0.1:8080``) or its
    WebSocket URL (``ws://127.0.0.1:8080/v1/ws``). ``key`` is an API key or a
    browser token (``TASKWIRE_API_KEY`` from the environment when omitted).

    Use it as ``async with AsyncClient(url, key) as client:``, or call
    :meth:`connect` and :meth:`close`.
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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        stream_dir: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if transport not in ("websocket", "rest"):
            raise ValueError("transport must be 'websocket' or 'rest'")
        key = key if key is not None else os.environ.get("TASKWIRE_API_KEY")
        if not key:
            raise ValueError("no API key: pass key= or set TASKWIRE_API_KEY")
        self.http_url, self.ws_url = base_urls(url, "/v1/ws")
        self.transport = transport
        self._key = key
        self._headers = dict(headers or {})
        self._reconnect = reconnect
        self._reconnect_for = reconnect_for
        self._open_timeout = open_timeout
        self._max_message_bytes = max_message_bytes
        self._stream_dir = Path(stream_dir) if stream_dir is not None else None
        self._http: httpx.AsyncClient | None = None
        self._conn: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._closed_error: BaseException | None = None
        self._generation = 0
        self._next_ref = 0
        self._pending: dict[str, _Pending] = {}
        self._tasks: dict[str, Task] = {}
        self._sse: dict[str, asyncio.Task[None]] = {}
        self._streams: dict[int, _StreamIn] = {}
        #: ``welcome`` as last received (WebSocket only).
        self.welcome: dict[str, Any] | None = None
        #: How many times the WebSocket was dialled again after a drop.
        self.reconnects = 0

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Opens the connection (and reads ``welcome``); raises ``Unauthorized`` on a bad key."""
        if self.transport == "websocket" and self._reader is None:
            self._conn = await self._dial()
            self._generation += 1
            self._ready.set()
            self._reader = asyncio.create_task(self._run(), name="taskwire-client-reader")
        elif self.transport == "rest":
            self._client_http()

    async def close(self) -> None:
        """Closes the connection; tasks go on running on the server."""
        self._closing = True
        self._ready.clear()
        for sse in list(self._sse.values()):
            sse.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader
        for stream in self._streams.values():
            self._drop_stream(stream)
        self._streams.clear()
        gone = errors.ConnectionLost("the client was closed")
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(gone)
        self._pending.clear()
        for task in self._tasks.values():
            task._fail(gone)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def tasks(self) -> list[TaskInfo]:
        """The task names the server offered in its last ``welcome``."""
        raw = (self.welcome or {}).get("tasks") or []
        return [
            TaskInfo(
                name=str(t.get("name")),
                description=str(t.get("description", "")),
                input_schema=t.get("input_schema"),
                served_by=t.get("served_by"),
                workers=t.get("workers"),
            )
            for t in raw
            if isinstance(t, dict)
        ]

    # -- requests ---------------------------------------------------------------------

    async def submit(
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
    ) -> Task:
        """Submits a task; returns its handle once the server accepted it.

        Every keyword is a submit option of the protocol (§4.1); ``options``
        passes others as they are. Raises the rejection (``UnknownTask``,
        ``InvalidInput`` with ``path``, ``QueueFull`` with ``retry_after_ms``
        …). ``delivery="stream"`` needs ``stream_dir`` on the client: the files
        arrive on the socket and are written there (``File.path``).
        """
        opts: dict[str, Any] = dict(options or {})
        for name, value in (
            ("priority", priority),
            ("timeout_s", timeout_s),
            ("idempotency_key", idempotency_key),
            ("concurrency_key", concurrency_key),
            ("delivery", delivery),
            ("cancel_on_disconnect", cancel_on_disconnect),
            ("interactive", interactive),
        ):
            if value is not None:
                opts[name] = value
        stream = opts.get("delivery") == "stream"
        if stream and self._stream_dir is None:
            raise ValueError("delivery='stream' needs AsyncClient(stream_dir=...)")
        body: dict[str, Any] = {"task": task, "input": input}
        if opts:
            body["options"] = opts
        if self.transport == "rest":
            reply = await self._rest("POST", "/v1/tasks", body)
            handle = self._tasks.get(reply["task_id"]) or Task(self, reply["task_id"], task)
            handle.position = reply.get("position", 0)
            handle.duplicate = bool(reply.get("duplicate"))
        else:
            message = {"type": "submit", **body}
            handle = await self._request(message, "submit", resend="idempotency_key" in opts)
            handle.name = task
        if stream and self._stream_dir is not None:
            handle._stream_dir = self._stream_dir
        return handle

    async def run(self, task: str, input: Any = None, **options: Any) -> Any:
        """Submits and waits: the task's result (raises as :meth:`Task.wait`)."""
        handle = await self.submit(task, input, **options)
        return await handle.result()

    async def attach(self, task_id: str, after_seq: int = 0) -> Task:
        """Follows a task submitted earlier (by this key), e.g. after a restart.

        With ``after_seq=0`` it waits for the first replayed event, so an
        unknown id raises ``NotFound`` here.
        """
        handle = self._tasks.get(task_id)
        if handle is None:
            handle = Task(self, task_id)
            handle._last_seq = after_seq
        if self.transport == "rest":
            self._follow(handle)
            if after_seq == 0:
                await self._first_event(handle)
            return handle
        self._tasks[task_id] = handle
        future = self._subscribe(handle)
        if after_seq == 0:
            await future
        return handle

    async def cancel(self, task_id: str) -> None:
        """Cancels a task; ``AlreadyFinished`` if it ended, ``NotFound`` if unknown."""
        if self.transport == "rest":
            await self._rest("DELETE", f"/v1/tasks/{task_id}")
            return
        await self._request({"type": "cancel", "task_id": task_id}, "cancel", resend=True)

    async def answer(self, task_id: str, question_id: str, value: Any) -> Answered:
        """Answers a task's open question (§7); returns the ``answered`` event."""
        if self.transport == "rest":
            reply = await self._rest(
                "POST", f"/v1/tasks/{task_id}/questions/{question_id}/answer", {"value": value}
            )
            fields = {"type": "answered", "task_id": task_id, "question_id": question_id, **reply}
            event = event_from_wire(fields)
            return event if isinstance(event, Answered) else Answered(**_base(event))
        message = {"type": "answer", "task_id": task_id, "question_id": question_id, "value": value}
        event = await self._request(message, "answer", resend=False)
        assert isinstance(event, Answered)
        return event

    async def status(self, task_id: str) -> dict[str, Any]:
        """The task's snapshot (§9): ``state``, ``progress``, ``question``, ``result`` …"""
        reply: dict[str, Any] = await self._rest("GET", f"/v1/tasks/{task_id}")
        return reply

    async def ping(self) -> None:
        """A round trip to the server (WebSocket only)."""
        if self.transport == "websocket":
            await self._request({"type": "ping"}, "ping", resend=True)

    # -- downloads --------------------------------------------------------------------

    async def download(
        self, file: File | str, dest: str | os.PathLike[str], *, sha256: str | None = None
    ) -> Path:
        """Streams a file output to ``dest`` (a file path, or a directory to put
        ``file.name`` in) and checks its sha256; returns the path written.

        The bytes go to a temporary file beside ``dest`` and are renamed into
        place only when the size and sha256 match (``DownloadError`` otherwise,
        nothing left behind). No API key is sent: the link is the capability.
        """
        return await download_to(self._client_http(), self._absolute, file, dest, sha256)

    async def read(self, file: File) -> bytes:
        """A (small) file output's bytes, checked against its sha256."""
        return await read_checked(self._client_http(), self._absolute(file.url), file.sha256)

    # -- internals: REST --------------------------------------------------------------

    def _client_http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, connect=self._open_timeout, read=None)
            )
        return self._http

    def _auth_headers(self) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {self._key}"}

    def _absolute(self, url: str) -> str:
        return url if "://" in url else self.http_url + url

    async def _rest(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        http = self._client_http()
        try:
            response = await http.request(
                method,
                self.http_url + path,
                content=None if body is None else dumps(body).encode(),
                headers={**self._auth_headers(), "Content-Type": "application/json"},
            )
        except httpx.TransportError as e:
            raise errors.ConnectionLost(f"{method} {path}: {e}") from e
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        if response.status_code >= 400:
            error = payload.get("error") if isinstance(payload, dict) else None
            if not isinstance(error, dict):
                error = {"code": "internal", "message": f"HTTP {response.status_code}"}
            raise errors.error_from_wire(error)
        return payload

    async def _first_event(self, handle: Task) -> None:
        async for _ in handle.events():
            return

    def _follow(self, handle: Task) -> None:
        """Makes sure events of ``handle`` are being received."""
        if handle.done or handle._error is not None:
            return
        if self.transport == "websocket":
            if handle.id not in self._tasks:
                self._tasks[handle.id] = handle
                self._subscribe(handle)
            return
        running = self._sse.get(handle.id)
        if running is None or running.done():
            self._sse[handle.id] = asyncio.create_task(
                self._sse_follow(handle), name=f"taskwire-sse-{handle.id}"
            )

    async def _sse_follow(self, handle: Task) -> None:
        import httpx

        http = self._client_http()
        backoff = Backoff()
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while not handle.done and not self._closing:
                headers = {**self._auth_headers(), "Accept": "text/event-stream"}
                if handle.last_seq:
                    headers["Last-Event-ID"] = str(handle.last_seq)
                try:
                    url = f"{self.http_url}/v1/tasks/{handle.id}/events"
                    async with http.stream("GET", url, headers=headers) as response:
                        if response.status_code >= 400:
                            body = await response.aread()
                            try:
                                error = loads(body).get("error")
                            except ValueError:
                                error = None
                            if response.status_code in (429, 503) or error is None:
                                raise _Retry(f"HTTP {response.status_code}")
                            handle._fail(errors.error_from_wire(error))
                            return
                        backoff.reset()
                        deadline = None
                        async for data in sse_data(response):
                            obj = loads(data)
                            if isinstance(obj, dict):
                                handle._push(event_from_wire(obj))
                except (httpx.TransportError, _Retry, ValueError) as e:
                    if not self._reconnect:
                        handle._fail(errors.ConnectionLost(str(e)))
                        return
                if handle._finished():
                    return
                now = loop.time()
                deadline = deadline if deadline is not None else now + self._reconnect_for
                if now > deadline:
                    handle._fail(errors.ConnectionLost("the event stream could not be resumed"))
                    return
                await asyncio.sleep(backoff.next())
        finally:
            self._sse.pop(handle.id, None)

    # -- internals: WebSocket ---------------------------------------------------------

    async def _dial(self) -> ClientConnection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus
        from websockets.typing import Subprotocol

        try:
            conn = await connect(
                self.ws_url,
                additional_headers=self._auth_headers(),
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                compression=None,
                max_size=self._max_message_bytes,
                max_queue=64,
                open_timeout=self._open_timeout,
                ping_interval=20,
                ping_timeout=20,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            error: Any = None
            with contextlib.suppress(ValueError, AttributeError):
                error = loads(bytes(e.response.body or b"{}")).get("error")
            if error is None:
                code = {401: "unauthorized", 403: "unauthorized", 429: "rate_limited"}.get(
                    status, "internal"
                )
                error = {"code": code, "message": f"HTTP {status} on the WebSocket upgrade"}
            raise errors.error_from_wire(error) from e
        try:
            async with asyncio.timeout(self._open_timeout):
                while True:
                    first = loads(await conn.recv())
                    if isinstance(first, dict) and first.get("type") == "welcome":
                        self.welcome = first
                        return conn
        except BaseException:
            await conn.close()
            raise

    async def _run(self) -> None:
        """Reads the socket, dispatches, and reconnects after a drop."""
        from websockets.exceptions import ConnectionClosed

        while True:
            conn = self._conn
            assert conn is not None
            try:
                async for raw in conn:
                    if isinstance(raw, str):
                        self._dispatch(raw)
                    else:
                        self._stream_data(raw)
            except ConnectionClosed:
                pass
            except Exception as e:  # a bug in dispatch must not leave waiters hanging
                self._fatal(errors.ConnectionLost(f"client reader failed: {e!r}"))
                await conn.close()
                return
            self._ready.clear()
            code = conn.close_code
            self._connection_dropped()
            if self._closing:
                return
            if not self._reconnect or code == 4401:
                self._fatal(errors.ConnectionLost(f"connection closed (code {code})"))
                return
            try:
                self._conn = await self._redial()
            except BaseException as e:
                self._fatal(
                    e if isinstance(e, errors.TaskwireError) else errors.ConnectionLost(str(e))
                )
                return
            self._generation += 1
            self.reconnects += 1
            for handle in list(self._tasks.values()):
                if not handle.done:
                    self._subscribe(handle)
            for ref, pending in list(self._pending.items()):
                if pending.generation != self._generation:
                    pending.generation = self._generation
                    await self._send_raw({**pending.message, "ref": ref})
            self._ready.set()

    async def _redial(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_for
        backoff = Backoff()
        while True:
            await asyncio.sleep(backoff.next())
            if self._closing:
                raise errors.ConnectionLost("the client was closed")
            try:
                return await self._dial()
            except errors.Unauthorized:
                raise
            except Exception:
                if loop.time() > deadline:
                    raise
                continue

    def _connection_dropped(self) -> None:
        lost = errors.ConnectionLost("the connection dropped before the server answered")
        for ref, pending in list(self._pending.items()):
            if not pending.resend:
                del self._pending[ref]
                if not pending.future.done():
                    pending.future.set_exception(lost)
        for stream in self._streams.values():
            self._drop_stream(stream)
        self._streams.clear()

    def _fatal(self, error: BaseException) -> None:
        self._closed_error = error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        for handle in self._tasks.values():
            handle._fail(error)
        self._tasks.clear()

    async def _ready_conn(self) -> ClientConnection:
        if self._reader is None and not self._closing:
            await self.connect()
        while True:
            if self._closed_error is not None:
                raise self._closed_error
            if self._closing:
                raise errors.ConnectionLost("the client was closed")
            if self._ready.is_set() and self._conn is not None:
                return self._conn
            await self._ready.wait()

    async def _send_raw(self, message: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.send(dumps(message))

    async def _request(self, message: dict[str, Any], kind: str, *, resend: bool) -> Any:
        await self._ready_conn()
        self._next_ref += 1
        ref = f"py{self._next_ref}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = _Pending(
            future, kind, message, resend, self._generation, message.get("task_id")
        )
        await self._send_raw({**message, "ref": ref})
        return await future

    def _subscribe(self, handle: Task) -> asyncio.Future[Any]:
        """Sends ``subscribe`` (after_seq = what we hold); resolves on the first event."""
        self._next_ref += 1
        ref = f"py{self._next_ref}"
        message = {"type": "subscribe", "task_id": handle.id, "after_seq": handle.last_seq}
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        for old_ref, pending in list(self._pending.items()):
            if pending.kind == "subscribe" and pending.task_id == handle.id:
                del self._pending[old_ref]
                if not pending.future.done():
                    pending.future.set_result(None)
        self._pending[ref] = _Pending(
            future, "subscribe", message, True, self._generation, handle.id
        )
        if self._ready.is_set() or self._conn is not None:
            asyncio.get_running_loop().create_task(self._send_raw({**message, "ref": ref}))
        return future

    def _resolve(self, ref: Any, value: Any = None, error: BaseException | None = None) -> bool:
        if not isinstance(ref, str):
            return False
        pending = self._pending.pop(ref, None)
        if pending is None:
            return False
        if pending.kind == "subscribe" and error is not None and pending.task_id:
            handle = self._tasks.pop(pending.task_id, None)
            if handle is not None:
                handle._fail(error)
        if not pending.future.done():
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(value)
        return True

    def _dispatch(self, raw: str) -> None:
        try:
            msg = loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        ref = msg.get("ref")
        if kind in EVENT_TYPES and isinstance(msg.get("task_id"), str):
            self._event(msg, ref)
        elif kind == "rejected":
            self._resolve(ref, error=errors.error_from_wire(msg.get("error")))
        elif kind == "error":
            pending = self._pending.get(ref) if isinstance(ref, str) else None
            task_id = pending.task_id if pending is not None else None
            error = errors.error_from_wire(msg.get("error"), task_id=task_id)
            self._resolve(ref, error=error)
        elif kind in ("pong", "unsubscribed"):
            self._resolve(ref)
        elif kind == "welcome":
            self.welcome = msg
        elif kind == "stream_begin":
            self._stream_begin(msg)
        elif kind == "stream_end":
            self._stream_end(msg)

    def _event(self, msg: dict[str, Any], ref: Any) -> None:
        task_id: str = msg["task_id"]
        handle = self._tasks.get(task_id)
        pending = self._pending.get(ref) if isinstance(ref, str) else None
        if handle is None and pending is not None and pending.kind == "submit":
            handle = Task(self, task_id)
            self._tasks[task_id] = handle
        files_at = handle._streamed if handle is not None else None
        event = event_from_wire(msg, files_at)
        if handle is not None:
            handle._push(event)
            for sub_ref, sub in list(self._pending.items()):
                if sub.kind == "subscribe" and sub.task_id == task_id:
                    self._resolve(sub_ref, None)
            if handle.done:
                self._tasks.pop(task_id, None)
        if pending is not None:
            self._resolve(ref, handle if pending.kind == "submit" else event)

    # -- internals: stream delivery ---------------------------------------------------

    def _stream_begin(self, msg: dict[str, Any]) -> None:
        handle = self._tasks.get(str(msg.get("task_id")))
        number = msg.get("stream")
        if handle is None or handle._stream_dir is None or not isinstance(number, int):
            return
        folder = handle._stream_dir / handle.id
        folder.mkdir(parents=True, exist_ok=True)
        name = safe_name(str(msg.get("name", "file")))
        path = folder / name
        part = folder / f".{name}.part"
        self._streams[number] = _StreamIn(handle.id, name, path, part, open(part, "wb"))  # noqa: SIM115

    def _stream_data(self, frame: bytes) -> None:
        if len(frame) < 4:
            return
        stream = self._streams.get(int.from_bytes(frame[:4], "big"))
        if stream is not None:
            data = memoryview(frame)[4:]
            stream.file.write(data)
            stream.digest.update(data)

    def _stream_end(self, msg: dict[str, Any]) -> None:
        number = msg.get("stream")
        stream = self._streams.pop(number, None) if isinstance(number, int) else None
        if stream is None:
            return
        stream.file.close()
        handle = self._tasks.get(stream.task_id)
        if stream.digest.hexdigest() == msg.get("sha256"):
            os.replace(stream.part, stream.path)
            if handle is not None:
                handle._streamed[stream.name] = str(stream.path)
        else:
            stream.part.unlink(missing_ok=True)
            if handle is not None:
                handle._stream_error = f"sha256 mismatch on streamed file {stream.name}"

    def _drop_stream(self, stream: _StreamIn) -> None:
        with contextlib.suppress(OSError):
            stream.file.close()
        stream.part.unlink(missing_ok=True)

    async def _complete_stream(self, handle: Task, completed: Completed) -> Completed:
        """Stream delivery: files that did not arrive on the socket (a reconnect
        came between) are downloaded by their links into the same folder."""
        assert handle._stream_dir is not None
        files = []
        for file in completed.files:
            path = file.path or handle._streamed.get(file.name)
            if path is None:
                folder = handle._stream_dir / handle.id
                folder.mkdir(parents=True, exist_ok=True)
                path = str(await self.download(file, folder / safe_name(file.name)))
                handle._streamed[file.name] = path
            files.append(File(**{**_file_fields(file), "path": path}))
        return Completed(
            **{
                **_base(completed),
                "result": completed.result,
                "files": tuple(files),
                "duration_ms": completed.duration_ms,
            }
        )


class _Retry(Exception):
    pass


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _base(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "task_id": event.task_id,
        "seq": event.seq,
        "at": event.at,
        "raw": event.raw,
    }


def _file_fields(file: File) -> dict[str, Any]:
    return {
        "name": file.name,
        "size": file.size,
        "content_type": file.content_type,
        "sha256": file.sha256,
        "url": file.url,
        "expires_at": file.expires_at,
        "path": file.path,
    }
