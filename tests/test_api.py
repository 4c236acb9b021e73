"""The JSON API: shapes, partial edits, every rejected input, ETag and If-Match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from settings_ui import database

from .apps import make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, PUBLIC_KEYS, UNCONFIGURED, assert_error, call, shown


@pytest.fixture
def app(any_database_app: Flask) -> Flask:
    """Every API test runs on SQLite and on PostgreSQL."""
    return any_database_app


def test_show_on_a_fresh_install_is_the_unconfigured_state(client: FlaskClient) -> None:
    response = call(client, "show")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"result": UNCONFIGURED, "successful": True}
    assert response.headers["ETag"]


def test_edit_with_the_documented_request_returns_the_documented_response(client: FlaskClient) -> None:
    # The seed's example, with values that make a complete configuration.
    params = {
        "allow_selfsigned_certs": False,
        "encryption": "Plain",
        "from_email": "mail@example.org",
        "password": EXAMPLE_PASSWORD,
        "smtp_host": "mail.example.org",
        "smtp_port": 123,
        "username": "string",
    }
    response = call(client, "edit", params)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"result", "successful"}
    assert body["successful"] is True
    assert set(body["result"]) == PUBLIC_KEYS
    # The published keys, and those this project adds (at their defaults unless set).
    expected = shown(params)
    assert body["result"] == expected
    assert type(body["result"]["smtp_port"]) is int
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
    assert call(client, "show").get_json()["result"] == expected


def test_edit_normalizes_host_and_address(client: FlaskClient) -> None:
    params = {"smtp_host": "SMTP.Example.COM", "smtp_port": 25, "from_email": "NoReply@EXAMPLE.com"}
    result = call(client, "edit", params).get_json()["result"]
    assert result["smtp_host"] == "smtp.example.com"
    assert result["from_email"] == "NoReply@example.com"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("straße.de", "xn--strae-oqa.de"), ("Bücher.Example", "xn--bcher-kva.example"), ("xn--strae-oqa.de", None)],
)
def test_an_international_host_name_is_stored_as_browsers_convert_it(
    client: FlaskClient, typed: str, stored: str | None
) -> None:
    response = call(client, "edit", {"smtp_host": typed, "smtp_port": 25, "from_email": "a@example.com"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["result"]["smtp_host"] == (stored or typed)  # UTS 46: straße.de is not strasse.de


@pytest.mark.parametrize("host", ["192.0.2.10", "2001:db8::25", "[2001:db8::25]", "mail-1.example.co.uk", "localhost"])
def test_edit_accepts_ip_literals_and_host_names(client: FlaskClient, host: str) -> None:
    response = call(client, "edit", {"smtp_host": host, "smtp_port": 25, "from_email": "a@example.com"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["result"]["smtp_host"] == host.strip("[]")


def test_partial_edit_keeps_every_other_value_and_the_password(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    response = call(client, "edit", {"from_email": "ops@example.com"})
    assert response.status_code == 200
    after = stored_row(app)
    assert after["from_email"] == "ops@example.com"
    for name in ("smtp_host", "smtp_port", "encryption", "username", "password_encrypted", "allow_selfsigned_certs"):
        assert after[name] == before[name]
    assert after["version"] == before["version"] + 1


def test_empty_password_removes_it_together_with_the_username(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    response = call(client, "edit", {"username": "", "password": ""})
    assert response.status_code == 200
    assert stored_row(app)["password_encrypted"] is None
    assert response.get_json()["result"]["username"] == ""


def test_removing_the_password_while_a_username_is_set_is_refused(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    error = assert_error(call(client, "edit", {"password": ""}), 400, "password", "username")
    assert set(error["fields"]) == {"password"}
    assert stored_row(app) == before


def test_a_username_without_any_password_is_refused(app: Flask, client: FlaskClient) -> None:
    before = stored_row(app)
    params = {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@example.com", "username": "u"}
    assert_error(call(client, "edit", params), 400, "password is required when a username is set")
    assert stored_row(app) == before


def test_a_password_without_a_username_is_refused(app: Flask, client: FlaskClient) -> None:
    before = stored_row(app)
    params = {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@example.com", "password": "x"}
    assert_error(call(client, "edit", params), 400, "username is required when a password is set")
    assert stored_row(app) == before


def test_an_incomplete_configuration_names_every_missing_field(app: Flask, client: FlaskClient) -> None:
    before = stored_row(app)
    error = assert_error(call(client, "edit", {"encryption": "TLS"}), 400, "smtp_host", "smtp_port", "from_email")
    assert set(error["fields"]) == {"smtp_host", "smtp_port", "from_email"}
    assert stored_row(app) == before


def test_clear_removes_everything_including_the_password(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    response = call(client, "clear")
    assert response.status_code == 200
    assert response.get_json() == {"result": UNCONFIGURED, "successful": True}
    assert stored_row(app)["password_encrypted"] is None
    assert call(client, "show").get_json()["result"] == UNCONFIGURED


# Each rejected parameter: (params, the field the message must name, a fragment of the reason).
BAD_PARAMS = [
    ({"smtp_port": True}, "smtp_port", "must be an integer, not a boolean"),
    ({"smtp_port": 25.0}, "smtp_port", "must be an integer"),
    ({"smtp_port": 25.5}, "smtp_port", "must be an integer"),
    ({"smtp_port": "25"}, "smtp_port", "not a string"),
    ({"smtp_port": None}, "smtp_port", "not null"),
    ({"smtp_port": 0}, "smtp_port", "from 1 to 65535"),
    ({"smtp_port": -1}, "smtp_port", "from 1 to 65535"),
    ({"smtp_port": 65536}, "smtp_port", "from 1 to 65535"),
    ({"smtp_port": 10**30}, "smtp_port", "from 1 to 65535"),
    ({"allow_selfsigned_certs": "true"}, "allow_selfsigned_certs", "must be a boolean"),
    ({"allow_selfsigned_certs": 1}, "allow_selfsigned_certs", "must be a boolean"),
    ({"allow_selfsigned_certs": None}, "allow_selfsigned_certs", "not null"),
    ({"encryption": "SSL"}, "encryption", "Plain, StartTLS, TLS"),
    ({"encryption": "starttls"}, "encryption", "Plain, StartTLS, TLS"),
    ({"encryption": ""}, "encryption", "Plain, StartTLS, TLS"),
    ({"encryption": 1}, "encryption", "must be a string"),
    ({"from_email": "not-an-address"}, "from_email", "not a valid email address"),
    ({"from_email": "a@example.com, b@example.com"}, "from_email", "one email address"),
    ({"from_email": "a@example.com;b@example.com"}, "from_email", "one email address"),
    ({"from_email": "Name <a@example.com>"}, "from_email", "not a valid email address"),
    ({"from_email": ["a@example.com"]}, "from_email", "not an array"),
    ({"from_email": ""}, "from_email", "is required"),
    ({"smtp_host": "smtp example.com"}, "smtp_host", "without spaces"),
    ({"smtp_host": "a" * 254}, "smtp_host", "at most 253"),
    ({"smtp_host": ("a" * 60 + ".") * 5 + "com"}, "smtp_host", "at most 253"),
    ({"smtp_host": "-smtp.example.com"}, "smtp_host", "not a valid host name"),
    ({"smtp_host": "smtp..example.com"}, "smtp_host", "not a valid host name"),
    ({"smtp_host": "smtp_1.example.com"}, "smtp_host", "not a valid host name"),
    ({"smtp_host": "a" * 64 + ".com"}, "smtp_host", "not a valid host name"),
    ({"smtp_host": ""}, "smtp_host", "is required"),
    ({"smtp_host": {"name": "x"}}, "smtp_host", "not an object"),
    ({"smtp_host": "smtp.example.com\r\nRCPT TO:<x@evil>"}, "smtp_host", "carriage return"),
    ({"from_email": "a@example.com\nBcc: victim@example.com"}, "from_email", "line break"),
    ({"username": "user\0"}, "username", "NUL"),
    ({"username": "user\r\nAUTH"}, "username", "carriage return"),
    ({"password": "pass\nword"}, "password", "line break"),
    ({"username": 5}, "username", "must be a string"),
    ({"password": False}, "password", "must be a string"),
    ({"username": "u" * 1025}, "username", "at most 1024"),
    ({"smtp_host": '::1%<img src=x> " onmouseover=alert(1)' + "x" * 960}, "smtp_host", "at most 253"),
    ({"smtp_host": "::1%<img src=x>"}, "smtp_host", "zone id"),
    ({"smtp_host": "[fe80::1%eth0]"}, "smtp_host", "zone id"),
    ({"username": "user\x1b]0;owned\x07"}, "username", "control character (U+001B)"),
    ({"from_email": "a@example.com\x7f"}, "from_email", "control character (U+007F)"),
    ({"password": "pass\x85word"}, "password", "control character (U+0085)"),
    ({"username": "user\ud800"}, "username", "lone surrogate"),
    ({"smtp_password": "x"}, "smtp_password", "Unknown parameter"),
    ({"host": "x", "port": 1}, "host, port", "Unknown parameters"),
]


@pytest.mark.parametrize(("params", "field", "reason"), BAD_PARAMS, ids=lambda v: repr(v)[:40])
def test_a_rejected_parameter_is_named_and_nothing_is_stored(
    app: Flask, client: FlaskClient, configured: dict[str, Any], params: dict[str, Any], field: str, reason: str
) -> None:
    before = stored_row(app)
    error = assert_error(call(client, "edit", params), 400, field, reason)
    assert set(error["fields"]) == set(params)
    assert stored_row(app) == before


def test_several_wrong_parameters_are_all_named(app: Flask, client: FlaskClient) -> None:
    before = stored_row(app)
    error = assert_error(call(client, "edit", {"smtp_port": "x", "encryption": "SSL"}), 400, "smtp_port", "encryption")
    assert set(error["fields"]) == {"smtp_port", "encryption"}
    assert stored_row(app) == before


# Bodies that are not a well-formed request: (data, content type, a fragment of the message).
BAD_BODIES = [
    ("{", "application/json", "not valid JSON"),
    ("", "application/json", "not valid JSON"),
    ('{"params": {"smtp_port": NaN}}', "application/json", "NaN"),
    ("[1, 2]", "application/json", "must be an object"),
    ('"params"', "application/json", "must be an object"),
    ("null", "application/json", "must be an object"),
    ("{}", "application/json", '"params"'),
    ('{"params": []}', "application/json", '"params" must be a JSON object'),
    ('{"params": null}', "application/json", '"params" must be a JSON object'),
    ('{"params": "smtp_port=25"}', "application/json", '"params" must be a JSON object'),
    ('{"params": {}, "extra": 1}', "application/json", "extra"),
    ('{"params": {"smtp_port": 25, "smtp_port": 26}}', "application/json", "twice"),
    ("[" * 5000 + "]" * 5000, "application/json", "nested too deeply"),
    ('{"params": ' * 3000 + "{}" + "}" * 3000, "application/json", "nested too deeply"),
    (b'{"params": {"smtp_host": "\xff"}}', "application/json", "not valid JSON"),
    ('{"params": {"smtp_port": 25}}', "text/plain", "Content-Type: application/json"),
    ("smtp_port=25", "application/x-www-form-urlencoded", "Content-Type: application/json"),
    ('{"params": {"smtp_port": 25}}', None, "Content-Type: application/json"),
]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ('{"params": {"smtp_port": 1e400}}', "smtp_port must be an integer, not a number too large"),
        ('{"params": {"smtp_port": -1e400}}', "smtp_port must be an integer"),
        ('{"params": {"smtp_host": "\\ud800"}}', "smtp_host must not contain a lone surrogate"),
        ('{"params": {"password": "\\udfff"}}', "password must not contain a lone surrogate"),
        ('{"params": {"\\ud800": 1}}', "Unknown parameter"),
    ],
)
def test_numbers_and_text_json_allows_but_python_cannot_hold_are_a_clear_400(
    app: Flask, client: FlaskClient, configured: dict[str, Any], data: str, fragment: str
) -> None:
    before = stored_row(app)
    response = client.post("/email-settings/edit", data=data, headers={"Content-Type": "application/json"})
    assert_error(response, 400, fragment)
    assert stored_row(app) == before


@pytest.mark.parametrize(("data", "content_type", "fragment"), BAD_BODIES, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("action", ["edit", "show", "clear"])
def test_a_malformed_request_is_rejected_in_the_envelope_and_changes_nothing(
    app: Flask,
    client: FlaskClient,
    configured: dict[str, Any],
    action: str,
    data: str | bytes,
    content_type: str | None,
    fragment: str,
) -> None:
    before = stored_row(app)
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(client.post(f"/email-settings/{action}", data=data, headers=headers), 400, fragment)
    assert stored_row(app) == before


def test_multipart_form_posts_to_the_api_change_nothing(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    response = client.post("/email-settings/edit", data={"params": '{"smtp_port": 2525}', "smtp_port": "2525"})
    assert_error(response, 400, "Content-Type: application/json")
    assert stored_row(app) == before


def test_json_with_a_charset_is_accepted(client: FlaskClient) -> None:
    body = json.dumps({"params": {"smtp_host": "mail.example.com", "smtp_port": 25, "from_email": "a@example.com"}})
    response = client.post(
        "/email-settings/edit", data=body.encode(), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_an_oversized_body_is_413_in_the_envelope_and_changes_nothing(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    body = json.dumps({"params": {"smtp_host": "a" * 70_000}})
    assert_error(client.post("/email-settings/edit", data=body, content_type="application/json"), 413, "65536 bytes")
    assert stored_row(app) == before


@pytest.mark.parametrize("action", ["show", "clear"])
def test_show_and_clear_take_no_parameters(
    app: Flask, client: FlaskClient, configured: dict[str, Any], action: str
) -> None:
    before = stored_row(app)
    assert_error(call(client, action, {"smtp_port": 25}), 400, "takes no parameters", "smtp_port")
    assert stored_row(app) == before


@pytest.mark.parametrize(
    "path", ["/email-settings/delete", "/email-settings/", "/email-settings", "/email-settings/x/y"]
)
def test_an_unknown_api_path_is_404_in_the_envelope(client: FlaskClient, path: str) -> None:
    assert_error(client.post(path, json={"params": {}}), 404, "/email-settings/show")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_wrong_method_is_405_in_the_envelope(
    app: Flask, client: FlaskClient, configured: dict[str, Any], method: str
) -> None:
    before = stored_row(app)
    response = client.open("/email-settings/edit", method=method, json={"params": {"smtp_port": 2525}})
    assert_error(response, 405, "POST")
    assert "POST" in response.headers["Allow"]
    assert stored_row(app) == before


def test_an_unexpected_failure_is_500_in_the_envelope_without_a_traceback(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with app.app_context(), database.engine().begin() as connection:  # a real fault: the table is gone
        connection.execute(text("DROP TABLE email_settings"))
    response = call(client, "show")
    error = assert_error(response, 500, "unexpected error")
    assert "Traceback" not in response.get_data(as_text=True)
    assert "email_settings" not in error["message"]
    assert "Traceback" in caplog.text  # the operator still gets the details, in the log


def test_a_missing_settings_row_is_made_again_as_unconfigured(app: Flask, client: FlaskClient) -> None:
    def remove_the_row() -> None:  # behind the app's back
        with app.app_context(), database.engine().begin() as connection:
            connection.execute(text("DELETE FROM email_settings"))

    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com"})
    remove_the_row()
    shown = call(client, "show")
    assert shown.status_code == 200
    assert shown.get_json()["result"] == UNCONFIGURED
    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com"})
    remove_the_row()
    assert "Not configured yet" in client.get("/").get_data(as_text=True)


def test_a_failing_write_logs_no_stored_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com"})
    call(client, "edit", {"username": "mailer", "password": "the-old-secret"})
    before = stored_row(app)
    with app.app_context(), database.engine().begin() as connection:  # a real fault at the UPDATE
        connection.execute(
            text("CREATE TRIGGER refuse BEFORE UPDATE ON email_settings BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        )
    response = call(client, "edit", {"smtp_host": "relay.example.org", "password": EXAMPLE_PASSWORD})
    assert_error(response, 500, "unexpected error")
    assert "disk says no" in caplog.text  # the operator learns what failed
    for value in (EXAMPLE_PASSWORD, before["password_encrypted"], "relay.example.org", "mailer"):
        assert value not in caplog.text
    assert stored_row(app) == before


# --- ETag and If-Match ---------------------------------------------------------------


def test_the_etag_changes_with_every_write(client: FlaskClient, configured: dict[str, Any]) -> None:
    first = call(client, "show").headers["ETag"]
    edited = call(client, "edit", {"from_email": "ops@example.com"})
    assert edited.headers["ETag"] != first
    assert call(client, "show").headers["ETag"] == edited.headers["ETag"]
    assert call(client, "show").headers["ETag"] == edited.headers["ETag"]  # reads do not change it


def test_edit_with_a_current_if_match_is_stored(client: FlaskClient, configured: dict[str, Any]) -> None:
    etag = call(client, "show").headers["ETag"]
    response = call(client, "edit", {"from_email": "ops@example.com"}, headers={"If-Match": etag})
    assert response.status_code == 200
    assert response.get_json()["result"]["from_email"] == "ops@example.com"


@pytest.mark.parametrize("action", ["edit", "clear"])
def test_a_stale_if_match_is_412_and_stores_nothing(
    app: Flask, client: FlaskClient, configured: dict[str, Any], action: str
) -> None:
    stale = call(client, "show").headers["ETag"]
    call(client, "edit", {"from_email": "alerts@example.com"})  # someone else saves in between
    before = stored_row(app)
    params = {"from_email": "ops@example.com"} if action == "edit" else {}
    response = call(client, action, params, headers={"If-Match": stale})
    assert_error(response, 412, "changed by someone else")
    assert response.headers["ETag"] != stale  # tells the caller what is current
    assert stored_row(app) == before


@pytest.mark.parametrize("header", ['"not-ours"', "garbage", 'W/"1"', '""'])
def test_an_if_match_that_is_no_etag_of_ours_is_412(
    app: Flask, client: FlaskClient, configured: dict[str, Any], header: str
) -> None:
    before = stored_row(app)
    assert_error(call(client, "edit", {"from_email": "ops@example.com"}, headers={"If-Match": header}), 412)
    assert stored_row(app) == before


def test_if_match_star_and_a_list_holding_the_current_etag_are_accepted(
    client: FlaskClient, configured: dict[str, Any]
) -> None:
    assert call(client, "edit", {"from_email": "ops@example.com"}, headers={"If-Match": "*"}).status_code == 200
    etag = call(client, "show").headers["ETag"]
    response = call(client, "edit", {"from_email": "alerts@example.com"}, headers={"If-Match": f'"old", {etag}'})
    assert response.status_code == 200


def test_the_password_is_in_no_api_response(client: FlaskClient, configured: dict[str, Any]) -> None:
    responses = [
        call(client, "show"),
        call(client, "edit", {"smtp_port": 2525}),
        call(client, "edit", {"password": EXAMPLE_PASSWORD + "2"}),
        call(client, "edit", {"smtp_port": "bad", "password": EXAMPLE_PASSWORD}),
        call(client, "clear"),
    ]
    for response in responses:
        assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
