#!/usr/bin/env python3
"""Time to a detect answer against Debian's Postfix/Dovecot, with and without a silent port.

Three live ports (465 TLS, 587 StartTLS, 25 Plain with STARTTLS) of the server `.ci/mailserver`
starts, and a port of this process that accepts connections and never says a word (a firewall
that lets the handshake through, or a hung server). SMTP_TIMEOUT is 10 s. Beside each figure, the
same run's reference: one dry-run test of the recommended settings (a single conversation up to
RCPT TO). Appends the table to bench/RESULTS.md. Targets: within 1.5 s with no silent port, within
SMTP_TIMEOUT otherwise.

    sudo bash .ci/mailserver && .venv/bin/python bench/detect.py [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import record  # bench/, the directory of this script

from settings_ui.smtp import Options, SmtpTarget
from settings_ui.smtp.detect import Credentials, detect
from settings_ui.testmail import send_test_email

CA_FILE = "/etc/settings-ui-mailserver/ca.pem"
TIMEOUT = 10.0
OPTIONS = Options(timeout=TIMEOUT, ca_file=CA_FILE)
HOST = "127.0.0.1"
LIVE = [465, 587, 25]
MAILER = Credentials("mailer", "mailer-password")


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def timed(action: object) -> tuple[float, object]:
    started = time.monotonic()
    outcome = action()  # type: ignore[operator]
    return (time.monotonic() - started) * 1000, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    reference = SmtpTarget(HOST, 465, "TLS", "mailer@mail.test", "mailer", "mailer-password", False)
    with silent_port() as silent:
        cases = [
            ("3 live ports", LIVE, None),
            ("3 live ports, signing in", LIVE, MAILER),
            ("3 live + 1 silent, silent ranked last", [*LIVE, silent], None),
            ("3 live + 1 silent, silent ranked first", [silent, *LIVE], None),
        ]
        rows = []
        for name, ports, credentials in cases:
            times, references, outcome = [], [], ""
            for _ in range(args.runs):
                took, found = timed(
                    lambda ports=ports, credentials=credentials: detect(HOST, ports, OPTIONS, credentials=credentials)
                )
                times.append(took)
                recommended = found.recommended  # type: ignore[attr-defined]
                outcome = f"{recommended['smtp_port']} {recommended['encryption']}" if recommended else "none"
                references.append(
                    timed(lambda: send_test_email(reference, "inbox@mail.test", OPTIONS, dry_run=True))[0]
                )
            ratio = statistics.median(times) / statistics.median(references)
            rows.append(
                f"{name:<40} {statistics.median(times):7.0f} ms {max(times):7.0f} ms "
                f"{statistics.median(references):7.0f} ms {ratio:6.1f}x   {outcome}"
            )
    header = f"{'case':<40} {'median':>10} {'slowest':>10} {'one test':>10} {'ratio':>7}   recommended"
    table = "\n".join([header, *rows])
    print(table)
    if not args.no_record:
        record(
            "detect against Postfix 3.7 / Dovecot 2.3",
            f"`bench/detect.py --runs {args.runs}`, SMTP_TIMEOUT {TIMEOUT:g} s; "
            "'one test' is a dry-run test of 465 TLS in the same run",
            table,
        )


if __name__ == "__main__":
    main()
