"""The client against a real ``taskwire serve`` and its built-in tasks
(``echo``, ``sleep``, ``blob``): both transports, the blocking client,
reconnects through a proxy that is cut, downloads checked by sha256."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from pathlib import Path

import pytest

import taskwire
from taskwire.events import Accepted, Completed, Progress, Started

from .support import DEADLINE, Proxy, Server, until_async


def blob_bytes(size: int) -> bytes:
    """The built-in ``blob`` task's bytes: SplitMix64 of each 8-byte word's index."""
    out = bytearray()
    mask = (1 << 64) - 1
    for i in range((size + 7) // 8):
        z = ((i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out += struct.pack("<Q", z)
    return bytes(out[:size])


async def test_echo_result_and_events(client: taskwire.AsyncClient) -> None:
    task = await client.submit("echo", {"hello": ["world", 1]})
    assert len(task.id) == 32
    assert task.position == 0
    done = await task.wait(DEADLINE)
    assert done.result == {"hello": ["world", 1]}
    kinds = [e.type for e in task.events_held]
    assert kinds == ["accepted", "started", "completed"]
    assert [e.seq for e in task.events_held] == [1, 2, 3]
    assert task.state == "completed"
    assert isinstance(task.events_held[1], Started)
    assert task.events_held[1].attempt == 1


async def test_welcome_lists_tasks(client: taskwire.AsyncClient) -> None:
    names = {t.name for t in client.tasks}
    assert {"echo", "sleep", "blob"} <= names
    sleep = next(t for t in client.tasks if t.name == "sleep")
    assert sleep.input_schema["required"] == ["ms"]


async def test_progress_events_in_order(client: taskwire.AsyncClient) -> None:
    task = await client.submit("sleep", {"ms": 40, "steps": 4})
    seen = [e async for e in task.events()]
    progress = [e for e in seen if isinstance(e, Progress)]
    assert [p.progress for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert progress[0].message == "step 1 of 4"
    assert isinstance(seen[-1], Completed)
    assert seen[-1].result == {"slept_ms": 40}
    # A second iteration replays the same events from what the handle holds.
    assert [e.seq for e in task.events_held] == [e.seq for e in seen]
    assert [e.seq async for e in task.events(after_seq=3)] == [e.seq for e in seen if e.seq > 3]


async def test_run_is_submit_and_result(client: taskwire.AsyncClient) -> None:
    assert await client.run("echo", 42) == 42


async def test_failed_task_raises_typed_error(client: taskwire.AsyncClient) -> None:
    task = await client.submit("sleep", {"ms": 1, "fail": True})
    with pytest.raises(taskwire.TaskError) as caught:
        await task.result(DEADLINE)
    assert caught.value.code == "task_error"
    assert caught.value.task_id == task.id
    assert "as the input asked" in caught.value.message
    assert task.state == "failed"


async def test_rejections_are_typed(client: taskwire.AsyncClient) -> None:
    with pytest.raises(taskwire.UnknownTask) as unknown:
        await client.submit("no-such-task", {})
    assert unknown.value.code == "unknown_task"
    with pytest.raises(taskwire.InvalidInput) as invalid:
        await client.submit("sleep", {"ms": 10, "steps": 0})
    assert invalid.value.path == "$.steps"
    assert invalid.value.reason
    with pytest.raises(taskwire.BadMessage):
        await client.submit("echo", 1, priority="urgent")  # type: ignore[arg-type]
    # The connection carries on after each rejection.
    assert await client.run("echo", "still here") == "still here"


async def test_every_submit_option(client: taskwire.AsyncClient) -> None:
    task = await client.submit(
        "sleep",
        {"ms": 1},
        priority="high",
        timeout_s=30,
        idempotency_key="opt-1",
        concurrency_key="conc-1",
        delivery="link",
        cancel_on_disconnect=False,
        interactive=True,
    )
    assert (await task.result(DEADLINE)) == {"slept_ms": 1}
    again = await client.submit("sleep", {"ms": 1}, idempotency_key="opt-1")
    assert again.id == task.id
    assert again.duplicate


async def test_timeout_option_fails_with_timeout(client: taskwire.AsyncClient) -> None:
    task = await client.submit("sleep", {"ms": 30_000}, timeout_s=0.2)
    with pytest.raises(taskwire.TaskTimeout) as caught:
        await task.wait(DEADLINE)
    assert caught.value.code == "timeout"


async def test_cancel_running_and_finished(client: taskwire.AsyncClient) -> None:
    task = await client.submit("sleep", {"ms": 60_000, "steps": 600})
    async for event in task.events():
        if isinstance(event, Started):
            break
    await task.cancel()
    with pytest.raises(taskwire.TaskCancelled) as caught:
        await task.wait(DEADLINE)
    assert caught.value.reason == "client"
    with pytest.raises(taskwire.AlreadyFinished):
        await task.cancel()
    with pytest.raises(taskwire.NotFound):
        await client.cancel("0" * 32)


async def test_attach_and_status(server: Server, client: taskwire.AsyncClient) -> None:
    task = await client.submit("sleep", {"ms": 50, "steps": 2})
    await task.wait(DEADLINE)
    async with taskwire.AsyncClient(server.url, server.key) as other:
        again = await other.attach(task.id)
        done = await again.wait(DEADLINE)
        assert done.result == {"slept_ms": 50}
        assert [e.seq for e in again.events_held] == [e.seq for e in task.events_held]
        later = await other.attach(task.id, after_seq=3)
        assert [e.seq async for e in later.events()] == [
            e.seq for e in task.events_held if e.seq > 3
        ]
    snapshot = await client.status(task.id)
    assert snapshot["state"] == "completed"
    assert snapshot["last_seq"] == task.last_seq


async def test_other_key_sees_not_found(server: Server, client: taskwire.AsyncClient) -> None:
    task = await client.submit("echo", 1)
    await task.wait(DEADLINE)
    async with taskwire.AsyncClient(server.url, server.keys["other"]) as other:
        with pytest.raises(taskwire.NotFound):
            await other.attach(task.id)
        with pytest.raises(taskwire.NotFound):
            await other.status(task.id)


async def test_wrong_key_is_unauthorized(server: Server) -> None:
    with pytest.raises(taskwire.Unauthorized):
        await taskwire.AsyncClient(server.url, "twk_wrong").connect()
    with pytest.raises(taskwire.Unauthorized):
        async with taskwire.AsyncClient(server.url, "twk_wrong", transport="rest") as rest:
            await rest.submit("echo", 1)


async def test_download_checks_sha256(client: taskwire.AsyncClient, tmp_path: Path) -> None:
    size = 1024 * 1024 + 5
    done = await (await client.submit("blob", {"size": size, "name": "data.bin"})).wait(DEADLINE)
    (file,) = done.files
    assert file.name == "data.bin"
    assert file.size == size
    path = await client.download(file, tmp_path)
    assert path == tmp_path / "data.bin"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == file.sha256
    assert data == blob_bytes(size)
    assert await client.read(file) == data
    # A wrong digest is refused and leaves nothing behind.
    with pytest.raises(taskwire.DownloadError, match="sha256"):
        await client.download(file, tmp_path / "bad.bin", sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    # A forged link answers 404.
    with pytest.raises(taskwire.DownloadError) as caught:
        await client.download(file.url + "x", tmp_path / "x.bin")
    assert caught.value.status == 404


async def test_stream_delivery_writes_files(server: Server, tmp_path: Path) -> None:
    async with taskwire.AsyncClient(server.url, server.key, stream_dir=tmp_path) as client:
        task = await client.submit("blob", {"size": 200_000, "name": "s.bin"}, delivery="stream")
        done = await task.wait(DEADLINE)
        (file,) = done.files
        assert file.path is not None
        data = Path(file.path).read_bytes()
        assert data == blob_bytes(200_000)
        assert hashlib.sha256(data).hexdigest() == file.sha256
        with pytest.raises(ValueError, match="stream_dir"):
            await taskwire.AsyncClient(server.url, server.key).submit("echo", 1, delivery="stream")


async def test_rest_transport(rest_client: taskwire.AsyncClient, tmp_path: Path) -> None:
    task = await rest_client.submit("sleep", {"ms": 30, "steps": 3}, priority="low")
    seen = [e async for e in task.events()]
    assert [e.type for e in seen] == [
        "accepted",
        "started",
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    assert [e.seq for e in seen] == list(range(1, 7))
    assert await task.result() == {"slept_ms": 30}
    with pytest.raises(taskwire.InvalidInput) as invalid:
        await rest_client.submit("sleep", {"ms": "x"})
    assert invalid.value.path == "$.ms"
    long = await rest_client.submit("sleep", {"ms": 60_000, "steps": 600})
    async for event in long.events():
        if isinstance(event, Progress):
            break
    await long.cancel()
    with pytest.raises(taskwire.TaskCancelled):
        await long.wait(DEADLINE)
    with pytest.raises(taskwire.AlreadyFinished):
        await long.cancel()
    blob = await (await rest_client.submit("blob", {"size": 1000, "name": "r.bin"})).wait()
    path = await rest_client.download(blob.files[0], tmp_path)
    assert path.read_bytes() == blob_bytes(1000)


async def test_rest_attach_resumes_with_last_event_id(
    rest_client: taskwire.AsyncClient, client: taskwire.AsyncClient
) -> None:
    task = await client.submit("sleep", {"ms": 20, "steps": 2})
    await task.wait(DEADLINE)
    later = await rest_client.attach(task.id, after_seq=2)
    assert [e.seq async for e in later.events(after_seq=2)] == [3, 4, 5]
    with pytest.raises(taskwire.NotFound):
        await rest_client.attach("f" * 32)


def test_sync_client(server: Server, tmp_path: Path) -> None:
    with taskwire.Client(server.url, server.key) as client:
        assert client.run("echo", {"a": 1}) == {"a": 1}
        task = client.submit("sleep", {"ms": 20, "steps": 2})
        kinds = [e.type for e in task.events()]
        assert kinds == ["accepted", "started", "progress", "progress", "completed"]
        with pytest.raises(taskwire.UnknownTask):
            client.submit("nope")
        blob = client.submit("blob", {"size": 4096, "name": "b.bin"}).wait()
        assert client.download(blob.files[0], tmp_path).read_bytes() == blob_bytes(4096)
        failing = client.submit("sleep", {"ms": 1, "fail": True})
        with pytest.raises(taskwire.TaskError):
            failing.result()
    with taskwire.Client(server.url, server.key, transport="rest") as rest:
        assert rest.run("echo", [1, 2]) == [1, 2]


async def test_reconnect_resumes_without_loss_or_repeat(server: Server) -> None:
    proxy = Proxy(server.port)
    try:
        async with taskwire.AsyncClient(proxy.url, server.key) as client:
            task = await client.submit("sleep", {"ms": 1500, "steps": 30})
            seqs: list[int] = []
            cut_done = False
            async for event in task.events():
                seqs.append(event.seq)
                if (
                    isinstance(event, Progress)
                    and not cut_done
                    and event.progress
                    and event.progress >= 0.2
                ):
                    proxy.cut()
                    cut_done = True
            assert cut_done
            assert client.reconnects >= 1
            assert seqs == list(range(1, 34)), seqs
            assert isinstance(task.events_held[-1], Completed)
            # The connection is usable after the reconnect.
            assert await client.run("echo", "after") == "after"
    finally:
        proxy.close()


async def test_reconnect_resends_idempotent_submit(server: Server) -> None:
    proxy = Proxy(server.port)
    try:
        async with taskwire.AsyncClient(proxy.url, server.key) as client:
            await client.ping()
            proxy.cut()
            # Submitted while the socket is down: it waits for the reconnect.
            task = await asyncio.wait_for(
                client.submit("echo", "once", idempotency_key="resend-1"), DEADLINE
            )
            assert await task.result(DEADLINE) == "once"
            await until_async(lambda: client.reconnects >= 1, "a reconnect")
    finally:
        proxy.close()


async def test_connection_lost_without_reconnect(server: Server) -> None:
    proxy = Proxy(server.port)
    try:
        async with taskwire.AsyncClient(proxy.url, server.key, reconnect=False) as client:
            task = await client.submit("sleep", {"ms": 60_000})
            proxy.cut()
            with pytest.raises(taskwire.ConnectionLost):
                await task.wait(DEADLINE)
    finally:
        proxy.close()


async def test_accepted_event_fields(client: taskwire.AsyncClient) -> None:
    task = await client.submit("echo", None)
    await task.wait(DEADLINE)
    first = task.events_held[0]
    assert isinstance(first, Accepted)
    assert first.at is not None
    assert first.raw["type"] == "accepted"


async def test_rest_events_resume_after_a_cut(server: Server) -> None:
    proxy = Proxy(server.port)
    try:
        async with taskwire.AsyncClient(proxy.url, server.key, transport="rest") as rest:
            task = await rest.submit("sleep", {"ms": 1200, "steps": 24})
            seqs: list[int] = []
            cut = False
            async for event in task.events():
                seqs.append(event.seq)
                if not cut and isinstance(event, Progress) and (event.progress or 0) >= 0.25:
                    proxy.cut()
                    cut = True
            assert cut
            assert seqs == list(range(1, 28)), seqs
            assert proxy.accepted >= 2  # the first stream (and submit), the resumed one
    finally:
        proxy.close()


async def test_cancel_on_disconnect(server: Server, client: taskwire.AsyncClient) -> None:
    async with taskwire.AsyncClient(server.url, server.key) as short:
        task = await short.submit("sleep", {"ms": 60_000}, cancel_on_disconnect=True)
        async for event in task.events():
            if isinstance(event, Started):
                break
    followed = await client.attach(task.id)
    with pytest.raises(taskwire.TaskCancelled) as caught:
        await followed.wait(DEADLINE)
    assert caught.value.reason == "disconnect"


async def test_queue_full_carries_retry_after() -> None:
    from .support import start_server

    server = start_server(args=["--workers", "1", "--queue-capacity", "1"])
    try:
        async with taskwire.AsyncClient(server.url, server.key) as client:
            running = await client.submit("sleep", {"ms": 60_000})
            async for event in running.events():
                if isinstance(event, Started):
                    break
            await client.submit("sleep", {"ms": 1})
            with pytest.raises(taskwire.QueueFull) as caught:
                await client.submit("sleep", {"ms": 1})
            assert caught.value.retry_after_ms is not None
            assert caught.value.retry_after_ms >= 10
            await running.cancel()
    finally:
        server.stop()


def test_sync_client_from_threads(server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with taskwire.Client(server.url, server.key) as client, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: client.run("echo", i), range(40)))
    assert results == list(range(40))
