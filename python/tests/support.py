"""Test fixtures: a real ``taskwire serve`` and a TCP proxy the tests can cut.

The server is the binary the Rust build made (``TASKWIRE_BIN``, else the
repository's ``target/debug/taskwire``), started on ``127.0.0.1:0`` with a
fresh config file and temporary directory, its JSON log read line by line
(the ``listening`` line gives the port), and stopped by pid. Nothing here
sleeps to synchronise: every wait is on a line, a socket or a condition with
a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("TASKWIRE_BIN") or ROOT / "target" / "debug" / "taskwire")
#: The default deadline of one wait in a test, in seconds.
DEADLINE = 20.0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def until(
    check: Callable[[], Any], what: str, timeout: float = DEADLINE, tick: float = 0.02
) -> Any:
    """Re-checks ``check`` every ``tick`` s until it is truthy (returned) or the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(tick)


async def until_async(
    check: Callable[[], Any], what: str, timeout: float = DEADLINE, tick: float = 0.02
) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(tick)


@dataclass
class Server:
    """A running ``taskwire serve``."""

    process: subprocess.Popen[bytes]
    dir: Path
    keys: dict[str, str]
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return self.keys["test"]

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.raw)

    def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        """The first log line (a parsed JSON object) that matches, waiting for it."""
        end = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = end - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and seen == len(self.lines)):
                    raise TimeoutError(
                        f"no log line for {what} (server "
                        f"{'exited' if self.process.poll() is not None else 'running'}):\n"
                        + "\n".join(self.raw[-40:])
                    )
                self._cond.wait(min(left, 0.2))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = {"message": text, "raw": True}
            with self._cond:
                self.raw.append(text)
                if isinstance(parsed, dict):
                    self.lines.append(parsed)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(extra_toml: str = "", args: list[str] | None = None) -> Server:
    """Starts ``taskwire serve`` with keys ``test``, ``other`` (clients) and ``admin``."""
    if not BIN.exists():
        raise RuntimeError(f"no server binary at {BIN} (cargo build, or set TASKWIRE_BIN)")
    folder = Path(tempfile.mkdtemp(prefix="taskwire-py-"))
    keys = {name: random_key(f"twk_{name}") for name in ("test", "other", "admin")}
    blocks = [
        f'[[api_keys]]\nname = "{name}"\nsha256 = "sha256:{sha256_hex(key.encode())}"\n'
        f"admin = {'true' if name == 'admin' else 'false'}\n"
        for name, key in keys.items()
    ]
    config = folder / "taskwire.toml"
    config.write_text(extra_toml + "\n" + "\n".join(blocks))
    env = {**os.environ, "TASKWIRE_API_KEY": "", "RUST_LOG": os.environ.get("RUST_LOG", "info")}
    env.pop("TASKWIRE_TRANSPORT", None)
    command = [
        str(BIN),
        "serve",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--temp-dir",
        str(folder / "files"),
        "--log-format",
        "json",
        "--shutdown-grace-s",
        "2",
        *(args or []),
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=folder,
    )
    server = Server(process=process, dir=folder, keys=keys)
    threading.Thread(target=server._read, daemon=True).start()
    try:
        line = server.wait_log(lambda line: line.get("message") == "listening", "listening")
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    server.port = int(str(line["address"]).rsplit(":", 1)[1])
    return server


class Proxy:
    """A TCP proxy on a free loopback port in front of ``target_port``, in its
    own thread; :meth:`cut` drops every connection through it (the listener
    stays, so clients can come back)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self._conns: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        ready = threading.Event()
        self._server = cast("asyncio.Server | None", None)

        def main() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(DEADLINE)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._conns.difference_update((writer, up_writer))

    def cut(self) -> None:
        """Drops every open connection (a reset, as a broken network would)."""

        def drop() -> None:
            for conn in list(self._conns):
                transport = conn.transport
                with contextlib.suppress(Exception):
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        import socket
                        import struct

                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            self._conns.clear()

        self.loop.call_soon_threadsafe(drop)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.transport.abort()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)


@contextlib.contextmanager
def running_server(extra_toml: str = "", args: list[str] | None = None) -> Iterator[Server]:
    server = start_server(extra_toml, args)
    try:
        yield server
    finally:
        server.stop()


PYTHON = sys.executable
