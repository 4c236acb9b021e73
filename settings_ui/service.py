"""The service layer: every read and write of the email settings goes through here.

The JSON API and the settings page both call these functions; neither touches
the model directly. Each write is one transaction, committed here once, and is
guarded by the row's version so that concurrent writers never mix their values.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from . import crypto, mailer, rules
from .extensions import db
from .models import SETTINGS_ROW_ID, AuditEvent, EmailSettings

PARAMETER_TYPES: dict[str, type] = {
    "allow_selfsigned_certs": bool,
    "encryption": str,
    "from_email": str,
    "password": str,
    "smtp_host": str,
    "smtp_port": int,
    "username": str,
}
"""The parameters of ``/email-settings/edit``, as published, with their JSON types."""

PUBLIC_FIELDS = tuple(name for name in PARAMETER_TYPES if name != "password")

_WRITE_ATTEMPTS = 50
_TYPE_NAMES = {bool: "a boolean (true or false)", int: "an integer", str: "a string"}


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, for the audit trail: a user name and the client's address."""

    name: str
    address: str = ""


SYSTEM = Actor("system")


@dataclass(frozen=True)
class Event:
    """An audit-trail entry as the page shows it."""

    at: datetime
    actor: str
    address: str
    action: str
    detail: str


class SettingsError(Exception):
    """A request the settings cannot accept; nothing was stored.

    ``fields`` maps parameter names to what is wrong with each, phrased to follow
    the field's name ("smtp_port" + " must be from 1 to 65535").
    """

    status = 400
    details: Mapping[str, Any] = {}
    """More for the API's error object, beside ``message`` and ``fields``."""

    def __init__(self, fields: Mapping[str, str] | None = None, message: str | None = None):
        self.fields = dict(fields or {})
        if message is None:
            message = "; ".join(f"{name} {problem}" for name, problem in self.fields.items())
        self.message = message
        super().__init__(message)


class StaleSettingsError(SettingsError):
    """The settings changed since the caller read them (a stale ETag or form)."""

    status = 412

    def __init__(self, current: Settings):
        self.current = current
        super().__init__(
            message=(
                "The email settings were changed by someone else since you loaded them "
                f"(now at version {current.version}); nothing was stored. "
                "Load them again and repeat your change."
            )
        )


class TestEmailFailed(SettingsError):
    """The test email was not sent; ``report`` says at which step and why."""

    def __init__(self, report: mailer.Report):
        self.report = report
        self.details = {"steps": [step.as_dict() for step in report.steps], "elapsed_ms": report.elapsed_ms}
        super().__init__(message=report.message)


class BusySettingsError(SettingsError):
    """Too many concurrent writers: this write gave way and stored nothing."""

    status = 409


@dataclass(frozen=True)
class Settings:
    """The stored settings as callers may see them: never the password, only whether one is set."""

    smtp_host: str
    smtp_port: int
    encryption: str
    from_email: str
    username: str
    allow_selfsigned_certs: bool
    has_password: bool
    version: int
    updated_at: datetime | None
    updated_by: str | None

    @property
    def configured(self) -> bool:
        return bool(self.smtp_host)

    @property
    def etag(self) -> str:
        return str(self.version)

    def public(self) -> dict[str, Any]:
        """The ``email_settings`` object of the API: exactly the published keys."""
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}


def parse_version(tag: str | None) -> int | None:
    """The version an ETag or form field names, or None when it names none of ours."""
    return int(tag) if tag and tag.isascii() and tag.isdigit() else None


def show() -> Settings:
    """Return the stored settings (the unconfigured state on a fresh install)."""
    return _to_settings(_load_row())


