"""The page in a real Chromium (Debian's), driven by Playwright.

Without /usr/bin/chromium these tests skip with a message; CI installs it and sets
REQUIRE_BROWSER_TESTS=1, which turns a missing browser into a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from .apps import LiveServer, make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, skip_or_fail
from .screenshots import SCREENSHOT, page_source_digest, stamped
from .smtp_servers import Authenticator, Certificates, free_port, silent_server, smtp_server

CHROMIUM = "/usr/bin/chromium"
REBOUND_NAME = "rebound.attacker.example"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A name of an attacker's site that now resolves to this machine (DNS rebinding).
    f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1",
]
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = (
            f"browser tests need Debian's Chromium at {CHROMIUM}: run `apt-get install chromium` "
            "(CI does, and sets REQUIRE_BROWSER_TESTS=1)"
        )
        skip_or_fail(message, "REQUIRE_BROWSER_TESTS")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _serve(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def site_app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, WTF_CSRF_ENABLED=True, SMTP_TIMEOUT=3)


@pytest.fixture
def site(site_app: Flask) -> Iterator[LiveServer]:
    yield from _serve(site_app)


class Tab:
    """A page in a fresh browser context that records console errors (CSP violations among them)."""

    def __init__(self, browser: Any, base_url: str, **context_options: Any):
        self.context = browser.new_context(base_url=base_url, **context_options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # A page answered 400 or 409 on purpose (a form with errors) is logged as a failed
        # load; the tests check those statuses themselves. Sub-resources are checked below.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.status} for {response.url}")


@pytest.fixture
def tab_factory(browser: Any) -> Iterator[Any]:
    tabs: list[Tab] = []

    def open_tab(base_url: str, **options: Any) -> Tab:
        options.setdefault("viewport", {"width": 1100, "height": 900})
        tab = Tab(browser, base_url, **options)
        tabs.append(tab)
        return tab

    yield open_tab
    errors = [error for tab in tabs for error in tab.errors]
    for tab in tabs:
        tab.context.close()
    assert errors == [], f"console errors: {errors}"


@pytest.fixture
def page(site: LiveServer, tab_factory: Any) -> Any:
    return tab_factory(site.url).page


def fill_settings(page: Any, port: int | str = 587, encryption: str = "StartTLS", **extra: str) -> None:
    page.goto("/")
    page.select_option("#encryption", encryption)
    page.fill("#smtp_host", extra.pop("host", "smtp.example.com"))
    page.fill("#smtp_port", str(port))
    page.fill("#from_email", extra.pop("from_email", "noreply@example.com"))
    for name, value in extra.items():
        page.fill(f"#{name}", value)


def save(page: Any) -> None:
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_load_state()


# --- Save, reload, errors ---------------------------------------------------------------------


def test_fill_save_confirm_and_reload(page: Any, site_app: Flask) -> None:
    fill_settings(page, username="mailer", password=EXAMPLE_PASSWORD)
    save(page)
    assert page.get_by_role("status").filter(has_text="Settings saved.").is_visible()
    page.reload()
    assert page.input_value("#smtp_host") == "smtp.example.com"
    assert page.input_value("#smtp_port") == "587"
    assert page.input_value("#encryption") == "StartTLS"
    assert page.input_value("#username") == "mailer"
    assert page.input_value("#password") == ""
    assert page.get_by_text("A password is stored").is_visible()
    assert EXAMPLE_PASSWORD not in page.content()
    assert stored_row(site_app)["smtp_port"] == 587


def test_server_side_errors_are_inline_announced_and_linked(page: Any, site_app: Flask) -> None:
    fill_settings(page, port="70000", from_email="not-an-address")
    save(page)
    summary = page.locator("#error-summary")
    assert summary.is_visible()
    assert page.evaluate("document.activeElement.id") == "error-summary"  # focus moved to the summary
    port = page.locator("#smtp_port")
    assert port.get_attribute("aria-invalid") == "true"
    assert "smtp_port-error" in port.get_attribute("aria-describedby").split()
    assert page.locator("#smtp_port-error").inner_text() == "Port must be from 1 to 65535."
    assert page.input_value("#from_email") == "not-an-address"  # the input is kept
    summary.get_by_role("link", name="From address is not a valid email address", exact=False).click()
    assert page.evaluate("document.activeElement.id") == "from_email"
    assert stored_row(site_app)["smtp_host"] == ""


def test_enter_in_a_field_saves_rather_than_tests(page: Any, site_app: Flask) -> None:
    fill_settings(page, port=25, encryption="Plain")
    page.press("#smtp_host", "Enter")
    page.wait_for_load_state()
    assert page.get_by_text("Settings saved.").is_visible()
    assert stored_row(site_app)["smtp_port"] == 25


def test_a_new_host_with_the_password_left_blank_is_refused_at_the_password_field(page: Any, site_app: Flask) -> None:
    fill_settings(page, username="mailer", password=EXAMPLE_PASSWORD)
    save(page)
    before = stored_row(site_app)
    page.fill("#smtp_host", "harvest.attacker.example")
    save(page)
    password = page.locator("#password")
    assert password.get_attribute("aria-invalid") == "true"
    message = page.locator("#password-error").inner_text()
    assert "the stored password is only ever sent to the server it was saved for" in message
    assert stored_row(site_app) == before
    page.fill("#password", "the-new-servers-password")
    save(page)
    assert page.get_by_text("Settings saved.").is_visible()
    assert stored_row(site_app)["smtp_host"] == "harvest.attacker.example"


def test_a_rebound_site_reaches_neither_the_page_nor_the_api(
    site: LiveServer, site_app: Flask, tab_factory: Any
) -> None:
    """A web page whose name now resolves to 127.0.0.1 is same-origin with us: it must get nothing."""
    before = stored_row(site_app)
    port = site.url.rsplit(":", 1)[1]
    tab = tab_factory(f"http://{REBOUND_NAME}:{port}")
    response = tab.page.goto("/")
    assert response.status == 400
    assert "does not answer to the name" in tab.page.content()
    answers = tab.page.evaluate(
        """async () => {
            const calls = [["edit", {smtp_host: "evil.example", smtp_port: 25, from_email: "a@evil.example"}],
                           ["show", {}], ["test", {to: "a@evil.example"}]];
            const out = [];
            for (const [call, params] of calls) {
                const r = await fetch("/email-settings/" + call, {method: "POST",
                    headers: {"Content-Type": "application/json"}, body: JSON.stringify({params})});
                out.push([r.status, await r.json()]);
            }
            return out;
        }"""
    )
    tab.errors.clear()  # the refused calls are logged as failed loads; that is the point
    for status, body in answers:
        assert status == 400 and body["successful"] is False
        assert "does not answer to the name" in body["error"]["message"]
    assert stored_row(site_app) == before


# --- Test email -------------------------------------------------------------------------------


def test_send_a_test_email_from_the_page(page: Any, site_app: Flask) -> None:
    with smtp_server() as (port, handler):
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
        result = page.locator("#test-result")
        assert "Sent." in result.inner_text()
    assert handler.received[0].rcpt_tos == ["me@example.net"]
    assert page.locator("ol.steps li").count() == 6
    assert page.input_value("#smtp_port") == str(port)  # the draft is still in the form
    assert stored_row(site_app)["smtp_host"] == ""  # and was not saved


def test_the_test_button_shows_progress_while_it_runs(page: Any) -> None:
    with silent_server() as port:
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        page.fill("#to", "me@example.net")
        # While the post is pending the old page still runs: let it note what it shows then,
        # in sessionStorage, which outlives the navigation to the result.
        page.evaluate(
            """() => document.getElementById("settings-form").addEventListener("submit", () =>
                 setTimeout(() => sessionStorage.setItem("seen", JSON.stringify([
                   document.getElementById("test-progress").textContent,
                   document.getElementById("test-button").disabled])), 100))"""
        )
        page.get_by_role("button", name="Send test email").click()
        page.locator("#test-result").wait_for(timeout=10_000)
    progress_text, disabled = json.loads(page.evaluate("sessionStorage.getItem('seen')"))
    assert "Sending the test email" in progress_text and "3 seconds" in progress_text
    assert disabled is True
    assert "Not sent." in page.locator("#test-result").inner_text()
    assert "no SMTP greeting" in page.locator("#test-result").inner_text()


# --- Progressive enhancement ------------------------------------------------------------------


def test_encryption_fills_the_conventional_port_but_never_a_typed_one(page: Any) -> None:
    page.goto("/")  # a first-time form starts from 587 with StartTLS
    assert (page.input_value("#smtp_port"), page.input_value("#encryption")) == ("587", "StartTLS")
    page.select_option("#encryption", "TLS")
    assert page.input_value("#smtp_port") == "465"
    page.select_option("#encryption", "Plain")
    assert page.input_value("#smtp_port") == "25"
    page.fill("#smtp_port", "2525")
    page.select_option("#encryption", "StartTLS")
    assert page.input_value("#smtp_port") == "2525"


def test_self_signed_is_disabled_with_a_note_while_plain(page: Any, site_app: Flask) -> None:
    page.goto("/")
    page.locator("#certificate-section > summary").click()
    page.select_option("#encryption", "Plain")
    assert page.locator("#allow_selfsigned_certs").is_disabled()
    assert page.locator("#selfsigned-note").is_visible()
    page.select_option("#encryption", "TLS")
    assert page.locator("#allow_selfsigned_certs").is_enabled()
    assert page.locator("#selfsigned-note").is_hidden()


def test_a_disabled_checkbox_keeps_its_stored_value_on_save(page: Any, site_app: Flask) -> None:
    fill_settings(page, port=465, encryption="TLS")
    page.locator("#certificate-section > summary").click()
    page.check("#allow_selfsigned_certs")
    save(page)
    assert page.locator("#certificate-section").get_attribute("open") is not None  # a switch that is on shows
    page.select_option("#encryption", "Plain")
    page.fill("#smtp_port", "25")
    save(page)
    assert stored_row(site_app)["allow_selfsigned_certs"] is True


def test_a_warning_shows_when_port_and_encryption_disagree(page: Any) -> None:
    page.goto("/")
    page.select_option("#encryption", "StartTLS")
    page.fill("#smtp_port", "465")
    assert "465 usually expects TLS" in page.locator("#port-note").inner_text()
    page.select_option("#encryption", "TLS")
    assert page.locator("#port-note").is_hidden()
    page.fill("#smtp_port", "587")
    assert "587 usually expects StartTLS" in page.locator("#port-note").inner_text()


def test_the_page_works_without_javascript(site: LiveServer, site_app: Flask, tab_factory: Any) -> None:
    page = tab_factory(site.url, java_script_enabled=False).page
    fill_settings(page, port=587, encryption="StartTLS")
    save(page)
    assert page.get_by_text("Settings saved.").is_visible()
    with smtp_server() as (port, handler):
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
    assert "Sent." in page.locator("#test-result").inner_text()
    assert len(handler.received) == 1


# --- Detect -------------------------------------------------------------------------------------


@pytest.fixture
def detect_app(tmp_path: Path, certificates: Certificates) -> Flask:
    """The site trusting the test servers' certificates, so that TLS to them is verified."""
    return make_app(tmp_path, WTF_CSRF_ENABLED=True, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file))


