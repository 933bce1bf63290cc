"""A local stand-in for the Amazon SES v2 HTTP API.

The stand-in speaks the SES v2 REST-JSON protocol exactly as botocore's
``sesv2`` client sends it, so sesd (and anything else built on
botocore/aiobotocore) can point ``endpoint_url`` at it in tests and benchmarks.

Operations
    ``POST /v2/email/outbound-emails``       SendEmail      -> ``{"MessageId"}``
    ``POST /v2/email/outbound-bulk-emails``  SendBulkEmail  -> ``{"BulkEmailEntryResults"}``
    ``GET  /v2/email/account``               GetAccount     -> ``SendQuota`` etc.

Errors are answered the way botocore's rest-json parser reads them: an HTTP
status, an ``x-amzn-ErrorType: <Code>`` header and a ``{"message": ...}`` body.
Every SES call must carry an ``Authorization: AWS4-HMAC-SHA256 ...`` header
(the signature itself is not checked), else 403
``MissingAuthenticationTokenException``.

Control endpoints (not part of SES)
    ``GET  /_standin/config``   current :class:`StandinConfig` as JSON
    ``POST /_standin/config``   JSON object with some :class:`StandinConfig`
                                field names; merged into the current config
    ``GET  /_standin/log``      ``{"sends": [...], "counters": {...}, "next": n}``;
                                ``?since=<index>`` returns ``sends[index:]``
    ``POST /_standin/reset``    clear the log, counters and rate window

Order of the checks for a send request: authentication, request validation
(400 ``BadRequestException``), ``paused`` (400 ``SendingPausedException``),
``throttle_rate`` (spurious 429), ``max_rate`` (429
``TooManyRequestsException``), ``error_rate`` (500 ``InternalFailure``),
``reject_pattern`` (400 ``MessageRejected``; per entry for bulk), acceptance.
The decision is made, and an accepted send is logged, at request arrival; the
``latency_ms`` / ``hang_seconds`` sleep happens afterwards, before answering.
So a client that times out on a hanging request has nevertheless had its
message accepted -- just like the ambiguous case with the real service.

Run standalone::

    python -m sesd.testing.ses_standin --port 0 --max-rate 200 --latency-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import email
import email.policy
import email.utils
import random
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "STANDIN_KEY",
    "Counters",
    "SesStandin",
    "StandinConfig",
    "main",
    "render_template",
    "start_standin",
]

MAX_RECIPIENTS_PER_MESSAGE = 50
MAX_BULK_ENTRIES = 50


# --------------------------------------------------------------------------
# configuration


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class StandinConfig:
    """Behaviour knobs of the stand-in (all optional)."""

    #: max recipients accepted in any sliding one-second window (None = unlimited)
    max_rate: float | None = None
    #: sleep before answering every SES call
    latency_ms: float = 0
    #: probability of a 500 InternalFailure
    error_rate: float = 0
    #: probability of a spurious 429 TooManyRequestsException
    throttle_rate: float = 0
    #: probability of sleeping ``hang_seconds`` before answering
    hang_rate: float = 0
    hang_seconds: float = 30
    #: regex; a matching recipient is rejected with MessageRejected
    reject_pattern: str | None = None
    #: answer every send with 400 SendingPausedException
    paused: bool = False
    #: seed for the randomness (error/throttle/hang rates)
    seed: int | None = None
    #: what GetAccount reports as SendQuota.MaxSendRate
    max_send_rate_reported: float = 14.0
    #: what GetAccount reports as SendQuota.Max24HourSend
    max_24_hour_send: float = 50000.0

    def __post_init__(self) -> None:
        if self.max_rate is not None and (not _is_number(self.max_rate) or self.max_rate < 0):
            raise ValueError("max_rate must be a non-negative number or null")
        for name in ("latency_ms", "hang_seconds", "max_send_rate_reported", "max_24_hour_send"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number")
        for name in ("error_rate", "throttle_rate", "hang_rate"):
            v = getattr(self, name)
            if not _is_number(v) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1")
        if self.reject_pattern is not None:
            if not isinstance(self.reject_pattern, str):
                raise ValueError("reject_pattern must be a string or null")
            try:
                re.compile(self.reject_pattern)
            except re.error as e:
                raise ValueError(f"reject_pattern is not a valid regex: {e}") from None
        if not isinstance(self.paused, bool):
            raise ValueError("paused must be a boolean")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise ValueError("seed must be an integer or null")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> StandinConfig:
        """A copy with ``changes`` applied; ValueError on unknown fields/bad values."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass
