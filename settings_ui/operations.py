"""The operations on the email settings: show, edit, clear and re-encrypt, and the rules they keep.

The API, the page and the command line call these functions; none touches the tables, and
none of these knows of HTTP. Each write is one transaction, committed here once, that holds
the settings row's lock from its read to its commit, so concurrent writers never mix their
values; the row's version is the ETag that If-Match and the page's form check.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from . import audit, crypto, database, fields, password_file
from .audit import SYSTEM, Actor, Event
from .errors import SettingsError
from .instance_files import open_private
from .models import SETTINGS_ROW_ID, settings_table
from .params import parse_params

SERVER_IDENTITY = ("smtp_host", "smtp_port", "encryption", "username")
"""The stored password is bound to these: it is only ever sent where they point (stored normalized,
so a host's case, trailing dot, IDN form or IPv6 spelling compare equal)."""

_TRUST = ("allow_selfsigned_certs", "pinned_cert_sha256")
"""What the certificate checks trust: widening it is like pointing at another server."""

SECRET_IDENTITY = ("oauth2_token_url", "oauth2_client_id", "transport")
"""The stored client secret is bound to these too: it is only ever sent to that endpoint, for that client,
and its tokens only to that service (the SMTP server, or Graph)."""

SECRET_NAMES = {
    "password": "password",
    "oauth2_client_secret": "client secret",
    "google_service_account_key": "service account key",
}
"""The write-only parameters, as a message names them."""

Row = dict[str, Any]
"""The settings row as read from the database, column by column."""

_SELECT_ROW = select(settings_table).where(settings_table.c.id == SETTINGS_ROW_ID)
_LOCK_ROW = _SELECT_ROW.with_for_update()
# Built once, with the values given at execution: SQLAlchemy then finds the compiled form in
# its cache instead of building and coercing a new statement per write.
_UPDATE_ROW = update(settings_table).where(
    settings_table.c.id == SETTINGS_ROW_ID, settings_table.c.version == bindparam("read_version")
)
_UNCONFIGURED_ROW: Row = {**fields.UNCONFIGURED, **{fields.encrypted_column(name): None for name in fields.SECRETS}}
_WRITE_LOCK = threading.Lock()


class StaleSettingsError(SettingsError):
    """The settings changed since the caller read them (a stale ETag or form)."""

    def __init__(self, current: Settings):
        self.current = current
        super().__init__(
            message=(
                "The email settings were changed by someone else since you loaded them "
                f"(now at version {current.version}); nothing was stored. "
                "Load them again and repeat your change."
            )
        )


class BusySettingsError(SettingsError):
    """Too many concurrent writers: this write gave way and stored nothing."""


@dataclass(frozen=True)
class Settings:
    """The stored settings as callers may see them: never the password, only whether one is set.

    Each public field of :mod:`settings_ui.fields` is an attribute (``settings.smtp_host``).
    """

    values: Mapping[str, Any]
    has_password: bool
    has_client_secret: bool
    has_service_account_key: bool
    version: int
    updated_at: datetime | None
    updated_by: str | None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def configured(self) -> bool:
        return bool(self.values["from_email"])  # required however mail leaves (SMTP or Graph)

    @property
    def etag(self) -> str:
        return str(self.version)

    def public(self) -> dict[str, Any]:
        """The ``email_settings`` object of the API: exactly the published keys."""
        return dict(self.values)


def parse_version(tag: str | None) -> int | None:
    """The version an ETag or form field names, or None when it names none of ours."""
    return int(tag) if tag and tag.isascii() and tag.isdigit() else None


def show() -> Settings:
    """Return the stored settings (the unconfigured state on a fresh install)."""
    return _settings_from(load_row())


def edit(
    params: Mapping[str, Any],
    *,
    expected_versions: Collection[int] | None = None,
    actor: Actor = SYSTEM,
    password_file_moves: bool = False,
) -> Settings:
    """Merge ``params`` over the stored settings and store the result if it is complete and valid.

    Omitted parameters keep their stored value; ``password=""`` removes the stored
    password. Raises :class:`SettingsError` (nothing stored) when a parameter is
    unknown, of the wrong type or invalid, or when the merged settings are incomplete;
    :class:`StaleSettingsError` when ``expected_versions`` does not hold the current version.
    While SMTP_PASSWORD_FILE is set, ``password`` is refused, and the server may change only with
    ``password_file_moves`` (the command line's ``--move-password-file``: its user can read the file).
    """
    changes = parse_params(params)
    if "password" in changes and password_file.configured() is not None:
        raise SettingsError({"password": f"cannot be set here: {password_file.MANAGED_OUTSIDE}"})

    def merged_values(row: Row) -> dict[str, Any]:
        values = merge(row, changes, password_file_moves=password_file_moves)
        for name in fields.SECRETS:
            secret, column = values.pop(name), fields.encrypted_column(name)
            values[column] = row[column] if secret is KEEP else crypto.encrypt(secret) if secret else None
        if password_file.configured() is not None and (password_file_moves or _file_binding(row) is None):
            values["password_file_server"] = json.dumps({name: values[name] for name in (*SERVER_IDENTITY, *_TRUST)})
        return values

    return _write("settings edited", merged_values, expected_versions, actor)


def clear(*, expected_versions: Collection[int] | None = None, actor: Actor = SYSTEM) -> Settings:
    """Remove all settings, the password included, returning to the unconfigured state."""
    return _write("settings cleared", lambda row: dict(_UNCONFIGURED_ROW), expected_versions, actor)


def rotate_encryption() -> bool:
    """Re-encrypt the stored password and client secret under the first (newest) key; True if there was one."""
    with _write_transaction() as (connection, row):
        columns = [fields.encrypted_column(name) for name in fields.SECRETS]
        rotated = {column: crypto.rotate(row[column]) for column in columns if row[column]}
        if not rotated:
            return False
        _store(connection, row, rotated)
        audit.add(connection, "encryption key rotated", SYSTEM, "secrets re-encrypted under the new key")
    return True


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""The password value of a merge that keeps the stored password."""


def merge(row: Row, changes: Mapping[str, Any], *, password_file_moves: bool = False) -> dict[str, Any]:
    """Merge parsed ``changes`` over ``row`` and check the result is complete.

    The returned ``password`` is :data:`KEEP` (the stored one stays), ``""`` (none)
    or the new password. Raises :class:`SettingsError` when the result is incomplete,
    or when it would keep the stored password for another server: a change of
    :data:`SERVER_IDENTITY`, certificate checks turned off, or a new pin must bring ``password``.
    The password of SMTP_PASSWORD_FILE is bound the same way to the server stored now, unless
    ``password_file_moves``.
    """
    values = {name: changes.get(name, row[name]) for name in fields.PUBLIC}
    password = changes.get("password", KEEP)
    from_file = password_file.configured() is not None
    if password is KEEP:
        signs_in_with_file = from_file and bool(values["username"]) and values["auth_method"] == "password"
        has_password = bool(row["password_encrypted"]) or signs_in_with_file
    else:
        has_password = bool(password)

    secret = changes.get("oauth2_client_secret", KEEP)
    has_secret = bool(row["oauth2_client_secret_encrypted"]) if secret is KEEP else bool(secret)
    key = changes.get("google_service_account_key", KEEP)
    has_key = bool(row["google_service_account_key_encrypted"]) if key is KEEP else bool(key)

    # Graph needs no SMTP server: its host, port and encryption are not asked for.
    unused = ("smtp_host", "smtp_port", "encryption") if values["transport"] == "microsoft_graph" else ()
    errors = {
        field.name: field.required
        for field in fields.FIELDS
        if field.required and not values[field.name] and field.name not in unused
    }
    if values["transport"] == "microsoft_graph" and values["auth_method"] != "oauth2":
        errors["auth_method"] = (
            "must be oauth2 with transport microsoft_graph: Graph takes an OAuth 2.0 token, never a password"
        )
    if values["auth_method"] == "oauth2":
        errors.update(_token_problems(values, has_password, has_secret))
    elif values["auth_method"] == "google_service_account":
        errors.update(_token_problems(values, has_password, has_key))
    elif values["username"] and not has_password:
        errors["password"] = (
            "cannot be removed while a username is set: clear the username too"
            if password == ""
            else "is required when a username is set"
        )
    if has_password and not values["username"]:
        errors["username"] = "is required when a password is set (or remove the password)"
    # The password that would be kept is only ever sent to the server it is bound to.
    give_again: list[str] = []
    bound_to = _file_binding(row) if from_file and not password_file_moves else None
    if not from_file and row["password_encrypted"]:
        bound_to = row
    if password is KEEP and bound_to is not None and not errors:
        moved = [name for name in SERVER_IDENTITY if values[name] != bound_to[name]]
        moved += _checks_loosened(values, bound_to)
        if moved and from_file:
            errors["password"] = (
                f"must be given again because {' and '.join(moved)} changed: the password of SMTP_PASSWORD_FILE "
                "is only ever sent to the server it was set up for. A test can bring its own password; to move "
                "the settings, run `flask --app app email-settings edit --move-password-file ...` on the server"
            )
        elif moved:
            give_again.append("password")
            errors["password"] = (
                f"must be given again because {' and '.join(moved)} changed: the stored password is only ever "
                "sent to the server it was saved for"
            )
    # The stored client secret and service account key, and the tokens they get, are bound the same way.
    for name, given, identity, goes_to in (
        ("oauth2_client_secret", secret, (*SECRET_IDENTITY, *SERVER_IDENTITY), "the token endpoint and the server"),
        ("google_service_account_key", key, SERVER_IDENTITY, "the server and the mailbox"),
    ):
        if given is not KEEP or not row[fields.encrypted_column(name)] or errors:
            continue
        moved = [setting for setting in identity if values[setting] != row[setting]] + _checks_loosened(values, row)
        if moved:
            give_again.append(name)
            errors[name] = (
                f"must be given again because {' and '.join(moved)} changed: the stored {SECRET_NAMES[name]}, and "
                f"the tokens it gets, only ever go to {goes_to} it was saved for"
            )
    if errors:
        raise SettingsError(errors, give_again=give_again)
    values["password"] = password
    values["oauth2_client_secret"] = secret
    values["google_service_account_key"] = key
    return values


def _token_problems(values: Mapping[str, Any], has_password: bool, has_secret: bool) -> dict[str, str]:
    """What the token sign-ins (oauth2, google_service_account) need: a mailbox, their secret, no password."""
    method = values["auth_method"]
    problems = {}
    if not values["username"]:
        problems["username"] = f"is required with auth_method {method}: the mailbox to send as"
    if has_password:
        problems["password"] = f'must be empty with auth_method {method} ("" removes the stored one)'
    if method == "google_service_account":
        if not has_secret:
            problems["google_service_account_key"] = f"is required with auth_method {method}"
        return problems
    if not values["oauth2_token_url"]:
        problems["oauth2_token_url"] = f"is required with auth_method {method}: the token endpoint's https:// URL"
    if not values["oauth2_client_id"]:
        problems["oauth2_client_id"] = f"is required with auth_method {method}"
    if not has_secret:
        problems["oauth2_client_secret"] = f"is required with auth_method {method}"
    return problems


def _file_binding(row: Row) -> Row | None:
    """The server SMTP_PASSWORD_FILE's password is bound to: as recorded, else (a database from before
    the record) the server stored now, else none yet (a fresh install: its first save binds it)."""
    if row["password_file_server"]:
        recorded: Row = json.loads(row["password_file_server"])
        return recorded
    if row["smtp_host"]:
        return row
    return None


def _checks_loosened(values: Mapping[str, Any], row: Row) -> list[str]:
    """The certificate settings that now trust more than before: like pointing elsewhere."""
    loosened = []
    if values["allow_selfsigned_certs"] and not row["allow_selfsigned_certs"]:
        loosened.append("allow_selfsigned_certs")
    if values["pinned_cert_sha256"] != row["pinned_cert_sha256"]:
        # A new pin trusts a certificate no authority vouches for; without the pin, any certificate
        # the checks accept (or, with allow_selfsigned_certs, any at all) is trusted again.
        loosened.append("pinned_cert_sha256")
    return loosened


def _write(
    action: str,
    compute: Callable[[Row], dict[str, Any]],
    expected_versions: Collection[int] | None,
    actor: Actor,
) -> Settings:
    """Store ``compute(current row)`` as the next version, in one transaction.

    The row is read under the write lock, so the values merge over what is really
    stored: no concurrent writer can slip in between the read and the write.
    """
    with _write_transaction() as (connection, row):
        if expected_versions is not None and row["version"] not in expected_versions:
            raise StaleSettingsError(_settings_from(row))
        values = compute(row)
        now = datetime.now(UTC)
        changes = describe_changes(row, values)
        values.update(version=row["version"] + 1, updated_at=now, updated_by=actor.name)
        _store(connection, row, values)
        audit.add(connection, action, actor, changes or "nothing changed", now)
    return _settings_from(row | values)


@contextlib.contextmanager
def _write_transaction() -> Iterator[tuple[Connection, Row]]:
    """One write transaction holding the settings row's lock; commits once at the end.

    Writers queue first on a thread lock and, with SQLite, on a file lock that the
    kernel hands over at once (SQLite's own busy handler polls with sleeps of up to
    100 ms, which the benchmark's p99 shows); then the database lock is taken: SQLite's
    ``BEGIN IMMEDIATE`` (for other programs writing the file) or PostgreSQL's
    ``SELECT ... FOR UPDATE``.
    """
    engine = database.engine()
    with _WRITE_LOCK, _sqlite_file_lock(engine):
        try:
            with engine.connect() as connection:  # rolled back on leaving, unless committed
                if engine.dialect.name == "sqlite":
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                row = connection.execute(_LOCK_ROW).mappings().one()
                yield connection, dict(row)
                connection.commit()
        except OperationalError as error:
            if "locked" in str(error.orig):
                raise BusySettingsError(
                    message="The email settings are locked by another writer; nothing was stored. Try again."
                ) from None
            raise


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    if database not in _LOCK_FILES:  # under _WRITE_LOCK: one thread at a time gets here
        _LOCK_FILES[database] = open_private(Path(f"{database}.write-lock"))  # kept open for reuse
    handle = _LOCK_FILES[database]
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


_LOCK_FILES: dict[str, Any] = {}


def _store(connection: Connection, row: Row, values: Mapping[str, Any]) -> None:
    """Write ``values`` over ``row``."""
    updated = connection.execute(_UPDATE_ROW, {**values, "read_version": row["version"]}).rowcount
    if updated != 1:  # cannot happen under the row lock; never store silently wrong
        raise RuntimeError("the settings row changed under its write lock")


def describe_changes(row: Row, values: Mapping[str, Any]) -> str:
    """Which fields a write changes, with old and new values for all but the password."""
    parts = [
        f"{name}: {row[name]!r} → {values[name]!r}"
        for name in fields.PUBLIC
        if name in values and values[name] != row[name]
    ]
    for name in fields.SECRETS:
        column = fields.encrypted_column(name)
        old_token, new_token = row[column], values.get(column, row[column])
        if new_token != old_token:
            said = SECRET_NAMES[name]
            parts.append(f"{said} removed" if not new_token else f"{said} set" if not old_token else f"{said} changed")
    return "; ".join(parts)


def load_row() -> Row:
    """The settings row as stored, the encrypted password included (for this package only)."""
    with database.engine().connect() as connection:
        return _read_row(connection)


def _read_row(connection: Connection) -> Row:
    row = connection.execute(_SELECT_ROW).mappings().first()
    if row is None:  # the row was removed behind our back
        ensure_row(database.engine())
        row = connection.execute(_SELECT_ROW).mappings().one()
    return dict(row)


def ensure_row(engine: Engine) -> None:
    """Create the single settings row if it is missing (a new database)."""
    try:
        with engine.begin() as connection:
            if connection.execute(_SELECT_ROW).first() is None:
                connection.execute(insert(settings_table).values(id=SETTINGS_ROW_ID, version=0, **_UNCONFIGURED_ROW))
    except IntegrityError:  # another process created it first
        pass


def _settings_from(row: Mapping[str, Any]) -> Settings:
    return Settings(
        values={name: row[name] for name in fields.PUBLIC},
        has_password=bool(row["password_encrypted"]),
        has_client_secret=bool(row["oauth2_client_secret_encrypted"]),
        has_service_account_key=bool(row["google_service_account_key_encrypted"]),
        version=row["version"],
        updated_at=audit.as_utc(row["updated_at"]) if row["updated_at"] else None,
        updated_by=row["updated_by"],
    )


@dataclass(frozen=True)
class PageState:
    """What the settings page shows, read on one connection."""

    settings: Settings
    password_problem: str | None
    """:func:`stored_password_problem`'s answer."""
    changes: tuple[Event, ...]
    sign_ins: tuple[Event, ...]


def page_state(connection: Connection, events: int = 10) -> PageState:
    """The stored settings, whether the password can be used, and the newest ``events``
    changes and (folded) sign-ins."""
    row = _read_row(connection)
    changes = audit.recent_changes(connection, events)
    sign_ins = audit.recent_sign_ins(connection, events)
    return PageState(_settings_from(row), _password_problem(row["password_encrypted"]), tuple(changes), tuple(sign_ins))


def stored_password_problem() -> str | None:
    """Why the stored password cannot be used (a key mismatch), or None when it can or there is none."""
    return _password_problem(load_row()["password_encrypted"])


def _password_problem(token: str | None) -> str | None:
    return None if not token or crypto.decrypts(token) else crypto.UNDECRYPTABLE


def stored_secret(name: str = "password") -> str | None:
    """A stored secret (``password``, ``oauth2_client_secret``) in clear, for an export the
    administrator asked for; None if none."""
    return secret_in(load_row(), name)


def secret_in(row: Row, name: str) -> str | None:
    """The secret ``name`` of ``row`` in clear, None if none is stored; raises
    :class:`~settings_ui.crypto.UndecryptablePasswordError` under another key."""
    token = row[fields.encrypted_column(name)]
    return crypto.decrypt(token) if token else None
