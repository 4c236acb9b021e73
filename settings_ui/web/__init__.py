"""The web surfaces: the JSON API and the page, with what guards them.

``init_app`` puts them on the app in order: which requests are served at all (headers),
who may make them (auth), CSRF for the page's forms, then the blueprints and the app's one
error handler.
"""

from __future__ import annotations

from flask import Flask, current_app, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, InternalServerError

from . import api, auth, headers, health, metrics, openapi, pages
from .envelope import http_error, is_api_path

_CSRF_MESSAGE = (
    "The page was open too long or was sent from elsewhere, so it was not accepted "
    "and nothing was changed. Go back to the settings, reload them, and try again."
)


def init_app(app: Flask) -> None:
    metrics.init_app(app)  # first: its clock starts before anything else runs
    headers.init_app(app)  # first: a request for another host name or from another site runs nothing
    auth.init_app(app)  # before CSRF, so an unauthorised client learns nothing else first
    csrf = CSRFProtect(app)
    for blueprint in (pages.bp, api.bp, openapi.bp, health.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(api.bp)  # JSON-only content type and credentials protect the API instead
    app.register_error_handler(Exception, _error)


def _error(error: Exception) -> ResponseReturnValue:
    """Every error no view handled: in the API's envelope under its paths, else a page."""
    if not isinstance(error, HTTPException):
        current_app.logger.exception("Unexpected error in %s %s", request.method, request.path)
        error = InternalServerError("An unexpected error occurred on the server; it has been logged.")
    if is_api_path(request.path):
        return http_error(error)
    title, message = error.name, error.description
    if isinstance(error, CSRFError):  # only the page's forms carry CSRF tokens
        title, message = "This form has expired", _CSRF_MESSAGE
    response = error.get_response()
    response.set_data(render_template("settings_ui/problem.html", title=title, message=message))
    return response