class Counters:
    requests: int = 0  # SES API requests (any operation, any outcome)
    accepted: int = 0  # accepted messages (one per SendEmail, one per bulk entry)
    accepted_recipients: int = 0
    throttled: int = 0  # 429 answers (max_rate or throttle_rate)
    errors: int = 0  # 500 InternalFailure answers
    rejected: int = 0  # MessageRejected (SendEmail requests + bulk entries)
    paused: int = 0  # SendingPausedException answers
    bad_requests: int = 0  # BadRequestException answers
    auth_failures: int = 0  # 403 MissingAuthenticationTokenException answers
    peak_window: int = 0  # max recipients accepted in any sliding 1 s window

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# helpers

_PLACEHOLDER = re.compile(r"\{\{\{?\s*([^{}\s]+)\s*\}?\}\}")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return orjson.dumps(v).decode()


def render_template(text: str | None, data: dict[str, Any]) -> str | None:
    """Substitute ``{{name}}`` / ``{{{name}}}`` / ``{{a.b}}`` placeholders.

    Missing names render as the empty string (as Handlebars does); block
    helpers (``{{#if}}`` ...) are left untouched.
    """
    if not text or "{{" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name[0] in "#/!^>" or name == "else":
            return m.group(0)
        cur: Any = data
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                return ""
        return _fmt(cur)

    return _PLACEHOLDER.sub(sub, text)


def _header(headers: list[dict[str, Any]] | None, name: str) -> str | None:
    if not headers:
        return None
    lname = name.lower()
    for h in headers:
        if isinstance(h, dict) and str(h.get("Name", "")).lower() == lname:
            return h.get("Value")
    return None


def _json_obj(s: Any) -> dict[str, Any]:
    """Parse TemplateData-style JSON (a string); ValueError if not an object."""
    if s is None or s == "":
        return {}
    if isinstance(s, dict):
        return s
    v = orjson.loads(s)
    if not isinstance(v, dict):
        raise ValueError("template data must be a JSON object")
    return v


def _addresses(dest: Any) -> tuple[list[str], list[str], list[str]]:
    if not isinstance(dest, dict):
        return [], [], []
    return (
        list(dest.get("ToAddresses") or ()),
        list(dest.get("CcAddresses") or ()),
        list(dest.get("BccAddresses") or ()),
    )


class _BadRequest(Exception):
    pass


_JSON_HEADERS = {"Content-Type": "application/json"}


# --------------------------------------------------------------------------
# the stand-in