@pytest.fixture
def detect_site(detect_app: Flask) -> Iterator[LiveServer]:
    yield from _serve(detect_app)


def _detect(page: Any, port: int) -> None:
    fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
    page.get_by_role("button", name="Detect port and encryption").click()
    page.locator("#detect-result").wait_for(timeout=10_000)


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_detect_fills_port_and_encryption_without_saving(
    detect_app: Flask, detect_site: LiveServer, tab_factory: Any, certificates: Certificates, javascript: bool
) -> None:
    page = tab_factory(detect_site.url, java_script_enabled=javascript).page
    with smtp_server(implicit_tls=certificates.server) as (port, handler):
        _detect(page, port)
    result = page.locator("#detect-result")
    assert "Detected." in result.inner_text() and "Nothing is saved" in result.inner_text()
    assert page.input_value("#smtp_port") == str(port)
    assert page.input_value("#encryption") == "TLS"
    assert page.input_value("#from_email") == "noreply@example.com"  # the rest of the form as typed
    assert handler.received == []
    assert stored_row(detect_app)["smtp_host"] == ""  # nothing saved
    # The candidate table is folded until asked for.
    assert not page.locator("#detect-candidates table").is_visible()
    page.locator("#detect-candidates summary").click()
    assert page.locator("#detect-candidates table").is_visible()


