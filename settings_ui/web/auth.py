"""Who may use the page and the API.

Mounted in a product with ``authorize``, the product's own sign-in decides: settings-ui calls
it for every request and adds nothing of its own. Otherwise settings-ui has its own admin
account: with one configured (``ADMIN_USERNAME`` and ``ADMIN_PASSWORD_HASH``) the page needs a
login and the API HTTP Basic credentials or the logged-in session; without one, only clients
on this machine (loopback) are served: the local, single-user default.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.exceptions import Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired

from .. import audit, sign_in
from ..audit import Actor
from ..rules import is_loopback
from ..sign_in import Credentials, LoginThrottle, admin_configured
from .envelope import in_api

bp = Blueprint("auth", __name__)
_SESSION_KEY = "admin_session"

Authorize = Callable[[], "bool | ResponseReturnValue"]
"""The product's sign-in: True allows the request, False refuses it, a response is sent as is."""

# Endpoints anyone allowed to reach the server may use without signing in.
PUBLIC_ENDPOINTS = {"settings_ui.auth.login", "settings_ui.static", "settings_ui.openapi.openapi_json"}
# Endpoints every client may use, even in loopback-only mode: load balancers probe from afar.
OPEN_ENDPOINTS = {"settings_ui.health.healthz"}
# Endpoints outside the API that, like it, take HTTP Basic credentials: a scraper has no session.
BASIC_ENDPOINTS = {"settings_ui.metrics.metrics"}


@dataclass
class Admin(UserMixin):
    username: str

    def get_id(self) -> str:
        return self.username


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="is required")])
    password = PasswordField("Password", validators=[InputRequired(message="is required")])
    next = HiddenField()


def _state() -> dict[str, Any]:
    state: dict[str, Any] = current_app.extensions["settings_ui.auth"]
    return state


def actor() -> Actor:
    """Who is making the current request, as the audit trail names them."""
    return g.get("actor") or Actor("local", request.remote_addr or "")


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the settings page.

    An absolute or scheme-relative URL would make the login an open redirect, and
    browsers read a backslash as a slash, so "/\\host" would leave the site too.
    """
    if target is None:
        return url_for("settings_ui.pages.settings_page")
    on_site = target.startswith("/") and not target.startswith("//") and "\\" not in target
    if on_site and not urlsplit(target).netloc:
        return target
    return url_for("settings_ui.pages.settings_page")


def guard() -> ResponseReturnValue | None:
    """Runs before every request to settings-ui: the product's ``authorize``, or settings-ui's own rules."""
    address = request.remote_addr or ""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    authorize: Authorize | None = _state()["authorize"]
    if authorize is not None:
        return _ask_the_product(authorize, address)
    if not admin_configured():
        _say_once_that_only_loopback_is_served()
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
    if _takes_basic():
        if g.get("basic_refused"):
            raise Unauthorized("The credentials are wrong.")
        raise Unauthorized("Credentials are missing: send HTTP Basic credentials of the admin account.")
    return redirect(url_for("settings_ui.auth.login", next=request.full_path.rstrip("?")))


def _say_once_that_only_loopback_is_served() -> None:
    # Said when the app serves its first request, whatever serves it (python app.py, flask run,
    # gunicorn): never by the command line, sendmail or a product's start-up, where it is only noise.
    state = _state()
    if state["loopback_only_said"]:
        return
    state["loopback_only_said"] = True
    current_app.logger.warning(
        "No admin account is configured: only clients on this machine (loopback) are served, "
        "under the names localhost, 127.0.0.1 and [::1]; any other client gets 403, whatever address "
        "the server listens on. Set ADMIN_USERNAME and ADMIN_PASSWORD_HASH (see `flask --app app "
        "hash-password`) to serve the network."
    )


def _ask_the_product(authorize: Authorize, address: str) -> ResponseReturnValue | None:
    verdict: bool | ResponseReturnValue = authorize()
    if verdict is True:
        g.actor = Actor(_product_user(), address)
        return None
    if verdict is False or verdict is None:
        raise Forbidden("You are not allowed to see or change the email settings.")
    return verdict  # the product's own answer, such as a redirect to its sign-in


def _product_user() -> str:
    """The signed-in user as the product's Flask-Login knows them, for the audit trail."""
    if getattr(current_app, "login_manager", None) is not None and current_user.is_authenticated:
        return str(current_user.get_id())
    return "product user"


def _takes_basic() -> bool:
    return in_api() or request.endpoint in BASIC_ENDPOINTS


