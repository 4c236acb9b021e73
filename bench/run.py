#!/usr/bin/env python3
"""Benchmark settings-ui against its references, in one run.

Starts settings-ui under gunicorn (gunicorn.conf.py, 2 workers) beside bench/references.py
(a bare Flask route for show, the durable-write limit for edit, the textbook Flask-WTF page;
same gunicorn settings), drives both with wrk without cookies (each request a first view),
and prints requests per second and p99 latency for show, edit and the page, each as a ratio
to its reference; then HTTP Basic against the logged-in session with an admin configured,
the start-up time of `python app.py` beside a bare `import flask, flask_sqlalchemy,
flask_wtf`; and sendmail: messages sent one after another, one process each as sendmail's callers
do, through `settings-ui-sendmail`, through msmtp (Debian's sendmail client, written in C) set up
for the same local SMTP server, and beside a bare `python -c "import flask_sqlalchemy"`, the three
taking turns. Appends the run to bench/RESULTS.md.

    .venv/bin/python bench/run.py [--duration 5] [--connections 16] [--messages 100] [--only NAME] [--no-record]

Needs wrk and msmtp (`apt-get install wrk msmtp`). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import http.cookiejar
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BENCH = PROJECT / "bench"
CONFIG = PROJECT / "gunicorn.conf.py"
ADMIN, ADMIN_PASSWORD = "admin", "bench-password-1"
SETTINGS = {
    "smtp_host": "smtp.example.com",
    "smtp_port": 587,
    "encryption": "StartTLS",
    "from_email": "noreply@example.com",
    "username": "mailer",
    "password": "not-a-real-password",
}
TARGETS = {"show": 0.6, "page": 0.6, "edit": 0.7}
P99_LIMIT_MS = {"edit": 50.0}
P99_OF_REFERENCE = {"page": 1.5}
"""A p99 within this many times the reference's p99 in the same run."""
SENDMAIL_TARGET = 0.7
"""sendmail's time per message, at most this share of a bare `import flask_sqlalchemy`."""
MSMTP_AIM = 8.0
SENDMAIL_MESSAGE = b"To: someone@example.org\nSubject: One of many\n\nA notification, as a product sends it.\n"
BASIC_TARGET = 0.8
STARTUP_MARGIN_S = 0.3


@dataclass
class Result:
    rps: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    env.update(SETTINGS_UI_INSTANCE_PATH=str(instance), **extra)
    return env


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.01)
    raise SystemExit(f"{url} did not become ready")


