"""JSON Schemas from type hints: a dataclass or a TypedDict describes a task's input.

Supported inside them: ``str``, ``int``, ``float``, ``bool``, ``None``,
``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``T | None`` and other
unions, ``Literal[...]``, ``Enum`` subclasses, nested dataclasses and
TypedDicts, ``Any``. The server validates submits against the schema before
they are queued; the SDK then builds the dataclass from the JSON input
(recursively), so a handler gets ``input`` as an instance.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import (
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

__all__ = ["build_input", "schema_of"]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def schema_of(tp: Any) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a type."""
    if _is_dataclass_type(tp) or is_typeddict(tp):
        return _object_schema(tp)
    return _schema(tp)


def _object_schema(tp: Any) -> dict[str, Any]:
    hints = get_type_hints(tp)
    properties: dict[str, Any] = {}
    required: list[str] = []
    if _is_dataclass_type(tp):
        for f in dataclasses.fields(tp):
            properties[f.name] = _schema(hints.get(f.name, Any))
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default:
                required.append(f.name)
            elif f.default is not dataclasses.MISSING and _jsonable(f.default):
                properties[f.name]["default"] = f.default
    else:
        # With postponed annotations a TypedDict's own __required_keys__ misses
        # NotRequired[...]: read the markers from the evaluated hints.
        required_keys = getattr(tp, "__required_keys__", frozenset(hints))
        for name, hint in get_type_hints(tp, include_extras=True).items():
            origin = get_origin(hint)
            if origin is NotRequired:
                is_required, hint = False, get_args(hint)[0]
            elif origin is Required:
                is_required, hint = True, get_args(hint)[0]
            else:
                is_required = name in required_keys
            properties[name] = _schema(hint)
            if is_required:
                required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    doc = (tp.__doc__ or "").strip()
    if doc and not doc.startswith(tp.__name__ + "("):
        schema["description"] = doc.split("\n\n")[0]
    return schema


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _schema(tp: Any) -> dict[str, Any]:
    if tp is Any or tp is object:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if _is_dataclass_type(tp) or is_typeddict(tp):
        return _object_schema(tp)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return _schema(args[0])
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        options = [_schema(a) for a in args]
        return {"anyOf": options}
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0])}
        return {
            "type": "array",
            "prefixItems": [_schema(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    raise TypeError(f"no JSON Schema for the type {tp!r}; pass input_schema= instead")


def build_input(tp: Any, value: Any) -> Any:
    """The handler's ``input``: a dataclass built from the JSON value (recursively);
    other types are passed as the JSON value itself."""
    if _is_dataclass_type(tp) and isinstance(value, dict):
        hints = get_type_hints(tp)
        kwargs = {}
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        for name, item in value.items():
            if name in names:
                kwargs[name] = build_input(hints.get(name, Any), item)
        return tp(**kwargs)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return build_input(args[0], value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if origin in (Union, types.UnionType):
        for option in args:
            if _is_dataclass_type(option) and isinstance(value, dict):
                return build_input(option, value)
        return value
    if origin is list and args and isinstance(value, list):
        return [build_input(args[0], v) for v in value]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: build_input(args[1], v) for k, v in value.items()}
    return value