def test_the_folded_candidates_open_from_the_keyboard_and_axe_finds_nothing_serious(
    detect_site: LiveServer, tab_factory: Any, certificates: Certificates
) -> None:
    page = tab_factory(detect_site.url).page
    with smtp_server(implicit_tls=certificates.server) as (port, _):
        _detect(page, port)
    page.focus("#detect-button")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "SUMMARY":
            break
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    page.keyboard.press("Enter")
    assert page.locator("#detect-candidates table").is_visible()
    assert page.locator("#detect-candidates tbody tr").count() == 15  # five ports, three ways each
    assert _serious_violations(page) == []


# Every word of the element's text, with how many lines it is laid out on: a word on two is broken.
BROKEN_WORDS = """(root) => {
  const broken = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.textContent.matchAll(/[A-Za-z]{2,}/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
      if (lines.size > 1) broken.push(match[0]);
    }
  }
  return broken;
}"""


@pytest.mark.parametrize("width", [1280, 375])
def test_the_candidates_read_at_both_widths_without_a_broken_word(
    detect_site: LiveServer, tab_factory: Any, certificates: Certificates, width: int
) -> None:
    page = tab_factory(detect_site.url, viewport={"width": width, "height": 900}).page
    with smtp_server(implicit_tls=certificates.server) as (port, _):
        _detect(page, port)
    page.locator("#detect-candidates summary").click()
    table = page.locator("#detect-candidates table")
    assert table.is_visible()
    assert table.evaluate(BROKEN_WORDS) == []
    headers_shown = page.locator("#detect-candidates thead").bounding_box()["width"] > 1
    first_row = page.locator("#detect-candidates tbody tr").first
    if width == 375:  # a card per candidate: each value under its own heading, nothing to scroll sideways
        assert not headers_shown
        label = first_row.locator("td").first.evaluate("(cell) => getComputedStyle(cell, '::before').content")
        assert label == '"Port"'
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.locator("#detect-candidates .table-scroll").evaluate("(box) => box.scrollWidth <= box.clientWidth")
    else:
        assert headers_shown
    assert _serious_violations(page) == []


