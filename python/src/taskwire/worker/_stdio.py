"""The managed worker's transport: JSON lines on the process's stdin and stdout.

``taskwire serve`` starts a managed worker with ``TASKWIRE_TRANSPORT=stdio``;
its stdout is then the protocol channel, and anything else printed there
would be read as a (broken) message. :func:`claim_stdout` (called when
``taskwire`` is imported in such a process, so before the user's own code
runs) keeps the two channels on private descriptors, points file descriptor
1 and ``sys.stdout`` at stderr (the worker's log, as the server reads it) and
descriptor 0 and ``sys.stdin`` at ``/dev/null``, and removes
``TASKWIRE_TRANSPORT`` from the environment so child processes do not
believe they are workers. Only the standard library is used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

__all__ = ["StdioTransport", "claim_stdout", "claimed"]

#: Bytes a line may hold past ``max_message_bytes``' default, before the
#: welcome says the real limit.
DEFAULT_LIMIT = 64 * 1024 * 1024 + 1024

_fds: tuple[int, int] | None = None


def claimed() -> bool:
    """True once this process took stdin/stdout as the protocol channel."""
    return _fds is not None


def claim_stdout() -> tuple[int, int]:
    """Moves the protocol channel off fds 0/1 (idempotent); returns ``(in_fd, out_fd)``."""
    global _fds
    if _fds is not None:
        return _fds
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
    out_fd = os.dup(1)
    in_fd = os.dup(0)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)  # noqa: SIM115 - replaces the process's stdin for good
    os.environ.pop("TASKWIRE_TRANSPORT", None)
    _fds = (in_fd, out_fd)
    return _fds


class StdioTransport:
    """JSON lines over two pipes (the claimed stdin/stdout, or any two fds in tests)."""

    def __init__(self, in_fd: int, out_fd: int, limit: int = DEFAULT_LIMIT) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.limit = limit
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_transport: asyncio.ReadTransport | None = None
        self.closed = False

    @classmethod
    def claim(cls) -> StdioTransport:
        in_fd, out_fd = claim_stdout()
        return cls(in_fd, out_fd)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limit)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(self.in_fd, "rb", buffering=0, closefd=False),
        )
        write_transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin,
            os.fdopen(self.out_fd, "wb", buffering=0, closefd=False),
        )
        self._reader = reader
        self._read_transport = read_transport
        self._writer = asyncio.StreamWriter(write_transport, protocol, None, loop)

    async def recv(self) -> str | None:
        """The next line, without its newline; None at end of input."""
        assert self._reader is not None
        try:
            line = await self._reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            print("taskwire: a line from the server is over the size limit", file=sys.stderr)
            return None
        except OSError:
            return None
        if not line:
            return None
        return line.decode("utf-8", "replace")

    async def send(self, lines: list[str]) -> None:
        writer = self._writer
        if writer is None or self.closed:
            raise ConnectionError("the stdio transport is closed")
        writer.write(("\n".join(lines) + "\n").encode())
        await writer.drain()

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.drain()
            self._writer.close()
        if self._read_transport is not None:
            self._read_transport.close()
