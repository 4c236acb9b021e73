#!/usr/bin/env python3
"""Time to a diagnosis: each failure class against Debian's Postfix/Dovecot, how long the answer takes.

Runs the test email's conversation (settings_ui.testmail.send_test_email) against the server `.ci/mailserver`
starts, with SMTP_TIMEOUT 10 s, five times per class, and prints the median and the slowest
time to the report, with the step it names. A wrong password's time is the server's own
deliberate delay after a failed sign-in. Appends the table to bench/RESULTS.md.

    sudo bash .ci/mailserver && .venv/bin/python bench/diagnosis.py [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import record  # bench/, the directory of this script

from settings_ui.smtp import Options, SmtpTarget
from settings_ui.testmail import send_test_email

CA_FILE = "/etc/settings-ui-mailserver/ca.pem"
TIMEOUT = 10.0
OPTIONS = Options(timeout=TIMEOUT, ca_file=CA_FILE)
GOOD = {
    "smtp_host": "localhost",
    "smtp_port": 587,
    "encryption": "StartTLS",
    "from_email": "mailer@mail.test",
    "username": "mailer",
    "password": "mailer-password",
    "allow_selfsigned_certs": False,
}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CLASSES: list[tuple[str, dict[str, object], str]] = [
    ("sent (StartTLS, signed in)", {}, "inbox@mail.test"),
    ("sender not the user's (at RCPT)", {"from_email": "other@mail.test"}, "inbox@mail.test"),
    ("unknown recipient", {}, "nobody@mail.test"),
    ("Plain to 587 (STARTTLS required)", {"encryption": "Plain", "username": "", "password": ""}, "inbox@mail.test"),
    ("StartTLS to 465 (implicit TLS port)", {"smtp_port": 465}, "inbox@mail.test"),
    ("Plain to 465 (implicit TLS port)", {"smtp_port": 465, "encryption": "Plain"}, "inbox@mail.test"),
    ("TLS to 587 (plain port)", {"encryption": "TLS"}, "inbox@mail.test"),
    ("certificate for another name", {"smtp_port": 2465, "encryption": "TLS"}, "inbox@mail.test"),
    ("self-signed certificate", {"smtp_port": 3465, "encryption": "TLS"}, "inbox@mail.test"),
    ("nothing listens on the port", {"smtp_host": "127.0.0.1", "smtp_port": closed_port()}, "inbox@mail.test"),
    ("host name does not exist", {"smtp_host": "no-such-host.invalid"}, "inbox@mail.test"),
    # Last: Dovecot delays every sign-in from an address after a failed one (auth_failure_delay,
    # growing with each failure), so it would slow the classes after it.
    ("wrong password", {"password": "wrong"}, "inbox@mail.test"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, change, to in CLASSES:
        target = SmtpTarget(**{**GOOD, **change})
        times, outcome = [], ""
        for _ in range(args.runs):
            started = time.monotonic()
            report = send_test_email(target, to, OPTIONS)
            times.append((time.monotonic() - started) * 1000)
            outcome = "sent" if report.sent else f"{report.failed_step} step"
        rows.append(f"{name:<38} {statistics.median(times):7.0f} ms {max(times):7.0f} ms   {outcome}")
    header = f"{'failure class':<38} {'median':>10} {'slowest':>10}   reported at"
    table = "\n".join([header, *rows])
    print(table)
    if not args.no_record:
        record(
            "time to a diagnosis against Postfix 3.7 / Dovecot 2.3",
            f"`bench/diagnosis.py --runs {args.runs}`, SMTP_TIMEOUT {TIMEOUT:g} s",
            table,
        )


if __name__ == "__main__":
    main()
