"""The app as a real process (`python app.py`), for tests that kill or multiply it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask

from .helpers import SENDMAIL_MESSAGE, post_json_with_headers
from .smtp_servers import free_port

PROJECT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """A server of the app in its own process, its output in ``log``; ready once /healthz answers."""

    name = "server"

    def __init__(self, command: list[str], instance: Path, env: dict[str, str] | None, port: int | None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = instance.parent / f"{self.name}-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("SETTINGS_UI_", "GUNICORN_"))}
        environment.update({"SETTINGS_UI_INSTANCE_PATH": str(instance), **(env or {})})
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in command],
                cwd=PROJECT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def call(self, action: str, params: dict, headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
        """Status, JSON body and headers of one API call."""
        return post_json_with_headers(f"{self.url}/email-settings/{action}", {"params": params}, headers, timeout=30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class AppProcess(ServerProcess):
    """`python app.py`, as a developer or a single-file install runs it."""

    name = "app"

    def __init__(self, instance: Path, env: dict[str, str] | None = None, port: int | None = None):
        super().__init__([sys.executable, "app.py", "--port", "{port}"], instance, env, port)


class GunicornProcess(ServerProcess):
    """`gunicorn app:app` with the project's gunicorn.conf.py, as production serves it."""

    name = "gunicorn"

    def __init__(self, instance: Path, env: dict[str, str] | None = None, *args: str, port: int | None = None):
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:{port}"]
        super().__init__([*command, *args, "app:app"], instance, env, port)


@contextlib.contextmanager
def app_processes(count: int, instance: Path, env: dict[str, str] | None = None) -> Iterator[list[AppProcess]]:
    started: list[AppProcess] = []
    try:
        for _ in range(count):
            started.append(AppProcess(instance, env))
        yield started
    finally:
        for process in started:
            process.stop()


def sendmail(
    app: Flask, *args: str, message: bytes = SENDMAIL_MESSAGE, command: list[str] | None = None, **config: str
) -> subprocess.CompletedProcess[bytes]:
    """Run sendmail in its own process on the app's database, as a product would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    environment |= {
        "SETTINGS_UI_INSTANCE_PATH": app.instance_path,
        "SETTINGS_UI_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "SETTINGS_UI_SMTP_TIMEOUT": "3",
        "SETTINGS_UI_SMTP_CA_FILE": app.config["SMTP_CA_FILE"],
    }
    environment |= {f"SETTINGS_UI_{name}": value for name, value in config.items()}
    flask = [sys.executable, "-m", "flask", "--app", "app", "email-settings", "sendmail"]
    return subprocess.run(
        [*(command or flask), *args], input=message, capture_output=True, cwd=PROJECT, env=environment, timeout=60
    )
