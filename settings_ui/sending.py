"""Sending the product's mail through the stored settings: the Python API and sendmail's engine.

The same conversation as the test email: its TLS rules, pin, password file, time bound, one
AUTH attempt and diagnosis. The password is had the test's way (:func:`targets.resolve_target`),
so it goes only where the stored settings point. Each send is recorded in the deliveries.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, SMTPUTF8
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from typing import TYPE_CHECKING, Any

from . import alerts, deliveries, outbox, rules, runtime, smtp, targets
from .errors import SettingsError

if TYPE_CHECKING:
    from flask import Flask
    from flask_mail import Message as FlaskMailMessage


class UnusableMessageError(ValueError):
    """The message cannot be sent as given (no recipient, an invalid address): nothing was tried."""


@dataclass(frozen=True)
class Delivery:
    """What became of one message: ``sent``, or why not and whether trying again later may help."""

    sent: bool
    message: str
    """The outcome in the test's words: which step failed, why, what to change."""
    temporary: bool = False
    steps: list[smtp.Step] = field(default_factory=list)
    elapsed_ms: int = 0
    configuration_problem: bool = False
    """The settings are incomplete or unusable: nothing was tried."""
    queued: int | None = None
    """The outbox's id for the message, when a temporary failure put it there to be tried again."""

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if not step.ok), None)


def send_message(message: EmailMessage | FlaskMailMessage, *, app: Flask | None = None) -> Delivery:
    """Send ``message`` through the stored email settings; never raises for an SMTP problem.

    ``message`` is the standard library's :class:`~email.message.EmailMessage` or Flask-Mail's
    ``Message``. The recipients are its To, Cc and Bcc (Bcc is not sent along). A missing From gets
    the settings' ``from_email``; a missing Date or Message-ID is added. ``app`` is the app that
    mounts settings-ui, for use when no application context is active.
    """
    if app is not None:
        with app.app_context():
            return send_message(message)
    try:
        if isinstance(message, EmailMessage):
            # A copy: the caller's message keeps its Bcc, and gets no headers of ours.
            return deliver(copy.deepcopy(message), [], take_recipients_from_headers=True, surface="python")
        converted, recipients = _from_flask_mail(message)
        return deliver(converted, recipients, take_recipients_from_headers=False, surface="python")
    except UnusableMessageError as problem:
        return Delivery(False, f"The message was not sent: {problem}")


def _from_flask_mail(message: FlaskMailMessage) -> tuple[EmailMessage, list[str]]:
    """A Flask-Mail message as the standard library's (Flask-Mail builds it without Bcc), and its
    recipients: To, Cc, then Bcc."""
    placeholder = not message.sender
    if placeholder:  # Flask-Mail needs a sender to build the message; from_email takes its place
        message = copy.copy(message)
        message.sender = "sender@invalid"
    built = BytesParser(EmailMessage, policy=default_policy).parsebytes(message.as_bytes())
    if placeholder:
        del built["From"]
    listed = [
        formataddr(entry) if isinstance(entry, tuple) else entry
        for entry in (*message.recipients, *message.cc, *message.bcc)
    ]
    return built, [address for _name, address in getaddresses(listed)]


def deliver(
    message: EmailMessage,
    recipients: Sequence[str],
    *,
    take_recipients_from_headers: bool,
    envelope_sender: str | None = None,
    surface: str,
    queue_on_failure: bool = True,
) -> Delivery:
    """Complete ``message`` (From, Date, Message-ID), send it to ``recipients`` (and, if asked, those of
    its To, Cc and Bcc headers, Bcc then removed) and record the outcome. A temporary failure puts the
    message in the outbox, to be tried again, unless ``queue_on_failure`` is false.

    Raises :class:`UnusableMessageError` when there is no recipient or an address is invalid.
    """
    try:
        target = targets.resolve_target({})
    except SettingsError as problem:
        reason = f"The email settings cannot send mail yet: {problem.message}"
        return Delivery(False, reason, configuration_problem=True)
    addresses = [_address(value) for value in recipients]
    if take_recipients_from_headers:
        addresses += [_address(address) for address in _header_recipients(message)]
    # Never sent along, however the recipients were given: they would show every blind copy.
    del message["Bcc"]
    del message["Resent-Bcc"]
    addresses = list(dict.fromkeys(addresses))
    if not addresses:
        raise UnusableMessageError("it has no recipient (give one, or use -t with To, Cc or Bcc headers)")
    sender = _envelope_sender(envelope_sender, target.from_email)
    _complete(message, target.from_email)
    international = not all(address.isascii() for address in (sender, *addresses))
    content = message.as_bytes(policy=SMTPUTF8 if international else SMTP)
    mail = smtp.Mail(sender, tuple(addresses), content, str(message["Message-ID"]))
    options = targets.smtp_options()
    report = smtp.deliver(target, mail, options)
    deliveries.record(surface, report, addresses, *smtp.server_of(target, options))
    queued = outbox.queue(mail, report, surface) if not report.sent and report.temporary and queue_on_failure else None
    alerts.after_delivery(report, addresses)  # after queueing: the alert counts the outbox
    if queued is not None:
        first_retry = outbox.backoff(1).seconds // 60
        for_up_to = _days(runtime.current().config["OUTBOX_MAX_AGE"])
        said = (
            f"{report.message} The message was put in the outbox (message {queued}) and will be tried again "
            f"from {first_retry} minutes on, for up to {for_up_to}."
        )
        return Delivery(False, said, True, report.steps, report.elapsed_ms, queued=queued)
    return Delivery(report.sent, report.message, report.temporary, report.steps, report.elapsed_ms)


def _days(seconds: Any) -> str:
    days = float(seconds) / 86400
    return f"{days:g} days" if days >= 1 else f"{float(seconds) / 3600:g} hours"


def _envelope_sender(given: str | None, from_email: str) -> str:
    if given == "<>":  # the null sender, for bounces and auto-replies
        return ""
    return _address(given) if given else from_email


def _header_recipients(message: EmailMessage) -> list[str]:
    """The addresses of the To, Cc and Bcc headers, as the strict header parser reads them: an encoded
    word is a display name, never an address, and a header it cannot read unambiguously is refused."""
    found = []
    for name in ("To", "Cc", "Bcc"):
        for header in message.get_all(name, []):
            if getattr(header, "defects", None):
                raise UnusableMessageError(f"its {name} header is not a valid list of addresses (RFC 5322)")
            found += [address.addr_spec for address in header.addresses]
    return found


def _address(value: Any) -> str:
    try:
        return rules.normalize_email(str(value))
    except ValueError as problem:
        raise UnusableMessageError(f"the address {str(value)!r} {problem}") from None


def _complete(message: EmailMessage, from_email: str) -> None:
    if message["From"] is None:
        message["From"] = from_email
    if message["Date"] is None:
        message["Date"] = format_datetime(datetime.now(UTC))
    if message["Message-ID"] is None:
        domain = from_email.rpartition("@")[2] or runtime.current().config.get("SMTP_EHLO_NAME") or socket.getfqdn()
        message["Message-ID"] = make_msgid(domain=domain)
