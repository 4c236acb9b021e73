"""The JSON API's envelope: ``{"result": ..., "successful": true}`` or
``{"error": {"message": ...}, "successful": false}``, built here and nowhere else."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

API_PREFIX = "/email-settings"

_HTTP_MESSAGES = {
    400: "The request is malformed.",
    405: "API calls use POST with a JSON body.",
}


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


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
        calls = sorted(rule.rule for rule in current_app.url_map.iter_rules() if rule.endpoint.startswith("api."))
        message = f"There is no such API call. The calls are: {', '.join(calls)}."
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
