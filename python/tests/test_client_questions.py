"""The client's side of questions against the server's built-in ``approval``
task (no worker needed): answered over WebSocket and REST, refused (bad value,
second answer, another client), timed out with and without a default,
closed by a cancel, and answered after a reconnect."""

from __future__ import annotations

import pytest

import taskwire
from taskwire.events import Answered, Question

from .support import DEADLINE, Proxy, Server


async def first_question(task: taskwire.Task) -> Question:
    async for question in task.questions():
        return question
    raise AssertionError("the task ended without asking")


async def test_answered_over_websocket(client: taskwire.AsyncClient, server: Server) -> None:
    task = await client.submit("approval", {"prompt": "Publish the booklet?"})
    question = await first_question(task)
    assert question.prompt == "Publish the booklet?"
    assert [c.value for c in question.choices or ()] == ["approve", "reject"]
    assert question.expires_at is not None
    assert task.state == "waiting"
    assert task.question == question
    snapshot = await task.status()
    assert snapshot["state"] == "waiting"
    # Refusals: a value outside the choices, another client.
    with pytest.raises(taskwire.InvalidInput):
        await task.answer(question.question_id, "maybe")
    async with taskwire.AsyncClient(server.url, server.keys["other"]) as other:
        with pytest.raises(taskwire.NotFound):
            await other.answer(task.id, question.question_id, "approve")
    answered = await task.answer(question.question_id, "approve")
    assert isinstance(answered, Answered)
    assert (answered.outcome, answered.value) == ("answered", "approve")
    with pytest.raises((taskwire.AlreadyAnswered, taskwire.NotFound)):
        await task.answer(question.question_id, "reject")
    assert await task.result(DEADLINE) == {"outcome": "answered", "answer": "approve"}
    kinds = [e.type for e in task.events_held]
    assert kinds == ["accepted", "started", "question", "answered", "completed"]


async def test_answered_over_rest(rest_client: taskwire.AsyncClient) -> None:
    task = await rest_client.submit(
        "approval", {"prompt": "Name?", "schema": {"type": "string", "minLength": 2}}
    )
    question = await first_question(task)
    assert question.schema == {"type": "string", "minLength": 2}
    with pytest.raises(taskwire.InvalidInput):
        await task.answer(question.question_id, "x")
    answered = await task.answer(question.question_id, "Ada")
    assert answered.value == "Ada"
    assert (await task.result(DEADLINE))["answer"] == "Ada"


async def test_admin_may_answer(client: taskwire.AsyncClient, server: Server) -> None:
    task = await client.submit("approval", {"prompt": "Admin?"})
    question = await first_question(task)
    async with taskwire.AsyncClient(server.url, server.keys["admin"]) as admin:
        await admin.answer(task.id, question.question_id, "reject")
    assert (await task.result(DEADLINE))["answer"] == "reject"


async def test_timed_out_with_and_without_default(client: taskwire.AsyncClient) -> None:
    with_default = await client.submit(
        "approval", {"prompt": "Quick?", "timeout_s": 1, "default": "approve"}
    )
    assert await with_default.result(DEADLINE) == {"outcome": "timed_out", "answer": "approve"}
    answered = [e for e in with_default.events_held if isinstance(e, Answered)]
    assert answered[0].outcome == "timed_out"
    without = await client.submit("approval", {"prompt": "Quick?", "timeout_s": 1})
    with pytest.raises(taskwire.TaskError, match="nobody answered"):
        await without.wait(DEADLINE)


async def test_not_interactive_gets_the_default_at_once(client: taskwire.AsyncClient) -> None:
    task = await client.submit("approval", {"prompt": "?", "default": "reject"}, interactive=False)
    result = await task.result(DEADLINE)
    assert result["answer"] == "reject"
    assert not any(isinstance(e, Question) for e in task.events_held)


async def test_cancel_closes_the_question(client: taskwire.AsyncClient) -> None:
    task = await client.submit("approval", {"prompt": "Cancel me?"})
    question = await first_question(task)
    await task.cancel()
    with pytest.raises(taskwire.TaskCancelled):
        await task.wait(DEADLINE)
    assert task.question is None
    closed = [e for e in task.events_held if isinstance(e, Answered)]
    assert [(e.question_id, e.outcome) for e in closed] == [(question.question_id, "cancelled")]
    assert task.events_held[-1].type == "cancelled"
    # docs/protocol.md §7 says not_found for a question that is not open; the
    # server answers already_answered for one closed by the cancel.
    with pytest.raises((taskwire.NotFound, taskwire.AlreadyAnswered)):
        await task.answer(question.question_id, "approve")


async def test_question_seen_again_after_reconnect(server: Server) -> None:
    proxy = Proxy(server.port)
    try:
        async with taskwire.AsyncClient(proxy.url, server.key) as client:
            task = await client.submit("approval", {"prompt": "Still there?"})
            question = await first_question(task)
            proxy.cut()
            # The held question is still open after the resume; the answer goes
            # over the new connection.
            await client.ping()
            assert task.question == question
            await task.answer(question.question_id, "approve")
            assert (await task.result(DEADLINE))["answer"] == "approve"
            assert client.reconnects >= 1
            assert [e.seq for e in task.events_held] == list(range(1, 6))
    finally:
        proxy.close()


def test_blocking_client_answers(server: Server) -> None:
    with taskwire.Client(server.url, server.key) as client:
        task = client.submit("approval", {"prompt": "Sync?", "choices": ["yes", "no"]})
        for question in task.questions():
            task.answer(question.question_id, "yes")
        assert task.result(DEADLINE)["answer"] == "yes"
