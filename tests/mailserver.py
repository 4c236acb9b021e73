"""Debian's Postfix with Dovecot SASL, as `.ci/mailserver` sets it up: where it is, who may sign in.

The real-server tests skip with a message when it isn't running; CI starts it and sets
REQUIRE_MAILSERVER_TESTS=1, which turns a missing server into a failure.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from .helpers import skip_or_fail

CONF = Path("/etc/settings-ui-mailserver")
CA_FILE = CONF / "ca.pem"
MAILDIR = Path("/var/lib/settings-ui-mailserver/maildir")
POSTFIX_LOG = Path("/var/log/settings-ui-postfix.log")

HOST = "localhost"
PLAIN_PORT = 25  # STARTTLS and AUTH offered, neither required
SUBMISSION_PORT = 587  # STARTTLS and AUTH required, sender must be the user's, HELO a full name
TLS_PORT = 465
OTHER_NAME_PORT = 2465  # certificate for mail.other.test
SELF_SIGNED_PORT = 3465
EXPIRING_PORT = 4465  # certificate expires in 10 days

USERNAME = "mailer"
TEMPFAIL_USERNAME = "tempfail"  # its sign-in loses Dovecot's auth process: Postfix answers 454
PASSWORD = "mailer-password"
SENDER = "mailer@mail.test"
INBOX = "inbox@mail.test"


def require_mailserver() -> None:
    """Skip (or fail, in CI) unless the server answers on the submission port."""
    try:
        with socket.create_connection(("127.0.0.1", SUBMISSION_PORT), timeout=2):
            pass
        running = CA_FILE.is_file()
    except OSError:
        running = False
    if running:
        return
    message = (
        "real-server tests need Debian's Postfix and Dovecot: run `sudo .ci/mailserver` "
        "(CI does, and sets REQUIRE_MAILSERVER_TESTS=1)"
    )
    skip_or_fail(message, "REQUIRE_MAILSERVER_TESTS")


def delivered(message_id: str, *, within: float = 10.0) -> bytes:
    """The message with ``message_id`` as it landed in the Maildir (Postfix delivers in the background)."""
    needle = message_id.encode()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for path in (MAILDIR / "new").glob("*"):
            content = path.read_bytes()
            if needle in content:
                return content
        time.sleep(0.1)
    raise AssertionError(f"{message_id} was not delivered to {MAILDIR} within {within:g} s")


def failed_logins() -> int:
    """How many failed SASL sign-ins Postfix has logged so far."""
    if not POSTFIX_LOG.exists():
        return 0
    return POSTFIX_LOG.read_text(errors="replace").count("authentication failed")
