"""The remote worker's transport: one WebSocket to ``GET /v1/worker``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .. import errors
from .._util import loads

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = ["SUBPROTOCOL", "WebSocketTransport"]

SUBPROTOCOL = "taskwire.worker.v1"


class WebSocketTransport:
    """JSON messages, one per text frame."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.closed = False

    @classmethod
    async def connect(
        cls, ws_url: str, key: str, *, open_timeout: float, max_message_bytes: int
    ) -> WebSocketTransport:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus
        from websockets.typing import Subprotocol

        try:
            conn = await connect(
                ws_url,
                additional_headers={"Authorization": f"Bearer {key}"},
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                compression=None,
                max_size=max_message_bytes,
                open_timeout=open_timeout,
                # Liveness is the protocol's heartbeats; the server answers pings anyway.
                ping_interval=None,
                close_timeout=5,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            error: Any = None
            with contextlib.suppress(ValueError, AttributeError):
                error = loads(bytes(e.response.body or b"{}")).get("error")
            if status in (401, 403):
                raise errors.Unauthorized(
                    (error or {}).get("message") or f"HTTP {status}: not a worker key"
                ) from e
            raise errors.error_from_wire(
                error or {"code": "internal", "message": f"HTTP {status} on the worker upgrade"}
            ) from e
        return cls(conn)

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    async def recv(self) -> str | None:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = await self.conn.recv()
            except ConnectionClosed:
                return None
            if isinstance(message, str):
                return message

    async def send(self, lines: list[str]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for line in lines:
                await self.conn.send(line)
        except ConnectionClosed as e:
            raise ConnectionError("the worker socket closed") from e

    async def close(self, code: int = 1000) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            await self.conn.close(code)
