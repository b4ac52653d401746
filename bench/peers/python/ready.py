"""Waits (at most 60 s) until the server offers a task (default `py_noop`) with
a connected worker. Usage: ready.py URL KEY [TASK]"""

from __future__ import annotations

import asyncio
import sys

import taskwire


async def main(url: str, key: str, task: str) -> None:
    async with asyncio.timeout(60):
        while True:
            async with taskwire.AsyncClient(url, key, reconnect=False) as client:
                if any(t.name == task and (t.workers or 0) > 0 for t in client.tasks):
                    return
            await asyncio.sleep(0.1)


asyncio.run(
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "py_noop")
)
