"""The one error of the settings' operations: what was refused, field by field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class SettingsError(Exception):
    """A request the settings cannot accept; nothing was stored.

    ``fields`` maps parameter names to what is wrong with each, phrased to follow
    the field's name ("smtp_port" + " must be from 1 to 65535"). ``give_again`` names the
    secrets refused only because they were not given again: how to give one depends on where
    the request came from, so each surface adds that with :meth:`with_remedies`.
    """

    def __init__(
        self, fields: Mapping[str, str] | None = None, message: str | None = None, *, give_again: Iterable[str] = ()
    ):
        self.fields = dict(fields or {})
        self.give_again = frozenset(give_again)
        if message is None:
            message = "; ".join(f"{name} {problem}" for name, problem in self.fields.items())
        self.message = message
        super().__init__(message)

    def with_remedies(self, remedies: Mapping[str, str]) -> SettingsError:
        """This refusal with how to give each secret again (``remedies[name]``) after its message."""
        if not self.give_again:
            return self
        return SettingsError(
            {
                name: f"{problem} ({remedies[name]})" if name in self.give_again else problem
                for name, problem in self.fields.items()
            }
        )
