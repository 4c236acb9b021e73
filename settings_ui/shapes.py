"""The shapes of the API's results, declared once.

A result is a dataclass; each field's type says its JSON type, and ``Annotated[..., Schema(...)]``
adds what the type cannot (a description, a range, the values allowed). From that one declaration
:func:`to_json` makes the answer and :func:`schema` its JSON Schema in the OpenAPI document, so the
two cannot drift apart. A dataclass within a result is referred to by its name, as a component of
the document (:func:`components`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal


class Schema:
    """JSON Schema keywords for one field, beyond what its type says."""

    def __init__(self, description: str = "", **keywords: Any) -> None:
        self.keywords = ({"description": description} if description else {}) | keywords


def to_json(value: Any) -> Any:
    """``value`` as the API answers it: a result's fields by name, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in _public_fields(type(value))}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def schema(shape: type) -> dict[str, Any]:
    """The JSON Schema of the result ``shape`` (a dataclass)."""
    fields = _public_fields(shape)
    hints = typing.get_type_hints(shape, include_extras=True)
    return {
        "type": "object",
        "required": [field.name for field in fields],
        "additionalProperties": False,
        "properties": {field.name: _schema_of(hints[field.name]) for field in fields},
    }


def components(*shapes: type) -> dict[str, dict[str, Any]]:
    """The schemas of ``shapes`` and of every result they hold, by name."""
    found: dict[str, dict[str, Any]] = {}
    pending = list(shapes)
    while pending:
        shape = pending.pop()
        if shape.__name__ not in found:
            found[shape.__name__] = schema(shape)
            pending += _nested(typing.get_type_hints(shape).values())
    return dict(sorted(found.items()))


def _public_fields(shape: type) -> list[dataclasses.Field[Any]]:
    # A field whose name starts with "_" is the object's own, never part of the answer.
    return [field for field in dataclasses.fields(shape) if not field.name.startswith("_")]


def _nested(annotations: Iterable[Any]) -> list[type]:
    nested: list[type] = []
    for annotation in annotations:
        if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            nested.append(annotation)
        else:
            nested += _nested(typing.get_args(annotation))
    return nested


_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    bool: {"type": "boolean"},
    datetime: {"type": "string", "format": "date-time"},
}


def _schema_of(annotation: Any) -> dict[str, Any]:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        extra: dict[str, Any] = {}
        for note in arguments[1:]:
            if isinstance(note, Schema):
                extra |= note.keywords
        return _schema_of(arguments[0]) | extra
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return {"$ref": f"#/components/schemas/{annotation.__name__}"}
    if origin is Literal:
        return {"enum": list(arguments)}
    if origin is list:
        return {"type": "array", "items": _schema_of(arguments[0])}
    if origin is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType) and type(None) in arguments:
        (inner,) = (argument for argument in arguments if argument is not type(None))
        described = _schema_of(inner)
        if "type" in described and "$ref" not in described:
            return described | {"type": [described["type"], "null"]}
        return {"oneOf": [{"type": "null"}, described]}
    raise TypeError(f"no JSON Schema for {annotation!r}")
