"""The JSON API under /email-settings/: the published envelope, nothing else.

Every response, success or failure, is ``{"result"|"error": ..., "successful": ...}``;
the error handlers here (and the app's, for the API's paths) make sure no HTML page or
traceback ever answers an API call.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from .. import database, deliveries, detection, fields, operations, outbox, testmail
from ..errors import SettingsError
from ..operations import BusySettingsError, StaleSettingsError
from ..params import reject_unknown
from ..shapes import to_json
from ..targets import TooManyTestsError
from .auth import actor
from .envelope import API_PREFIX, api_calls, error_response, success_response

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)

# The domain's refusals, as HTTP statuses; anything else the operations refuse is 400.
_STATUSES: tuple[tuple[type[SettingsError], int], ...] = (
    (StaleSettingsError, 412),
    (outbox.OutboxError, 404),
    (BusySettingsError, 409),
    (TooManyTestsError, 429),
)


# A secret refused only because it was not given again: how to give it in a request.
_REMEDIES = {name: 'give it, or "" to store none' for name in fields.SECRETS}


@bp.errorhandler(SettingsError)
def _settings_error(error: SettingsError) -> Response:
    status = next((code for kind, code in _STATUSES if isinstance(error, kind)), 400)
    if isinstance(error, outbox.OutboxError) and error.busy:
        status = 409
    worded = error.with_remedies(_REMEDIES)
    extra: dict[str, Any] = {"fields": worded.fields} if worded.fields else {}
    response = error_response(status, worded.message, **extra)
    if isinstance(error, StaleSettingsError):
        response.set_etag(error.current.etag)
    if isinstance(error, TooManyTestsError):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


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
    return {version for tag in tags.as_set() if (version := operations.parse_version(tag)) is not None}


def _no_params() -> None:
    reject_unknown(read_params(), ())


@bp.post("/show")
def show() -> Response:
    _no_params()
    settings = operations.show()
    return success_response(settings.public(), settings.etag)


@bp.post("/edit")
def edit() -> Response:
    params = read_params()
    settings = operations.edit(params, expected_versions=expected_versions(), actor=actor())
    return success_response(settings.public(), settings.etag)


@bp.post("/clear")
def clear() -> Response:
    _no_params()
    settings = operations.clear(expected_versions=expected_versions(), actor=actor())
    return success_response(settings.public(), settings.etag)


@bp.post("/test")
def test() -> Response:
    report = testmail.run_test(read_params(), actor=actor())
    if not report.checked:
        return error_response(400, report.message, steps=report.step_dicts(), elapsed_ms=report.elapsed_ms)
    return success_response(to_json(testmail.EmailTestResult.of(report)))


@bp.post("/detect")
def detect() -> Response:
    return success_response(to_json(detection.detect(read_params(), actor=actor())))


@bp.post("/status")
def status() -> Response:
    _no_params()
    with database.engine().connect() as connection:
        return success_response(to_json(deliveries.status(connection)))


@bp.post("/outbox")
def outbox_messages() -> Response:
    _no_params()
    return success_response(to_json(outbox.listing()))


@bp.post("/outbox/retry")
def outbox_retry() -> Response:
    return success_response(to_json(outbox.retry(outbox.parse_id(read_params()))))


@bp.post("/outbox/drop")
def outbox_drop() -> Response:
    return success_response(to_json(outbox.drop(outbox.parse_id(read_params()), actor())))


# Any other path or method under the API's prefix is answered here, so that it too gets the
# envelope: the app's own 404 and 405 pages (a product's, when mounted) are not the API's.
_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/", defaults={"name": ""}, methods=_EVERY_METHOD, strict_slashes=False)
@bp.route("/<path:name>", methods=_EVERY_METHOD)
def no_such_call(name: str) -> NoReturn:
    if request.path in api_calls():
        raise MethodNotAllowed(valid_methods=["POST"])
    raise NotFound()
