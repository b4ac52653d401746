"""Shared fixtures. A run with ``TASKWIRE_REQUIRE_ALL=1`` (scripts/test-python.sh)
fails when any test was skipped: a suite that silently skips is a failed suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

import taskwire

from .support import BIN, Server, start_server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("TASKWIRE_REQUIRE_ALL"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped:
        if reporter is not None:
            reporter.write_line(f"TASKWIRE_REQUIRE_ALL: {skipped} test(s) skipped: failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _need_binary() -> None:
    if not BIN.exists():
        pytest.skip(f"no taskwire binary at {BIN} (cargo build, or set TASKWIRE_BIN)")


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One shared server with the built-in tasks, for the client tests."""
    _need_binary()
    running = start_server(args=["--workers", "2"])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[taskwire.AsyncClient]:
    async with taskwire.AsyncClient(server.url, server.key) as c:
        yield c


@pytest.fixture
async def rest_client(server: Server) -> AsyncIterator[taskwire.AsyncClient]:
    async with taskwire.AsyncClient(server.url, server.key, transport="rest") as c:
        yield c
