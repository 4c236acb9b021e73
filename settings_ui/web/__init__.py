"""The web surfaces: the page, the JSON API, /metrics and the static files, in one blueprint
(``settings_ui``) that an app mounts under any prefix, with what guards them.

Its hooks run in order for its requests only, never for the rest of a product's app: the
clock of the metrics, which requests are served at all (headers), who may make them (auth),
then CSRF for the page's forms. Its one error handler answers in the API's envelope under the
API and with a page elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, current_app, g, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound
from wtforms import ValidationError

from . import api, auth, headers, health, metrics, openapi, pages
from .auth import Authorize
from .envelope import API_PREFIX, http_error, in_api

_CSRF_MESSAGE = (
    "The page was open too long or was sent from elsewhere, so it was not accepted "
    "and nothing was changed. Go back to the settings, reload them, and try again."
)
_PACKAGE = Path(__file__).resolve().parent.parent

bp = Blueprint(
    "settings_ui",
    __name__,
    root_path=str(_PACKAGE),
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
for _child in (auth.bp, pages.bp, api.bp, openapi.bp, health.bp, metrics.bp):
    bp.register_blueprint(_child)


def init_app(app: Flask, *, url_prefix: str, authorize: Authorize | None) -> None:
    metrics.init_app(app)
    headers.init_app(app, checks_hosts=authorize is None)
    auth.init_app(app, authorize)
    app.extensions["settings_ui.api_path"] = url_prefix + API_PREFIX
    app.register_blueprint(bp, url_prefix=url_prefix or None)
    # A product's CSRFProtect would refuse every API call (a JSON content type and the sign-in
    # protect the API instead): exempted now if it was set up first, else by a hook that runs
    # before the one a CSRFProtect set up later adds.
    _exempt_the_api(app)
    app.before_request(_exempt_the_api_from_later_csrf)


def _exempt_the_api(app: Flask) -> None:
    product_csrf = app.extensions.get("csrf")
    if product_csrf is not None:
        product_csrf.exempt(api.bp)


def _exempt_the_api_from_later_csrf() -> None:
    if in_api():
        _exempt_the_api(current_app)


def _check_csrf() -> None:
    """The page's forms carry Flask-WTF's CSRF token, checked here whether or not the app
    protects its own forms with ``CSRFProtect`` (which then has checked it already)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or in_api() or g.get("csrf_valid"):
        return
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    try:
        validate_csrf(request.form.get("csrf_token") or request.headers.get("X-CSRFToken"))
    except ValidationError as problem:
        raise CSRFError(problem.args[0]) from None
    g.csrf_valid = True


def problem_page(error: HTTPException) -> ResponseReturnValue:
    """``error`` as a page (the API's paths answer in its envelope instead)."""
    title, message = error.name, error.description
    if isinstance(error, CSRFError):  # only the page's forms carry CSRF tokens
        title, message = "This form has expired", _CSRF_MESSAGE
    response = error.get_response()
    response.set_data(render_template("settings_ui/problem.html", title=title, message=message))
    return response


def _error(error: Exception) -> ResponseReturnValue:
    """Every error no view handled: in the API's envelope under its paths, else a page."""
    if not isinstance(error, HTTPException):
        current_app.logger.exception("Unexpected error in %s %s", request.method, request.path)
        error = InternalServerError("An unexpected error occurred on the server; it has been logged.")
    if in_api():
        return http_error(error)
    return problem_page(error)


@bp.context_processor
def _page_context() -> dict[str, object]:
    # Flask-WTF gives templates csrf_token() only where the app has CSRFProtect.
    own_sign_in = current_app.extensions["settings_ui.auth"]["authorize"] is None
    return {"csrf_token": generate_csrf, "own_sign_in": own_sign_in}


@bp.before_app_request
def _routing_errors_of_the_api_in_its_envelope() -> ResponseReturnValue | None:
    """A method no route takes ("ZQX /email-settings/edit") fails in routing, before any blueprint is
    known: under the API's paths it still gets the envelope, not the app's own error page."""
    problem = request.routing_exception
    if not isinstance(problem, MethodNotAllowed | NotFound):
        return None
    api_path = current_app.extensions["settings_ui.api_path"]
    if request.path != api_path and not request.path.startswith(api_path + "/"):
        return None
    return http_error(problem)


bp.before_request(metrics.start)
bp.before_request(headers.refuse_untrusted_requests)
bp.before_request(auth.guard)
bp.before_request(_check_csrf)
bp.after_request(headers.add_headers)
bp.after_request(metrics.count)
bp.register_error_handler(Exception, _error)
