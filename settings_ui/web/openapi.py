"""The OpenAPI 3.1 description of the JSON API, built from the same rules the API enforces."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify, url_for

from .. import fields, rules
from ..deliveries import SURFACES
from ..smtp.detect import DEFAULT_PORTS, MAX_PORTS

bp = Blueprint("openapi", __name__)

_JSON_TYPES = {bool: "boolean", int: "integer", str: "string"}
_NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"  # no control character (rules.check_no_control_characters)


def _parameter_schema(field: fields.Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[field.type], "description": field.description}
    if field.choices:
        schema["enum"] = list(field.choices)
    elif field.type is str:
        schema["pattern"] = _NO_CONTROL
    if field.minimum is not None:
        schema.update(minimum=field.minimum, maximum=field.maximum)
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    return schema


def _stored_schema(field: fields.Field) -> dict[str, Any]:
    """A stored value: as a parameter, or the unconfigured default (an empty host, port 0)."""
    schema = _parameter_schema(field)
    if field.minimum is not None:
        schema["minimum"] = min(field.minimum, field.default)
    return schema


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
            "too many failed sign-ins from this address, or (test, detect) too many test emails and detections "
            "running at once",
            {"Retry-After": {"schema": {"type": "string"}}},
        ),
        "500": _error("unexpected server error (details in the server log, never in the response)"),
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


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once: it depends on code only)."""
    public = list(fields.PUBLIC)
    no_params = _request({"type": "object", "maxProperties": 0})
    edit_params = {
        "type": "object",
        "additionalProperties": False,
        "properties": {field.name: _parameter_schema(field) for field in fields.FIELDS},
    }
    test_params = {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {
            "to": {"type": "string", "minLength": 3, "pattern": _NO_CONTROL, "description": "one recipient address"},
            "settings": {"$ref": "#/components/schemas/EditParams"},
            "dry_run": {
                "type": "boolean",
                "default": False,
                "description": "stop after RCPT TO (then RSET and QUIT): check the server, the sign-in, the "
                "sender and the recipient without delivering anything",
            },
        },
    }
    step = {
        "type": "object",
        "required": ["name", "ok", "ms", "detail"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "enum": [
                    "resolve",
                    "connect",
                    "tls",
                    "ehlo",
                    "starttls",
                    "token",
                    "auth",
                    "mail_from",
                    "rcpt_to",
                    "data",
                ]
            },
            "ok": {"type": "boolean"},
            "ms": {"type": "integer", "minimum": 0},
            "detail": {"type": "string"},
        },
    }
    test_result = {
        "type": "object",
        "required": ["sent", "checked", "message", "steps", "elapsed_ms", "warnings"],
        "additionalProperties": False,
        "properties": {
            "sent": {"type": "boolean", "description": "the server accepted the message (false for a dry run)"},
            "checked": {"const": True, "description": "the server accepted the sender and the recipient"},
            "message": {"type": "string"},
            "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
            "elapsed_ms": {"type": "integer", "minimum": 0},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "sent, but worth fixing: the password crossed the network unencrypted, "
                "the certificate was not checked, or it expires within 21 days",
            },
        },
    }
    test_responses = _responses(
        {
            "description": "the server accepted the test message (or, for a dry run, its sender and recipient)",
            "content": {"application/json": {"schema": _envelope(test_result)}},
        }
    )
    test_responses["400"] = _error(
        "invalid input, or the test email was not sent: error.steps lists the steps that ran"
    )
    detect_params = {
        "type": "object",
        "required": ["smtp_host"],
        "additionalProperties": False,
        "properties": {
            "smtp_host": _parameter_schema(fields.BY_NAME["smtp_host"]),
            "username": {
                **_parameter_schema(fields.BY_NAME["username"]),
                "description": "who will sign in: Plain is then never recommended",
            },
            "password": {
                **_parameter_schema(fields.BY_NAME["password"]),
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
    candidate = {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "smtp_port",
            "encryption",
            "ok",
            "connected",
            "greeted",
            "tls",
            "certificate",
            "capabilities",
            "auth",
            "detail",
        ],
        "properties": {
            "smtp_port": {"type": "integer"},
            "encryption": {"enum": list(rules.ENCRYPTIONS)},
            "ok": {"type": "boolean", "description": "the server answered this way up to EHLO (after TLS, if any)"},
            "connected": {"type": "boolean"},
            "greeted": {"type": "boolean"},
            "tls": {"type": "boolean", "description": "a TLS session was negotiated"},
            "certificate": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["verified", "problem", "details", "sha256"],
                        "properties": {
                            "verified": {"type": "boolean"},
                            "problem": {"type": "string", "description": "why it was not verified"},
                            "details": {"type": "array", "items": {"type": "string"}},
                            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        },
                    },
                ]
            },
            "capabilities": {
                "type": "array",
                "items": {"type": "string"},
                "description": "EHLO keywords with their parameters (SIZE 10240000, AUTH PLAIN LOGIN, ...)",
            },
            "auth": {"enum": ["ok", "failed", "not tried"]},
            "detail": {"type": "string"},
        },
    }
    detect_result = {
        "type": "object",
        "additionalProperties": False,
        "required": ["recommended", "candidates", "elapsed_ms", "message"],
        "properties": {
            "recommended": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["smtp_host", "smtp_port", "encryption", "allow_selfsigned_certs"],
                        "properties": {
                            name: _stored_schema(fields.BY_NAME[name])
                            for name in ("smtp_host", "smtp_port", "encryption", "allow_selfsigned_certs", "username")
                        },
                    },
                ],
                "description": "edit parameters (never a password): verified TLS before verified StartTLS before "
                "unverified encryption; never Plain where the server offers encryption or with a username",
            },
            "candidates": {"type": "array", "items": {"$ref": "#/components/schemas/Candidate"}},
            "elapsed_ms": {"type": "integer", "minimum": 0},
            "message": {"type": "string", "description": "what to use, and why"},
        },
    }
    detect_responses = _responses(
        {
            "description": "what the host offers (nothing stored, no mail sent)",
            "content": {"application/json": {"schema": _envelope(detect_result)}},
        }
    )
    delivery = {
        "oneOf": [
            {"type": "null"},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["at", "surface", "server", "failed_step", "cause", "fix"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "surface": {"enum": list(SURFACES)},
                    "server": {"type": "string"},
                    "failed_step": {"type": ["string", "null"]},
                    "cause": {"type": "string", "description": "the diagnosis (recipients' addresses left out)"},
                    "fix": {"type": "string"},
                },
            },
        ]
    }
    status_result = {
        "type": "object",
        "additionalProperties": False,
        "required": ["last_success", "last_failure", "sent_24h", "failed_24h", "failing_since"],
        "properties": {
            "last_success": delivery,
            "last_failure": delivery,
            "sent_24h": {"type": "integer", "minimum": 0},
            "failed_24h": {"type": "integer", "minimum": 0},
            "failing_since": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "set while the last real delivery (not a test) failed after the last success: "
                "when that run of failures began",
            },
        },
    }
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
        "paths": {
            "/email-settings/show": {
                "post": {
                    "operationId": "show",
                    "summary": "Show the stored email settings",
                    "requestBody": no_params,
                    "responses": _responses(_settings_success("the stored settings")),
                }
            },
            "/email-settings/edit": {
                "post": {
                    "operationId": "edit",
                    "summary": "Edit global email settings (omitted parameters keep their value)",
                    "parameters": [_IF_MATCH],
                    "requestBody": _request({"$ref": "#/components/schemas/EditParams"}),
                    "responses": _responses(_settings_success("the settings as stored"), conditional=True),
                }
            },
            "/email-settings/clear": {
                "post": {
                    "operationId": "clear",
                    "summary": "Remove all email settings, the password included",
                    "parameters": [_IF_MATCH],
                    "requestBody": no_params,
                    "responses": _responses(_settings_success("the unconfigured state"), conditional=True),
                }
            },
            "/email-settings/test": {
                "post": {
                    "operationId": "test",
                    "summary": "Send one real test email through the stored settings or a draft",
                    "requestBody": _request(test_params),
                    "responses": test_responses,
                }
            },
            "/email-settings/status": {
                "post": {
                    "operationId": "status",
                    "summary": "Whether mail is flowing: the last success and failure, the last 24 hours",
                    "requestBody": no_params,
                    "responses": _responses(
                        {
                            "description": "the figures of the page's Mail delivery panel",
                            "content": {"application/json": {"schema": _envelope(status_result)}},
                        }
                    ),
                }
            },
            "/email-settings/detect": {
                "post": {
                    "operationId": "detect",
                    "summary": "Probe a host's ports with TLS, StartTLS and Plain and recommend the settings to use",
                    "requestBody": _request(detect_params),
                    "responses": detect_responses,
                }
            },
        },
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "settings_ui_session"},
            },
            "schemas": {
                "EmailSettings": {
                    "type": "object",
                    "required": public,
                    "additionalProperties": False,
                    "properties": {
                        field.name: _stored_schema(field) for field in fields.FIELDS if not field.write_only
                    },
                },
                "EditParams": edit_params,
                "Step": step,
                "Candidate": candidate,
                "ErrorResponse": {
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
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    # The API's paths are relative to where the app mounted settings-ui.
    return jsonify({**document(), "servers": [{"url": url_for("settings_ui.pages.settings_page")}]})
