"""sendmail for programs that call one: ``settings-ui-sendmail`` and ``flask email-settings sendmail``.

Programs start sendmail once per message, so the console script builds the standalone app's
runtime without Flask (:func:`settings_ui.runtime.standalone`) and imports only what sending a
message needs: no Flask, page, API, metrics or migration tool, unless the database must be migrated.
"""

from __future__ import annotations

import email.policy
import sys
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, NoReturn

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import alerts, runtime, sending
from .configuration import as_set_here, named_with

# sendmail's exit statuses (sysexits.h), as programs that call sendmail expect them.
EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 69, 75, 78


class _SendmailUsageError(click.UsageError):
    exit_code = EX_USAGE


class _SendmailCommand(click.Command):
    """A command line that sendmail's callers can read: a usage error exits 64, not click's 2."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _SendmailUsageError(error.message, error.ctx) from None


@click.command("sendmail", cls=_SendmailCommand, context_settings={"ignore_unknown_options": False})
@click.option("-t", "from_headers", is_flag=True, help="take the recipients from To, Cc and Bcc (Bcc is removed)")
@click.option("-f", "envelope_sender", metavar="ADDR", help="the envelope sender (default: from_email)")
@click.option(
    "-i", "ignore_dots", is_flag=True, hidden=True, help="accepted for compatibility: a lone dot never ends input"
)
@click.option(
    "-o",
    "sendmail_options",
    multiple=True,
    help="sendmail's -oX options: -odi delivers now or fails (exit 75) instead of queueing; the others are ignored",
)
@click.argument("recipients", nargs=-1)
def command(
    from_headers: bool,
    envelope_sender: str | None,
    ignore_dots: bool,
    sendmail_options: tuple[str, ...],
    recipients: tuple[str, ...],
) -> None:
    """Send the RFC 5322 message on standard input through the stored settings (a sendmail-compatible
    subset). Exit 0 when accepted, 75 on a temporary failure, 69 on a permanent one, 65 for a message
    that cannot be sent as given, 78 when the settings are incomplete."""
    limit = int(runtime.current().config["SENDMAIL_MAX_MESSAGE_BYTES"])
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        _exit(EX_DATAERR, f"The message is larger than SENDMAIL_MAX_MESSAGE_BYTES ({limit} bytes): nothing was sent.")
    message = BytesParser(EmailMessage, policy=email.policy.default).parsebytes(data)
    if (
        not data.strip()
        or not message.keys()
        or any(isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in message.defects)
    ):
        _exit(EX_DATAERR, "The message on standard input cannot be parsed as an email (RFC 5322): nothing was sent.")
    try:
        delivery = sending.deliver(
            message,
            recipients,
            take_recipients_from_headers=from_headers,
            envelope_sender=envelope_sender,
            surface="sendmail",
            # -odi (deliver interactively): now or not at all, the exit status says which.
            queue_on_failure="di" not in sendmail_options,
        )
    except sending.UnusableMessageError as problem:
        _exit(EX_DATAERR, f"The message was not sent: {problem}.")
    alerts.send_pending()  # an alert this send raised, before the process ends (each POST is time-bound)
    if delivery.configuration_problem:
        _exit(EX_CONFIG, delivery.message)
    if delivery.queued is not None:  # a queued message is accepted, as Postfix's sendmail has it
        _exit(EX_OK, f"Queued, not sent yet: {delivery.message}")
    if not delivery.sent:
        _exit(EX_TEMPFAIL if delivery.temporary else EX_UNAVAILABLE, delivery.message)


def _exit(status: int, reason: str) -> NoReturn:
    click.echo(as_set_here(reason), err=True)
    raise click.exceptions.Exit(status)


def main() -> None:
    """The ``settings-ui-sendmail`` console script: the standalone app's sendmail."""
    try:
        state = runtime.standalone()
    except DBAPIError as problem:  # the database is down or refuses the connection: a later try may work
        _refuse(EX_TEMPFAIL, f"The settings database cannot be reached ({type(problem.orig).__name__})")
    except SQLAlchemyError as problem:  # only its type: the message may quote the database URL and its password
        _refuse(EX_CONFIG, f"EMAIL_SETTINGS_DATABASE_URI cannot be used ({type(problem).__name__})")
    except ValueError as problem:  # a configuration value settings-ui checks at start
        _refuse(EX_CONFIG, f"The configuration cannot be used: {problem}")
    with runtime.using(state):
        command.main(prog_name="settings-ui-sendmail")


def _refuse(status: int, reason: str) -> NoReturn:
    click.echo(named_with(runtime.ENVIRONMENT_PREFIX, f"{reason.rstrip('.')}: nothing was sent."), err=True)
    sys.exit(status)
