"""Messages as RFC 5322 `.eml` files in a folder: sesd runs end to end without an AWS account."""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import os
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import orjson

from .. import templating
from ..config import Settings
from ..errors import PermanentSendError, RetryableSendError, SendError
from .base import BulkEntry, BulkTemplate, Email, EntryResult, Envelope

DEFAULT_SENDER = "sesd@localhost"
FILE_MODE = 0o600  # readable by the service's user only


class OutboxTransport:
    name = "outbox"

    def __init__(self, settings: Settings) -> None:
        self._dir = Path(settings.outbox_dir)
        sender = settings.email_sender or DEFAULT_SENDER
        # make_msgid() without a domain asks DNS for the host name on every call.
        self._domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"

    async def start(self) -> None:
        # Private whatever the umask: each file holds a recipient's address and message.
        await asyncio.to_thread(self._dir.mkdir, mode=0o700, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def send(self, message: Email) -> str:
        return await asyncio.to_thread(self._write, message)

    async def send_bulk(self, envelope: Envelope, template: BulkTemplate,
                        entries: Sequence[BulkEntry]) -> list[EntryResult]:
        if not entries:
            return []
        # One thread hop for the whole batch, not one per file.
        return await asyncio.to_thread(self._write_bulk, envelope, template, list(entries))

    async def max_send_rate(self) -> float | None:
        return None

    # -- runs in a worker thread ------------------------------------------

    def _write_bulk(self, envelope: Envelope, template: BulkTemplate,
                    entries: list[BulkEntry]) -> list[EntryResult]:
        """Fill the template in for each entry as SES does (its variables are simple
        substitutions), and write each message."""
        subject = templating.parse(template.subject)
        body = templating.parse(template.html)
        text = templating.parse(template.text) if template.text is not None else None
        results: list[EntryResult] = []
        for entry in entries:
            data = orjson.loads(entry.data)
            message = Email(entry.request_id, entry.to, envelope, subject.render(data),
                            body.render(data), text.render(data) if text is not None else None,
                            entry.headers, entry.tags)
            try:
                message_id = self._write(message)
            except SendError as exc:
                results.append(EntryResult(entry.request_id, None, exc))
            else:
                results.append(EntryResult(entry.request_id, message_id, None))
        return results

    def _write(self, message: Email) -> str:
        token = uuid.uuid4().hex
        data = self._render(message, token)
        name = f"{message.request_id}-{token}.eml"
        final = self._dir / name
        # Same folder, so os.replace is an atomic rename: a reader sees the whole file or none.
        # No fsync: the outbox is for development; a power cut may leave an empty file behind,
        # but a live reader never sees half a message.
        tmp = self._dir / f".{name}.tmp"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                with open(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise RetryableSendError(f"outbox write failed: {exc}", code="OutboxWrite") from exc
        return f"outbox-{token}"

    def _render(self, message: Email, token: str) -> bytes:
        envelope = message.envelope
        fields: list[tuple[str, str]] = [("From", envelope.sender), ("To", message.to),
                                         ("Subject", message.subject)]
        if envelope.reply_to:
            fields.append(("Reply-To", ", ".join(envelope.reply_to)))
        fields += [("Date", email.utils.formatdate(usegmt=True)),
                   ("Message-ID", f"<{token}@{self._domain}>"), *message.headers]
        # What SES would take from these headers in a raw message: the outbox keeps the call's
        # configuration set and tags visible in the file.
        if envelope.config_set:
            fields.append(("X-SES-CONFIGURATION-SET", envelope.config_set))
        if message.tags:
            fields.append(("X-SES-MESSAGE-TAGS", ", ".join(f"{n}={v}" for n, v in message.tags)))
        for name, value in fields:
            # The email package refuses a line break inside a header value but lets a trailing
            # one through, which would end the header block early; refuse every line boundary.
            if value.splitlines() != ([value] if value else []):
                raise PermanentSendError(f"line break in {name} header", code="InvalidHeader")
        msg = EmailMessage(policy=email.policy.SMTP)
        try:
            for name, value in fields:
                msg[name] = value
            if message.text is not None:
                # multipart/alternative: the text part first, the preferred HTML last (RFC 2046).
                msg.set_content(message.text, charset="utf-8")
                msg.add_alternative(message.html, subtype="html", charset="utf-8")
            else:
                msg.set_content(message.html, subtype="html", charset="utf-8")
            data = msg.as_bytes()
        except ValueError as exc:  # includes UnicodeEncodeError (lone surrogates)
            raise PermanentSendError(f"cannot build message: {exc}", code="InvalidMessage") from exc
        if not _headers_intact(data, len(msg)):
            raise PermanentSendError("header injection refused", code="InvalidHeader")
        return data


def _headers_intact(data: bytes, fields: int) -> bool:
    """Whether the written header block holds exactly the `fields` headers that were set.

    An RFC 2047 encoded word can carry an escaped CR LF ("=?utf-8?q?=0D=0ABcc:...?="); Python
    before 3.11.10 decodes it when the header is set and writes it back out raw (CVE-2024-6923),
    adding a header or ending the block early. Both change the count of unfolded lines.
    """
    head = data.partition(b"\r\n\r\n")[0]
    lines = head.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return False
    return sum(1 for line in lines if line[:1] not in (b" ", b"\t")) == fields