def test_detect_on_a_self_signed_server_leads_with_the_pin(site: LiveServer, site_app: Flask, tab_factory: Any) -> None:
    import ssl

    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)  # an authority the site does not know
    page = tab_factory(site.url, viewport={"width": 375, "height": 800}).page
    with smtp_server(implicit_tls=context) as (port, handler):
        _detect(page, port)
        result = page.locator("#detect-result")
        assert "Detected, with its certificate pinned." in result.inner_text()
        assert len(page.input_value("#pinned_cert_sha256")) == 64 and page.locator("#pinned_cert_sha256").is_visible()
        assert not page.is_checked("#allow_selfsigned_certs")
        assert _serious_violations(page) == []
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
        assert "Sent." in page.locator("#test-result").inner_text()  # the pin is all it takes
    assert len(handler.received) == 1


def test_trust_this_certificate_end_to_end(site: LiveServer, site_app: Flask, tab_factory: Any) -> None:
    import ssl

    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)  # an authority the site does not know
    page = tab_factory(site.url).page
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(implicit_tls=context, authenticator=auth) as (port, handler):
        fill_settings(page, port=port, encryption="TLS", host="127.0.0.1", username="mailer", password=EXAMPLE_PASSWORD)
        save(page)
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
        assert "Not sent." in page.locator("#test-result").inner_text()
        page.get_by_role("button", name="Trust this certificate").click()
        page.wait_for_load_state()
        assert page.locator("#trust-result").is_visible()
        pinned = page.input_value("#pinned_cert_sha256")
        assert len(pinned) == 64
        assert stored_row(site_app)["pinned_cert_sha256"] == ""  # not saved yet
        page.fill("#password", EXAMPLE_PASSWORD)
        save(page)
        assert page.get_by_role("status").filter(has_text="Settings saved.").is_visible()
        assert stored_row(site_app)["pinned_cert_sha256"] == pinned
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
        assert "Sent." in page.locator("#test-result").inner_text()
    assert len(handler.received) == 1
    assert EXAMPLE_PASSWORD not in page.content()


