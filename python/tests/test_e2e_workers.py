"""End to end: Python workers under a real ``taskwire serve``, managed (stdio,
started from ``[[workers]]``) and remote (dialling ``/v1/worker``), driven by
the Python client. Every ``ctx`` operation, questions answered, refused,
timed out and cancelled, a remote worker's reconnect, files checked by sha256,
and the two examples."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskwire
from taskwire.events import Answered, Completed, Progress, Question, Started

from .support import DEADLINE, Proxy, Server, random_key, sha256_hex, start_server

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = PACKAGE_ROOT.parent / "examples" / "python"


def worker_key_toml(key: str) -> str:
    return (
        f'[[api_keys]]\nname = "pyworker"\nsha256 = "sha256:{sha256_hex(key.encode())}"\n'
        'role = "worker"\n'
    )


def managed_toml(
    name: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    instances: int = 1,
    cwd: Path = PACKAGE_ROOT,
) -> str:
    lines = [
        "[[workers]]",
        f"name = {json.dumps(name)}",
        f"command = {json.dumps(command)}",
        f"cwd = {json.dumps(str(cwd))}",
        f"instances = {instances}",
    ]
    if env:
        pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())
        lines.append(f"env = {{ {pairs} }}")
    return "\n".join(lines) + "\n"


SAMPLE = [sys.executable, "-m", "tests.workers.sample"]
KNOBS = "heartbeat_interval_s = 1\nheartbeat_timeout_s = 3\n"


async def ready(server: Server, task: str, workers: int = 1) -> None:
    """Waits until the server offers ``task`` with enough connected workers."""
    end = asyncio.get_running_loop().time() + DEADLINE
    while True:
        async with taskwire.AsyncClient(server.url, server.key) as probe:
            info = {t.name: t for t in probe.tasks}
            if task in info and (info[task].workers or 0) >= workers:
                return
        if asyncio.get_running_loop().time() > end:
            raise TimeoutError(f"no worker serving {task}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def managed() -> Iterator[Server]:
    server = start_server(KNOBS + managed_toml("sample", SAMPLE))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mclient(managed: Server) -> AsyncIterator[taskwire.AsyncClient]:
    await ready(managed, "py_echo")
    async with taskwire.AsyncClient(managed.url, managed.key) as client:
        yield client


async def test_managed_worker_offers_its_tasks(
    mclient: taskwire.AsyncClient, managed: Server
) -> None:
    info = {t.name: t for t in mclient.tasks}
    assert info["py_greet"].served_by == "workers"
    assert info["py_greet"].input_schema["required"] == ["name"]
    task = await mclient.submit("py_greet", {"name": "Ada", "times": 2})
    done = await task.wait(DEADLINE)
    assert done.result["greeting"] == "hello Ada hello Ada"
    assert done.result["attempt"] == 1
    assert done.result["deadline"] is not None
    started = next(e for e in task.events_held if isinstance(e, Started))
    assert started.worker.startswith("sample")
    # print() inside the worker reached the server's log, not the protocol.
    managed.wait_log(lambda line: "a print inside a handler" in json.dumps(line), "worker print")


async def test_server_validates_against_the_declared_schema(mclient: taskwire.AsyncClient) -> None:
    with pytest.raises(taskwire.InvalidInput) as caught:
        await mclient.submit("py_greet", {"name": 5})
    assert caught.value.path == "$.name"


async def test_progress_log_and_failures(mclient: taskwire.AsyncClient, managed: Server) -> None:
    task = await mclient.submit("py_progress", {"steps": 3})
    events = [e async for e in task.events()]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].progress == 1.0
    assert progress[-1].message == "step 3"
    assert progress[-1].data == {"i": 3}
    assert isinstance(events[-1], Completed)
    managed.wait_log(lambda line: "did step 3" in json.dumps(line), "ctx.log line")
    with pytest.raises(taskwire.TaskError) as caught:
        await (await mclient.submit("py_fail", {"device": 17})).result(DEADLINE)
    assert caught.value.message == "device 17 is locked"
    assert caught.value.worker_code == "LookupError"
    # The worker process keeps serving.
    assert await mclient.run("py_echo", "still") == "still"


async def test_files_are_published_and_checked(
    mclient: taskwire.AsyncClient, tmp_path: Path
) -> None:
    done = await (await mclient.submit("py_files", {"kib": 64})).wait(DEADLINE)
    files = {f.name: f for f in done.files}
    assert sorted(files) == ["added.txt", "by-path.json", "data.bin", "hello.txt", "left-open.csv"]
    data = await mclient.download(files["data.bin"], tmp_path)
    assert data.read_bytes() == bytes(range(256)) * 256
    assert files["data.bin"].sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert await mclient.read(files["hello.txt"]) == b"hello, files\n"
    assert files["hello.txt"].content_type == "text/plain"


async def test_cancel_reaches_the_handler(mclient: taskwire.AsyncClient) -> None:
    for name in ("py_sleep", "py_sync_wait"):
        task = await mclient.submit(name, {"seconds": 60})
        async for event in task.events():
            if isinstance(event, Progress):
                break
        await task.cancel()
        with pytest.raises(taskwire.TaskCancelled):
            await task.wait(DEADLINE)
    assert await mclient.run("py_echo", "next") == "next"


async def test_cpu_bound_handler_is_not_lost(mclient: taskwire.AsyncClient) -> None:
    # heartbeat_timeout_s is 3: a handler holding its thread for 5 s must not
    # make the worker look dead.
    result = await (await mclient.submit("py_cpu", {"seconds": 5})).result(DEADLINE)
    assert result["loops"] > 0


async def test_question_answered_and_refusals(
    managed: Server, mclient: taskwire.AsyncClient
) -> None:
    task = await mclient.submit("py_ask", {"prompt": "Continue?", "timeout_s": 60})
    question = await anext(task.questions())
    assert question.prompt == "Continue?"
    assert [c.value for c in question.choices or ()] == ["continue", "abort"]
    assert task.state == "waiting"
    snapshot = await task.status()
    assert snapshot["state"] == "waiting"
    with pytest.raises(taskwire.InvalidInput):
        await task.answer(question.question_id, "maybe")
    async with taskwire.AsyncClient(managed.url, managed.keys["other"]) as other:
        with pytest.raises(taskwire.NotFound):
            await other.answer(task.id, question.question_id, "continue")
    answered = await task.answer(question.question_id, "continue")
    assert answered.outcome == "answered"
    assert answered.value == "continue"
    with pytest.raises(taskwire.AlreadyAnswered):
        await task.answer(question.question_id, "abort")
    assert (await task.result(DEADLINE))["answer"] == "continue"


async def test_question_answered_over_rest(managed: Server) -> None:
    async with taskwire.AsyncClient(managed.url, managed.key, transport="rest") as rest:
        task = await rest.submit("py_ask", {"schema": {"type": "string"}})
        question = await anext(task.questions())
        assert question.schema == {"type": "string"}
        await rest.answer(task.id, question.question_id, "free text")
        assert (await task.result(DEADLINE))["answer"] == "free text"


async def test_question_timeouts(mclient: taskwire.AsyncClient) -> None:
    with_default = await mclient.submit("py_ask", {"default": "continue", "timeout_s": 0.3})
    assert (await with_default.result(DEADLINE))["answer"] == "continue"
    answered = [e for e in with_default.events_held if isinstance(e, Answered)]
    assert answered[0].outcome == "timed_out"
    handled = await mclient.submit("py_ask", {"timeout_s": 0.3})
    assert await handled.result(DEADLINE) == {"timed_out": "QuestionTimeout"}
    unhandled = await mclient.submit("py_ask", {"timeout_s": 0.3, "raise": True})
    with pytest.raises(taskwire.TaskError) as caught:
        await unhandled.wait(DEADLINE)
    assert caught.value.worker_code == "QuestionTimeout"
    quiet = await mclient.submit("py_ask", {"raise": True}, interactive=False)
    with pytest.raises(taskwire.TaskError) as not_interactive:
        await quiet.wait(DEADLINE)
    assert not_interactive.value.worker_code == "NotInteractive"
    assert not any(isinstance(e, Question) for e in quiet.events_held)


async def test_question_closed_by_cancel(mclient: taskwire.AsyncClient) -> None:
    task = await mclient.submit("py_ask", {})
    question = await anext(task.questions())
    await task.cancel()
    with pytest.raises(taskwire.TaskCancelled):
        await task.wait(DEADLINE)
    closed = [e for e in task.events_held if isinstance(e, Answered)]
    assert closed[0].question_id == question.question_id
    assert closed[0].outcome == "cancelled"
    # docs/protocol.md §7: not_found; the server says already_answered (closed by the cancel).
    with pytest.raises((taskwire.NotFound, taskwire.AlreadyAnswered)):
        await task.answer(question.question_id, "continue")


async def test_lost_worker_requeues_a_retry_safe_task(
    managed: Server, mclient: taskwire.AsyncClient
) -> None:
    import httpx

    task = await mclient.submit("py_retry", {"seconds": 60})
    async for event in task.events():
        if isinstance(event, Progress):
            break
    async with httpx.AsyncClient() as http:
        listing = await http.get(
            f"{managed.url}/v1/admin/workers",
            headers={"Authorization": f"Bearer {managed.keys['admin']}"},
        )
    pids = [w["pid"] for w in listing.json()["workers"] if w.get("pid") and w.get("busy")]
    assert len(pids) == 1, listing.text
    os.kill(pids[0], signal.SIGKILL)  # a child of the server this test started
    result = await task.result(DEADLINE * 2)
    assert result["attempt"] == 2
    assert result["pid"] != pids[0]
    kinds = [e.type for e in task.events_held]
    assert kinds.count("requeued") == 1
    assert kinds.count("started") == 2


# -- remote workers ---------------------------------------------------------------------


class RemoteWorker:
    def __init__(
        self, url: str, key: str, module: list[str] = SAMPLE, env: dict[str, str] | None = None
    ) -> None:
        full = {**os.environ, "TASKWIRE_URL": url, "TASKWIRE_WORKER_KEY": key, **(env or {})}
        full.pop("TASKWIRE_TRANSPORT", None)
        self.process = subprocess.Popen(
            module,
            cwd=PACKAGE_ROOT,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        return self.process.returncode, self.process.stdout.read().decode()


@pytest.fixture
def remote_server() -> Iterator[tuple[Server, str]]:
    key = random_key("twk_worker")
    server = start_server(KNOBS + "reconnect_grace_s = 10\n" + worker_key_toml(key))
    try:
        yield server, key
    finally:
        server.stop()


async def test_remote_worker_serves_and_uploads(
    remote_server: tuple[Server, str], tmp_path: Path
) -> None:
    server, key = remote_server
    worker = RemoteWorker(server.url, key)
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            await ready(server, "py_files")
            done = await (await client.submit("py_files", {"kib": 16})).wait(DEADLINE)
            files = {f.name: f for f in done.files}
            assert len(files) == 5
            path = await client.download(files["data.bin"], tmp_path)
            assert path.read_bytes() == bytes(range(256)) * 64
            assert await client.read(files["added.txt"]) == b"added from a path\n"
            assert await client.run("py_greet", {"name": "remote"}) is not None
    finally:
        code, out = worker.stop()
    assert code == 0, out
    assert "teardown ran" in out


async def test_remote_worker_reconnects_and_finishes_once(
    remote_server: tuple[Server, str],
) -> None:
    server, key = remote_server
    proxy = Proxy(server.port)
    worker = RemoteWorker(proxy.url, key)
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            await ready(server, "py_sleep")
            task = await client.submit("py_sleep", {"seconds": 2})
            async for event in task.events():
                if isinstance(event, Progress):
                    break
            proxy.cut()  # the worker's socket drops while the attempt runs
            assert await task.result(DEADLINE) == "slept"
            kinds = [e.type for e in task.events_held]
            assert kinds.count("started") == 1
            assert kinds.count("completed") == 1
            assert "requeued" not in kinds
            assert proxy.accepted >= 2
    finally:
        worker.stop()
        proxy.close()


async def test_remote_worker_drains_on_sigterm(remote_server: tuple[Server, str]) -> None:
    server, key = remote_server
    worker = RemoteWorker(server.url, key)
    async with taskwire.AsyncClient(server.url, server.key) as client:
        await ready(server, "py_sleep")
        task = await client.submit("py_sleep", {"seconds": 1})
        async for event in task.events():
            if isinstance(event, Progress):
                break
        worker.process.send_signal(signal.SIGTERM)
        assert await task.result(DEADLINE) == "slept"
        code, out = worker.stop()
        assert code == 0, out
        assert "draining" in out


# -- the examples ----------------------------------------------------------------------


async def test_warm_core_second_task_does_not_pay_the_init() -> None:
    command = [sys.executable, str(EXAMPLES / "warm_core.py")]
    server = start_server(KNOBS + managed_toml("warm", command, cwd=EXAMPLES))
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            await ready(server, "warm_core")
            first = await client.submit("warm_core", {"items": 2})
            second = await client.submit("warm_core", {"items": 2})
            one, two = await first.wait(DEADLINE), await second.wait(DEADLINE)
            # One process, initialised once, before either task started.
            assert one.result["pid"] == two.result["pid"]
            assert (one.result["served"], two.result["served"]) == (1, 2)
            assert one.result["init_s"] >= 2.0
            assert one.result["loaded_at"] == two.result["loaded_at"]
            for task in (first, second):
                started = next(e for e in task.events_held if isinstance(e, Started))
                assert started.at is not None
                assert started.at.timestamp() > one.result["loaded_at"]
            # Slots 1: strictly one after the other.
            second_started = next(e for e in second.events_held if isinstance(e, Started))
            assert one.at is not None
            assert second_started.at is not None
            assert second_started.at >= one.at
    finally:
        server.stop()


async def test_ask_example_does_what_the_answer_says() -> None:
    command = [sys.executable, str(EXAMPLES / "ask.py")]
    server = start_server(KNOBS + managed_toml("ask", command, cwd=EXAMPLES))
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            await ready(server, "import_orders")
            outcomes: dict[str, Any] = {}
            for answer in ("continue", "skip", "abort"):
                task = await client.submit("import_orders", {"orders": 6, "suspicious": 3})
                question = await anext(task.questions())
                assert "Order 3" in question.prompt
                await task.answer(question.question_id, answer)
                outcomes[answer] = await task.result(DEADLINE)
            assert outcomes["continue"] == {
                "status": "done",
                "imported": [1, 2, 3, 4, 5, 6],
                "skipped": [],
            }
            assert outcomes["skip"] == {
                "status": "done",
                "imported": [1, 2, 4, 5, 6],
                "skipped": [3],
            }
            assert outcomes["abort"] == {
                "status": "aborted",
                "at": 3,
                "imported": [1, 2],
                "skipped": [],
            }
            quiet = await client.submit(
                "import_orders", {"orders": 4, "suspicious": 2, "timeout_s": 0.2}
            )
            assert (await quiet.result(DEADLINE))["status"] == "aborted"
    finally:
        server.stop()


async def _upload(server: Server, name: str, data: bytes) -> str:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.url}/v1/uploads",
            params={"name": name},
            content=data,
            headers={"Authorization": f"Bearer {server.key}"},
        )
    assert response.status_code == 201, response.text
    upload_id: str = response.json()["upload_id"]
    return upload_id


async def _check_inputs(server: Server, client: taskwire.AsyncClient) -> None:
    data = os.urandom(200_000)
    upload = await _upload(server, "device-17.zip", data)
    described = await client.run(
        "py_inputs", {"zip": {"$upload": upload}, "other": [{"$upload": upload}]}
    )
    digest = hashlib.sha256(data).hexdigest()
    assert described == [
        {
            "path": "$.other[0]",
            "name": "device-17.zip",
            "size": 200_000,
            "sha256": digest,
            "told_sha256": digest,
        },
        {
            "path": "$.zip",
            "name": "device-17.zip",
            "size": 200_000,
            "sha256": digest,
            "told_sha256": digest,
        },
    ]


async def test_managed_worker_reads_input_files(
    mclient: taskwire.AsyncClient, managed: Server
) -> None:
    await _check_inputs(managed, mclient)


async def test_remote_worker_downloads_input_files(remote_server: tuple[Server, str]) -> None:
    server, key = remote_server
    worker = RemoteWorker(server.url, key)
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            await ready(server, "py_inputs")
            await _check_inputs(server, client)
    finally:
        code, out = worker.stop()
    assert code == 0, out
