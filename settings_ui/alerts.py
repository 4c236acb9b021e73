"""Alerts that reach someone: a JSON POST to ALERT_WEBHOOK_URL when the product's mail starts failing,
while it keeps failing (at most once an hour), when it works again, and when a queued message bounces.

Only the product's mail counts (sendmail, send_message, the outbox), never a test email. Each alert
is recorded first, then sent from a thread of its own, so that it never holds up a send: each POST
ends within ``POST_TIMEOUT`` seconds and is tried ``TRIES`` times, a little later each time. An
alert not sent yet when its process ends (a sendmail run) is sent by the next process that sends
alerts, the outbox runner among them. The payload never carries a credential, an address or a
subject; its ``text`` line is what Slack's and Teams' incoming webhooks show.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from sqlalchemy import Connection, delete, insert, select, update

from . import database, runtime
from .audit import as_utc
from .models import alert_table
from .shapes import Schema
from .smtp import Report, bounded_http

POST_TIMEOUT = 5.0
TRIES = 3
REPEAT_FAILING = timedelta(hours=1)
_RETRY_AFTER = (timedelta(seconds=10), timedelta(minutes=1))
"""How long to wait before the second and the third try."""
EVENTS = ("failing", "recovered", "bounced")
KEEP = timedelta(days=30)
"""Alerts older than this are deleted when a new one is recorded."""

_sending = threading.Lock()


@dataclass(frozen=True)
class LastAlert:
    """The newest alert, as the page shows it."""

    event: Annotated[str, Schema(enum=list(EVENTS))]
    at: datetime
    delivered: bool
    result: str


def after_delivery(report: Report, recipients: list[str]) -> None:
    """Alert when the product's mail starts failing (then at most hourly while it fails) or works again."""
    now = datetime.now(UTC)
    with database.engine().connect() as connection:
        last = (
            connection.execute(
                select(alert_table)
                .where(alert_table.c.event.in_(("failing", "recovered")))
                .order_by(alert_table.c.created_at.desc(), alert_table.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    if last is None or last["event"] != "failing":
        if not report.sent:
            _raise("failing", now, report, recipients, "Mail is failing")
    elif report.sent:
        _raise("recovered", as_utc(last["since"]), report, recipients, "Mail is being delivered again")
    elif now - as_utc(last["created_at"]) >= REPEAT_FAILING:
        _raise("failing", as_utc(last["since"]), report, recipients, "Mail is still failing")


def bounced(report: Report, recipients: list[str], reason: str) -> None:
    """Alert that a queued message bounced."""
    _raise("bounced", None, report, recipients, f"A queued message bounced, {reason}")  # reason: no address


_LAST = select(alert_table).order_by(alert_table.c.created_at.desc(), alert_table.c.id.desc()).limit(1)


def last_alert(connection: Connection) -> LastAlert | None:
    row = connection.execute(_LAST).mappings().first()
    if row is None:
        return None
    return LastAlert(row["event"], as_utc(row["created_at"]), row["delivered_at"] is not None, row["last_result"])


def send_pending() -> None:
    """Send every alert that is due (this process's, or one a process that ended left behind)."""
    url = str(runtime.current().config.get("ALERT_WEBHOOK_URL") or "")
    if not url:
        return
    with _sending:  # one sender per process: an alert is never posted twice by it
        while (row := _next_due()) is not None:
            _post(url, row)


def start_sending() -> threading.Thread | None:
    """Send the due alerts from a thread of its own; None when no webhook is configured."""
    state = runtime.current()  # a thread starts without it
    if not state.config.get("ALERT_WEBHOOK_URL"):
        return None

    def run() -> None:
        with runtime.using(state):
            send_pending()

    thread = threading.Thread(target=run, name="settings-ui-alerts", daemon=True)
    thread.start()
    return thread


def _raise(event: str, since: datetime | None, report: Report, recipients: list[str], headline: str) -> None:
    from . import deliveries, outbox  # the outbox's size is part of the alert

    now = datetime.now(UTC)
    diagnosis = deliveries.without_any_address(recipients, report.message) if not report.sent else ""
    queued = outbox.summary().count
    text = f"settings-ui: {headline}"
    if since is not None and event != "bounced":
        text += f" (failing since {since.strftime('%Y-%m-%d %H:%M UTC')})"
    if diagnosis:
        text += f". {diagnosis}"
    text += f" {queued} message{'s' if queued != 1 else ''} in the outbox."
    payload = {
        "event": event,
        "since": since.isoformat() if since else None,
        "failed_step": report.failed_step if not report.sent else None,
        "message": diagnosis,
        "queued": queued,
        "text": text,
    }
    webhook = runtime.current().config.get("ALERT_WEBHOOK_URL")
    with database.engine().begin() as connection:
        connection.execute(delete(alert_table).where(alert_table.c.created_at < now - KEEP))
        connection.execute(
            insert(alert_table).values(
                event=event,
                created_at=now,
                since=since,
                payload=json.dumps(payload),
                attempts=0,
                next_try_at=now if webhook else None,
                last_result="" if webhook else "not sent: no ALERT_WEBHOOK_URL",
            )
        )
    start_sending()


def _next_due() -> dict[str, Any] | None:
    now = datetime.now(UTC)
    with database.engine().begin() as connection:
        row = (
            connection.execute(
                select(alert_table)
                .where(alert_table.c.next_try_at.is_not(None), alert_table.c.next_try_at <= now)
                .order_by(alert_table.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        # Taken for the length of one POST; another process finds it due again only if this one dies.
        connection.execute(
            update(alert_table)
            .where(alert_table.c.id == row["id"])
            .values(next_try_at=now + timedelta(seconds=POST_TIMEOUT * 2), attempts=row["attempts"] + 1)
        )
    return dict(row) | {"attempts": row["attempts"] + 1}


def _post(url: str, row: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    try:
        answer = bounded_http.request(
            "POST",
            url,
            row["payload"].encode(),
            {"Content-Type": "application/json"},
            timeout=POST_TIMEOUT,
            ca_file=runtime.current().config.get("SMTP_CA_FILE") or None,
        )
        delivered = 200 <= answer.status < 300
        result = f"HTTP {answer.status}"
    except bounded_http.TooSlow:
        delivered, result = False, f"no answer within {POST_TIMEOUT:g} s"
    except (bounded_http.Unreachable, ValueError) as problem:
        delivered, result = False, f"cannot be reached: {getattr(problem, 'reason', problem)}"
    tries_left = row["attempts"] < TRIES
    with database.engine().begin() as connection:
        connection.execute(
            update(alert_table)
            .where(alert_table.c.id == row["id"])
            .values(
                delivered_at=now if delivered else None,
                next_try_at=None if delivered or not tries_left else now + _RETRY_AFTER[row["attempts"] - 1],
                last_result=result if delivered or tries_left else f"{result}; given up after {TRIES} tries",
            )
        )
    if not delivered and tries_left:
        runtime.current().logger.warning("The alert webhook %s: %s; it will be tried again.", _where(url), result)


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc
