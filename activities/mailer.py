"""Sending one email over SMTP, configured by a URL such as ``smtp://user:pass@host:587``.

``smtp://`` upgrades to TLS with STARTTLS when the server offers it; ``smtps://`` speaks TLS
from the first byte (port 465).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import aiosmtplib

MESSAGE_ID_DOMAIN = "support-cases"

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
# RFC 5322 "atext": what may stand between the dots of a msg-id's left part.
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_DOTS = re.compile(r"\.{2,}")


def message_id(key: str) -> str:
    """The Message-ID of the message with idempotency key ``key``: the same key always gives
    the same id, so a resend after a crash is collapsed by mail clients.

    ``case-00123:17:notify:reminder`` -> ``<case-00123.17.notify.reminder@support-cases>``.
    """
    left = _DOTS.sub(".", _NOT_ATEXT.sub(".", key)).strip(".") or "message"
    return f"<{left}@{MESSAGE_ID_DOMAIN}>"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"SMTP URL must start with smtp:// or smtps://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"SMTP URL has no host: {url!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or _DEFAULT_PORTS[parts.scheme],
            implicit_tls=parts.scheme == "smtps",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


class Mailer:
    def __init__(self, url: str, mail_from: str, *, timeout: float = 30.0) -> None:
        self.server = SmtpServer.from_url(url)
        self.mail_from = mail_from
        # Bounded so a hung server fails the attempt (and Temporal retries) well before the
        # activity's start-to-close timeout.
        self.timeout = timeout

    def build(
        self, *, to: str, subject: str, body: str, msg_id: str, date: datetime
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = msg_id
        # The instant the message was first recorded, so a resend is byte-for-byte the same mail.
        message["Date"] = format_datetime(date)
        # RFC 3834: tells auto-responders not to answer, which avoids mail loops.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        return message

    async def send(self, message: EmailMessage) -> None:
        server = self.server
        await aiosmtplib.send(
            message,
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            username=server.username,
            password=server.password,
            timeout=self.timeout,
        )
