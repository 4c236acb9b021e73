"""A stolen session cookie stops working, and password guessing stays slow, whatever the attacker does.

Run against the app as users start it (`python app.py`, gunicorn with two workers), with CSRF on.
"""

from __future__ import annotations

import http.cookiejar
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from sqlalchemy import select
from werkzeug.exceptions import TooManyRequests
from werkzeug.security import generate_password_hash

from settings_ui import database
from settings_ui.models import login_failure_table

from .apps import make_app
from .helpers import ADMIN, ADMIN_HASH, ADMIN_PASSWORD, basic, post_json
from .processes import AppProcess, GunicornProcess


def admin_env(password_hash: str = ADMIN_HASH, **more: str) -> dict[str, str]:
    return {"SETTINGS_UI_ADMIN_USERNAME": ADMIN, "SETTINGS_UI_ADMIN_PASSWORD_HASH": password_hash, **more}


class Browser:
    """A cookie jar and the page's forms, over real HTTP; redirects are not followed."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect)

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base_url + path, data=data, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def csrf_token(self, path: str) -> str:
        status, html = self.request(path)
        assert status == 200, html
        return BeautifulSoup(html, "html.parser").find("input", attrs={"name": "csrf_token"})["value"]

    def sign_in(self) -> None:
        token = self.csrf_token("/login")
        status, html = self.request(
            "/login", {"csrf_token": token, "username": ADMIN, "password": ADMIN_PASSWORD, "next": "/"}
        )
        assert status == 303, html

    def sign_out(self) -> None:
        assert self.request("/logout", {"csrf_token": self.csrf_token("/")})[0] == 303

    def signed_in(self) -> bool:
        status, _ = self.request("/")
        assert status in (200, 302)
        return status == 200

    def copy_cookies(self) -> Browser:
        """What an attacker who stole the cookies holds."""
        thief = Browser(self.base_url)
        for cookie in self.cookies:
            thief.cookies.set_cookie(cookie)
        return thief

    def api_status_with_cookies(self) -> int:
        request = urllib.request.Request(
            self.base_url + "/email-settings/show",
            data=b'{"params": {}}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


def test_a_cookie_copied_before_logout_is_worthless_after_it(tmp_path: Path) -> None:
    app = AppProcess(tmp_path / "instance", admin_env())
    try:
        admin = Browser(app.url)
        admin.sign_in()
        thief = admin.copy_cookies()
        assert thief.signed_in() and thief.api_status_with_cookies() == 200  # the stolen cookie works...
        admin.sign_out()
        assert not thief.signed_in()  # ...until the admin signs out
        assert thief.api_status_with_cookies() == 401
    finally:
        app.stop()


def test_a_new_admin_password_ends_every_session(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = AppProcess(instance, admin_env())
    try:
        admin = Browser(app.url)
        admin.sign_in()
        thief = admin.copy_cookies()
        assert thief.signed_in()
    finally:
        app.stop()
    # The admin changes the password (a new hash in the configuration) and restarts.
    new_hash = generate_password_hash("a brand-new admin password")
    app = AppProcess(instance, admin_env(new_hash), port=app.port)
    try:
        assert not thief.signed_in()
        assert not admin.signed_in()
    finally:
        app.stop()


def test_a_busy_session_still_ends_at_its_absolute_lifetime(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        ADMIN_USERNAME=ADMIN,
        ADMIN_PASSWORD_HASH=ADMIN_HASH,
        SESSION_ABSOLUTE_LIFETIME=2,
        PERMANENT_SESSION_LIFETIME=600,
    )
    client = app.test_client()
    response = client.post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "next": "/"})
    assert response.status_code == 303
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # used all the time: the idle limit never applies
        assert client.get("/").status_code == 200
        time.sleep(0.25)
    time.sleep(1.0)
    assert client.get("/").status_code == 302


def test_parallel_guesses_get_three_password_checks_across_workers(tmp_path: Path) -> None:
    """40 wrong Basic attempts at once from one address, over two gunicorn workers."""
    server = GunicornProcess(tmp_path / "instance", admin_env(SETTINGS_UI_LOGIN_THROTTLE_SECONDS="60"))
    statuses: list[int] = []
    try:
        start = threading.Barrier(40)

        def guess(number: int) -> None:
            start.wait()
            status, _ = post_json(
                f"{server.url}/email-settings/show", {"params": {}}, basic(ADMIN, f"guess-{number}"), timeout=60
            )
            statuses.append(status)

        threads = [threading.Thread(target=guess, args=(number,)) for number in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        # Now even the right password waits, on whichever worker it lands.
        later = [post_json(f"{server.url}/email-settings/show", {"params": {}}, basic(ADMIN, ADMIN_PASSWORD))[0]]
        later += [post_json(f"{server.url}/email-settings/show", {"params": {}}, basic(ADMIN, ADMIN_PASSWORD))[0]]
    finally:
        server.stop()
    counted = Counter(statuses)
    assert counted[401] + counted[429] == 40, counted
    assert 1 <= counted[401] <= 3, counted  # each 401 is a password really checked
    assert later == [429, 429]


def test_parallel_calls_with_the_right_credentials_are_all_served(tmp_path: Path) -> None:
    """A script's first burst of calls, on two fresh workers: none is taken for a guesser."""
    server = GunicornProcess(tmp_path / "instance", admin_env())
    statuses: list[int] = []
    try:
        start = threading.Barrier(24)

        def call() -> None:
            start.wait()
            url = f"{server.url}/email-settings/show"
            statuses.extend(
                post_json(url, {"params": {}}, basic(ADMIN, ADMIN_PASSWORD), timeout=60)[0] for _ in range(3)
            )

        threads = [threading.Thread(target=call) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.stop()
    assert Counter(statuses) == {200: 72}


def test_past_ten_thousand_addresses_the_oldest_are_forgotten_first(app: Flask) -> None:
    with app.app_context():
        throttle = app.extensions["settings_ui.auth"]["throttle"]
        throttle.max_addresses = 5
        for number in range(8):
            assert throttle.begin_check(f"192.0.2.{number}", lambda: False)
            throttle.end_check(f"192.0.2.{number}", accepted=False)
            time.sleep(0.01)
        with database.engine().connect() as connection:
            kept = {row.address for row in connection.execute(select(login_failure_table))}
    assert kept == {f"192.0.2.{number}" for number in range(3, 8)}


def test_an_attempt_waits_for_the_one_being_checked(app: Flask) -> None:
    with app.app_context():
        throttle = app.extensions["settings_ui.auth"]["throttle"]
        throttle.patience_seconds = 0.3
        assert throttle.begin_check("192.0.2.1", lambda: False)  # being checked...
        # ...so another attempt from the address waits: it is settled by the first, or refused.
        assert throttle.begin_check("192.0.2.1", lambda: True) is False
        with pytest.raises(TooManyRequests):
            throttle.begin_check("192.0.2.1", lambda: False)
        throttle.end_check("192.0.2.1", accepted=False)
        assert throttle.begin_check("192.0.2.1", lambda: False)  # the next one, after the first failed


def test_a_sign_in_waits_a_bounded_time_for_a_password_check_then_gets_503(tmp_path: Path) -> None:
    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH)
    credentials = app.extensions["settings_ui.auth"]["credentials"]
    while credentials.checking.acquire(blocking=False):  # every check of this process is busy
        pass
    client = app.test_client()
    started = time.monotonic()
    answer = client.post("/email-settings/show", json={"params": {}}, headers=basic(ADMIN, "a wrong guess"))
    waited = time.monotonic() - started
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.get_json()["successful"] is False
    assert waited < 5  # sign_in.CHECK_PATIENCE, not for ever
    credentials.checking.release()
    credentials.checking.release()
    # Nothing was counted against the address: the right password gets in at once.
    assert (
        client.post("/email-settings/show", json={"params": {}}, headers=basic(ADMIN, ADMIN_PASSWORD)).status_code
        == 200
    )


def test_wrong_sign_ins_from_many_addresses_spend_a_budget_shared_by_all(tmp_path: Path) -> None:
    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH, LOGIN_FAILING_ADDRESSES_PER_MINUTE=5)
    client = app.test_client()
    statuses = []
    for number in range(8):  # one guess each: within every address's own free failures
        answer = client.post(
            "/email-settings/show",
            json={"params": {}},
            headers=basic(ADMIN, "guess"),
            environ_base={"REMOTE_ADDR": f"127.0.0.{number + 2}"},
        )
        statuses.append(answer.status_code)
    assert statuses == [401] * 5 + [429] * 3
    fresh = client.post(
        "/email-settings/show",
        json={"params": {}},
        headers=basic(ADMIN, ADMIN_PASSWORD),
        environ_base={"REMOTE_ADDR": "127.0.0.99"},
    )
    assert fresh.status_code == 429 and int(fresh.headers["Retry-After"]) >= 60
