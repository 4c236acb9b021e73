"""The one error of the settings' operations: what was refused, field by field."""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(Exception):
    """A request the settings cannot accept; nothing was stored.

    ``fields`` maps parameter names to what is wrong with each, phrased to follow
    the field's name ("smtp_port" + " must be from 1 to 65535").
    """

    def __init__(self, fields: Mapping[str, str] | None = None, message: str | None = None):
        self.fields = dict(fields or {})
        if message is None:
            message = "; ".join(f"{name} {problem}" for name, problem in self.fields.items())
        self.message = message
        super().__init__(message)
