"""The remote worker's framing and reconnects, message by message: a real
worker process dials a WebSocket endpoint that the test serves and plays the
server's side of (the end-to-end tests do the same under ``taskwire serve``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from .peer import PACKAGE_ROOT
from .support import DEADLINE

KEY = "twk_worker_test"
TID = "c" * 32


class Endpoint:
    """A WebSocket endpoint at /v1/worker that hands each connection to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.headers: list[dict[str, str]] = []
        self.port = 0

    async def handler(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        self.headers.append(dict(conn.request.headers.raw_items()))
        await self.connections.put(conn)
        await conn.wait_closed()

    async def next(self) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), DEADLINE)


async def recv(
    conn: ServerConnection, kind: str, skip: tuple[str, ...] = ("heartbeat", "log", "progress")
) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(conn.recv(), DEADLINE))
        if message["type"] == kind:
            return message
        assert message["type"] in skip, message


def welcome(**extra: Any) -> str:
    return json.dumps(
        {
            "type": "welcome",
            "protocol": 1,
            "worker_id": "w-9",
            "heartbeat_interval_s": 1,
            "heartbeat_timeout_s": 30,
            "limits": {"max_message_bytes": 1 << 20},
            **extra,
        }
    )


def assign(task: str, input: Any, task_id: str = TID) -> str:
    return json.dumps(
        {
            "type": "assign",
            "task_id": task_id,
            "attempt": 1,
            "task": task,
            "input": input,
            "deadline": "2099-01-01T00:00:00Z",
            "timeout_s": 60,
            "interactive": True,
            "upload_url": "/v1/worker/uploads/x",
        }
    )


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Endpoint, subprocess.Popen[bytes]]]:
    ep = Endpoint()
    async with serve(
        ep.handler, "127.0.0.1", 0, subprotocols=[Subprotocol("taskwire.worker.v1")]
    ) as server:
        ep.port = server.sockets[0].getsockname()[1]
        env = {
            **os.environ,
            "TASKWIRE_URL": f"http://127.0.0.1:{ep.port}",
            "TASKWIRE_WORKER_KEY": KEY,
        }
        env.pop("TASKWIRE_TRANSPORT", None)
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, read by the test
            [sys.executable, "-m", "tests.workers.sample"],
            cwd=PACKAGE_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            yield ep, process
        finally:
            process.terminate()
            try:
                # In a thread: this loop serves the endpoint the worker says bye to.
                await asyncio.to_thread(process.wait, DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                assert process.stdout is not None
                raise AssertionError(
                    "the worker did not stop on SIGTERM:\n" + process.stdout.read().decode()
                ) from None


async def test_dials_with_key_and_subprotocol(
    endpoint: tuple[Endpoint, subprocess.Popen[bytes]],
) -> None:
    ep, _ = endpoint
    conn = await ep.next()
    assert ep.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert conn.subprotocol == "taskwire.worker.v1"
    hello = await recv(conn, "hello")
    assert hello["worker"]["name"] == "sample"
    assert "resume" not in hello
    await conn.send(welcome())
    await conn.send(assign("py_echo", {"x": 1}))
    done = await recv(conn, "complete")
    assert done["result"] == {"x": 1}
    await conn.send(json.dumps({"type": "ok", "ref": done["ref"]}))
    # Heartbeats flow both ways when nothing else is sent.
    await recv(conn, "heartbeat", skip=())


async def test_reconnect_resumes_running_attempt(
    endpoint: tuple[Endpoint, subprocess.Popen[bytes]],
) -> None:
    ep, _ = endpoint
    conn = await ep.next()
    await recv(conn, "hello")
    await conn.send(welcome())
    await conn.send(assign("py_sleep", {"seconds": 1.0}))
    await recv(conn, "progress", skip=("heartbeat", "log"))
    await conn.close(1011)  # the connection drops while the attempt runs
    again = await ep.next()
    hello = await recv(again, "hello")
    assert hello["resume"] == [{"task_id": TID, "attempt": 1}]
    await again.send(welcome(resumed=[{"task_id": TID, "attempt": 1, "kept": True}]))
    done = await recv(again, "complete")
    assert done["result"] == "slept"
    await again.send(json.dumps({"type": "ok", "ref": done["ref"]}))


async def test_unacknowledged_outcome_is_replayed(
    endpoint: tuple[Endpoint, subprocess.Popen[bytes]],
) -> None:
    ep, _ = endpoint
    conn = await ep.next()
    await recv(conn, "hello")
    await conn.send(welcome())
    await conn.send(assign("py_echo", "once"))
    first = await recv(conn, "complete")
    await conn.close(1011)  # before the server acknowledged it
    again = await ep.next()
    hello = await recv(again, "hello")
    assert hello["resume"] == [{"task_id": TID, "attempt": 1}]
    await again.send(welcome(resumed=[{"task_id": TID, "attempt": 1, "kept": True}]))
    replayed = await recv(again, "complete")
    assert replayed == first  # same ref: the server applies it once
    await again.send(json.dumps({"type": "ok", "ref": first["ref"]}))
    # Acknowledged: the next reconnect has nothing to resume.
    await again.close(1011)
    third = await ep.next()
    assert "resume" not in await recv(third, "hello")
    await third.send(welcome())


async def test_attempt_not_kept_is_dropped(
    endpoint: tuple[Endpoint, subprocess.Popen[bytes]],
) -> None:
    ep, _ = endpoint
    conn = await ep.next()
    await recv(conn, "hello")
    await conn.send(welcome())
    await conn.send(assign("py_sleep", {"seconds": 60}))
    await recv(conn, "progress", skip=("heartbeat", "log"))
    await conn.close(1011)
    again = await ep.next()
    await recv(again, "hello")
    await again.send(welcome(resumed=[{"task_id": TID, "attempt": 1, "kept": False}]))
    # Nothing is reported for the dropped attempt; the slot serves a new one.
    await again.send(assign("py_echo", "next", "d" * 32))
    done = await recv(again, "complete")
    assert done["task_id"] == "d" * 32
    await again.send(json.dumps({"type": "ok", "ref": done["ref"]}))


async def test_refused_key_stops_the_worker() -> None:
    async def refuse(connection: Any, request: Any) -> Any:
        return connection.respond(401, '{"error":{"code":"unauthorized","message":"no"}}\n')

    async with serve(lambda c: c.wait_closed(), "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        env = {
            **os.environ,
            "TASKWIRE_URL": f"http://127.0.0.1:{port}",
            "TASKWIRE_WORKER_KEY": "wrong",
        }
        env.pop("TASKWIRE_TRANSPORT", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.workers.sample",
            cwd=PACKAGE_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode != 0
        assert b"the server refused worker sample" in out
        assert b"Traceback" not in out
