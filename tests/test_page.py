"""The settings page: the form, inline errors, the password rules, stale saves, CSRF."""

from __future__ import annotations

import re
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from .apps import stored_row
from .helpers import EXAMPLE_PASSWORD, call, form_values, page, shown


def test_the_page_shows_the_stored_settings(client: FlaskClient, configured: dict[str, Any]) -> None:
    soup = page(client)
    assert soup.find("input", attrs={"name": "smtp_host"})["value"] == "smtp.example.com"
    assert soup.find("input", attrs={"name": "smtp_port"})["value"] == "587"
    assert soup.find("input", attrs={"name": "from_email"})["value"] == "noreply@example.com"
    assert soup.find("input", attrs={"name": "username"})["value"] == "mailer"
    select = soup.find("select", attrs={"name": "encryption"})
    assert [o["value"] for o in select.find_all("option")] == ["Plain", "StartTLS", "TLS"]
    assert select.find("option", selected=True)["value"] == "StartTLS"


def test_the_password_is_never_filled_in_but_the_page_says_one_is_stored(
    client: FlaskClient, configured: dict[str, Any]
) -> None:
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert EXAMPLE_PASSWORD not in html
    soup = BeautifulSoup(html, "html.parser")
    password = soup.find("input", attrs={"name": "password"})
    assert password["type"] == "password"
    assert not password.get("value")
    assert "A password is stored" in soup.get_text()
    assert soup.find("input", attrs={"name": "remove_password"}) is not None


def test_a_fresh_install_starts_from_587_starttls_says_why_and_says_it_is_not_configured(
    client: FlaskClient,
) -> None:
    soup = page(client)
    assert soup.find("input", attrs={"name": "smtp_host"}).get("value", "") == ""
    assert soup.find("input", attrs={"name": "smtp_port"})["value"] == "587"
    assert soup.find("select", attrs={"name": "encryption"}).find("option", selected=True)["value"] == "StartTLS"
    assert "most providers and mail servers take mail from applications" in soup.find(id="encryption-help").get_text()
    assert "Not configured yet" in soup.get_text()
    assert "No password is stored" in soup.get_text()
    assert soup.find("input", attrs={"name": "remove_password"}) is None


def test_saving_redirects_with_303_and_confirms(app: Flask, client: FlaskClient) -> None:
    values = form_values(page(client))
    values.update(smtp_host="mail.example.net", smtp_port="465", encryption="TLS", from_email="ops@example.net")
    response = client.post("/", data=values)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/")
    soup = page(client)
    assert "Settings saved." in soup.find(attrs={"role": "status"}).get_text()
    assert soup.find("input", attrs={"name": "smtp_host"})["value"] == "mail.example.net"
    row = stored_row(app)
    assert (row["smtp_host"], row["smtp_port"], row["encryption"], row["from_email"]) == (
        "mail.example.net",
        465,
        "TLS",
        "ops@example.net",
    )
    assert row["allow_selfsigned_certs"] is False


def test_the_page_and_the_api_see_the_same_settings(client: FlaskClient) -> None:
    values = form_values(page(client))
    values.update(
        smtp_host="mail.example.net",
        smtp_port="2525",
        from_email="ops@example.net",
        allow_selfsigned_certs="y",
        username="bob",
        password=EXAMPLE_PASSWORD,
    )
    assert client.post("/", data=values).status_code == 303
    result = call(client, "show").get_json()["result"]
    assert result == shown(
        {
            "allow_selfsigned_certs": True,
            "encryption": "StartTLS",
            "from_email": "ops@example.net",
            "smtp_host": "mail.example.net",
            "smtp_port": 2525,
            "username": "bob",
        }
    )


def test_a_blank_password_keeps_the_stored_one(app: Flask, client: FlaskClient, configured: dict[str, Any]) -> None:
    before = stored_row(app)["password_encrypted"]
    values = form_values(page(client))
    assert values["password"] == ""
    values["from_email"] = "ops@example.com"
    assert client.post("/", data=values).status_code == 303
    assert stored_row(app)["password_encrypted"] == before
    assert stored_row(app)["from_email"] == "ops@example.com"