def test_the_mail_delivery_panel_after_a_success_and_a_failure(
    site: LiveServer, site_app: Flask, tab_factory: Any
) -> None:
    from email.message import EmailMessage

    import settings_ui

    def send() -> bool:
        message = EmailMessage()
        message["To"] = "customer@example.net"
        message.set_content("Hello.")
        return settings_ui.send_message(message, app=site_app).sent

    with smtp_server() as (port, _):
        page = tab_factory(site.url).page
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        save(page)
        assert send()
    fill_settings(page, port=free_port(), encryption="Plain", host="127.0.0.1")
    save(page)
    assert not send()
    for width in (1100, 375):
        narrow = tab_factory(site.url, viewport={"width": width, "height": 800}).page
        narrow.goto("/")
        alert = narrow.get_by_role("alert").filter(has_text="Mail is failing since")
        assert alert.is_visible() and "refused the connection" in alert.inner_text()
        assert "just now" in narrow.locator("#delivery-last-success").inner_text()
        assert "1 sent, 1 failed" in narrow.locator("#delivery-counts").inner_text()
        assert narrow.evaluate("document.documentElement.scrollWidth") <= width
        assert _serious_violations(narrow) == []


@pytest.mark.parametrize("width", [1100, 375])
def test_the_sign_in_method_switch_and_the_microsoft_365_preset(
    site: LiveServer, site_app: Flask, tab_factory: Any, width: int
) -> None:
    page = tab_factory(site.url, viewport={"width": width, "height": 900}).page
    page.goto("/")
    assert page.locator("#password").is_visible() and not page.locator("#oauth2_token_url").is_visible()
    page.select_option("#auth_method", "oauth2")
    assert page.locator("#oauth2_token_url").is_visible() and not page.locator("#password").is_visible()
    page.locator("#presets > summary").click()  # the presets are folded until asked for
    page.get_by_role("button", name="Microsoft 365 preset").click()
    page.wait_for_load_state()
    assert page.locator("#preset-result").is_visible()
    assert page.input_value("#smtp_host") == "smtp.office365.com" and page.input_value("#smtp_port") == "587"
    assert page.input_value("#encryption") == "StartTLS" and page.input_value("#auth_method") == "oauth2"
    assert "<tenant>" in page.input_value("#oauth2_token_url")
    assert page.locator("#oauth2_client_secret").is_visible()  # the method chosen shows its fields
    assert stored_row(site_app)["smtp_host"] == ""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert _serious_violations(page) == []


def test_without_javascript_the_oauth_fields_are_folded_until_opened(site: LiveServer, tab_factory: Any) -> None:
    page = tab_factory(site.url, java_script_enabled=False).page
    page.goto("/")
    assert page.locator("#password").is_visible() and not page.locator("#oauth2_token_url").is_visible()
    page.locator("#oauth2-fields > summary").click()
    assert page.locator("#oauth2_token_url").is_visible()
    # The Microsoft 365 preset chooses OAuth 2.0: its fields come unfolded.
    page.locator("#presets > summary").click()  # the presets are folded until asked for
    page.get_by_role("button", name="Microsoft 365 preset").click()
    page.wait_for_load_state()
    assert page.locator("#oauth2_token_url").is_visible()


