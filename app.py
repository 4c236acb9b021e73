"""Run settings-ui: ``python app.py [--host H] [--port P]``, ``flask --app app run`` or ``gunicorn app:app``."""

from settings_ui import create_app
from settings_ui.cli import main

app = create_app()

if __name__ == "__main__":
    main(app)