def edit(
    params: Mapping[str, Any],
    *,
    expected_versions: Collection[int] | None = None,
    actor: Actor = SYSTEM,
) -> Settings:
    """Merge ``params`` over the stored settings and store the result if it is complete and valid.

    Omitted parameters keep their stored value; ``password=""`` removes the stored
    password. Raises :class:`SettingsError` (nothing stored) when a parameter is
    unknown, of the wrong type or invalid, or when the merged settings are incomplete;
    :class:`StaleSettingsError` when ``expected_versions`` does not hold the current version.
    """
    changes = parse_params(params)

    def merged_values(row: EmailSettings) -> dict[str, Any]:
        values = merge(row, changes)
        password = values.pop("password")
        values["password_encrypted"] = (
            row.password_encrypted if password is KEEP else crypto.encrypt(password) if password else None
        )
        return values

    return _write("settings edited", merged_values, expected_versions, actor)


def clear(*, expected_versions: Collection[int] | None = None, actor: Actor = SYSTEM) -> Settings:
    """Remove all settings, the password included, returning to the unconfigured state."""
    return _write("settings cleared", lambda row: dict(_UNCONFIGURED), expected_versions, actor)


_UNCONFIGURED: dict[str, Any] = {
    "smtp_host": "",
    "smtp_port": 0,
    "encryption": "Plain",
    "from_email": "",
    "username": "",
    "password_encrypted": None,
    "allow_selfsigned_certs": False,
}


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""The password value of a merge that keeps the stored password."""


def parse_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check each given parameter's name, type and value; return them normalized.

    Raises :class:`SettingsError` naming every parameter that is wrong.
    """
    unknown = sorted(set(params) - PARAMETER_TYPES.keys())
    if unknown:
        raise SettingsError(
            {name: "is not a parameter of email settings" for name in unknown},
            message=(
                f"Unknown parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                f"The parameters are: {', '.join(PARAMETER_TYPES)}."
            ),
        )
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, value in params.items():
        try:
            parsed[name] = _parse_value(name, value)
        except ValueError as problem:
            errors[name] = str(problem)
    if errors:
        raise SettingsError(errors)
    return parsed


