"""Amazon SES v2 through one aiobotocore client per process.

Every botocore/aiohttp failure is translated into a SendError subclass here, in `classify`, and
nowhere else. botocore's own retries are off: the sender retries, so that every attempt passes
its token bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import html
import re
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..config import Settings
from ..errors import (
    BulkUnsupportedError,
    IdentityNotVerifiedError,
    PermanentSendError,
    RetryableSendError,
    SendError,
    SendingPausedError,
    ThrottledError,
)
from .base import MAX_BULK_ENTRIES, BulkEntry, BulkTemplate, Email, EntryResult, Envelope, Headers
from .ses_wire import SEND_BULK_EMAIL, SEND_EMAIL, SesWire

_THROTTLE_CODES = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "ThrottledException"}
)
_PAUSED_CODES = frozenset({"SendingPausedException", "AccountSuspendedException"})
# A bad or expired key refuses every message alike: failing each request for good would empty
# the queue into "failed" while an operator fixes one variable, so hold all work instead.
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDeniedException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "MissingAuthenticationTokenException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)

# SendBulkEmail answers one Status per entry instead of raising; this is what each one means.
# Unknown statuses are treated as retryable.
ENTRY_STATUS_ERRORS: dict[str, type[SendError]] = {
    "ACCOUNT_THROTTLED": ThrottledError,
    # The 24-hour quota frees up slowly over the rolling day: hold everything, don't burn retries.
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": SendingPausedError,
    "ACCOUNT_SUSPENDED": SendingPausedError,
    "ACCOUNT_SENDING_PAUSED": SendingPausedError,
    "CONFIGURATION_SET_SENDING_PAUSED": SendingPausedError,
    "MESSAGE_REJECTED": PermanentSendError,
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": PermanentSendError,
    "CONFIGURATION_SET_NOT_FOUND": PermanentSendError,
    "TEMPLATE_NOT_FOUND": PermanentSendError,
    "INVALID_SENDING_POOL_NAME": PermanentSendError,
    "INVALID_PARAMETER": PermanentSendError,
    "TRANSIENT_FAILURE": RetryableSendError,
    "FAILED": RetryableSendError,
}


# An endpoint without the operation answers a bare 404 (botocore then names the error by the
# HTTP status) or an unknown-operation error; SES's own NotFoundException (a missing
# configuration set or template) is something else: a real, permanent answer.
_UNKNOWN_OPERATION_CODES = frozenset({"404", "UnknownOperationException", "UnknownOperation",
                                      "InvalidAction"})
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_IDENTITY_TOKEN = re.compile(r"[^\s,;:<>()\[\]\"']+")
MAX_MESSAGE = 500


def classify(exc: BaseException, *, sender: str = "", bulk: bool = False) -> SendError:
    """Translate whatever a SES call raised into what it means for the sender.

    `sender` is the call's From address: SES refusing *it* (unverified identity) holds its mail
    instead of failing the recipient. `bulk`: the call was SendBulkEmail, which an emulator may
    not implement at all."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, ClientError):
        error = _classify_client_error(exc)
        if bulk and error.code in _UNKNOWN_OPERATION_CODES:
            return BulkUnsupportedError(str(error), code=error.code)
        if isinstance(error, PermanentSendError) and _identity_refused(str(error), sender):
            return IdentityNotVerifiedError(str(error), identity=_address(sender),
                                            code=error.code)
        return error
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SendingPausedError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)
    if isinstance(exc, HTTPClientError | BotoConnectionError | aiohttp.ClientError | OSError):
        # OSError covers TimeoutError (asyncio's too) and refused or reset connections.
        text = str(exc) or "SES call timed out"
        return RetryableSendError(f"{type(exc).__name__}: {text}", code=type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        # Parameter validation and the like: this request will never be accepted as built.
        return PermanentSendError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)
    return RetryableSendError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)


def clean_message(message: str) -> str:
    """SES's message as one short line: an HTML error page (an emulator's, a proxy's) becomes
    its title, so what is stored and logged is the reason, not a page of markup."""
    text = message.strip()
    if text.startswith("<"):
        title = _TITLE.search(text)
        text = html.unescape(title.group(1) if title else _TAG.sub(" ", text))
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"


