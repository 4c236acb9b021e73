"""The audit trail: who changed or tested the settings, who signed in, when and from where.

Never a secret: a password change is recorded as "password changed", nothing more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, Select, bindparam, insert, not_, or_, select

from . import database
from .models import audit_event_table


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
    count: int = 1
    """How many such events in a row this one stands for (repeated failed sign-ins are folded)."""


SIGN_IN_ACTIONS = ("signed in", "signed out", "sign-in failed", "API sign-in failed")
_FAILED_SIGN_INS = ("sign-in failed", "API sign-in failed")
FOLD_WINDOW = timedelta(minutes=10)
"""Failed sign-ins this close together are one row of the panel, however many addresses they came from."""
"""Actions about who got in, shown apart from the settings' own history."""

_IS_SIGN_IN = or_(*(audit_event_table.c.action == action for action in SIGN_IN_ACTIONS))
# Built once, the limit a parameter: a statement built per call costs more than the query it runs.
_LIMIT = bindparam("limit", type_=Integer)
_CHANGES = select(audit_event_table).where(not_(_IS_SIGN_IN)).order_by(audit_event_table.c.id.desc()).limit(_LIMIT)
_SIGN_INS = select(audit_event_table).where(_IS_SIGN_IN).order_by(audit_event_table.c.id.desc()).limit(_LIMIT)
_INSERT = insert(audit_event_table)


def add(connection: Connection, action: str, actor: Actor, detail: str = "", at: datetime | None = None) -> None:
    """Add one event within the caller's transaction (a write and its record commit together)."""
    values = {"actor": actor.name, "address": actor.address, "action": action, "detail": detail}
    connection.execute(_INSERT, {"at": at or datetime.now(UTC), **values})


def record(action: str, actor: Actor, detail: str = "") -> None:
    """Add one event to the audit trail, in its own transaction."""
    with database.engine().begin() as connection:
        add(connection, action, actor, detail)


def recent_changes(connection: Connection, limit: int = 10) -> list[Event]:
    """The newest changes of the settings and test emails, newest first (no sign-ins)."""
    return _read(connection, _CHANGES, limit)


def recent_sign_ins(connection: Connection, limit: int = 10) -> list[Event]:
    """The newest ``limit`` rows of sign-in events. A run of the same event from the same address is
    one row, and so are failed sign-ins within :data:`FOLD_WINDOW` of each other, whatever their
    addresses: guesses sprayed from many addresses would otherwise fill the panel."""
    folded: list[Event] = []
    addresses: list[str] = []
    for event in _read(connection, _SIGN_INS, 20 * limit):
        last = folded[-1] if folded else None
        if last and _one_row(last, event):
            if event.address not in addresses:
                addresses.append(event.address)
            folded[-1] = dataclasses.replace(last, count=last.count + 1, address=_addresses(addresses))
        elif len(folded) == limit:
            break
        else:
            folded.append(event)
            addresses = [event.address]
    return folded


def _one_row(newest: Event, event: Event) -> bool:
    if event.action != newest.action:
        return False
    if event.action in _FAILED_SIGN_INS:
        return newest.at - event.at <= FOLD_WINDOW
    return (event.actor, event.address) == (newest.actor, newest.address)


def _addresses(addresses: list[str]) -> str:
    if len(addresses) <= 3:
        return ", ".join(addresses)
    return f"{addresses[0]}, {addresses[1]} and {len(addresses) - 2} other addresses"


def _read(connection: Connection, query: Select[Any], limit: int) -> list[Event]:
    rows = connection.execute(query, {"limit": limit}).mappings()
    return [Event(as_utc(r["at"]), r["actor"], r["address"], r["action"], r["detail"]) for r in rows]


def as_utc(moment: datetime) -> datetime:
    """``moment`` with its time zone, which SQLite does not keep."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
