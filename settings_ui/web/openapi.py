"""The OpenAPI 3.1 description of the JSON API, built from the same rules the API enforces."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify, url_for

from .. import fields, outbox, rules, shapes
from ..deliveries import Status
from ..smtp.detect import DEFAULT_PORTS, MAX_PORTS, Detection
from ..testmail import EmailTestResult

bp = Blueprint("openapi", __name__)


def _envelope(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["result", "successful"],
        "additionalProperties": False,
        "properties": {"result": result, "successful": {"const": True}},
    }


def _error(description: str, extra_headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if extra_headers:
        response["headers"] = extra_headers
    return response


def _request(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["params"],
                    "additionalProperties": False,
                    "properties": {"params": params},
                }
            }
        },
    }


_ETAG = {"ETag": {"description": "version of the stored settings, for If-Match", "schema": {"type": "string"}}}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "an ETag from show: the call is refused (412) if the settings changed since",
    "schema": {"type": "string"},
}


def _responses(success: dict[str, Any], *, conditional: bool = False) -> dict[str, Any]:
    responses = {
        "200": success,
        "400": _error("the request is malformed or a parameter is invalid; nothing was stored"),
        "401": _error(
            "credentials are missing or wrong (only when an admin account is configured)",
            {"WWW-Authenticate": {"schema": {"type": "string"}}},
        ),
        "403": _error("no admin account is configured and the client is not on this machine"),
        "405": _error("not POST"),
        "413": _error("the request body is too large"),
        "429": _error(
            "too many failed sign-ins from this address (or from too many addresses in the last minute), or "
            "(test, detect) too many test emails and detections running at once",
            {"Retry-After": {"schema": {"type": "string"}}},
        ),
        "500": _error("unexpected server error (details in the server log, never in the response)"),
        "503": _error(
            "too many sign-ins are being checked at once in this process; try again",
            {"Retry-After": {"schema": {"type": "string"}}},
        ),
    }
    if conditional:
        responses["409"] = _error("too many concurrent writers; nothing was stored, try again")
        responses["412"] = _error("If-Match names a version that is no longer current; nothing was stored", _ETAG)
    return responses


def _settings_success(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _ETAG,
        "content": {
            "application/json": {"schema": _envelope({"$ref": "#/components/schemas/EmailSettings"})},
        },
    }


def _result(description: str, shape: type) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _envelope(_ref(shape))}}}


def _ref(shape: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{shape.__name__}"}


def _operation(name: str, summary: str, params: dict[str, Any] | None, responses: dict[str, Any]) -> dict[str, Any]:
    """One API call: ``POST /email-settings/<name>``, its ``params`` (None: it takes none) and answers."""
    operation: dict[str, Any] = {
        "operationId": name,
        "summary": summary,
        "requestBody": _request(params if params is not None else {"type": "object", "maxProperties": 0}),
        "responses": responses,
    }
    if "412" in responses:
        operation["parameters"] = [_IF_MATCH]
    return {f"/email-settings/{name}": {"post": operation}}


_TEST_PARAMS = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {"type": "string", "minLength": 3, "pattern": fields.NO_CONTROL, "description": "one recipient address"},
        "settings": {"$ref": "#/components/schemas/EditParams"},
        "dry_run": {
            "type": "boolean",
            "default": False,
            "description": "stop after RCPT TO (then RSET and QUIT): check the server, the sign-in, the "
            "sender and the recipient without delivering anything",
        },
    },
}

_DETECT_PARAMS = {
    "type": "object",
    "required": ["smtp_host"],
    "additionalProperties": False,
    "properties": {
        "smtp_host": fields.BY_NAME["smtp_host"].json_schema(),
        "username": {
            **fields.BY_NAME["username"].json_schema(),
            "description": "who will sign in: Plain is then never recommended",
        },
        "password": {
            **fields.BY_NAME["password"].json_schema(),
            "description": "tried once, on the best candidate only, and only once its certificate was "
            "verified; without it, the stored password is used for the stored host and username, toward the "
            "stored port and encryption only",
        },
        "ports": {
            "type": "array",
            "items": {"type": "integer", "minimum": rules.PORT_MIN, "maximum": rules.PORT_MAX},
            "minItems": 1,
            "maxItems": MAX_PORTS,
            "uniqueItems": True,
            "default": list(DEFAULT_PORTS),
        },
    },
}

_OUTBOX_ID = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"id": {"type": "integer", "minimum": 1, "description": "a queued message's id (none: all)"}},
}

_ERROR_RESPONSE = {
    "type": "object",
    "required": ["error", "successful"],
    "additionalProperties": False,
    "properties": {
        "successful": {"const": False},
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                "elapsed_ms": {"type": "integer", "minimum": 0},
            },
        },
    },
}


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once: it depends on code only)."""
    test_responses = _responses(
        _result("the server accepted the test message (or, for a dry run, its sender and recipient)", EmailTestResult)
    )
    test_responses["400"] = _error(
        "invalid input, or the test email was not sent: error.steps lists the steps that ran"
    )
    paths = (
        _operation("show", "Show the stored email settings", None, _responses(_settings_success("the stored settings")))
        | _operation(
            "edit",
            "Edit global email settings (omitted parameters keep their value)",
            {"$ref": "#/components/schemas/EditParams"},
            _responses(_settings_success("the settings as stored"), conditional=True),
        )
        | _operation(
            "clear",
            "Remove all email settings, the password included",
            None,
            _responses(_settings_success("the unconfigured state"), conditional=True),
        )
        | _operation(
            "test", "Send one real test email through the stored settings or a draft", _TEST_PARAMS, test_responses
        )
        | _operation(
            "status",
            "Whether mail is flowing: the last success and failure, the last 24 hours",
            None,
            _responses(_result("the figures of the page's Mail delivery panel", Status)),
        )
        | _operation(
            "outbox",
            "The outbox: the product's mail waiting to be tried again (never its addresses or subject)",
            None,
            _responses(_result("the queued messages, the oldest first", outbox.Listing)),
        )
        | _operation(
            "outbox/retry",
            "Try queued mail now: one message, or every one",
            _OUTBOX_ID,
            _responses(_result("what each attempt came to", outbox.Attempts)),
        )
        | _operation(
            "outbox/drop",
            "Remove one queued message unsent",
            {**_OUTBOX_ID, "required": ["id"]},
            _responses(_result("the message was removed", outbox.Dropped))
            | {
                "404": _error("there is no such message in the outbox"),
                "409": _error("the message is being delivered right now"),
            },
        )
        | _operation(
            "detect",
            "Probe a host's ports with TLS, StartTLS and Plain and recommend the settings to use",
            _DETECT_PARAMS,
            _responses(_result("what the host offers (nothing stored, no mail sent)", Detection)),
        )
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "settings-ui email settings API",
            "version": "1.0.0",
            "description": "Global email settings: which SMTP server the product sends its mail through. "
            'Every call is POST with a JSON body {"params": {...}}; every answer is the envelope '
            '{"result": ..., "successful": true} or {"error": {"message": ...}, "successful": false}. '
            "The password is write-only.",
        },
        "servers": [{"url": "/"}],
        "security": [{"basicAuth": []}, {"sessionCookie": []}, {}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "settings_ui_session"},
            },
            "schemas": {
                "EmailSettings": {
                    "type": "object",
                    "required": list(fields.PUBLIC),
                    "additionalProperties": False,
                    "properties": {
                        field.name: field.stored_schema() for field in fields.FIELDS if not field.write_only
                    },
                },
                "EditParams": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {field.name: field.json_schema() for field in fields.FIELDS},
                },
                "ErrorResponse": _ERROR_RESPONSE,
                **shapes.components(
                    EmailTestResult, Detection, Status, outbox.Listing, outbox.Attempts, outbox.Dropped
                ),
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    # The API's paths are relative to where the app mounted settings-ui.
    return jsonify({**document(), "servers": [{"url": url_for("settings_ui.pages.settings_page")}]})
