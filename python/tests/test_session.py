"""The worker session's rules, without IO: plain calls in, messages and effects out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, NotRequired, TypedDict

import pytest

from taskwire.worker._schema import build_input, schema_of
from taskwire.worker._session import (
    MAX_PENDING_LOGS,
    AnswerIn,
    Assign,
    CancelIn,
    Drain,
    Forget,
    Session,
    Welcome,
)

T1, T2 = "1" * 32, "2" * 32


def session() -> Session:
    return Session(name="w", tasks=[{"name": "t"}], slots=2, version="9", sdk="sdk 1")


def lines(s: Session) -> list[dict[str, Any]]:
    return [json.loads(line) for line in s.take_lines()]


def welcome(**extra: Any) -> dict[str, Any]:
    return {
        "type": "welcome",
        "protocol": 1,
        "worker_id": "w-1",
        "heartbeat_interval_s": 5,
        "heartbeat_timeout_s": 15,
        "limits": {"max_message_bytes": 1000},
        **extra,
    }


def assign(task_id: str = T1, attempt: int = 1) -> dict[str, Any]:
    return {
        "type": "assign",
        "task_id": task_id,
        "attempt": attempt,
        "task": "t",
        "input": {},
        "deadline": "2099-01-01T00:00:00Z",
        "timeout_s": 60,
        "interactive": True,
    }


def test_hello_shape() -> None:
    s = session()
    assert s.hello(resume=False) == {
        "type": "hello",
        "protocol": 1,
        "worker": {"name": "w", "version": "9", "sdk": "sdk 1"},
        "slots": 2,
        "tasks": [{"name": "t"}],
    }


def test_welcome_and_assign_effects() -> None:
    s = session()
    (w,) = s.receive(welcome())
    assert isinstance(w, Welcome)
    assert (w.heartbeat_interval_s, w.heartbeat_timeout_s, w.max_message_bytes) == (5, 15, 1000)
    (a,) = s.receive(assign())
    assert isinstance(a, Assign)
    assert (a.task_id, a.attempt, a.interactive, a.timeout_s) == (T1, 1, True, 60.0)
    # The same attempt twice is not started twice.
    assert s.receive(assign()) == []
    assert T1 in s.running


def test_unknown_messages_are_ignored() -> None:
    s = session()
    assert s.receive({"type": "something_new", "x": 1}) == []
    assert s.receive(["not", "an", "object"]) == []
    assert s.receive({"type": "heartbeat"}) == []


def test_attempt_fencing_and_one_outcome() -> None:
    s = session()
    s.receive(assign())
    assert not s.progress(T1, 2, 0.5)  # not the current attempt
    assert not s.progress(T2, 1, 0.5)  # not held
    assert s.complete(T1, 1, {"ok": True})
    assert not s.fail(T1, 1, "late")  # the outcome was given
    assert not s.progress(T1, 1, 1.0)
    out = lines(s)
    assert [m["type"] for m in out] == ["complete"]
    assert out[0]["ref"] in s.unacked
    # A cancel or an answer for an attempt not held is dropped.
    assert s.receive({"type": "cancel", "task_id": T1, "attempt": 1, "reason": "client"}) == []


def test_progress_is_coalesced_in_place() -> None:
    s = session()
    s.receive(assign())
    s.log("before", task_id=T1, attempt=1)
    for i in range(100):
        s.progress(T1, 1, i / 100, f"step {i}")
    s.log("after", task_id=T1, attempt=1)
    s.complete(T1, 1, None)
    out = lines(s)
    assert [m["type"] for m in out] == ["log", "progress", "log", "complete"]
    assert out[1]["message"] == "step 99"
    # Fractions are clamped to 0..1.
    s.receive(assign(T2))
    s.progress(T2, 1, 7.0)
    assert lines(s)[0]["progress"] == 1.0


def test_logs_are_bounded() -> None:
    s = session()
    for i in range(MAX_PENDING_LOGS + 10):
        s.log(f"line {i}")
    out = lines(s)
    assert out[0]["level"] == "warn"
    assert "10 log lines were dropped" in out[0]["message"]
    assert len(out) == MAX_PENDING_LOGS + 1
    assert out[1]["message"] == "line 10"


def test_ok_acknowledges_and_error_drops_stale() -> None:
    s = session()
    s.receive(assign())
    s.receive(assign(T2))
    s.complete(T1, 1, 1)
    s.fail(T2, 1, "no", "E")
    first, second = lines(s)
    assert s.receive({"type": "ok", "ref": first["ref"]}) == []
    assert list(s.unacked) == [second["ref"]]
    s.receive(
        {
            "type": "error",
            "ref": second["ref"],
            "error": {"code": "stale_attempt", "message": "old"},
        }
    )
    assert s.unacked == {}
    assert s.idle


def test_reconnect_resumes_and_replays() -> None:
    s = session()
    s.receive(welcome())
    s.receive(assign(T1))
    s.receive(assign(T2))
    s.complete(T2, 1, "done")  # sent, never acknowledged: the socket dropped
    lines(s)
    s.progress(T1, 1, 0.5)
    s.disconnected()
    assert s.take_lines() == []  # stale progress is not sent on the next connection
    hello = s.hello(resume=True)
    assert hello["resume"] == [{"task_id": T1, "attempt": 1}, {"task_id": T2, "attempt": 1}]
    effects = s.receive(
        welcome(
            resumed=[
                {"task_id": T1, "attempt": 1, "kept": True},
                {"task_id": T2, "attempt": 1, "kept": True},
            ]
        )
    )
    assert [type(e) for e in effects] == [Welcome]
    out = lines(s)
    assert [(m["type"], m["task_id"], m["result"]) for m in out] == [("complete", T2, "done")]


def test_attempts_not_kept_are_forgotten() -> None:
    s = session()
    s.receive(welcome())
    s.receive(assign(T1))
    s.receive(assign(T2, 3))
    s.disconnected()
    effects = s.receive(
        welcome(
            resumed=[
                {"task_id": T1, "attempt": 1, "kept": True},
                {"task_id": T2, "attempt": 3, "kept": False},
            ]
        )
    )
    assert Forget(T2, 3) in effects
    assert list(s.running) == [T1]
    assert not s.complete(T2, 3, None)  # nothing is reported for a forgotten attempt


def test_unsent_question_is_asked_after_reconnect() -> None:
    s = session()
    s.receive(assign())
    s.ask(T1, 1, "q1", "Continue?", choices=[{"value": "yes"}])
    s.disconnected()
    s.receive(welcome(resumed=[{"task_id": T1, "attempt": 1, "kept": True}]))
    (ask,) = lines(s)
    assert ask["type"] == "ask"
    assert ask["question_id"] == "q1"


def test_questions() -> None:
    s = session()
    s.receive(assign())
    with pytest.raises(ValueError, match="either choices or a schema"):
        s.ask(T1, 1, "q1", "?")
    s.ask(
        T1, 1, "q1", "Name?", schema={"type": "string"}, default="x", has_default=True, timeout_s=5
    )
    with pytest.raises(RuntimeError, match="one question at a time"):
        s.ask(T1, 1, "q2", "again?", choices=[{"value": 1}])
    (ask,) = lines(s)
    assert ask == {
        "type": "ask",
        "task_id": T1,
        "attempt": 1,
        "question_id": "q1",
        "prompt": "Name?",
        "schema": {"type": "string"},
        "default": "x",
        "timeout_s": 5,
    }
    # An answer to another question id is dropped; the right one is an effect.
    assert (
        s.receive(
            {
                "type": "answer",
                "task_id": T1,
                "attempt": 1,
                "question_id": "q9",
                "outcome": "answered",
                "value": "y",
            }
        )
        == []
    )
    (answer,) = s.receive(
        {
            "type": "answer",
            "task_id": T1,
            "attempt": 1,
            "question_id": "q1",
            "outcome": "timed_out",
            "deadline": "2099-01-01T00:00:00Z",
        }
    )
    assert answer == AnswerIn(T1, 1, "q1", "timed_out", False, None, "2099-01-01T00:00:00Z")


def test_cancel_and_drain_effects() -> None:
    s = session()
    s.receive(assign())
    (cancel,) = s.receive(
        {"type": "cancel", "task_id": T1, "attempt": 1, "reason": "timeout", "grace_s": 10}
    )
    assert cancel == CancelIn(T1, 1, "timeout", 10.0)
    assert s.receive({"type": "drain"}) == [Drain()]
    assert s.draining
    s.cancelled(T1, 1)
    assert lines(s)[0]["type"] == "cancelled"


# -- schemas from type hints ----------------------------------------------------------


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    x: int


@dataclass
class Outer:
    """An input."""

    name: str
    inner: Inner
    items: list[Inner] = field(default_factory=list)
    color: Color = Color.RED
    mode: Literal["a", "b"] = "a"
    note: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    pair: tuple[int, str] = (1, "x")


class Movie(TypedDict):
    title: str
    year: NotRequired[int]


def test_dataclass_schema_and_input() -> None:
    schema = schema_of(Outer)
    assert schema["required"] == ["name", "inner"]
    assert schema["description"] == "An input."
    props = schema["properties"]
    assert props["inner"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
    }
    assert props["items"]["type"] == "array"
    assert props["color"] == {"enum": ["red", "blue"]}
    assert props["mode"] == {"enum": ["a", "b"], "default": "a"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    value = build_input(
        Outer, {"name": "n", "inner": {"x": 1}, "items": [{"x": 2}], "color": "blue", "unknown": 5}
    )
    assert value == Outer(name="n", inner=Inner(1), items=[Inner(2)], color=Color.BLUE)


def test_typeddict_schema() -> None:
    assert schema_of(Movie) == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title"],
    }
    assert build_input(Movie, {"title": "x"}) == {"title": "x"}


def test_unsupported_type_is_a_clear_error() -> None:
    @dataclass
    class Bad:
        when: complex

    with pytest.raises(TypeError, match="input_schema="):
        schema_of(Bad)
