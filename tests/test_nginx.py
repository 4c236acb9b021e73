"""The shipped nginx configuration in front of gunicorn: slow bodies, client addresses, HTTPS.

Debian's nginx runs the project's `deploy/nginx-settings-ui.conf` (ports, certificate paths and
the upstream address changed for the test) in front of `gunicorn app:app`. Without nginx these
tests skip with a message; CI installs it and sets REQUIRE_NGINX_TESTS=1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from .helpers import skip_or_fail
from .processes import PROJECT, GunicornProcess
from .smtp_servers import free_port

SITE_CONFIG = PROJECT / "deploy" / "nginx-settings-ui.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PRODUCTION_ENV = {
    "SETTINGS_UI_PROXY_FIX": "1",
    "SETTINGS_UI_SESSION_COOKIE_SECURE": "true",
    # Few threads, so that the slow-body attack on gunicorn alone is quick to show.
    "GUNICORN_WORKERS": "1",
    "GUNICORN_THREADS": "4",
}
SLOW_CLIENTS = 20
CLIENT_ADDRESS = "127.0.0.5"  # another loopback address: not the one nginx connects from


def render_site(upstream_port: int, http_port: int, https_port: int, certificate: Path, key: Path) -> str:
    """The shipped site, with only its addresses and files changed."""
    text = SITE_CONFIG.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "    listen 80;\n": f"    listen 127.0.0.1:{http_port};\n",
        "    listen [::]:80;\n": "",
        "    listen 443 ssl;\n": f"    listen 127.0.0.1:{https_port} ssl;\n",
        "    listen [::]:443 ssl;\n": "",
        "server_name settings.example.com;": "server_name localhost;",
        "/etc/ssl/certs/settings-ui.pem": str(certificate),
        "/etc/ssl/private/settings-ui.key": str(key),
    }
    for old, new in replacements.items():
        assert old in text, f"the shipped nginx site no longer has {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Deployment:
    gunicorn: GunicornProcess
    https_port: int
    http_port: int
    tls: ssl.SSLContext
    instance: Path

    def https(self, source: str = "127.0.0.1", timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "localhost", self.https_port, context=self.tls, timeout=timeout, source_address=(source, 0)
        )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    if not os.path.exists(NGINX):
        message = (
            "nginx tests need Debian's nginx: run `apt-get install nginx` (CI does, and sets REQUIRE_NGINX_TESTS=1)"
        )
        skip_or_fail(message, "REQUIRE_NGINX_TESTS")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)

    gunicorn = GunicornProcess(tmp_path / "instance", PRODUCTION_ENV)
    http_port, https_port = free_port(), free_port()
    site = tmp_path / "site.conf"
    site.write_text(render_site(gunicorn.port, http_port, https_port, certificate, key))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"""daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp_path}/nginx-access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {site};
}}
"""
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https_port), timeout=1):
                break
            assert nginx.poll() is None and time.monotonic() < deadline, (tmp_path / "nginx-error.log").read_text()
            time.sleep(0.05)
        yield Deployment(gunicorn, https_port, http_port, tls, tmp_path / "instance")
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)
        gunicorn.stop()


@contextlib.contextmanager
def slow_bodies(port: int, tls: ssl.SSLContext | None) -> Iterator[None]:
    """SLOW_CLIENTS connections that send their headers, then a byte of body every 0.2 s."""
    stop = threading.Event()
    opened = threading.Barrier(SLOW_CLIENTS + 1)

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            connection = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
            connection.sendall(
                b"POST /email-settings/edit HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
            )
            opened.wait()
            while not stop.wait(0.2):
                with contextlib.suppress(OSError):
                    connection.sendall(b" ")

    threads = [threading.Thread(target=trickle) for _ in range(SLOW_CLIENTS)]
    for thread in threads:
        thread.start()
    opened.wait(timeout=30)
    time.sleep(0.5)  # every one of them has reached the server
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def show(connection: http.client.HTTPConnection) -> tuple[int, float]:
    started = time.monotonic()
    connection.request(
        "POST", "/email-settings/show", body='{"params": {}}', headers={"Content-Type": "application/json"}
    )
    status = connection.getresponse().status
    return status, time.monotonic() - started


def test_slow_bodies_stop_gunicorn_alone_but_not_behind_nginx(deployment: Deployment) -> None:
    # The attack on gunicorn alone: every thread waits for a body, a show gets no answer.
    with slow_bodies(deployment.gunicorn.port, None):
        direct = http.client.HTTPConnection("127.0.0.1", deployment.gunicorn.port, timeout=2)
        with pytest.raises(TimeoutError):
            show(direct)
        direct.close()
    # The same attack through nginx: it holds the slow bodies, the app answers at once.
    with slow_bodies(deployment.https_port, deployment.tls):
        status, took = show(deployment.https())
    assert status == 200
    assert took < 1.0, f"a show behind nginx took {took:.2f} s during the attack"


def test_the_client_address_reaches_the_audit_trail_and_a_forged_one_does_not(deployment: Deployment) -> None:
    connection = deployment.https(source=CLIENT_ADDRESS)
    params = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "noreply@example.com"}
    connection.request(
        "POST",
        "/email-settings/edit",
        body=json.dumps({"params": params}),
        headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.66"},
    )
    assert connection.getresponse().status == 200
    with contextlib.closing(sqlite3.connect(deployment.instance / "settings.db")) as database:
        actor, address = database.execute("SELECT actor, address FROM audit_event ORDER BY id DESC").fetchone()
    assert (actor, address) == ("local", CLIENT_ADDRESS)


def test_over_https_cookies_are_secure_and_plain_http_is_sent_to_https(deployment: Deployment) -> None:
    connection = deployment.https()
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    cookies = response.headers.get_all("Set-Cookie") or []
    assert cookies and all("Secure" in cookie and "HttpOnly" in cookie for cookie in cookies), cookies
    assert "max-age" in (response.headers["Strict-Transport-Security"] or "")
    plain = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=10)
    plain.request("GET", "/", headers={"Host": "localhost"})
    redirect = plain.getresponse()
    assert redirect.status == 301
    assert redirect.headers["Location"] == "https://localhost/"


@pytest.mark.parametrize(("size", "answered_by_app"), [(70_000, True), (200_000, False)])
def test_a_body_over_the_limit_is_refused(deployment: Deployment, size: int, answered_by_app: bool) -> None:
    connection = deployment.https()
    body = json.dumps({"params": {"smtp_host": "x" * size}})
    connection.request("POST", "/email-settings/edit", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413
    if answered_by_app:  # past the app's limit: the API's own envelope
        assert json.loads(response.read())["successful"] is False