def _load_from_basic(_request: Any) -> Admin | None:
    """Flask-Login's request loader: the admin, from HTTP Basic credentials on the API and metrics."""
    credentials = request.authorization
    if not _takes_basic() or credentials is None or credentials.type != "basic":
        return None
    username, password = credentials.username or "", credentials.password or ""
    if _sign_in_accepted(username, password, request.remote_addr or "", "API sign-in failed"):
        return Admin(username)
    g.basic_refused = True
    return None


def _sign_in_accepted(username: str, password: str, address: str, failure: str) -> bool:
    """Check one sign-in attempt from ``address``; record a failure as ``failure``.

    Raises 429 while ``address`` must wait after failed sign-ins: then nothing is checked.
    """
    throttle: LoginThrottle = _state()["throttle"]
    credentials: Credentials = _state()["credentials"]
    # A pair verified before has no password left to guess: nothing to check, nothing to count.
    if credentials.remembered(username, password):
        return True
    if not throttle.begin_check(address, lambda: credentials.remembered(username, password)):
        return True  # verified by another attempt while this one waited
    if not credentials.checking.acquire(timeout=sign_in.CHECK_PATIENCE):  # a few hashes at once per process
        throttle.abandon_check(address)
        raise ServiceUnavailable(
            "Too many sign-ins are being checked right now; try again in a few seconds.", retry_after=5
        )
    try:
        accepted = credentials.check(username, password)
    except BaseException:
        throttle.end_check(address, accepted=False)
        raise
    finally:
        credentials.checking.release()
    throttle.end_check(address, accepted)
    if accepted:
        return True
    audit.record(failure, Actor(_named_user(username), address))
    return False


def _named_user(attempted: str) -> str:
    # An attempted user name may be a password typed in the wrong box: record it only if it is the admin's.
    admin = str(current_app.config["ADMIN_USERNAME"])
    return attempted if hmac.compare_digest(attempted.encode(), admin.encode()) else "(unknown user)"


def _load_user(user_id: str) -> Admin | None:
    """The admin, while this browser's admin session is live (see :mod:`settings_ui.sign_in`)."""
    expected = str(current_app.config.get("ADMIN_USERNAME") or "")
    token = session.get(_SESSION_KEY)
    if not admin_configured() or not isinstance(token, str):
        return None
    if not hmac.compare_digest(user_id.encode(), expected.encode()):
        return None
    return Admin(expected) if sign_in.admin_session_is_live(token) else None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    if not admin_configured() or current_user.is_authenticated:
        return redirect(_safe_next(request.values.get("next")))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
        return render_template("settings_ui/login.html", form=form)
    address = request.remote_addr or ""
    if not form.validate():
        return render_template("settings_ui/login.html", form=form), 400
    try:
        accepted = _sign_in_accepted(form.username.data or "", form.password.data or "", address, "sign-in failed")
    except TooManyRequests as throttled:
        return render_template("settings_ui/login.html", form=form, problem=throttled.description), 429
    if not accepted:
        problem = "The username or password is wrong."
        return render_template("settings_ui/login.html", form=form, problem=problem), 401
    target = _safe_next(form.next.data)
    session.clear()  # a fresh session (and CSRF token) for the signed-in admin
    session[_SESSION_KEY] = sign_in.open_admin_session()
    login_user(Admin(str(current_app.config["ADMIN_USERNAME"])))
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a request
    audit.record("signed in", Actor(current_user.username, address))
    return redirect(target, 303)


@bp.post("/logout")
def logout() -> Response:
    if current_user.is_authenticated:
        audit.record("signed out", actor())
    token = session.pop(_SESSION_KEY, None)
    if isinstance(token, str):
        sign_in.close_admin_session(token)
    logout_user()
    session.clear()
    if admin_configured():
        return redirect(url_for("settings_ui.auth.login"), 303)
    return redirect(url_for("settings_ui.pages.settings_page"), 303)


def init_app(app: Flask, authorize: Authorize | None) -> None:
    app.extensions["settings_ui.auth"] = {
        "authorize": authorize,
        "throttle": LoginThrottle(
            base_seconds=float(app.config["LOGIN_THROTTLE_SECONDS"]),
            failing_addresses_per_minute=int(app.config["LOGIN_FAILING_ADDRESSES_PER_MINUTE"]),
        ),
        "credentials": Credentials(),
        "loopback_only_said": False,
    }
    if authorize is not None:
        return  # the product's sign-in, its Flask-Login if it has one, stay as they are
    if getattr(app, "login_manager", None) is not None:
        raise RuntimeError(
            "This app has a Flask-Login LoginManager of its own: mount settings-ui with "
            "EmailSettings(app, authorize=...) so that the app's sign-in decides who may use it."
        )
    login_manager = LoginManager()
    login_manager.user_loader(_load_user)
    login_manager.request_loader(_load_from_basic)
    login_manager.init_app(app)
