"""The worker SDK's framing over stdio, message by message: a real worker
process (tests/workers/sample.py) on pipes, the test playing the server's side."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .peer import StdioPeer

TID = "a" * 32


@pytest.fixture
def peer() -> Iterator[StdioPeer]:
    worker = StdioPeer()
    try:
        yield worker
    finally:
        worker.close()


def test_hello_after_setup_and_stdout_kept_clean(peer: StdioPeer) -> None:
    hello = peer.handshake()
    assert hello["protocol"] == 1
    assert hello["worker"] == {"name": "sample-1", "version": "1.0", "sdk": "taskwire-python 0.1.0"}
    assert hello["slots"] == 1
    assert "resume" not in hello
    tasks = {t["name"]: t for t in hello["tasks"]}
    assert tasks["py_echo"]["description"] == "Returns its input."
    greet = tasks["py_greet"]
    assert greet["retry_safe"] is True
    assert greet["description"] == "Greets someone (a dataclass input)."
    assert greet["input_schema"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "times": {"type": "integer", "default": 1}},
        "required": ["name"],
        "description": "Whom to greet.",
    }
    # setup ran before hello; the import-time print went to stderr.
    peer.wait_stderr("setup ran")
    peer.wait_stderr("printed at import")
    peer.assign("py_greet", {"name": "Ada", "times": 2}, TID)
    done = peer.recv_type("complete")
    assert done["task_id"] == TID
    assert done["attempt"] == 1
    assert done["result"]["greeting"] == "hello Ada hello Ada"
    assert done["result"]["state"]["setups"] == 1
    assert done["result"]["deadline"].startswith("2099-01-01")
    assert done["ref"]
    peer.wait_stderr("a print inside a handler")
    # Every stdout line was a protocol message.
    assert all(json.loads(line) for line in peer.stdout_raw)


def test_progress_logs_and_sequential_tasks(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_progress", {"steps": 3}, TID)
    seen = []
    while True:
        message = peer.recv()
        seen.append(message)
        if message["type"] == "complete":
            break
    progress = [m for m in seen if m["type"] == "progress"]
    assert progress, seen
    # Coalesced reports keep the newest: the last one is step 3.
    assert progress[-1] == {
        "type": "progress",
        "task_id": TID,
        "attempt": 1,
        "progress": 1.0,
        "message": "step 3",
        "data": {"i": 3},
    }
    logs = [m for m in seen if m["type"] == "log"]
    assert {
        "type": "log",
        "level": "info",
        "message": "did step 1",
        "task_id": TID,
        "attempt": 1,
    } in logs
    assert seen[-1]["result"] == "done"
    # The next task on the same process does not run setup again.
    peer.assign("py_greet", {"name": "Bob"}, "b" * 32)
    assert peer.recv_type("complete")["result"]["state"]["setups"] == 1


def test_exceptions_fail_the_task_and_the_worker_goes_on(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_fail", {"device": 17}, TID)
    fail = peer.recv_type("fail")
    assert fail["error"] == {"message": "device 17 is locked", "code": "LookupError"}
    peer.assign("py_fail_sync", {}, "b" * 32)
    fail = peer.recv_type("fail")
    assert fail["error"]["code"] == "ValueError"
    assert "traceback" not in json.dumps(fail)
    peer.assign("py_not_json", {}, "c" * 32)
    fail = peer.recv_type("fail")
    assert fail["error"]["code"] == "TypeError"
    assert "not JSON" in fail["error"]["message"]
    peer.assign("no_such_task", {}, "d" * 32)
    assert peer.recv_type("fail")["error"]["code"] == "UnknownTask"
    peer.assign("py_echo", [1, 2], "e" * 32)
    assert peer.recv_type("complete")["result"] == [1, 2]


def test_debug_flag_puts_the_traceback_on_the_wire() -> None:
    worker = StdioPeer(env={"TASKWIRE_DEBUG": "1"})
    try:
        worker.handshake()
        worker.assign("py_fail", {"device": 1}, TID)
        details = worker.recv_type("fail")["error"]["details"]
        assert "Traceback" in details["traceback"]
        assert "LookupError" in details["traceback"]
    finally:
        worker.close()


def test_cpu_bound_sync_handler_keeps_heartbeats(peer: StdioPeer) -> None:
    interval = 0.2
    peer.handshake(interval=interval, timeout=1)
    peer.assign("py_cpu", {"seconds": 2.0}, TID)
    start = time.monotonic()
    beats = []
    while True:
        message = peer.recv()
        if message["type"] == "heartbeat":
            beats.append(time.monotonic() - start)
        if message["type"] == "complete":
            break
    assert message["result"]["loops"] > 0
    # The handler held its thread for 2 s; heartbeats kept coming from the I/O loop:
    # no gap between two of them (or the start) reached the 1 s heartbeat timeout.
    gaps = [b - a for a, b in zip([0.0, *beats], beats, strict=False)]
    assert len(beats) >= 5, beats
    assert max(gaps) < 1.0, gaps


def test_cancel_async_and_sync_handlers(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_sleep", {"seconds": 60}, TID)
    peer.recv_type("progress", skip=("heartbeat", "log"))
    peer.send({"type": "cancel", "task_id": TID, "attempt": 1, "reason": "client", "grace_s": 10})
    assert peer.recv_type("cancelled") == {
        "type": "cancelled",
        "task_id": TID,
        "attempt": 1,
        "ref": peer_last_ref(peer),
    }
    peer.wait_stderr("py_sleep cancelled (client)")
    peer.assign("py_sync_wait", {"seconds": 60}, "b" * 32)
    peer.recv_type("progress", skip=("heartbeat", "log"))
    peer.send(
        {"type": "cancel", "task_id": "b" * 32, "attempt": 1, "reason": "timeout", "grace_s": 10}
    )
    assert peer.recv_type("cancelled")["task_id"] == "b" * 32
    # A cancel for an attempt the worker does not hold is ignored.
    peer.send({"type": "cancel", "task_id": "f" * 32, "attempt": 1, "reason": "client"})
    peer.assign("py_echo", "after", "c" * 32)
    assert peer.recv_type("complete")["result"] == "after"


def peer_last_ref(peer: StdioPeer) -> str:
    return str(peer.received_at[-1][1].get("ref"))


def test_ask_answer_and_outcomes(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_ask", {"prompt": "Page 12 is not A4. Continue?", "timeout_s": 30}, TID)
    ask = peer.recv_type("ask")
    assert ask == {
        "type": "ask",
        "task_id": TID,
        "attempt": 1,
        "question_id": "q1",
        "prompt": "Page 12 is not A4. Continue?",
        "timeout_s": 30,
        "choices": [
            {"value": "continue", "label": "Continue"},
            {"value": "abort", "label": "Abort"},
        ],
    }
    peer.send(
        {
            "type": "answer",
            "task_id": TID,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "answered",
            "value": "abort",
            "deadline": "2099-06-01T00:00:00.000Z",
        }
    )
    done = peer.recv_type("complete")
    assert done["result"]["answer"] == "abort"
    assert done["result"]["deadline"].startswith("2099-06-01")

    # Timed out with a default: the default is the answer.
    peer.assign("py_ask", {"default": "continue"}, "b" * 32)
    ask = peer.recv_type("ask")
    assert ask["default"] == "continue"
    peer.send(
        {
            "type": "answer",
            "task_id": "b" * 32,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "timed_out",
            "value": "continue",
            "deadline": "2099-01-01T00:00:00Z",
        }
    )
    assert peer.recv_type("complete")["result"]["answer"] == "continue"

    # Timed out without a default: QuestionTimeout, handled by the task...
    peer.assign("py_ask", {}, "c" * 32)
    peer.recv_type("ask")
    peer.send(
        {
            "type": "answer",
            "task_id": "c" * 32,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "timed_out",
            "deadline": "2099-01-01T00:00:00Z",
        }
    )
    assert peer.recv_type("complete")["result"] == {"timed_out": "QuestionTimeout"}
    # ... or not handled: the task fails with a clear code.
    peer.assign("py_ask", {"raise": True}, "d" * 32)
    peer.recv_type("ask")
    peer.send(
        {
            "type": "answer",
            "task_id": "d" * 32,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "not_interactive",
        }
    )
    fail = peer.recv_type("fail")
    assert fail["error"]["code"] == "NotInteractive"

    # A schema question from a sync handler's thread.
    peer.assign("py_ask_sync", {}, "e" * 32)
    ask = peer.recv_type("ask")
    assert ask["choices"] == [{"value": "yes"}, {"value": "no"}]
    peer.send(
        {
            "type": "answer",
            "task_id": "e" * 32,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "answered",
            "value": "yes",
        }
    )
    assert peer.recv_type("complete")["result"] == {"answer": "yes"}

    # Cancelled while asking.
    peer.assign("py_ask", {}, "f" * 32)
    peer.recv_type("ask")
    peer.send({"type": "cancel", "task_id": "f" * 32, "attempt": 1, "reason": "client"})
    assert peer.recv_type("cancelled")["task_id"] == "f" * 32


def test_files_land_in_output_dir(peer: StdioPeer, tmp_path: Path) -> None:
    peer.handshake()
    out = tmp_path / "staging" / f"{TID}-1"
    out.mkdir(parents=True)
    peer.assign("py_files", {"kib": 4}, TID, output_dir=str(out))
    done = peer.recv_type("complete")
    files = {f["name"]: f for f in done["files"]}
    assert sorted(files) == ["added.txt", "by-path.json", "data.bin", "hello.txt", "left-open.csv"]
    assert files["hello.txt"] == {
        "name": "hello.txt",
        "content_type": "text/plain",
        "path": "hello.txt",
    }
    assert files["by-path.json"]["content_type"] == "application/json"
    assert files["data.bin"]["content_type"] == "application/octet-stream"
    assert (out / "hello.txt").read_bytes() == b"hello, files\n"
    assert (out / "data.bin").read_bytes() == bytes(range(256)) * 16
    assert (out / "left-open.csv").read_bytes() == b"a,b\n1,2\n"
    assert (out / "added.txt").read_bytes() == b"added from a path\n"
    out2 = tmp_path / "staging" / "b-1"
    out2.mkdir()
    peer.assign("py_files_sync", {}, "b" * 32, output_dir=str(out2))
    assert peer.recv_type("complete")["files"] == [
        {"name": "sync.txt", "content_type": "text/plain", "path": "sync.txt"}
    ]


def test_sigterm_drains_then_bye(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_sleep", {"seconds": 0.5}, TID)
    peer.process.send_signal(signal.SIGTERM)
    assert peer.recv_type("draining")["reason"] == "SIGTERM"
    done = peer.recv_type("complete")
    assert done["result"] == "slept"
    peer.send({"type": "ok", "ref": done["ref"]})
    assert peer.recv_type("bye") == {"type": "bye", "reason": "drained"}
    assert peer.process.wait(20) == 0
    peer.wait_stderr("teardown ran")


def test_end_of_stdin_stops_the_worker(peer: StdioPeer) -> None:
    peer.handshake()
    peer.assign("py_sleep", {"seconds": 60}, TID)
    assert peer.close() == 0
    assert "teardown ran" in peer.stderr_text()
