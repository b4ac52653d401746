"""A worker with one task per SDK feature, for the tests (run as
``python -m tests.workers.sample`` from python/, managed or remote)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import taskwire  # first: in a managed worker this moves stdout aside

print("printed at import: this must reach stderr, not the protocol")

worker = taskwire.Worker("sample", slots=int(os.environ.get("SAMPLE_SLOTS", "1")), version="1.0")
setups = 0


@worker.setup
def setup() -> dict[str, Any]:
    global setups
    setups += 1
    print("setup ran", file=sys.stderr)
    delay = float(os.environ.get("SAMPLE_SETUP_S", "0"))
    if delay:
        time.sleep(delay)
    return {"setups": setups, "pid": os.getpid()}


@worker.teardown
def teardown() -> None:
    print("teardown ran", file=sys.stderr)


@dataclass
class Greeting:
    """Whom to greet."""

    name: str
    times: int = 1


@worker.task("py_inputs", description="Describes its input files.")
async def py_inputs(input: Any, ctx: taskwire.Context) -> Any:
    described = []
    for json_path in ctx.inputs:
        file = await ctx.input_file(json_path)
        data = file.read_bytes()
        described.append(
            {
                "path": file.json_path,
                "name": file.name,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "told_sha256": file.sha256,
            }
        )
    return described


@worker.task("py_echo", description="Returns its input.")
async def py_echo(input: Any, ctx: taskwire.Context) -> Any:
    return input


@worker.task("py_greet", input=Greeting, retry_safe=True)
async def py_greet(input: Greeting, ctx: taskwire.Context) -> dict[str, Any]:
    """Greets someone (a dataclass input)."""
    print("a print inside a handler")
    return {
        "greeting": " ".join([f"hello {input.name}"] * input.times),
        "state": ctx.state,
        "attempt": ctx.attempt,
        "deadline": ctx.deadline.isoformat() if ctx.deadline else None,
    }


@worker.task("py_progress")
async def py_progress(input: Any, ctx: taskwire.Context) -> str:
    steps = int(input.get("steps", 3))
    for i in range(1, steps + 1):
        ctx.progress(i / steps, f"step {i}", {"i": i})
        ctx.log(f"did step {i}")
        await asyncio.sleep(0)
    return "done"


@worker.task("py_fail")
async def py_fail(input: Any, ctx: taskwire.Context) -> None:
    raise LookupError(f"device {input.get('device')} is locked")


@worker.task("py_fail_sync")
def py_fail_sync(input: Any, ctx: taskwire.SyncContext) -> None:
    raise ValueError("sync handlers fail the same way")


@worker.task("py_cpu")
def py_cpu(input: Any, ctx: taskwire.SyncContext) -> dict[str, Any]:
    """Busy for `seconds` of CPU in the handler's thread, never touching ctx."""
    end = time.monotonic() + float(input["seconds"])
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"loops": n}


@worker.task("py_sleep")
async def py_sleep(input: Any, ctx: taskwire.Context) -> str:
    ctx.progress(0.0, "sleeping")
    try:
        await asyncio.sleep(float(input["seconds"]))
    except asyncio.CancelledError:
        print(f"py_sleep cancelled ({ctx.cancel_reason})", file=sys.stderr)
        raise
    return "slept"


@worker.task("py_retry", retry_safe=True)
async def py_retry(input: Any, ctx: taskwire.Context) -> dict[str, Any]:
    """Retry-safe: the first attempt waits (to be killed), a later one returns at once."""
    ctx.progress(0.0, f"attempt {ctx.attempt}")
    if ctx.attempt == 1:
        await asyncio.sleep(float(input.get("seconds", 60)))
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@worker.task("py_sync_wait")
def py_sync_wait(input: Any, ctx: taskwire.SyncContext) -> str:
    """Waits in its thread until cancelled (or `seconds`), reporting progress."""
    end = time.monotonic() + float(input.get("seconds", 60))
    while time.monotonic() < end:
        ctx.progress(message="waiting")  # raises Cancelled once cancelled
        time.sleep(0.01)
    return "waited"


@worker.task("py_ask")
async def py_ask(input: Any, ctx: taskwire.Context) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "default" in input:
        kwargs["default"] = input["default"]
    if "schema" in input:
        kwargs["schema"] = input["schema"]
    else:
        kwargs["choices"] = [("continue", "Continue"), ("abort", "Abort")]
    try:
        answer = await ctx.ask(
            input.get("prompt", "Continue?"), timeout_s=input.get("timeout_s"), **kwargs
        )
    except taskwire.QuestionTimeout as e:
        if input.get("raise"):
            raise
        return {"timed_out": type(e).__name__}
    return {"answer": answer, "deadline": ctx.deadline.isoformat() if ctx.deadline else None}


@worker.task("py_ask_sync")
def py_ask_sync(input: Any, ctx: taskwire.SyncContext) -> dict[str, Any]:
    return {"answer": ctx.ask("Sync question?", choices=["yes", "no"])}


@worker.task("py_files")
async def py_files(input: Any, ctx: taskwire.Context) -> dict[str, Any]:
    await ctx.write_file("hello.txt", b"hello, files\n", "text/plain")
    with ctx.open_file("data.bin") as out:
        out.write(bytes(range(256)) * int(input.get("kib", 4)) * 4)
    handle = ctx.open_file("left-open.csv")
    handle.write(b"a,b\n1,2\n")
    source = Path(tempfile.gettempdir()) / f"taskwire-outside-{ctx.task_id}.txt"
    source.write_bytes(b"added from a path\n")
    await ctx.add_file(source, "added.txt")
    path = ctx.output_path("by-path.json")
    path.write_text('{"ok": true}')
    ctx.output_path("never-written.txt")
    return {"dir": str(ctx.output_dir)}


@worker.task("py_files_sync")
def py_files_sync(input: Any, ctx: taskwire.SyncContext) -> str:
    ctx.write_file("sync.txt", "written by a def handler")
    return "ok"


@worker.task("py_not_json")
async def py_not_json(input: Any, ctx: taskwire.Context) -> object:
    return object()


if __name__ == "__main__":
    worker.run()
