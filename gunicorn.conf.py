"""Production serving: `gunicorn app:app` (this file is read from the working directory).

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads keep a worker serving while one of its requests waits on an SMTP server.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
# Longer than the longest request: a test email may take up to SMTP_TIMEOUT seconds.
timeout = int(os.environ.get("SETTINGS_UI_SMTP_TIMEOUT", "10")) + 20
graceful_timeout = 30
keepalive = 5
# The access log has the request line, never a body (gunicorn does not log bodies), and no
# Basic user name either: a password typed into the user name box would land there in clear.
accesslog = "-"
access_log_format = '%(h)s [%(t)s] "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
# Each worker opens its own database connections; migrations run under a lock in each.
preload_app = False