# --- Clear, login --------------------------------------------------------------------------------


def test_clearing_asks_for_confirmation(page: Any, site_app: Flask) -> None:
    fill_settings(page, username="mailer", password=EXAMPLE_PASSWORD)
    save(page)
    page.get_by_role("link", name="Clear settings…").click()
    assert page.get_by_role("heading", name="Clear the email settings?").is_visible()
    assert stored_row(site_app)["smtp_host"] == "smtp.example.com"
    page.get_by_role("button", name="Yes, clear all email settings").click()
    page.wait_for_load_state()
    assert page.get_by_text("All email settings were cleared").is_visible()
    assert page.input_value("#smtp_host") == ""
    row = stored_row(site_app)
    assert (row["smtp_host"], row["password_encrypted"]) == ("", None)


@pytest.fixture
def admin_site(tmp_path: Path) -> Iterator[LiveServer]:
    from .helpers import ADMIN, ADMIN_HASH

    yield from _serve(make_app(tmp_path, WTF_CSRF_ENABLED=True, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH))


def test_login_and_logout(admin_site: LiveServer, tab_factory: Any) -> None:
    from .helpers import ADMIN, ADMIN_PASSWORD

    page = tab_factory(admin_site.url).page
    page.goto("/")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.fill("#username", ADMIN)
    page.fill("#password", "wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("The username or password is wrong.").is_visible()
    page.fill("#username", ADMIN)
    page.fill("#password", ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("heading", name="Email settings").is_visible()
    assert page.get_by_text(f"Signed in as {ADMIN}").is_visible()
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.goto("/")
    assert page.get_by_role("heading", name="Sign in").is_visible()


# --- Accessibility, layout, keyboard ------------------------------------------------------------


def _serious_violations(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_nothing_serious(page: Any, admin_site: LiveServer, tab_factory: Any) -> None:
    page.goto("/")
    assert _serious_violations(page) == []
    fill_settings(page, port="70000", from_email="bad")
    save(page)
    assert page.locator("#error-summary").is_visible()
    assert _serious_violations(page) == []
    page.goto("/clear")
    assert _serious_violations(page) == []
    logged_out = tab_factory(admin_site.url).page
    logged_out.goto("/login")
    assert _serious_violations(logged_out) == []


def test_readable_at_375_pixels_without_horizontal_scrolling(site: LiveServer, tab_factory: Any) -> None:
    page = tab_factory(site.url, viewport={"width": 375, "height": 800}).page
    with smtp_server() as (port, _):
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.goto("/clear")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_a_refused_certificate_is_laid_out_readably_at_375_pixels(
    site: LiveServer, tab_factory: Any, certificates: Certificates
) -> None:
    page = tab_factory(site.url, viewport={"width": 375, "height": 800}).page
    with smtp_server(implicit_tls=certificates.server) as (port, handler):  # our test CA: unknown to the site
        fill_settings(page, port=port, encryption="TLS", host="127.0.0.1")
        page.fill("#to", "me@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
    result = page.locator("#test-result")
    assert "Not sent." in result.inner_text()
    details = page.get_by_role("list", name="The server's certificate").locator("li")
    assert any(text.startswith("SHA-256 fingerprint") for text in details.all_inner_texts())
    assert "What to change:" in result.inner_text()
    assert "“Accept self-signed or otherwise invalid certificates”" in result.inner_text()  # the label
    assert "allow_selfsigned_certs" not in result.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert handler.received == []
    # The certificate is shown once: the failed step points to it rather than repeating it.
    assert page.locator("main").inner_text().count("SHA-256 fingerprint") == 1
    assert "The certificate is shown above." in page.locator("ol.steps").inner_text()
    # Trust this certificate leads, before the fix, its help a full line under the button, not a sliver beside it.
    text = result.inner_text()
    assert text.index("Trust this certificate") < text.index("What to change:")
    button = page.get_by_role("button", name="Trust this certificate").bounding_box()
    help_box = page.locator("#trust-help").bounding_box()
    assert help_box["y"] >= button["y"] + button["height"] and help_box["width"] > 250


def test_everything_is_reachable_by_keyboard_with_a_visible_focus(page: Any) -> None:
    page.goto("/")
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => { const e = document.activeElement;
                       if (e === document.body) return null;
                       const s = getComputedStyle(e);
                       return [e.id || e.textContent.trim(), s.outlineStyle !== "none" && s.outlineWidth !== "0px"] }"""
        )
        if focused is None:  # past the last control
            break
        reached.append(focused[0])
        assert focused[1], f"no visible focus on {focused[0]}"
    assert reached[0] == "Skip to the settings"
    for control in ["smtp_host", "smtp_port", "encryption", "from_email", "username", "password", "to"]:
        assert control in reached
    assert reached.index("save-button") < reached.index("to") < reached.index("test-button")
    assert reached[-1] == "Clear settings…"


def test_readme_screenshot(site: LiveServer, tab_factory: Any, tmp_path: Path) -> None:
    """Takes the README's screenshot, stamped with the page source it shows. UPDATE_SCREENSHOT=1
    writes it to docs/screenshot.png; SCREENSHOT_OUT names where else to keep it (CI keeps it)."""
    page = tab_factory(site.url, viewport={"width": 1000, "height": 900}).page
    with smtp_server(authenticator=Authenticator("mailer", EXAMPLE_PASSWORD)) as (port, _):
        fill_settings(
            page, port=port, encryption="StartTLS", host="127.0.0.1", username="mailer", password=EXAMPLE_PASSWORD
        )
        page.select_option("#encryption", "Plain")
        page.fill("#smtp_port", str(port))
        save(page)
        page.fill("#to", "admin@example.net")
        page.get_by_role("button", name="Send test email").click()
        page.wait_for_load_state()
    assert "Sent." in page.locator("#test-result").inner_text()
    for shown in ("#detect-button", "#certificate-section", "#machine-settings", "#delivery", "#oauth2-fields"):
        assert page.locator(shown).count() == 1, shown
    taken = tmp_path / "screenshot.png"
    page.screenshot(path=str(taken), full_page=True)
    picture = stamped(taken.read_bytes(), page_source_digest())
    assert len(picture) > 10_000
    targets = [Path(os.environ["SCREENSHOT_OUT"])] if os.environ.get("SCREENSHOT_OUT") else []
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        targets.append(SCREENSHOT)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(picture)


@pytest.mark.parametrize("width", [1280, 375])
def test_the_outbox_panel_reads_at_both_widths_and_drop_asks_first(
    site: LiveServer, site_app: Flask, tab_factory: Any, width: int
) -> None:
    from email.message import EmailMessage

    import settings_ui

    from .smtp_servers import RecordingHandler

    page = tab_factory(site.url, viewport={"width": width, "height": 900}).page
    with smtp_server(RecordingHandler(recipient_reply="451 4.3.0 Try again later")) as (port, _):
        fill_settings(page, port=port, encryption="Plain", host="127.0.0.1")
        save(page)
        message = EmailMessage()
        message["To"] = "customer@example.net"
        message.set_content("Hello.")
        assert settings_ui.send_message(message, app=site_app).queued is not None
    page.reload()  # the page as it is now, with the message queued
    assert "1 message waiting" in page.locator("#outbox-summary").inner_text()
    assert page.locator("#outbox table").evaluate(BROKEN_WORDS) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert _serious_violations(page) == []
    page.get_by_role("link", name="Drop…").click()
    assert page.get_by_role("heading", name="Drop queued message").is_visible()
    page.get_by_role("button", name="Yes, drop this message").click()
    page.wait_for_load_state()
    assert page.get_by_text("was dropped unsent").is_visible()
    assert "Outbox: empty." in page.locator("#outbox-empty").inner_text() and page.locator("#outbox").count() == 0
