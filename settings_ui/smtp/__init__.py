"""Talking to the SMTP server: one message, step by step, within a hard deadline, each failure explained."""

from .conversation import Report, SmtpTarget, Step, build_message, send
from .diagnosis import describe_certificate

__all__ = ["Report", "SmtpTarget", "Step", "build_message", "describe_certificate", "send"]