def test_the_remove_checkbox_removes_the_stored_password(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    values = form_values(page(client))
    values.update(username="", remove_password="y")
    assert client.post("/", data=values).status_code == 303
    assert stored_row(app)["password_encrypted"] is None
    assert "No password is stored" in page(client).get_text()


def test_typing_a_password_and_ticking_remove_is_refused_at_the_checkbox(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    values = form_values(page(client))
    values.update(password="new-one", remove_password="y")
    response = client.post("/", data=values)
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "do one or the other" in soup.find(id="remove_password-error").get_text()
    assert stored_row(app) == before


def _assert_inline_error(soup: BeautifulSoup, name: str, fragment: str) -> None:
    control = soup.find(attrs={"name": name})
    assert control["aria-invalid"] == "true"
    error = soup.find(id=f"{control['id']}-error")
    assert error is not None, f"no error element for {name}"
    assert f"{control['id']}-error" in control["aria-describedby"].split()
    assert fragment in error.get_text(), error.get_text()
    summary = soup.find(id="error-summary")
    assert summary.find("a", href=f"#{control['id']}") is not None


@pytest.mark.parametrize(
    ("changes", "name", "fragment"),
    [
        ({"smtp_port": "70000"}, "smtp_port", "Port must be from 1 to 65535"),
        ({"smtp_port": "abc"}, "smtp_port", "Port must be a whole number"),
        ({"smtp_port": ""}, "smtp_port", "Port is required"),
        ({"from_email": "not-an-address"}, "from_email", "From address is not a valid email address"),
        ({"from_email": "a@example.com, b@example.com"}, "from_email", "one email address"),
        ({"smtp_host": "bad host"}, "smtp_host", "SMTP server must be a host name without spaces"),
        ({"smtp_host": ""}, "smtp_host", "SMTP server is required"),
        ({"encryption": "SSL"}, "encryption", "must be one of Plain, StartTLS, TLS"),
        ({"username": "", "password": "x"}, "username", "Username is required when a password is set"),
        ({"smtp_host": "smtp.example.com\r\nX"}, "smtp_host", "without spaces"),
        ({"username": "a\nb"}, "username", "Username must not contain a line break"),
    ],
)
def test_invalid_input_is_shown_at_its_field_the_input_is_kept_and_nothing_is_stored(
    app: Flask, client: FlaskClient, configured: dict[str, Any], changes: dict[str, str], name: str, fragment: str
) -> None:
    before = stored_row(app)
    values = form_values(page(client))
    values.update(changes)
    if name == "username":
        values.pop("remove_password", None)
    response = client.post("/", data=values)
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    _assert_inline_error(soup, name, fragment)
    assert "not saved" in soup.find(id="form-problem").get_text()
    # What the person typed is still there to correct.
    kept = soup.find(attrs={"name": name})
    if kept.name == "input" and name != "password" and "\n" not in changes[name] and "\r" not in changes[name]:
        assert kept.get("value", "") == changes[name]
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
    assert stored_row(app) == before


def test_a_save_after_someone_else_saved_keeps_the_change_typed_and_shows_theirs(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    values = form_values(page(client))  # the administrator opens the page
    call(client, "edit", {"smtp_host": "other.example.com", "smtp_port": 2587, "password": EXAMPLE_PASSWORD})
    before = stored_row(app)  # a colleague saved another host and port meanwhile
    response = client.post("/", data=values | {"smtp_port": "2525", "from_email": "ops@example.com"})
    assert response.status_code == 409
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "someone else saved these settings" in soup.find(id="form-problem").get_text()
    assert stored_row(app) == before
    shown_values = form_values(soup)
    # What the administrator changed is kept; what they left alone shows the colleague's value.
    assert (shown_values["smtp_port"], shown_values["from_email"]) == ("2525", "ops@example.com")
    assert shown_values["smtp_host"] == "other.example.com"
    # Where both changed a field, the colleague's value is shown beside the one kept, and tied to it.
    port = soup.find("input", attrs={"name": "smtp_port"})
    assert "smtp_port-theirs" in port["aria-describedby"]
    assert "2587" in soup.find(id="smtp_port-theirs").get_text()
    assert soup.find(id="smtp_host-theirs") is None and soup.find(id="from_email-theirs") is None
    # Saving the merged form stores it (the new port takes the password again, as always).
    assert client.post("/", data=shown_values | {"password": EXAMPLE_PASSWORD}).status_code == 303
    stored = call(client, "show").get_json()["result"]
    assert (stored["smtp_host"], stored["smtp_port"], stored["from_email"]) == (
        "other.example.com",
        2525,
        "ops@example.com",
    )


def test_a_tampered_version_is_refused(app: Flask, client: FlaskClient, configured: dict[str, Any]) -> None:
    before = stored_row(app)
    values = form_values(page(client)) | {"version": "abc", "smtp_port": "2525"}
    assert client.post("/", data=values).status_code == 409
    assert stored_row(app) == before


def test_clearing_asks_for_confirmation_first(app: Flask, client: FlaskClient, configured: dict[str, Any]) -> None:
    soup = page(client)
    link = soup.find("a", string=re.compile("Clear settings"))
    before = stored_row(app)
    confirm = page(client, link["href"])
    assert stored_row(app) == before  # showing the question changes nothing
    assert "smtp.example.com" in confirm.get_text()
    assert "the stored password" in confirm.get_text()
    form = confirm.find("form")
    data = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    response = client.post(form["action"], data=data)
    assert response.status_code == 303
    row = stored_row(app)
    assert (row["smtp_host"], row["password_encrypted"], row["username"]) == ("", None, "")
    after = page(client)
    assert "cleared" in after.find(attrs={"role": "status"}).get_text()
    state = after.find(id="settings-state").get_text(" ", strip=True)
    assert state.startswith("Not configured yet") and "Cleared by" in state
    assert "Last changed" not in after.get_text()


def test_clearing_from_a_stale_confirmation_is_refused(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    confirm = page(client, "/clear")
    call(client, "edit", {"from_email": "ops@example.com"})
    before = stored_row(app)
    form = confirm.find("form")
    data = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    response = client.post(form["action"], data=data)
    assert response.status_code == 409
    assert "changed by someone else" in response.get_data(as_text=True)
    assert stored_row(app) == before


def test_every_field_has_a_label_and_help_is_tied_to_its_input(client: FlaskClient) -> None:
    soup = page(client)
    form = soup.find("form", id="settings-form")
    for control in form.find_all(["input", "select"]):
        if control.get("type") == "hidden":
            continue
        assert soup.find("label", attrs={"for": control["id"]}) is not None, control
        for described in control.get("aria-describedby", "").split():
            assert soup.find(id=described) is not None


def test_no_external_assets(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/favicon.svg").status_code == 200


# --- CSRF, switched on as in production --------------------------------------------


def test_csrf_is_enforced_on_the_settings_form(csrf_app: Flask) -> None:
    client = csrf_app.test_client()
    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@example.com"})
    before = stored_row(csrf_app)
    soup = page(client)
    values = form_values(soup)
    assert values["csrf_token"]
    without_token = {k: v for k, v in values.items() if k != "csrf_token"} | {"smtp_port": "2525"}
    response = client.post("/", data=without_token)
    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True)
    assert stored_row(csrf_app) == before
    forged = values | {"csrf_token": "forged", "smtp_port": "2525"}
    assert client.post("/", data=forged).status_code == 400
    assert stored_row(csrf_app) == before
    assert client.post("/", data=values | {"smtp_port": "2525"}).status_code == 303
    assert stored_row(csrf_app)["smtp_port"] == 2525


def test_csrf_is_enforced_on_clear(csrf_app: Flask) -> None:
    client = csrf_app.test_client()
    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@example.com"})
    before = stored_row(csrf_app)
    assert client.post("/clear", data={"version": str(before["version"])}).status_code == 400
    assert stored_row(csrf_app) == before


# The page is rendered on every view: none of it may ever show anything stale.


def test_the_page_shows_what_another_process_stored(app: Flask, client: FlaskClient, tmp_path: Any) -> None:
    from .apps import make_app

    call(client, "edit", {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com"})
    call(client, "edit", {"username": "mailer", "password": EXAMPLE_PASSWORD})
    first = page(client)  # rendered and kept by this app
    assert first.find("input", attrs={"name": "username"})["value"] == "mailer"
    assert "A password is stored" in first.get_text()

    other = make_app(tmp_path)  # another server on the same database: this app hears nothing of its writes
    response = call(other.test_client(), "edit", {"smtp_host": "relay.example.org", "username": "", "password": ""})
    assert response.status_code == 200

    after = page(client)
    assert after.find("input", attrs={"name": "smtp_host"})["value"] == "relay.example.org"
    assert after.find("input", attrs={"name": "username"}).get("value", "") == ""
    assert "No password is stored" in after.get_text()
    assert after.find("input", attrs={"name": "remove_password"}) is None
    assert after.find("input", attrs={"name": "version"})["value"] == str(stored_row(app)["version"])
    newest = after.find("table").find("tbody").find("tr")
    assert "'smtp.example.com' → 'relay.example.org'" in newest.get_text()
    assert "password removed" in newest.get_text()


def test_a_rejected_form_is_shown_as_typed_and_the_next_view_as_stored(
    client: FlaskClient, configured: dict[str, Any]
) -> None:
    values = form_values(page(client))
    values.update(smtp_host="typed.example.com", smtp_port="abc")
    refused = BeautifulSoup(client.post("/", data=values).get_data(as_text=True), "html.parser")
    assert refused.find("input", attrs={"name": "smtp_host"})["value"] == "typed.example.com"
    assert refused.find(id="smtp_port-error") is not None

    again = page(client)
    assert again.find("input", attrs={"name": "smtp_host"})["value"] == "smtp.example.com"
    assert again.find("input", attrs={"name": "smtp_port"})["value"] == "587"
    assert again.find(id="smtp_port-error") is None
    assert again.find(id="error-summary") is None


def test_the_recipient_last_tested_is_kept_per_session(client: FlaskClient, app: Flask) -> None:
    with client.session_transaction() as session:
        session["last_test_to"] = "ops@example.com"
    assert page(client).find("input", attrs={"name": "to"})["value"] == "ops@example.com"
    assert page(app.test_client()).find("input", attrs={"name": "to"}).get("value", "") == ""


def test_links_follow_the_path_the_app_is_mounted_under(client: FlaskClient) -> None:
    def links(soup: BeautifulSoup) -> set[str]:
        return {
            soup.find("form", id="settings-form")["action"],
            soup.find("link", rel="stylesheet")["href"],
            soup.find("a", class_="button-danger")["href"],
        }

    assert links(page(client)) == {"/", "/static/style.css", "/clear"}
    mounted = client.get("/", base_url="http://localhost/admin/mail/")
    soup = BeautifulSoup(mounted.get_data(as_text=True), "html.parser")
    assert links(soup) == {"/admin/mail/", "/admin/mail/static/style.css", "/admin/mail/clear"}
    assert links(page(client)) == {"/", "/static/style.css", "/clear"}


def test_each_session_sees_only_its_own_page(app: Flask) -> None:
    tested, other = app.test_client(), app.test_client()
    with tested.session_transaction() as session:
        session["last_test_to"] = "ops@example.com"
        session["last_test"] = {"sent": False, "to": "ops@example.com", "at": "2026-11-24 10:00 UTC", "message": "x"}
    for _ in range(2):  # the second round is served from what the first kept
        mine, theirs = page(tested), page(other)
        assert "Last test, 2026-11-24 10:00 UTC, to ops@example.com" in mine.get_text()
        assert mine.find("input", attrs={"name": "to"})["value"] == "ops@example.com"
        assert theirs.find(id="last-test") is None
        assert theirs.find("input", attrs={"name": "to"}).get("value", "") == ""


def test_a_confirmation_shows_once(client: FlaskClient) -> None:
    values = form_values(page(client))
    values.update(smtp_host="mail.example.net", smtp_port="465", encryption="TLS", from_email="ops@example.net")
    assert client.post("/", data=values).status_code == 303
    assert "Settings saved." in page(client).get_text()
    assert "Settings saved." not in page(client).get_text()


def test_every_view_carries_a_token_of_its_own_session(csrf_app: Flask) -> None:
    call(csrf_app.test_client(), "edit", {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@x.org"})
    first, second = csrf_app.test_client(), csrf_app.test_client()
    mine = form_values(page(first))
    theirs = form_values(page(second))
    again = form_values(page(first))  # served from the kept page, with a fresh token
    assert mine["csrf_token"] != theirs["csrf_token"]
    assert not any("csrf-slot" in value for value in (mine["csrf_token"], theirs["csrf_token"], again["csrf_token"]))
    before = stored_row(csrf_app)
    assert first.post("/", data=theirs | {"smtp_port": "2525"}).status_code == 400  # another session's token
    assert stored_row(csrf_app) == before
    assert first.post("/", data=again | {"smtp_port": "2525"}).status_code == 303
    assert (
        second.post("/", data=theirs | {"smtp_port": "2526", "version": str(before["version"] + 1)}).status_code == 303
    )
    assert stored_row(csrf_app)["smtp_port"] == 2526


def test_recent_changes_name_the_fields_by_their_labels(client: FlaskClient, configured: dict[str, Any]) -> None:
    call(client, "edit", {"from_email": "ops@example.com", "username": "postmaster", "password": EXAMPLE_PASSWORD})
    history = " ".join(page(client).find("section", attrs={"aria-labelledby": "history-title"}).get_text().split())
    assert "“From address”: " in history and "“Username”: " in history
    assert "from_email" not in history and "username:" not in history


def test_the_page_shows_the_settings_of_this_machine_in_effect_and_how_to_set_them(tmp_path: Any) -> None:
    from .apps import make_app

    ca_file = tmp_path / "our-ca.pem"
    ca_file.write_text("")
    app = make_app(tmp_path, SMTP_CA_FILE=str(ca_file), SMTP_EHLO_NAME="relay-client.example.net")
    soup = page(app.test_client())

    def shown_for(key: str) -> str:
        return " ".join(soup.find(id=f"machine-{key}").get_text().split())

    assert str(ca_file) in shown_for("smtp-ca-file")
    assert "SETTINGS_UI_SMTP_CA_FILE in the environment, or SMTP_CA_FILE in instance/config.py" in shown_for(
        "smtp-ca-file"
    )
    assert "relay-client.example.net" in shown_for("smtp-ehlo-name")
    assert "TLSv1.2" in shown_for("smtp-tls-minimum")
    assert "none: the password is stored here" in shown_for("smtp-password-file")
