"""Who may use the page and the API.

With an admin configured (``ADMIN_USERNAME`` and ``ADMIN_PASSWORD_HASH``) the page needs a
login and the API HTTP Basic credentials or the logged-in session. Without one, only
clients on this machine (loopback) are served: the local, single-user default.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired

from . import service
from .service import Actor

bp = Blueprint("auth", __name__)
login_manager = LoginManager()

# Endpoints anyone allowed to reach the server may use without signing in.
PUBLIC_ENDPOINTS = {"auth.login", "static", "openapi.openapi_json"}
# Endpoints every client may use, even in loopback-only mode: load balancers probe from afar.
OPEN_ENDPOINTS = {"health.healthz"}


@dataclass
class Admin(UserMixin):
    username: str

    def get_id(self) -> str:
        return self.username


def admin_configured(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config.get("ADMIN_USERNAME") and config.get("ADMIN_PASSWORD_HASH"))


@functools.lru_cache(maxsize=4096)
def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class LoginThrottle:
    """Slows down repeated failed sign-ins from one address: each failure past the
    first few doubles the wait before the next attempt is even checked."""

    def __init__(self, free_failures: int = 3, base_seconds: float = 1.0, max_seconds: float = 300.0):
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, address: str) -> float:
        """How long ``address`` must still wait before its next attempt (0: go ahead)."""
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
        if count < self.free_failures:
            return 0.0
        delay = min(self.base_seconds * 2 ** (count - self.free_failures), self.max_seconds)
        return max(0.0, last + delay - time.monotonic())

    def failed(self, address: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
                self._failures.clear()
            count, _ = self._failures.get(address, (0, 0.0))
            self._failures[address] = (count + 1, time.monotonic())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class Credentials:
    """Checks the admin's user name and password, in constant time.

    A password hash is slow on purpose, so a verified pair is remembered as a keyed
    digest (never the password itself): API clients sending Basic credentials with
    every call pay for the hash once.
    """

    def __init__(self) -> None:
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, username: str, password: str) -> bool:
        config = current_app.config
        expected_user = str(config.get("ADMIN_USERNAME") or "")
        password_hash = str(config.get("ADMIN_PASSWORD_HASH") or "")
        if not expected_user or not password_hash:
            return False
        digest = hmac.new(
            (current_app.secret_key or "").encode() + password_hash.encode(),
            f"{username}\0{password}".encode(),
            hashlib.sha256,
        ).digest()
        with self._lock:
            if digest in self._verified:
                return True
        # Both checks always run, so a wrong user name takes as long as a wrong password.
        user_ok = hmac.compare_digest(username.encode(), expected_user.encode())
        password_ok = _check_hash(password_hash, password)
        if user_ok and password_ok:
            with self._lock:
                if len(self._verified) > 64:
                    self._verified.clear()
                self._verified.add(digest)
            return True
        return False


def _check_hash(password_hash: str, password: str) -> bool:
    try:
        return check_password_hash(password_hash, password)
    except ValueError:  # a malformed hash in the configuration
        current_app.logger.error("ADMIN_PASSWORD_HASH is not a valid password hash")
        return False


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="is required")])
    password = PasswordField("Password", validators=[InputRequired(message="is required")])
    next = HiddenField()


def _state(app: Flask | None = None) -> dict[str, Any]:
    return (app or current_app).extensions["settings_ui.auth"]


def actor() -> Actor:
    """Who is making the current request, as the audit trail names them."""
    return g.get("actor") or Actor("local", request.remote_addr or "")


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the settings page.

    An absolute or scheme-relative URL would make the login an open redirect, and
    browsers read a backslash as a slash, so "/\\host" would leave the site too.
    """
    on_site = target and target.startswith("/") and not target.startswith("//") and "\\" not in target
    if on_site and not urlsplit(target).netloc:
        return target
    return url_for("pages.settings_page")


def _is_api_request() -> bool:
    from .api import is_api_path

    return is_api_path(request.path)


