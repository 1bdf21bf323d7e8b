"""Sending one email over SMTP, configured by a URL such as ``smtp://user:pass@host:587``.

``smtp://`` upgrades to TLS with STARTTLS when the server offers it, and insists on it when the
URL carries credentials (they never cross the wire in clear); ``smtps://`` speaks TLS from the
first byte (port 465).

A message goes to exactly one recipient, given to the server explicitly (never taken from the
headers). Once the session is up, a permanent refusal of this message (a 5xx answer to RCPT
or DATA, or a feature the message needs and the server lacks) is ``Undeliverable`` with the
server's answer; anything else (no connection, a timeout, a 4xx, a failed login, a refused
sender: the worker's own configuration) is raised as it is and retried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import aiosmtplib

from workflows.mailbox import NotOneMailbox, one_mailbox, recipient

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


class Undeliverable(Exception):
    """The server refused this message for good; ``reason`` is its answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def permanent_refusal(err: BaseException) -> str | None:
    """The server's answer if ``err`` refuses the message for good, else None (retry)."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        answers = [permanent_refusal(r) for r in err.recipients]
        return "; ".join(a for a in answers if a) if answers and all(answers) else None
    if isinstance(err, aiosmtplib.SMTPNotSupported):
        return f"not supported by the server: {err}"
    # The recipient or the content. A refused sender (MAIL FROM) or login is the worker's own
    # configuration, the same for every message: retried, so fixing it delivers them all.
    refusals = (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError)
    if isinstance(err, refusals) and 500 <= err.code < 600:
        return f"{err.code} {err.message}"
    return None


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


# How long the worker's start waits for the SMTP server's greeting to see whether it offers TLS.
TLS_CHECK_TIMEOUT = 10.0


class SmtpTlsRequired(Exception):
    """The URL carries credentials, but the server offers no TLS to send them over."""


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
        try:
            mailbox = one_mailbox(to)
        except NotOneMailbox as err:
            raise Undeliverable(f"recipient {to!r}: {err}") from None
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = mailbox
        message["Subject"] = subject
        message["Message-ID"] = msg_id
        # The instant the message was first recorded, so a resend is byte-for-byte the same mail.
        message["Date"] = format_datetime(date)
        # RFC 3834: tells auto-responders not to answer, which avoids mail loops.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        return message

    async def check_tls_for_credentials(self) -> None:
        """With credentials in an ``smtp://`` URL, the server must offer STARTTLS: raise
        ``SmtpTlsRequired`` if it answers without it. A server that cannot be reached now is
        no verdict (every send insists on STARTTLS anyway)."""
        server = self.server
        if server.username is None or server.implicit_tls:
            return
        smtp = aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=TLS_CHECK_TIMEOUT
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
        except (aiosmtplib.SMTPException, OSError):
            return
        try:
            if not smtp.supports_extension("starttls"):
                raise SmtpTlsRequired(
                    f"CASES_SMTP_URL carries credentials, but the SMTP server at "
                    f"{server.host}:{server.port} offers no STARTTLS: they would travel in "
                    "clear. Use smtps:// (TLS from the start) or a server that offers STARTTLS."
                )
        finally:
            smtp.close()

    async def send(self, message: EmailMessage, to: str) -> None:
        """Send ``message`` to the one mailbox ``to``; raises ``Undeliverable`` for a permanent
        refusal, anything else for a failure worth retrying."""
        try:
            rcpt = recipient(to)
        except NotOneMailbox as err:
            raise Undeliverable(f"recipient {to!r}: {err}") from None
        server = self.server
        smtp = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            # Credentials only over TLS: STARTTLS is then required, not merely tried.
            start_tls=None if server.implicit_tls or server.username is None else True,
            username=server.username,
            password=server.password,
            timeout=self.timeout,
        )
        async with smtp:  # connect, TLS, login: a failure here says nothing about the message
            try:
                await smtp.send_message(message, recipients=[rcpt])
            except aiosmtplib.SMTPException as err:
                reason = permanent_refusal(err)
                if reason is None:
                    raise
                raise Undeliverable(reason) from err