def _address(sender: str) -> str:
    return email.utils.parseaddr(sender)[1] or sender


def _identity_refused(message: str, sender: str) -> bool:
    """Whether a rejection says the From identity (its address or its domain) is unverified.
    SES lists the identities that failed the check; in the sandbox an unverified *recipient*
    is listed too, and that one stays a failure of that recipient alone."""
    lowered = message.lower()
    address = _address(sender).lower()
    if not address or "not verified" not in lowered:
        return False
    tail = lowered.rpartition("not verified")[2]
    tokens = set(_IDENTITY_TOKEN.findall(tail.rpartition(":")[2] if ":" in tail else tail))
    return address in tokens or address.rpartition("@")[2] in tokens


def _classify_client_error(exc: ClientError) -> SendError:
    error = exc.response.get("Error") or {}
    code = str(error.get("Code") or "Unknown")
    message = clean_message(str(error.get("Message") or ""))
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    text = f"{code}: {message}" if message else code
    lowered = message.lower()
    if code in _PAUSED_CODES or code in _CREDENTIAL_CODES or "daily message quota" in lowered:
        return SendingPausedError(text, code=code)
    if code in _THROTTLE_CODES or status == 429:
        return ThrottledError(text, code=code)
    if code == "LimitExceededException" and "rate" in lowered:
        return ThrottledError(text, code=code)
    if status >= 500 or (not status and code in ("InternalFailure", "ServiceUnavailable")):
        return RetryableSendError(text, code=code)
    return PermanentSendError(text, code=code)


def classify_entry(status: str, error: str | None, *, sender: str = "") -> SendError | None:
    """The meaning of one BulkEmailEntryResult; None for SUCCESS."""
    if status == "SUCCESS":
        return None
    text = f"{status}: {clean_message(error)}" if error else status
    kind = ENTRY_STATUS_ERRORS.get(status, RetryableSendError)
    if kind is PermanentSendError and _identity_refused(text, sender):
        return IdentityNotVerifiedError(text, identity=_address(sender), code=status)
    return kind(text, code=status)


