"""The JSON API's envelope: ``{"result": ..., "successful": true}`` or
``{"error": {"message": ...}, "successful": false}``, built here and nowhere else."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

API_PREFIX = "/email-settings"

_HTTP_MESSAGES = {
    400: "The request is malformed.",
    405: "API calls use POST with a JSON body.",
}


API_BLUEPRINT = "settings_ui.api"


def in_api() -> bool:
    """Whether the current request is one to the API (whose answers are all in the envelope)."""
    return API_BLUEPRINT in request.blueprints


def api_calls() -> list[str]:
    """The API's calls, as paths (under the prefix settings-ui is mounted at)."""
    rules = current_app.url_map.iter_rules()
    return sorted(rule.rule for rule in rules if rule.endpoint.startswith(API_BLUEPRINT + ".") and not rule.arguments)


def success_response(result: Any, etag: str | None = None) -> Response:
    response = _envelope({"result": result, "successful": True})
    if etag is not None:
        response.set_etag(etag)
    return response


def error_response(status: int, message: str, **extra: Any) -> Response:
    """The one place the API's error envelope is built."""
    return _envelope({"error": {"message": message, **extra}, "successful": False}, status)


def _envelope(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def http_error(error: HTTPException) -> Response:
    """An HTTP error (401, 404, 405, 413, ...) in the envelope, for the API's paths."""
    status = error.code or 500
    if error.description != type(error).description:  # a message written for this case
        message = str(error.description)
    elif status == 413:
        message = f"The request body is larger than the limit of {current_app.config['MAX_CONTENT_LENGTH']} bytes."
    elif status == 404:
        message = f"There is no such API call. The calls are: {', '.join(api_calls())}."
    else:
        message = _HTTP_MESSAGES.get(status, error.name)
    response = error_response(status, message)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="settings-ui", charset="UTF-8"'
    return response
