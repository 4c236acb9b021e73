"""Talking to the SMTP server: one message, step by step, within a hard deadline, each failure explained."""

from .conversation import deliver
from .diagnosis import host_port
from .model import Mail, Options, Report, SmtpTarget, Step, server_of, tls_version

__all__ = ["Mail", "Options", "Report", "SmtpTarget", "Step", "deliver", "host_port", "server_of", "tls_version"]
