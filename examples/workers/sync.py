#!/usr/bin/env python3
"""The `sync` task of docs/sync.md as a taskwire worker, in plain Python.

Standard library only (no SDK): it speaks the worker protocol
(docs/protocol.md Part II) over stdio, one JSON object per line, ours on
stdout, the server's on stdin; its log goes to stderr. Run it as a managed
worker:

    [[workers]]
    name = "sync"
    command = ["python3", "examples/workers/sync.py"]

`sync` ({device, package: {"$upload": ...}, work_ms?}) reads the device's zip
(named in `assign.inputs`: the file on the server's disk for a managed
worker, else its per-attempt download link), counts the elements of each
XML file and the records of each CSV log, and writes the instruction
package `instructions-<device>.zip` (`instructions.json` inside) to the
attempt's output directory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import threading
import time
import urllib.request
import zipfile
from typing import Any
from xml.etree import ElementTree

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_RATIO = 100
MAX_WORK_MS = 10_000

_out = threading.Lock()
_cancelled: set[tuple[str, int]] = set()
_state = {"draining": False, "running": 0}
_running = threading.Lock()


def send(message: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class BadPackage(Exception):
    """The device's zip breaks a rule; the message says which."""


def check_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's files, if every entry is safe to read."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise BadPackage(f"more than {MAX_ENTRIES} entries")
    total = 0
    files = []
    for entry in entries:
        name = entry.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise BadPackage(f"entry {name!r} points outside the archive")
        if (entry.external_attr >> 16) & 0o170000 == 0o120000:
            raise BadPackage(f"entry {name!r} is a symbolic link")
        if entry.is_dir():
            continue
        total += entry.file_size
        if total > MAX_TOTAL_BYTES:
            raise BadPackage(f"more than {MAX_TOTAL_BYTES} bytes unpacked")
        if entry.file_size > MAX_RATIO * max(entry.compress_size, 1):
            raise BadPackage(f"entry {name!r} is compressed more than {MAX_RATIO}:1")
        files.append(entry)
    return files


def read_file(name: str, data: bytes) -> dict[str, Any]:
    lower = name.lower()
    if lower.endswith(".xml"):
        elements = 0
        root = None
        try:
            for _, element in ElementTree.iterparse(io.BytesIO(data), events=("start",)):
                elements += 1
                if root is None:
                    root = element.tag
        except ElementTree.ParseError as error:
            raise ValueError(f"not well-formed XML: {error}") from None
        return {"file": name, "kind": "xml", "root": root, "elements": elements}
    if lower.endswith(".csv"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
        return {"file": name, "kind": "csv", "records": max(len(rows) - 1, 0)}
    return {"file": name, "kind": "other"}


def package_bytes(item: dict[str, Any]) -> bytes:
    """The input file's bytes: on the server's disk, or over its link."""
    local = item.get("local_path")
    if local:
        with open(local, "rb") as handle:
            return handle.read()
    url = item["url"]
    if url.startswith("/"):
        url = os.environ["TASKWIRE_URL"].rstrip("/") + url
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def sync(job: dict[str, Any]) -> dict[str, Any]:
    task_id, attempt = job["task_id"], job["attempt"]
    device = job["input"]["device"]
    work_ms = min(int(job["input"].get("work_ms", 0)), MAX_WORK_MS)
    package = next((i for i in job.get("inputs", []) if i["path"] == "$.package"), None)
    if package is None:
        raise BadPackage("the assign names no input at $.package")
    try:
        archive = zipfile.ZipFile(io.BytesIO(package_bytes(package)))
    except zipfile.BadZipFile as error:
        raise BadPackage(f"not a zip archive: {error}") from None
    with archive:
        files = check_entries(archive)
        received, problems = [], []
        for n, entry in enumerate(files, start=1):
            if (task_id, attempt) in _cancelled:
                raise InterruptedError
            try:
                received.append(read_file(entry.filename, archive.read(entry)))
            except ValueError as why:
                problems.append({"file": entry.filename, "problem": str(why)})
            time.sleep(work_ms / 1000)
            send(
                {
                    "type": "progress",
                    "task_id": task_id,
                    "attempt": attempt,
                    "progress": n / max(len(files), 1),
                    "message": f"read {n} of {len(files)} files",
                }
            )
    actions = [{"op": "acknowledge", "file": r["file"]} for r in received]
    instructions = {"device": device, "received": received, "problems": problems, "actions": actions}
    name = f"instructions-{device}.zip"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("instructions.json", json.dumps(instructions, indent=2))
    with open(os.path.join(job["output_dir"], name), "wb") as handle:
        handle.write(out.getvalue())
    return {
        "result": {"device": device, "files": len(files), "problems": len(problems), "actions": len(actions)},
        "files": [{"name": name, "content_type": "application/zip"}],
    }


def run(job: dict[str, Any]) -> None:
    task_id, attempt = job["task_id"], job["attempt"]
    try:
        done = sync(job)
        send({"type": "complete", "task_id": task_id, "attempt": attempt, **done})
    except InterruptedError:
        send({"type": "cancelled", "task_id": task_id, "attempt": attempt})
    except BadPackage as why:
        send(
            {
                "type": "fail",
                "task_id": task_id,
                "attempt": attempt,
                "error": {"message": str(why), "code": "BadPackage"},
            }
        )
    except Exception as error:  # noqa: BLE001 (any failure fails the task, never the worker)
        send(
            {
                "type": "fail",
                "task_id": task_id,
                "attempt": attempt,
                "error": {"message": f"{type(error).__name__}: {error}", "code": "Exception"},
            }
        )
    finally:
        _cancelled.discard((task_id, attempt))
        with _running:
            _state["running"] -= 1
            idle = _state["running"] == 0
        if _state["draining"] and idle:
            send({"type": "bye", "reason": "drained"})


def heartbeats(interval: float) -> None:
    while True:
        time.sleep(interval)
        send({"type": "heartbeat"})


def main() -> None:
    send(
        {
            "type": "hello",
            "protocol": 1,
            "slots": 1,
            "worker": {"name": os.environ.get("TASKWIRE_WORKER_NAME", "sync"), "version": "1.0.0"},
            "tasks": [
                {
                    "name": "sync",
                    "description": "Reads a device's zip of XML files and CSV logs; writes its instruction package.",
                    "retry_safe": True,
                    "input_schema": {
                        "type": "object",
                        "required": ["device", "package"],
                        "properties": {
                            "device": {"type": "string", "minLength": 1, "maxLength": 128},
                            "package": {"type": "object"},
                            "work_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WORK_MS},
                        },
                    },
                }
            ],
        }
    )
    for line in sys.stdin:
        message = json.loads(line)
        kind = message.get("type")
        if kind == "welcome":
            threading.Thread(target=heartbeats, args=(message["heartbeat_interval_s"],), daemon=True).start()
        elif kind == "assign":
            with _running:
                _state["running"] += 1
            threading.Thread(target=run, args=(message,), daemon=True).start()
        elif kind == "cancel":
            _cancelled.add((message["task_id"], message["attempt"]))
        elif kind == "drain":
            _state["draining"] = True
        elif kind == "error":
            log(f"server: {message['error']['code']}: {message['error']['message']}")
    # stdin closed: the server is gone.


if __name__ == "__main__":
    main()