def _guard() -> Response | None:
    """Runs before every request: loopback-only without an admin, login or Basic with one."""
    address = request.remote_addr or ""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not admin_configured():
        if not is_loopback(address):
            raise Forbidden(
                "This server has no admin account, so it only serves this machine (loopback). "
                "Set ADMIN_USERNAME and ADMIN_PASSWORD_HASH to allow access from the network."
            )
        g.actor = Actor("local", address)
        return None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_user.is_authenticated:
        g.actor = Actor(current_user.username, address)
        return None
    if _is_api_request():
        auth = request.authorization
        if auth is None or auth.type != "basic":
            raise Unauthorized("Credentials are missing: send HTTP Basic credentials of the admin account.")
        _refuse_while_throttled(address)
        if not _sign_in_accepted(auth.username or "", auth.password or "", address, "API sign-in failed"):
            raise Unauthorized("The credentials are wrong.")
        g.actor = Actor(auth.username or "", address)
        return None
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _refuse_while_throttled(address: str) -> None:
    """Raise 429 while ``address`` must still wait after failed sign-ins: not even checked."""
    wait = _state()["throttle"].wait_seconds(address)
    if wait:
        raise _too_many(wait)


def _sign_in_accepted(username: str, password: str, address: str, failure: str) -> bool:
    """Check one sign-in attempt; count a failure against ``address`` and record it as ``failure``."""
    throttle: LoginThrottle = _state()["throttle"]
    if _state()["credentials"].check(username, password):
        throttle.succeeded(address)
        return True
    throttle.failed(address)
    service.record_event(failure, Actor(_named_user(username), address))
    return False


def _named_user(attempted: str) -> str:
    # An attempted user name may be a password typed in the wrong box: record it only if it is the admin's.
    admin = str(current_app.config["ADMIN_USERNAME"])
    return attempted if hmac.compare_digest(attempted.encode(), admin.encode()) else "(unknown user)"


def _too_many(wait: float) -> TooManyRequests:
    seconds = int(wait) + 1
    return TooManyRequests(
        f"Too many failed sign-ins from your address. Wait {seconds} seconds before trying again.",
        retry_after=seconds,
    )


@login_manager.user_loader
def _load_user(user_id: str) -> Admin | None:
    expected = str(current_app.config.get("ADMIN_USERNAME") or "")
    if admin_configured() and hmac.compare_digest(user_id.encode(), expected.encode()):
        return Admin(expected)
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    if not admin_configured() or current_user.is_authenticated:
        return redirect(_safe_next(request.values.get("next")))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
        return render_template("login.html", form=form)
    address = request.remote_addr or ""
    try:
        _refuse_while_throttled(address)
    except TooManyRequests as throttled:
        return render_template("login.html", form=form, problem=throttled.description), 429
    if not form.validate():
        return render_template("login.html", form=form), 400
    if not _sign_in_accepted(form.username.data, form.password.data, address, "sign-in failed"):
        return render_template("login.html", form=form, problem="The username or password is wrong."), 401
    target = _safe_next(form.next.data)
    session.clear()  # a fresh session (and CSRF token) for the signed-in admin
    login_user(Admin(str(current_app.config["ADMIN_USERNAME"])))
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a request
    service.record_event("signed in", Actor(current_user.username, address))
    return redirect(target, 303)


@bp.post("/logout")
def logout() -> Response:
    if current_user.is_authenticated:
        service.record_event("signed out", actor())
    logout_user()
    session.clear()
    return redirect(url_for("auth.login") if admin_configured() else url_for("pages.settings_page"), 303)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    app.extensions["settings_ui.auth"] = {
        "throttle": LoginThrottle(base_seconds=float(app.config["LOGIN_THROTTLE_SECONDS"])),
        "credentials": Credentials(),
    }
    app.before_request(_guard)
    app.register_blueprint(bp)
    if not admin_configured(app):
        # Whatever serves the app (python app.py, flask run, gunicorn) and wherever it listens.
        app.logger.warning(
            "No admin account is configured: only clients on this machine (loopback) are served, "
            "under the names localhost, 127.0.0.1 and [::1]; any other client gets 403, whatever address "
            "the server listens on. Set ADMIN_USERNAME and ADMIN_PASSWORD_HASH (see `flask --app app "
            "hash-password`) to serve the network."
        )
