"""The framework's ceiling: a minimal Flask app answering the same routes with constants.

The benchmark runs it under the same gunicorn settings as settings-ui, so each of
settings-ui's figures can be read as a share of what Flask and gunicorn allow here.
"""

from flask import Flask, Response

app = Flask(__name__)

SETTINGS = (
    b'{"result":{"allow_selfsigned_certs":false,"encryption":"StartTLS","from_email":"noreply@example.com",'
    b'"smtp_host":"smtp.example.com","smtp_port":587,"username":"mailer"},"successful":true}\n'
)
PAGE = b"<!doctype html><html><head><title>Email settings</title></head><body>" + b"x" * 9000 + b"</body></html>"


@app.post("/email-settings/show")
@app.post("/email-settings/edit")
def settings() -> Response:
    return Response(SETTINGS, mimetype="application/json")


@app.get("/")
def page() -> Response:
    return Response(PAGE, mimetype="text/html")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
