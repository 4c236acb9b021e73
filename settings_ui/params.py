"""Parameters as the API, the page and the command line pass them: JSON values checked by name,
type and rule against the fields' declaration, every problem named at its parameter."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from . import fields, rules
from .errors import SettingsError

_TYPE_NAMES = {bool: "a boolean (true or false)", int: "an integer", str: "a string"}


def reject_unknown(params: Mapping[str, Any], known: Collection[str]) -> None:
    """Raise :class:`SettingsError` naming every parameter of ``params`` not in ``known``."""
    unknown = sorted(set(params) - set(known))
    if not unknown:
        return
    if known:
        plural = "s" if len(unknown) > 1 else ""
        message = f"Unknown parameter{plural}: {', '.join(unknown)}. The parameters are: {', '.join(known)}."
    else:
        message = f'This call takes no parameters (got {", ".join(unknown)}); send "params": {{}}.'
    raise SettingsError({name: "is not a parameter of this call" for name in unknown}, message=message)


def parse_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check each given parameter's name, type and value; return them normalized.

    Raises :class:`SettingsError` naming every parameter that is wrong.
    """
    reject_unknown(params, fields.PARAMETERS)
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, value in params.items():
        field = fields.BY_NAME[name]
        try:
            check_type(value, field.type, multiline_up_to=field.max_length if field.multiline else None)
            parsed[name] = field.normalize(value) if field.normalize else value
        except ValueError as problem:
            errors[name] = str(problem)
    if errors:
        raise SettingsError(errors)
    return parsed


def check_type(value: Any, expected: type, *, multiline_up_to: int | None = None) -> None:
    """Raise ValueError unless ``value`` has the JSON type ``expected`` (and, for text, holds
    no control character; see :func:`~settings_ui.rules.check_no_control_characters`)."""
    # bool is a subclass of int in Python, but true is not a port number.
    if type(value) is not expected:
        raise ValueError(f"must be {_TYPE_NAMES[expected]}, not {json_type_name(value)}")
    if isinstance(value, str):
        rules.check_no_control_characters(value, multiline_up_to=multiline_up_to)


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        if not math.isfinite(value):  # 1e400 parses as infinity
            return "a number too large to be a port"
        return "a decimal number" if value.is_integer() else "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