@contextlib.contextmanager
def gunicorn(target: str, env: dict[str, str], chdir: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "-b", f"127.0.0.1:{port}", "-w", "2"]
    process = subprocess.Popen(
        [*command, "--chdir", str(chdir), target], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wrk(
    url: str, args: argparse.Namespace, body: str | None = None, *, seconds: int | None = None, **headers: str
) -> Result:
    command = ["wrk", "-t2", f"-c{args.connections}", f"-d{seconds or args.duration}s", "--latency", url]
    env = dict(os.environ)
    if body is not None:
        command[1:1] = ["-s", str(BENCH / "post.lua")]
        env.update(BODY=body, **headers)
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"wrk saw error responses from {url}:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return Result(rps, p99)


def session_cookie(url: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{url}/login", timeout=10) as response:
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.read().decode()).group(1)
    form = urllib.parse.urlencode({"csrf_token": token, "username": ADMIN, "password": ADMIN_PASSWORD, "next": "/"})
    opener.open(f"{url}/login", form.encode(), timeout=10).close()
    cookie = next(c for c in jar if c.name == "settings_ui_session")
    return f"{cookie.name}={cookie.value}"


def bare_import_seconds(runs: int = 5) -> float:
    """Median time of a Python that imports Flask, Flask-SQLAlchemy and Flask-WTF and exits."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import flask, flask_sqlalchemy, flask_wtf"], check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def sendmail_seconds(scratch: Path, messages: int) -> dict[str, float]:
    """Median seconds per message for settings-ui-sendmail and msmtp, each delivering to the same local
    SMTP server, and for a bare `import flask_sqlalchemy`: one process each, the three taking turns."""
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() - started > 30:
                raise SystemExit("the SMTP sink did not start")
            time.sleep(0.05)
        env = base_env(scratch / "sendmail-instance")
        edit = ["edit", "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--encryption", "Plain"]
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "email-settings", *edit, "--from-email", "app@example.com"],
            cwd=PROJECT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        msmtprc = scratch / "msmtprc"
        msmtprc.write_text(f"account default\nhost 127.0.0.1\nport {port}\nfrom app@example.com\nauth off\ntls off\n")
        msmtprc.chmod(0o600)
        commands = {
            "sendmail": [str(Path(sys.executable).parent / "settings-ui-sendmail"), "-t"],
            "msmtp": ["msmtp", "-C", str(msmtprc), "-t"],
            "bare": [sys.executable, "-c", "import flask_sqlalchemy"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(messages):
            for name, command in commands.items():
                began = time.monotonic()
                done = subprocess.run(command, input=SENDMAIL_MESSAGE, env=env, capture_output=True)
                times[name].append(time.monotonic() - began)
                if done.returncode != 0 or done.stderr:  # sendmail says so on stderr when it only queued
                    raise SystemExit(f"{name} did not send: exit {done.returncode}: {done.stderr.decode()}")
        return {name: statistics.median(spent) for name, spent in times.items()}
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def startup_seconds(instance: Path, runs: int = 5) -> float:
    """Median time from starting `python app.py` to its first answer, byte-compiled as after an install."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "app.py", "settings_ui", "migrations"], cwd=PROJECT, check=True
    )
    times = []
    for _ in range(runs):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)],
            cwd=PROJECT,
            env=base_env(instance),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            times.append(wait_ready(f"http://127.0.0.1:{port}", process))
        finally:
            process.terminate()
            process.wait(timeout=30)
    return statistics.median(times)