def _parse_value(name: str, value: Any) -> Any:
    expected = PARAMETER_TYPES[name]
    # bool is a subclass of int in Python, but true is not a port number.
    if type(value) is not expected:
        raise ValueError(f"must be {_TYPE_NAMES[expected]}, not {_json_type_name(value)}")
    if expected is str:
        rules.check_no_control_characters(value)
    if name == "smtp_port":
        rules.check_port(value)
    elif name == "encryption" and value not in rules.ENCRYPTIONS:
        raise ValueError(f"must be one of {', '.join(rules.ENCRYPTIONS)} (exactly as written)")
    elif name == "smtp_host" and value:
        return rules.normalize_host(value)
    elif name == "from_email" and value:
        return rules.normalize_email(value)
    return value


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if value != int(value) else "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def merge(row: EmailSettings, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge parsed ``changes`` over ``row`` and check the result is complete.

    The returned ``password`` is :data:`KEEP` (the stored one stays), ``""`` (none)
    or the new password. Raises :class:`SettingsError` when the result is incomplete.
    """
    values = {name: changes.get(name, getattr(row, name)) for name in PUBLIC_FIELDS}
    password = changes.get("password", KEEP)
    has_password = bool(row.password_encrypted) if password is KEEP else bool(password)

    errors: dict[str, str] = {}
    if not values["smtp_host"]:
        errors["smtp_host"] = "is required: the host name or IP address of your SMTP server"
    if not values["smtp_port"]:
        errors["smtp_port"] = f"is required: a port from {rules.PORT_MIN} to {rules.PORT_MAX}"
    if not values["from_email"]:
        errors["from_email"] = "is required: the address your mail is sent from"
    if values["username"] and not has_password:
        errors["password"] = (
            "cannot be removed while a username is set: clear the username too"
            if password == ""
            else "is required when a username is set"
        )
    if has_password and not values["username"]:
        errors["username"] = "is required when a password is set (or remove the password)"
    if errors:
        raise SettingsError(errors)
    values["password"] = password
    return values


def _write(
    action: str,
    compute: Callable[[EmailSettings], dict[str, Any]],
    expected_versions: Collection[int] | None,
    actor: Actor,
) -> Settings:
    """Store ``compute(current row)`` as the next version, in one transaction.

    The UPDATE only applies if the version is still the one read, so a concurrent
    writer in between makes us read and merge again rather than overwrite its
    change with values computed from an older row.
    """
    for attempt in range(_WRITE_ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0, 0.002 * attempt))  # jitter, so that retrying writers spread out
        row = _load_row()
        if expected_versions is not None and row.version not in expected_versions:
            db.session.rollback()
            raise StaleSettingsError(_to_settings(row))
        try:
            values = compute(row)
        except BaseException:
            db.session.rollback()
            raise
        now = datetime.now(UTC)
        changes = describe_changes(row, values)
        values.update(version=row.version + 1, updated_at=now, updated_by=actor.name)
        result = db.session.execute(
            update(EmailSettings)
            .where(EmailSettings.id == SETTINGS_ROW_ID, EmailSettings.version == row.version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            _add_event(action, actor, changes or "nothing changed", now)
            db.session.commit()
            # What this write stored, not a fresh read: another writer may already follow it.
            return _settings_from(_row_values(row) | values)
        db.session.rollback()
    raise BusySettingsError(
        message="The email settings are being changed by many others at this moment; nothing was stored. Try again."
    )


def describe_changes(row: EmailSettings, values: Mapping[str, Any]) -> str:
    """Which fields a write changes, with old and new values for all but the password."""
    parts = [
        f"{name}: {getattr(row, name)!r} → {values[name]!r}"
        for name in PUBLIC_FIELDS
        if name in values and values[name] != getattr(row, name)
    ]
    new_token = values.get("password_encrypted", row.password_encrypted)
    if new_token != row.password_encrypted:
        parts.append(
            "password removed"
            if not new_token
            else "password set"
            if not row.password_encrypted
            else "password changed"
        )
    return "; ".join(parts)


def record_event(action: str, actor: Actor, detail: str = "") -> None:
    """Add one event to the audit trail, in its own transaction."""
    _add_event(action, actor, detail, datetime.now(UTC))
    db.session.commit()


def recent_events(limit: int = 10) -> list[Event]:
    """The newest audit events, newest first."""
    rows = db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
    return [Event(_as_utc(r.at), r.actor, r.address, r.action, r.detail) for r in rows]


def _add_event(action: str, actor: Actor, detail: str, at: datetime) -> None:
    db.session.add(AuditEvent(at=at, actor=actor.name, address=actor.address, action=action, detail=detail))


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite drops the zone


def _load_row() -> EmailSettings:
    row = db.session.get(EmailSettings, SETTINGS_ROW_ID, populate_existing=True)
    if row is None:
        ensure_row()
        row = db.session.get(EmailSettings, SETTINGS_ROW_ID, populate_existing=True)
    return row


def ensure_row() -> None:
    """Create the single settings row if it is missing (a new database)."""
    if db.session.get(EmailSettings, SETTINGS_ROW_ID) is not None:
        return
    db.session.add(EmailSettings(id=SETTINGS_ROW_ID, version=0, **_UNCONFIGURED))
    try:
        db.session.commit()
    except IntegrityError:  # another process created it first
        db.session.rollback()


def _to_settings(row: EmailSettings) -> Settings:
    return _settings_from(_row_values(row))


def _row_values(row: EmailSettings) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _COLUMNS}


_COLUMNS = tuple(column.name for column in EmailSettings.__table__.columns)


def _settings_from(values: Mapping[str, Any]) -> Settings:
    return Settings(
        **{name: values[name] for name in PUBLIC_FIELDS},
        has_password=bool(values["password_encrypted"]),
        version=values["version"],
        updated_at=_as_utc(values["updated_at"]) if values["updated_at"] else None,
        updated_by=values["updated_by"],
    )


def stored_password_problem() -> str | None:
    """Why the stored password cannot be used (a key mismatch), or None when it can or there is none."""
    row = _load_row()
    if not row.password_encrypted:
        return None
    try:
        crypto.decrypt(row.password_encrypted)
    except crypto.UndecryptablePasswordError as problem:
        return str(problem)
    return None


def stored_password() -> str | None:
    """The stored password in clear, for an export the administrator asked for; None if none."""
    row = _load_row()
    return crypto.decrypt(row.password_encrypted) if row.password_encrypted else None


def rotate_encryption() -> bool:
    """Re-encrypt the stored password under the first (newest) key; True if there was one."""
    for _ in range(_WRITE_ATTEMPTS):
        row = _load_row()
        if not row.password_encrypted:
            db.session.rollback()
            return False
        result = db.session.execute(
            update(EmailSettings)
            .where(EmailSettings.id == SETTINGS_ROW_ID, EmailSettings.version == row.version)
            .values(password_encrypted=crypto.rotate(row.password_encrypted))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            _add_event("encryption key rotated", SYSTEM, "password re-encrypted under the new key", datetime.now(UTC))
            db.session.commit()
            return True
        db.session.rollback()
    raise BusySettingsError(message="The settings kept changing during the rotation; run it again.")


TEST_PARAMETERS = ("to", "settings")
_SERVER_IDENTITY = ("smtp_host", "smtp_port", "encryption", "username")


def send_test_email(params: Mapping[str, Any], *, actor: Actor = SYSTEM) -> mailer.Report:
    """Send one real test email to ``params["to"]``, through the stored settings or a draft.

    ``params["settings"]`` (optional) holds edit parameters merged over the stored
    settings and validated like :func:`edit`, but never stored. Raises
    :class:`SettingsError` for invalid input and :class:`TestEmailFailed` when the
    server did not accept the message; both are recorded in the audit trail.
    """
    unknown = sorted(set(params) - set(TEST_PARAMETERS))
    if unknown:
        raise SettingsError(
            {name: "is not a parameter of the test call" for name in unknown},
            message=f"Unknown parameter {', '.join(unknown)}: the test call takes to and settings.",
        )
    to = _test_recipient(params.get("to"))
    draft = params.get("settings", {})
    if not isinstance(draft, dict):
        raise SettingsError({"settings": f"must be an object of edit parameters, not {_json_type_name(draft)}"})
    target = resolve_target(draft)
    db.session.close()  # hold no database connection during the SMTP conversation
    config = current_app.config
    report = mailer.send_test_email(
        target, to, timeout=float(config["SMTP_TIMEOUT"]), ca_file=config.get("SMTP_CA_FILE") or None
    )
    where = f"to {to} via {target.smtp_host}:{target.smtp_port} ({target.encryption})"
    if report.sent:
        record_event("test email sent", actor, where)
        return report
    record_event("test email failed", actor, f"{where}: failed at {report.failed_step}")
    raise TestEmailFailed(report)


def _test_recipient(value: Any) -> str:
    if value is None or value == "":
        raise SettingsError({"to": "is required: the address to send the test email to"})
    try:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_json_type_name(value)}")
        rules.check_no_control_characters(value)
        return rules.normalize_email(value)
    except ValueError as problem:
        raise SettingsError({"to": str(problem)}) from None


def resolve_target(draft: Mapping[str, Any]) -> mailer.SmtpTarget:
    """The complete settings a test uses: ``draft`` merged over the stored ones, password included.

    The stored password goes only to the stored server: a draft that changes the host,
    port, encryption or username must bring its own password.
    """
    row = _load_row()
    values = merge(row, parse_params(draft))
    password = values.pop("password")
    if password is KEEP:
        if not values["username"]:
            password = ""
        elif any(values[name] != getattr(row, name) for name in _SERVER_IDENTITY):
            raise SettingsError(
                {
                    "password": "must be entered for this test: the stored password is only sent to the stored "
                    "smtp_host, smtp_port, encryption and username, and this draft changes them"
                }
            )
        else:
            try:
                password = crypto.decrypt(row.password_encrypted or "")
            except crypto.UndecryptablePasswordError as problem:
                raise SettingsError({"password": str(problem)}) from None
    return mailer.SmtpTarget(password=password, **values)