class SesTransport:
    name = "ses"

    def __init__(
        self,
        settings: Settings,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        call_timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # Outer guard: botocore's timeouts bound each socket read, not the whole call.
        self._call_timeout = call_timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._wire: SesWire | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self._settings.max_concurrent,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            tcp_keepalive=True,
        )
        # No endpoint_url: botocore honours AWS_ENDPOINT_URL(_SESV2) itself.
        self._client = await self._stack.enter_async_context(
            AioSession().create_client(
                "sesv2", region_name=self._settings.aws_region, config=config
            )
        )
        _freeze_user_agent(self._client)
        # The sends go straight over aiohttp (ses_wire), with the client's endpoint,
        # credentials and signing name; everything else goes through the client.
        meta = self._client.meta
        self._wire = SesWire(
            endpoint_url=meta.endpoint_url, region=meta.region_name,
            signing_name=meta.service_model.signing_name,
            credentials=self._client._request_signer._credentials,
            user_agent=_user_agent(self._client), max_connections=self._settings.max_concurrent,
            connect_timeout=self._connect_timeout, read_timeout=self._read_timeout)
        await self._wire.start()

    async def close(self) -> None:
        self._client = None
        wire, self._wire = self._wire, None
        try:
            if wire is not None:
                await wire.close()
        finally:
            await self._stack.aclose()

    async def send(self, email: Email) -> str:
        body: dict[str, Any] = {"Html": {"Data": email.html, "Charset": "UTF-8"}}
        if email.text:
            body["Text"] = {"Data": email.text, "Charset": "UTF-8"}
        request: dict[str, Any] = {
            "FromEmailAddress": email.envelope.sender,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                    "Body": body,
                    "Headers": _headers(email.headers),
                }
            },
        }
        _envelope(request, email.envelope)
        if email.tags:
            request["EmailTags"] = _tags(email.tags)
        wire = self._require_wire()
        try:
            async with asyncio.timeout(self._call_timeout):
                response = await wire.call(SEND_EMAIL, request)
        except Exception as exc:
            raise classify(exc, sender=email.envelope.sender) from exc
        message_id = response.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            raise RetryableSendError("SES answered without a MessageId", code="MissingResult")
        return message_id

    async def send_bulk(self, envelope: Envelope, template: BulkTemplate,
                        entries: Sequence[BulkEntry]) -> list[EntryResult]:
        if not entries:
            return []
        if len(entries) > MAX_BULK_ENTRIES:
            raise ValueError(
                f"at most {MAX_BULK_ENTRIES} entries per bulk send, got {len(entries)}"
            )
        content: dict[str, Any] = {"Subject": template.subject, "Html": template.html}
        if template.text:
            content["Text"] = template.text
        bulk_entries = []
        for entry in entries:
            one: dict[str, Any] = {
                "Destination": {"ToAddresses": [entry.to]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": entry.data}
                },
                "ReplacementHeaders": _headers(entry.headers),
            }
            if entry.tags:
                one["ReplacementTags"] = _tags(entry.tags)
            bulk_entries.append(one)
        request: dict[str, Any] = {
            "FromEmailAddress": envelope.sender,
            "DefaultContent": {
                "Template": {
                    "TemplateContent": content,
                    # Optional in the model; every entry brings all of its own variables.
                    "TemplateData": "{}",
                }
            },
            "BulkEmailEntries": bulk_entries,
        }
        _envelope(request, envelope)
        wire = self._require_wire()
        try:
            async with asyncio.timeout(self._call_timeout):
                response = await wire.call(SEND_BULK_EMAIL, request)
        except Exception as exc:
            raise classify(exc, sender=envelope.sender, bulk=True) from exc
        results = response.get("BulkEmailEntryResults") or []
        out: list[EntryResult] = []
        for i, entry in enumerate(entries):
            if i >= len(results):
                # SES answers one result per entry; should it not, the entry's fate is unknown.
                missing = RetryableSendError("no result for this entry", code="MissingResult")
                out.append(EntryResult(entry.request_id, None, missing))
                continue
            result = results[i]
            error = classify_entry(result.get("Status", ""), result.get("Error"),
                                   sender=envelope.sender)
            message_id = result.get("MessageId") if error is None else None
            out.append(EntryResult(entry.request_id, message_id, error))
        return out

    async def max_send_rate(self) -> float | None:
        try:
            async with asyncio.timeout(self._call_timeout):
                account = await self._require_client().get_account()
            return float(account["SendQuota"]["MaxSendRate"])
        except Exception:
            return None

    def _require_wire(self) -> SesWire:
        wire = self._wire
        if wire is None:
            raise RuntimeError("SesTransport.start() was not awaited")
        return wire

    def _require_client(self) -> Any:
        client = self._client
        if client is None:
            raise RuntimeError("SesTransport.start() was not awaited")
        return client


def _headers(headers: Headers) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in headers]


def _tags(tags: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in tags]


def _envelope(request: dict[str, Any], envelope: Envelope) -> None:
    if envelope.reply_to:
        request["ReplyToAddresses"] = list(envelope.reply_to)
    if envelope.config_set:
        request["ConfigurationSetName"] = envelope.config_set


def _user_agent(client: Any) -> str:
    creator: Any = getattr(client, "_user_agent_creator", None)
    try:
        return str(creator.to_string())
    except Exception:  # pragma: no cover - botocore's internals moved: a plain one will do
        return "sesd"


def _freeze_user_agent(client: Any) -> None:
    """Build the User-Agent once instead of twice per call.

    botocore rebuilds the whole string on every request (once for the request dict, once more
    in a request-created hook) so that features used later can be listed; profiling puts that
    at ~15% of the CPU of a SendEmail call. Our client's features never change after start, so
    the first string is the right one for every call. Best effort: if botocore's internals move,
    we keep its behaviour.
    """
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None or not callable(getattr(creator, "to_string", None)):
        return
    try:
        user_agent = creator.to_string()
    except Exception:  # pragma: no cover - never worth failing the transport over
        return
    creator.to_string = lambda: user_agent
