"""One email address, one mailbox: the rule every recipient of a case's mail obeys.

A header value can name many recipients (a list, a group, an encoded-word that decodes to
``a@x, b@y``), and an SMTP library that takes its recipients from the ``To`` header sends to all
of them. So an address is parsed as an address header, exactly as the mail is built, and it must
come out as exactly one mailbox, with no group and no parse defect; the sender then passes that
mailbox's address to the SMTP server explicitly.

Pure standard library, no Temporal: the contract validates with it at open, the notify activity
again before each send (for cases opened before the rule).
"""

from __future__ import annotations

from email.headerregistry import Address, HeaderRegistry

_HEADERS = HeaderRegistry()


class NotOneMailbox(ValueError):
    """The value is not exactly one mailbox; the message says what it is instead."""


def one_mailbox(value: str) -> Address:
    """The single mailbox ``value`` names, as the ``To`` header of a message would parse it."""
    if "=?" in value:
        # An encoded-word hides what the address really is until a mail library decodes it.
        raise NotOneMailbox("one email address, plainly written: no encoded-word (=?...?=)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise NotOneMailbox("an email address may not contain control characters")
    try:
        header = _HEADERS("To", value)
        groups = header.groups  # type: ignore[attr-defined]
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception:  # the header parser raises more than HeaderParseError on odd input
        raise NotOneMailbox("not an email address (name@domain)") from None
    if any(g.display_name is not None for g in groups):
        raise NotOneMailbox("one email address, not a group (name: addresses;)")
    if len(addresses) != 1:
        raise NotOneMailbox(
            f"one email address, not a list ({len(addresses)} addresses found)"
            if addresses
            else "not an email address"
        )
    if header.defects:
        raise NotOneMailbox(f"not a valid email address: {header.defects[0]}")
    address: Address = addresses[0]
    if not address.username or not address.domain:
        raise NotOneMailbox("an email address needs a name and a domain (name@domain)")
    return address


def recipient(value: str) -> str:
    """The address the SMTP server is given for ``value`` (``name@domain``, no display name)."""
    return one_mailbox(value).addr_spec
