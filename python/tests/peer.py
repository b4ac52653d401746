"""The server's side of the stdio framing, for the worker SDK's framing tests:
a real worker process on pipes, and a test that reads and writes its JSON
lines. (The end-to-end tests run the same workers under a real
``taskwire serve``; this file checks the SDK's own rules message by message.)"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .support import DEADLINE

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent


class StdioPeer:
    def __init__(
        self,
        module: str = "tests.workers.sample",
        env: dict[str, str] | None = None,
        name: str = "sample-1",
    ) -> None:
        full_env = {
            **os.environ,
            "TASKWIRE_TRANSPORT": "stdio",
            "TASKWIRE_WORKER_NAME": name,
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=PACKAGE_ROOT,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stdout_raw: list[bytes] = []
        self.stderr: list[str] = []
        self.received_at: list[tuple[float, dict[str, Any]]] = []
        self._err_cond = threading.Condition()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.stdout_raw.append(raw)
            try:
                message = json.loads(raw)
            except ValueError:
                message = {"type": "__not_json__", "raw": raw.decode("utf-8", "replace")}
            self.received_at.append((time.monotonic(), message))
            self.lines.put(message)
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._err_cond:
                self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._err_cond.notify_all()

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def recv(self, timeout: float = DEADLINE) -> dict[str, Any]:
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no message in {timeout} s; stderr:\n" + self.stderr_text()
            ) from None
        if message is None:
            raise EOFError("the worker closed its stdout; stderr:\n" + self.stderr_text())
        return message

    def recv_type(
        self,
        kind: str,
        timeout: float = DEADLINE,
        skip: tuple[str, ...] = ("heartbeat", "log", "progress"),
    ) -> dict[str, Any]:
        """The next message of type ``kind``; only ``skip`` types may come before it."""
        end = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, end - time.monotonic()))
            if message["type"] == kind:
                return message
            if message["type"] not in skip:
                raise AssertionError(f"expected {kind}, got {message}")

    def wait_stderr(self, text: str, timeout: float = DEADLINE) -> None:
        end = time.monotonic() + timeout
        with self._err_cond:
            while not any(text in line for line in self.stderr):
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no stderr line with {text!r}:\n" + "\n".join(self.stderr))
                self._err_cond.wait(left)

    def stderr_text(self) -> str:
        with self._err_cond:
            return "\n".join(self.stderr)

    def handshake(self, interval: float = 5, timeout: float = 15) -> dict[str, Any]:
        hello = self.recv_type("hello", skip=("log",))
        self.send(
            {
                "type": "welcome",
                "protocol": 1,
                "worker_id": "w-1",
                "heartbeat_interval_s": interval,
                "heartbeat_timeout_s": timeout,
                "limits": {"max_message_bytes": 67108864, "max_file_bytes": 1073741824},
            }
        )
        return hello

    def assign(
        self,
        task: str,
        input: Any,
        task_id: str = "t" * 32,
        attempt: int = 1,
        output_dir: str | None = None,
        interactive: bool = True,
    ) -> None:
        message: dict[str, Any] = {
            "type": "assign",
            "task_id": task_id,
            "attempt": attempt,
            "task": task,
            "input": input,
            "deadline": "2099-01-01T00:00:00.000Z",
            "timeout_s": 3600,
            "interactive": interactive,
        }
        if output_dir is not None:
            message["output_dir"] = output_dir
        self.send(message)

    def close(self) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        return self.process.returncode
