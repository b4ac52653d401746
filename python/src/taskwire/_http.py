"""HTTP helpers of the client: streamed, checked downloads; Server-Sent Events."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from .events import File

if TYPE_CHECKING:
    import httpx

__all__ = ["download_to", "read_checked", "safe_name", "sse_data"]

DOWNLOAD_CHUNK = 256 * 1024


async def download_to(
    http: httpx.AsyncClient,
    absolute: Callable[[str], str],
    file: File | str,
    dest: str | os.PathLike[str],
    sha256: str | None,
) -> Path:
    """Streams a download into a temporary file beside ``dest``, renamed into
    place only when the size and sha256 match."""
    url = file.url if isinstance(file, File) else file
    expected = sha256 or (file.sha256 if isinstance(file, File) else None)
    size = file.size if isinstance(file, File) else None
    target = Path(dest)
    if target.is_dir():  # noqa: ASYNC240 - one stat, not worth a thread
        name = file.name if isinstance(file, File) else url.rstrip("/").rsplit("/", 1)[-1]
        target = target / safe_name(name)
    fd, part_name = tempfile.mkstemp(prefix=".taskwire-", suffix=".part", dir=target.parent)
    part = Path(part_name)
    digest = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async with http.stream("GET", absolute(url)) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise errors.DownloadError(
                        f"download answered {response.status_code}", status=response.status_code
                    )
                async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
        if size is not None and written != size:
            raise errors.DownloadError(f"expected {size} bytes, got {written}")
        if expected and digest.hexdigest() != expected:
            raise errors.DownloadError(
                f"sha256 mismatch: expected {expected}, got {digest.hexdigest()}"
            )
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)  # noqa: ASYNC240 - cleanup on error
        raise
    return target


async def read_checked(http: httpx.AsyncClient, url: str, sha256: str) -> bytes:
    response = await http.get(url)
    if response.status_code != 200:
        raise errors.DownloadError(
            f"download answered {response.status_code}", status=response.status_code
        )
    data = response.content
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise errors.DownloadError("sha256 mismatch")
    return data


def safe_name(name: str) -> str:
    """A file name that stays inside its folder whatever the server sent."""
    cleaned = "".join("_" if c in "/\\\0" or ord(c) < 32 else c for c in name).strip()
    if cleaned in ("", ".", ".."):
        cleaned = "file"
    return cleaned[:255]


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event of a response."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    if data:
        yield "\n".join(data)