class SesStandin:
    """In-memory SES v2 stand-in; ``app`` is the aiohttp application."""

    def __init__(self, config: StandinConfig = StandinConfig()) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._reject_re = re.compile(config.reject_pattern) if config.reject_pattern else None
        self.sends: list[dict[str, Any]] = []
        self.counters = Counters()
        # accepted (monotonic time, recipients) inside the last second
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_sum = 0
        # SES-looking ids: "<ms>-<instance uuid prefix>-<sequence>-000000"
        self._instance = str(uuid.uuid4())[:23]
        self._seq = 0
        self.app = self._make_app()

    # -- config ------------------------------------------------------------

    @property
    def config(self) -> StandinConfig:
        return self._config

    @config.setter
    def config(self, config: StandinConfig) -> None:
        old = self._config
        self._config = config
        self._reject_re = re.compile(config.reject_pattern) if config.reject_pattern else None
        if config.seed is not None and config.seed != old.seed:
            self._rng = random.Random(config.seed)

    def reset(self) -> None:
        self.sends.clear()
        self.counters = Counters()
        self._window.clear()
        self._window_sum = 0

    def peak_window(self) -> int:
        """Max recipients accepted in any sliding one-second window so far."""
        return self.counters.peak_window

    def log_snapshot(self, since: int = 0) -> dict[str, Any]:
        return {
            "sends": self.sends[since:],
            "counters": self.counters.to_dict(),
            "next": len(self.sends),
        }

    # -- plumbing ----------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/email/outbound-emails", self._send_email)
        app.router.add_post("/v2/email/outbound-bulk-emails", self._send_bulk_email)
        app.router.add_get("/v2/email/account", self._get_account)
        app.router.add_get("/_standin/config", self._get_config)
        app.router.add_post("/_standin/config", self._post_config)
        app.router.add_get("/_standin/log", self._get_log)
        app.router.add_post("/_standin/reset", self._post_reset)
        app[STANDIN_KEY] = self
        return app

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    def _message_id(self) -> str:
        n = self._next_id()
        return f"{int(time.time() * 1000):016x}-{self._instance}-{n:012x}-000000"

    def _request_id(self) -> str:
        return f"{self._instance}-{self._next_id():012x}"

    def _ok(self, payload: dict[str, Any]) -> web.Response:
        return web.Response(
            body=orjson.dumps(payload),
            status=200,
            headers={"Content-Type": "application/json", "x-amzn-RequestId": self._request_id()},
        )

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return web.Response(
            body=orjson.dumps({"message": message}),
            status=status,
            headers={
                "Content-Type": "application/json",
                "x-amzn-ErrorType": code,
                "x-amzn-RequestId": self._request_id(),
            },
        )

    def _bad_request(self, message: str) -> web.Response:
        self.counters.bad_requests += 1
        return self._error(400, "BadRequestException", message)

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        auth = request.headers.get("Authorization")
        return auth is not None and auth.startswith("AWS4-HMAC-SHA256")

    def _unauthorized(self) -> web.Response:
        self.counters.auth_failures += 1
        return self._error(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        )

    @staticmethod
    def _region(request: web.Request) -> str:
        m = re.search(r"Credential=[^/,]*/\d+/([^/,]+)/", request.headers.get("Authorization", ""))
        return (m.group(1) if m else "us-east-1").upper()

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise _BadRequest("Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest("Request body must be a JSON object")
        return body

    async def _answer(self, response: web.Response, hang: bool) -> web.Response:
        cfg = self._config
        delay = cfg.latency_ms / 1000.0
        if hang:
            delay += cfg.hang_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def _prune(self, now: float) -> None:
        w = self._window
        limit = now - 1.0
        while w and w[0][0] <= limit:
            self._window_sum -= w.popleft()[1]

    def _gate(self, now: float, n: int) -> web.Response | None:
        """paused / spurious throttle / max_rate / error_rate checks."""
        cfg = self._config
        if cfg.paused:
            self.counters.paused += 1
            return self._error(400, "SendingPausedException", "Sending is paused for this account.")
        if cfg.throttle_rate and self._rng.random() < cfg.throttle_rate:
            self.counters.throttled += 1
            return self._error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        self._prune(now)
        if cfg.max_rate is not None and self._window_sum + n > cfg.max_rate:
            self.counters.throttled += 1
            return self._error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            self.counters.errors += 1
            return self._error(500, "InternalFailure", "An internal error occurred.")
        return None

    def _rejected_address(self, addresses: list[str]) -> str | None:
        r = self._reject_re
        if r is None:
            return None
        for a in addresses:
            if r.search(a):
                return a
        return None

    def _admit(self, now: float, n: int) -> None:
        """Account ``n`` accepted recipients at monotonic time ``now``."""
        if n <= 0:
            return
        self._window.append((now, n))
        self._window_sum += n
        if self._window_sum > self.counters.peak_window:
            self.counters.peak_window = self._window_sum

    # -- SES operations ----------------------------------------------------

    async def _send_email(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        t = time.time()
        c = self.counters
        c.requests += 1
        if not self._authorized(request):
            return self._unauthorized()
        cfg = self._config
        hang = bool(cfg.hang_rate) and self._rng.random() < cfg.hang_rate
        try:
            body = await self._body(request)
            entry = self._parse_send_email(body)
        except _BadRequest as e:
            return await self._answer(self._bad_request(str(e)), hang)
        to, cc, bcc = entry["to"], entry["cc"], entry["bcc"]
        n = len(to) + len(cc) + len(bcc)
        refusal = self._gate(now, n)
        if refusal is not None:
            return await self._answer(refusal, hang)
        bad = (
            self._rejected_address(to) or self._rejected_address(cc) or self._rejected_address(bcc)
        )
        if bad is not None:
            c.rejected += 1
            return await self._answer(
                self._error(
                    400,
                    "MessageRejected",
                    "Email address is not verified. The following identities failed "
                    f"the check in region {self._region(request)}: {bad}",
                ),
                hang,
            )
        mid = self._message_id()
        entry["t"] = t
        entry["message_id"] = mid
        self.sends.append(entry)
        c.accepted += 1
        c.accepted_recipients += n
        self._admit(now, n)
        return await self._answer(self._ok({"MessageId": mid}), hang)

    def _parse_send_email(self, body: dict[str, Any]) -> dict[str, Any]:
        content = body.get("Content")
        if not isinstance(content, dict):
            raise _BadRequest("Missing required parameter Content")
        to, cc, bcc = _addresses(body.get("Destination"))
        sender = body.get("FromEmailAddress")
        subject = html = text = request_id = None
        if isinstance(content.get("Simple"), dict):
            simple = content["Simple"]
            subject = (simple.get("Subject") or {}).get("Data")
            b = simple.get("Body") or {}
            html = (b.get("Html") or {}).get("Data")
            text = (b.get("Text") or {}).get("Data")
            request_id = _header(simple.get("Headers"), "X-Request-ID")
        elif isinstance(content.get("Template"), dict):
            tpl = content["Template"]
            try:
                data = _json_obj(tpl.get("TemplateData"))
            except ValueError as e:
                raise _BadRequest(f"Invalid TemplateData: {e}") from None
            tc = tpl.get("TemplateContent") or {}
            subject = render_template(tc.get("Subject"), data)
            html = render_template(tc.get("Html"), data)
            text = render_template(tc.get("Text"), data)
            request_id = _header(tpl.get("Headers"), "X-Request-ID")
        elif isinstance(content.get("Raw"), dict):
            try:
                raw = base64.b64decode(content["Raw"].get("Data") or b"", validate=False)
                msg = email.message_from_bytes(raw, policy=email.policy.default)
            except Exception as e:
                raise _BadRequest(f"Invalid raw message: {e}") from None
            subject = msg.get("Subject")
            request_id = msg.get("X-Request-ID")
            sender = sender or msg.get("From")
            if not (to or cc or bcc):
                to = [a for _, a in email.utils.getaddresses(msg.get_all("To", []))]
                cc = [a for _, a in email.utils.getaddresses(msg.get_all("Cc", []))]
                bcc = [a for _, a in email.utils.getaddresses(msg.get_all("Bcc", []))]
            part = msg.get_body(("html",))
            html = part.get_content() if part is not None else None
            part = msg.get_body(("plain",))
            text = part.get_content() if part is not None else None
        else:
            raise _BadRequest("Content must contain one of Simple, Raw or Template")
        if not sender:
            raise _BadRequest("Missing required parameter FromEmailAddress")
        n = len(to) + len(cc) + len(bcc)
        if n == 0:
            raise _BadRequest("Destination must contain at least one recipient")
        if n > MAX_RECIPIENTS_PER_MESSAGE:
            raise _BadRequest(f"Recipient count exceeds {MAX_RECIPIENTS_PER_MESSAGE}.")
        return {
            "t": None,
            "message_id": None,
            "to": to,
            "cc": cc,
            "bcc": bcc,
            "from": sender,
            "subject": subject,
            "request_id": None if request_id is None else str(request_id),
            "config_set": body.get("ConfigurationSetName"),
            "html": html,
            "text": text,
            "bulk": False,
        }

    async def _send_bulk_email(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        t = time.time()
        c = self.counters
        c.requests += 1
        if not self._authorized(request):
            return self._unauthorized()
        cfg = self._config
        hang = bool(cfg.hang_rate) and self._rng.random() < cfg.hang_rate
        try:
            body = await self._body(request)
            entries, default = self._parse_bulk(body)
        except _BadRequest as e:
            return await self._answer(self._bad_request(str(e)), hang)
        refusal = self._gate(now, len(entries))
        if refusal is not None:
            return await self._answer(refusal, hang)

        tpl = default["tpl"]
        tc = tpl.get("TemplateContent") or {}
        t_subject, t_html, t_text = tc.get("Subject"), tc.get("Html"), tc.get("Text")
        default_rid = _header(tpl.get("Headers"), "X-Request-ID")
        default_data = default["data"]
        sender = body.get("FromEmailAddress")
        config_set = body.get("ConfigurationSetName")
        region = None
        results: list[dict[str, Any]] = []
        accepted_n = 0
        for entry in entries:
            to, cc, bcc = _addresses(entry.get("Destination"))
            all_rcpt = to + cc + bcc
            n = len(all_rcpt)
            if n == 0 or n > MAX_RECIPIENTS_PER_MESSAGE:
                results.append(
                    {
                        "Status": "INVALID_PARAMETER",
                        "Error": f"Entry must have 1 to {MAX_RECIPIENTS_PER_MESSAGE} recipients.",
                    }
                )
                continue
            bad = self._rejected_address(all_rcpt)
            if bad is not None:
                c.rejected += 1
                if region is None:
                    region = self._region(request)
                results.append(
                    {
                        "Status": "MESSAGE_REJECTED",
                        "Error": "Email address is not verified. The following identities failed "
                        f"the check in region {region}: {bad}",
                    }
                )
                continue
            rep = (
                (entry.get("ReplacementEmailContent") or {}).get("ReplacementTemplate") or {}
            ).get("ReplacementTemplateData")
            if rep:
                try:
                    data = {**default_data, **_json_obj(rep)}
                except ValueError:
                    results.append(
                        {"Status": "INVALID_PARAMETER", "Error": "Invalid ReplacementTemplateData."}
                    )
                    continue
            else:
                data = default_data
            rid = _header(entry.get("ReplacementHeaders"), "X-Request-ID")
            if rid is None:
                rid = default_rid
            mid = self._message_id()
            self.sends.append(
                {
                    "t": t,
                    "message_id": mid,
                    "to": to,
                    "cc": cc,
                    "bcc": bcc,
                    "from": sender,
                    "subject": render_template(t_subject, data),
                    "request_id": None if rid is None else str(rid),
                    "config_set": config_set,
                    "html": render_template(t_html, data),
                    "text": render_template(t_text, data),
                    "bulk": True,
                }
            )
            c.accepted += 1
            c.accepted_recipients += n
            accepted_n += 1
            results.append({"Status": "SUCCESS", "MessageId": mid})
        self._admit(now, accepted_n)
        return await self._answer(self._ok({"BulkEmailEntryResults": results}), hang)

    def _parse_bulk(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        entries = body.get("BulkEmailEntries")
        if not isinstance(entries, list) or not entries:
            raise _BadRequest("Missing required parameter BulkEmailEntries")
        if len(entries) > MAX_BULK_ENTRIES:
            raise _BadRequest(f"BulkEmailEntries must contain at most {MAX_BULK_ENTRIES} entries.")
        if not all(isinstance(e, dict) for e in entries):
            raise _BadRequest("BulkEmailEntries must be a list of objects")
        if not body.get("FromEmailAddress"):
            raise _BadRequest("Missing required parameter FromEmailAddress")
        tpl = (body.get("DefaultContent") or {}).get("Template")
        if not isinstance(tpl, dict):
            raise _BadRequest("Missing required parameter DefaultContent.Template")
        try:
            data = _json_obj(tpl.get("TemplateData"))
        except ValueError as e:
            raise _BadRequest(f"Invalid TemplateData: {e}") from None
        return entries, {"tpl": tpl, "data": data}

    async def _get_account(self, request: web.Request) -> web.Response:
        self.counters.requests += 1
        if not self._authorized(request):
            return self._unauthorized()
        cfg = self._config
        payload = {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": not cfg.paused,
            "SendQuota": {
                "Max24HourSend": float(cfg.max_24_hour_send),
                "MaxSendRate": float(cfg.max_send_rate_reported),
                "SentLast24Hours": float(self.counters.accepted_recipients),
            },
        }
        return await self._answer(self._ok(payload), False)

    # -- control endpoints -------------------------------------------------

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self._config.to_dict()), headers=_JSON_HEADERS)

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            self.config = self._config.updated(changes)
        except (ValueError, TypeError) as e:
            return web.Response(
                status=400, body=orjson.dumps({"message": str(e)}), headers=_JSON_HEADERS
            )
        return web.Response(body=orjson.dumps(self._config.to_dict()), headers=_JSON_HEADERS)

    async def _get_log(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return web.Response(
                status=400, body=b'{"message":"since must be an integer"}', headers=_JSON_HEADERS
            )
        return web.Response(
            body=orjson.dumps(self.log_snapshot(max(since, 0))), headers=_JSON_HEADERS
        )

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', headers=_JSON_HEADERS)


#: the :class:`SesStandin` behind an application: ``app[STANDIN_KEY]``
STANDIN_KEY = web.AppKey("ses_standin", SesStandin)


# --------------------------------------------------------------------------
# running


async def start_standin(
    config: StandinConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int = 4096,
    shutdown_timeout: float = 0.5,
) -> tuple[SesStandin, web.AppRunner, str]:
    """Start a stand-in; returns ``(standin, runner, "http://host:port")``.

    Stop it with ``await runner.cleanup()``.
    """
    standin = SesStandin(config if config is not None else StandinConfig())
    runner = web.AppRunner(standin.app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    return standin, runner, f"http://{url_host}:{bound_port}"


def _build_parser() -> argparse.ArgumentParser:
    d = StandinConfig()
    p = argparse.ArgumentParser(
        prog="python -m sesd.testing.ses_standin",
        description="Local stand-in for the Amazon SES v2 HTTP API (SendEmail, SendBulkEmail, "
        "GetAccount). Prints 'listening http://HOST:PORT' once ready and serves until "
        "SIGTERM/SIGINT. Knobs can be changed at runtime with POST /_standin/config.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to bind; 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--backlog", type=int, default=4096, help="listen backlog (default: %(default)s)"
    )
    p.add_argument(
        "--max-rate",
        type=float,
        default=d.max_rate,
        help="max recipients accepted in any sliding 1 s window; more answers 429 "
        "TooManyRequestsException (default: unlimited)",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        help="sleep before answering each SES call, in ms (default: %(default)s)",
    )
    p.add_argument(
        "--error-rate",
        type=float,
        default=d.error_rate,
        help="probability of a 500 InternalFailure (default: %(default)s)",
    )
    p.add_argument(
        "--throttle-rate",
        type=float,
        default=d.throttle_rate,
        help="probability of a spurious 429 TooManyRequestsException (default: %(default)s)",
    )
    p.add_argument(
        "--hang-rate",
        type=float,
        default=d.hang_rate,
        help="probability of sleeping --hang-seconds before answering (default: %(default)s)",
    )
    p.add_argument(
        "--hang-seconds",
        type=float,
        default=d.hang_seconds,
        help="how long a hanging request sleeps (default: %(default)s)",
    )
    p.add_argument(
        "--reject-pattern",
        default=d.reject_pattern,
        help="regex; a matching recipient gets 400 MessageRejected (bulk: MESSAGE_REJECTED entry)",
    )
    p.add_argument(
        "--paused",
        action="store_true",
        default=d.paused,
        help="answer sends with 400 SendingPausedException",
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help="random seed for the error/throttle/hang rates"
    )
    p.add_argument(
        "--max-send-rate-reported",
        type=float,
        default=d.max_send_rate_reported,
        help="SendQuota.MaxSendRate reported by GetAccount (default: %(default)s)",
    )
    p.add_argument(
        "--max-24-hour-send",
        type=float,
        default=d.max_24_hour_send,
        help="SendQuota.Max24HourSend reported by GetAccount (default: %(default)s)",
    )
    return p


async def _serve(config: StandinConfig, host: str, port: int, backlog: int) -> None:
    _standin, runner, url = await start_standin(config, host, port, backlog=backlog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {url}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        config = StandinConfig(
            max_rate=args.max_rate,
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            hang_rate=args.hang_rate,
            hang_seconds=args.hang_seconds,
            reject_pattern=args.reject_pattern,
            paused=args.paused,
            seed=args.seed,
            max_send_rate_reported=args.max_send_rate_reported,
            max_24_hour_send=args.max_24_hour_send,
        )
    except ValueError as e:
        print(f"ses_standin: {e}", file=sys.stderr)
        return 2
    coro = _serve(config, args.host, args.port, args.backlog)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
