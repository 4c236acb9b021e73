"""The JSON API under /email-settings/: the published envelope, nothing else.

Every response, success or failure, is ``{"result"|"error": ..., "successful": ...}``;
the error handlers here make sure no HTML page or traceback ever answers an API call.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import service
from .auth import actor
from .service import Settings, SettingsError

API_PREFIX = "/email-settings"

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)

_HTTP_MESSAGES = {
    400: "The request is malformed.",
    405: "API calls use POST with a JSON body.",
}


def _envelope(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def error_response(status: int, message: str, **extra: Any) -> Response:
    """The one place the API's error envelope is built."""
    return _envelope({"error": {"message": message, **extra}, "successful": False}, status)


def success_response(result: Any, settings: Settings | None = None) -> Response:
    response = _envelope({"result": result, "successful": True})
    if settings is not None:
        response.set_etag(settings.etag)
    return response


@bp.errorhandler(SettingsError)
def _settings_error(error: SettingsError) -> Response:
    extra: dict[str, Any] = {"fields": error.fields} if error.fields else {}
    extra.update(error.details)
    response = error_response(error.status, error.message, **extra)
    current = getattr(error, "current", None)
    if current is not None:
        response.set_etag(current.etag)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


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


bp.register_error_handler(HTTPException, http_error)


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    current_app.logger.exception("Unexpected error in %s %s", request.method, request.path)
    return error_response(500, "An unexpected error occurred on the server; it has been logged.")


class _RequestProblem(HTTPException):
    code = 400


def _reject(message: str) -> _RequestProblem:
    return _RequestProblem(description=message)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _reject(f"The JSON body has the key {key!r} twice.")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _reject(f"The JSON body contains {name}, which is not valid JSON.")


def read_params() -> dict[str, Any]:
    """Return the ``params`` object of the request body, or raise a 400 that says what is wrong."""
    if request.mimetype != "application/json":
        raise _reject(
            "The request body must be JSON sent with Content-Type: application/json "
            f"(got {request.mimetype or 'no content type'})."
        )
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except RecursionError:
        raise _reject("The JSON body is nested too deeply.") from None
    except ValueError as problem:
        raise _reject(f"The request body is not valid JSON: {problem}.") from None
    if not isinstance(body, dict):
        raise _reject('The JSON body must be an object: {"params": {...}}.')
    unknown = sorted(set(body) - {"params"})
    if unknown:
        raise _reject(f'Unknown key {unknown[0]!r} in the body; it must be {{"params": {{...}}}}.')
    if "params" not in body:
        raise _reject('The JSON body must have "params": an object, {} when there are none.')
    params = body["params"]
    if not isinstance(params, dict):
        raise _reject('"params" must be a JSON object.')
    return params


def expected_versions() -> set[int] | None:
    """The versions an ``If-Match`` header accepts; None when there is no condition."""
    if "If-Match" not in request.headers:
        return None
    tags = request.if_match
    if tags.star_tag:
        return None
    # A malformed or foreign tag matches no version, so the write is refused (412).
    return {service.parse_version(tag) for tag in tags.as_set()} - {None}


def _no_params() -> None:
    service.reject_unknown(read_params(), ())


@bp.post("/show")
def show() -> Response:
    _no_params()
    settings = service.show()
    return success_response(settings.public(), settings)


@bp.post("/edit")
def edit() -> Response:
    params = read_params()
    settings = service.edit(params, expected_versions=expected_versions(), actor=actor())
    return success_response(settings.public(), settings)


@bp.post("/clear")
def clear() -> Response:
    _no_params()
    settings = service.clear(expected_versions=expected_versions(), actor=actor())
    return success_response(settings.public(), settings)


@bp.post("/test")
def test() -> Response:
    report = service.send_test_email(read_params(), actor=actor())
    return success_response({"sent": True, "steps": report.step_dicts(), "elapsed_ms": report.elapsed_ms})
