"""Test emails: the settings to test (stored, or a draft over them), one real message, its record.

A test that was not sent is an outcome, not an error: :func:`run_test` returns the
:class:`~settings_ui.smtp.Report` either way. Only a request that cannot be tried at all
(bad input, too many tests at once) raises :class:`~settings_ui.errors.SettingsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from typing import Annotated, Any

from . import audit, deliveries, rules, smtp
from .audit import SYSTEM, Actor
from .errors import SettingsError
from .params import check_type, json_type_name, reject_unknown
from .shapes import Schema
from .targets import resolve_target, smtp_options, smtp_slot

PARAMETERS = ("to", "settings", "dry_run")


@dataclass(frozen=True)
class EmailTestResult:
    """What a test email that got through answers (one that did not is refused, with its steps)."""

    sent: Annotated[bool, Schema("the server accepted the message (false for a dry run)")]
    checked: Annotated[bool, Schema("the server accepted the sender and the recipient", const=True)]
    message: str
    steps: list[smtp.Step]
    elapsed_ms: Annotated[int, Schema(minimum=0)]
    warnings: Annotated[
        list[str],
        Schema(
            "sent, but worth fixing: the password crossed the network unencrypted, the certificate was not "
            "checked, or it expires within 21 days"
        ),
    ]

    @classmethod
    def of(cls, report: smtp.Report) -> EmailTestResult:
        return cls(report.sent, report.checked, report.message, report.steps, report.elapsed_ms, report.warnings)


def run_test(params: Mapping[str, Any], *, actor: Actor = SYSTEM) -> smtp.Report:
    """Send one real test email to ``params["to"]``, through the stored settings or a draft.

    ``params["settings"]`` (optional) holds edit parameters merged over the stored
    settings and validated like :func:`~settings_ui.operations.edit`, but never stored.
    ``params["dry_run"]`` (optional, false) stops after RCPT TO: nothing is delivered.
    Raises :class:`SettingsError` for invalid input; the outcome, sent or not, is
    recorded in the audit trail and returned.
    """
    reject_unknown(params, PARAMETERS)
    to = _recipient(params.get("to"))
    dry_run = params.get("dry_run", False)
    if type(dry_run) is not bool:
        raise SettingsError({"dry_run": f"must be a boolean (true or false), not {json_type_name(dry_run)}"})
    draft = params.get("settings", {})
    if not isinstance(draft, dict):
        message = f"must be an object of edit parameters, not {json_type_name(draft)}"
        raise SettingsError({"settings": message})
    target = resolve_target(draft)
    options = smtp_options()
    with smtp_slot():
        report = send_test_email(target, to, options, dry_run=dry_run)
    server = smtp.server_of(target, options)
    if not dry_run:
        deliveries.record("test", report, [to], *server)
    how = "Microsoft Graph" if target.transport == "microsoft_graph" else target.encryption
    where = f"to {to} via {smtp.host_port(*server)} ({how})"
    if report.sent:
        audit.record("test email sent", actor, where)
    elif report.checked:
        audit.record("test email checked (not sent)", actor, where)
    else:
        audit.record("test email failed", actor, f"{where}: failed at {report.failed_step}")
    return report


def send_test_email(target: smtp.SmtpTarget, to: str, options: smtp.Options, *, dry_run: bool = False) -> smtp.Report:
    """Send one test message to ``to`` through ``target``; never raises for an SMTP problem.
    A ``dry_run`` stops after RCPT TO: everything is checked, nothing is delivered."""
    message = build_message(target, to)
    mail = smtp.Mail(target.from_email, (to,), message.as_bytes(), message["Message-ID"], "The test email")
    return smtp.deliver(target, mail, options, dry_run=dry_run)


def build_message(target: smtp.SmtpTarget, to: str) -> EmailMessage:
    how = _how_sent(target)
    international = not (target.from_email.isascii() and to.isascii())
    message = EmailMessage(policy=SMTPUTF8 if international else SMTP)
    message["From"] = target.from_email
    message["To"] = to
    message["Subject"] = "Test email from settings-ui"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=target.from_email.rpartition("@")[2] or None)
    message.set_content(
        "This is a test email from the email settings of your product.\n\n"
        f"It was sent {how}.\n\nIf you can read this, the product can send email with these settings.\n"
    )
    return message


def _how_sent(target: smtp.SmtpTarget) -> str:
    if target.transport == "microsoft_graph":
        return f"through Microsoft Graph as {target.username}"
    mode = {
        "Plain": "without encryption",
        "StartTLS": "with StartTLS",
        "TLS": "with TLS",
    }[target.encryption]
    checked = (
        ""
        if target.encryption == "Plain"
        else " (certificate pinned)"
        if target.pinned
        else " (certificate not checked)"
        if target.allow_selfsigned_certs
        else ""
    )
    signed_in = f", signed in as {target.username}" if target.username else ", without signing in"
    return f"through {smtp.host_port(target.smtp_host, target.smtp_port)} {mode}{checked}{signed_in}"


def _recipient(value: Any) -> str:
    if value is None or value == "":
        raise SettingsError({"to": "is required: the address to send the test email to"})
    try:
        check_type(value, str)
        return rules.normalize_email(value)
    except ValueError as problem:
        raise SettingsError({"to": str(problem)}) from None