SECTIONS = ("show", "page", "edit", "basic", "startup", "sendmail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--messages", type=int, default=100, help="messages sent by each sendmail (default 100)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    sections = args.only or SECTIONS
    for tool in ("wrk", "msmtp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")

    from werkzeug.security import generate_password_hash

    lines: list[str] = []
    passed: list[bool] = []

    def report(line: str, ok: bool | None = None) -> None:
        mark = "" if ok is None else (" ✓" if ok else " ✗ below target")
        print(line + mark, flush=True)
        lines.append(line + mark)
        if ok is not None:
            passed.append(ok)

    with tempfile.TemporaryDirectory(prefix="settings-ui-bench-") as scratch:
        instance = Path(scratch) / "instance"
        admin_instance = Path(scratch) / "admin-instance"
        references_env = base_env(instance, BENCH_DATABASE=str(Path(scratch) / "references.db"))
        show_body, edit_body = json.dumps({"params": {}}), json.dumps({"params": {"smtp_port": 587}})
        pages = [
            (name, path, body)
            for name, path, body in [
                ("show", "/email-settings/show", show_body),
                ("page", "/", None),
                ("edit", "/email-settings/edit", edit_body),
            ]
            if name in sections
        ]
        if pages:
            with (
                gunicorn("references:app", references_env, BENCH) as reference,
                gunicorn("app:app", base_env(instance), PROJECT) as real,
            ):
                post(f"{real}/email-settings/edit", {"params": SETTINGS})
                report(f"{'':8} {'settings-ui':>22} {'reference':>22} {'ratio':>7} {'target':>7}")
                for name, path, body in pages:
                    for url in (real, reference):  # warm up both (imports, connections, compiled templates)
                        wrk(url + path, args, body, seconds=1)
                    # Alternate, twice, and keep the better run of each: the machine is noisy.
                    runs = [(wrk(real + path, args, body), wrk(reference + path, args, body)) for _ in range(2)]
                    ours = max((run[0] for run in runs), key=lambda result: result.rps)
                    ceiling = max((run[1] for run in runs), key=lambda result: result.rps)
                    ratio = ours.rps / ceiling.rps
                    p99_limit = min(
                        P99_LIMIT_MS.get(name, float("inf")),
                        P99_OF_REFERENCE.get(name, float("inf")) * ceiling.p99_ms,
                    )
                    report(
                        f"{name:8} {ours.rps:8.0f} rps {ours.p99_ms:6.1f} ms p99 "
                        f"{ceiling.rps:8.0f} rps {ceiling.p99_ms:6.1f} ms p99 {ratio:7.2f} {TARGETS[name]:7.2f}"
                        + (f", p99 within {p99_limit:.0f} ms" if p99_limit < float("inf") else ""),
                        ratio >= TARGETS[name] and ours.p99_ms <= p99_limit,
                    )
        if "basic" in sections:
            admin_env = base_env(
                admin_instance,
                SETTINGS_UI_ADMIN_USERNAME=ADMIN,
                SETTINGS_UI_ADMIN_PASSWORD_HASH=generate_password_hash(ADMIN_PASSWORD),
            )
            with gunicorn("app:app", admin_env, PROJECT) as secured:
                basic = "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
                post(f"{secured}/email-settings/edit", {"params": SETTINGS}, {"Authorization": basic})
                cookie = session_cookie(secured)
                wrk(f"{secured}/email-settings/show", args, show_body, seconds=1, AUTHORIZATION=basic)
                wrk(f"{secured}/email-settings/show", args, show_body, seconds=1, COOKIE=cookie)
                by_basic = wrk(f"{secured}/email-settings/show", args, show_body, AUTHORIZATION=basic)
                by_session = wrk(f"{secured}/email-settings/show", args, show_body, COOKIE=cookie)
                ratio = by_basic.rps / by_session.rps
                report(
                    f"show with HTTP Basic {by_basic.rps:.0f} rps ({by_basic.p99_ms:.1f} ms p99) vs logged-in "
                    f"session {by_session.rps:.0f} rps ({by_session.p99_ms:.1f} ms p99): ratio {ratio:.2f}, "
                    f"target {BASIC_TARGET}",
                    ratio >= BASIC_TARGET,
                )
        if "startup" in sections:
            startup = startup_seconds(Path(scratch) / "startup-instance")
            bare = bare_import_seconds()
            report(
                f"python app.py ready in {startup:.2f} s, a bare import of flask, flask_sqlalchemy and flask_wtf "
                f"{bare:.2f} s (medians of 5): {startup - bare:+.2f} s, target within {STARTUP_MARGIN_S} s",
                startup - bare <= STARTUP_MARGIN_S,
            )
        if "sendmail" in sections:
            per_message = sendmail_seconds(Path(scratch), args.messages)
            ours, msmtp, bare = per_message["sendmail"], per_message["msmtp"], per_message["bare"]
            report(
                f"sendmail, {args.messages} messages, one process each (medians): settings-ui-sendmail "
                f"{ours * 1000:.0f} ms, msmtp {msmtp * 1000:.0f} ms ({ours / msmtp:.1f}x, aim {MSMTP_AIM:g}x), "
                f"a bare `import flask_sqlalchemy` {bare * 1000:.0f} ms: ratio {ours / bare:.2f}, "
                f"target {SENDMAIL_TARGET}",
                ours / bare <= SENDMAIL_TARGET,
            )

    if not args.no_record:
        machine = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(BENCH / "RESULTS.md", "a") as record:
            record.write(
                f"\n## {stamp} — {machine}\n\n`bench/run.py {' '.join(sys.argv[1:])}`\n\n```\n"
                + "\n".join(lines)
                + "\n```\n"
            )
    sys.exit(0 if all(passed) else 1)


if __name__ == "__main__":
    main()
