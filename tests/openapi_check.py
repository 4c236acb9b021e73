"""Every API response the tests see is checked against /openapi.json."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from settings_ui.web.openapi import document

_URI = "urn:settings-ui:openapi"
_registry = Registry().with_resource(_URI, Resource.from_contents(document(), default_specification=DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def check_response(method: str, path: str, response: TestResponse) -> None:
    """Fail unless the response's status, headers and body are what the document says."""
    operation = document()["paths"].get(path, {}).get(method.lower())
    status = str(response.status_code)
    if operation is None:  # an unknown path or method: the error envelope, as every error
        reference = f"{_URI}#/components/schemas/ErrorResponse"
    else:
        assert status in operation["responses"], f"{method} {path} answered {status}, which is not documented"
        spec = operation["responses"][status]
        for header in spec.get("headers", {}):
            assert header in response.headers, f"{method} {path} {status} lacks the documented {header} header"
        reference = f"{_URI}#" + _pointer(
            "", "paths", path, method.lower(), "responses", status, "content", "application/json", "schema"
        )
    assert response.mimetype == "application/json", f"{method} {path} {status} is {response.mimetype}"
    validator = Draft202012Validator({"$ref": reference}, registry=_registry)
    errors = sorted(validator.iter_errors(response.get_json()), key=str)
    assert not errors, f"{method} {path} {status} does not conform: {errors[0].message}"


class ConformingClient(FlaskClient):
    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        request = response.request
        if request.path.startswith("/email-settings"):
            check_response(request.method, request.path, response)
        return response
