"""Shared pieces of the in-process API tests: the environment, request helpers, SNS signing.

Every case looks at the SQLite file through a separate connection afterwards: a 4xx must have
stored nothing, a 200 exactly what it says. SNS messages are signed with a throwaway certificate
served by a real local aiohttp server, so the app fetches it over HTTP as it would from AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd import tracking
from sesd.api.app import ApiHooks
from sesd.config import Settings
from sesd.store import Store
from tests.test_sns import FIXTURES, notification, sign

API_KEY = "k" * 20

AUTH = {"x-api-key": API_KEY}

TABLES = ("contents", "requests", "results", "suppressions", "idempotency")

ERROR_KEYS = {"error", "path", "method", "timestamp"}

MERGE = [structlog.contextvars.merge_contextvars]  # log lines as the service renders them


@dataclass
class Recorder:
    """ApiHooks that count their calls; `processes` is what /health reports when set."""

    nudges: int = 0
    stops: int = 0
    processes: dict[str, dict[str, Any]] | None = None

    def hooks(self) -> ApiHooks:
        def nudge() -> None:
            self.nudges += 1

        def stopped() -> None:
            self.stops += 1

        health = (lambda: self.processes) if self.processes is not None else None
        return ApiHooks(nudge=nudge, stopped=stopped, health=health)


@dataclass
class Env:
    client: TestClient
    hooks: Recorder
    db: Store  # a separate connection on the app's file
    settings: Settings
    cert_hits: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {t: self.db.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return list(self.db.db.execute(sql, args))

    def exec(self, sql: str, *args: Any) -> None:
        self.db.db.execute(sql, args)

    def request_ids(self, topic: str | None = None) -> list[int]:
        if topic is None:
            return [r[0] for r in self.rows("SELECT id FROM requests ORDER BY id")]
        return [r[0] for r in self.rows("SELECT id FROM requests WHERE topic_id = ? ORDER BY id",
                                        topic)]

    async def post(self, messages: Any, headers: dict[str, str] | None = None) -> Any:
        body = messages if isinstance(messages, bytes) else orjson.dumps({"messages": messages})
        return await self.client.post("/v1/messages", data=body,
                                      headers={**AUTH, **(headers or {})})


MakeEnv = Callable[..., Awaitable[Env]]

EMPTY = dict.fromkeys(TABLES, 0)


def msg(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"topicId": "t1", "emails": ["a@example.com"], "subject": "Hello",
                            "content": "<p>Hi</p>"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


async def assert_error(resp: Any, status: int, method: str, path: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == ERROR_KEYS, body
    assert body["method"] == method
    assert body["path"] == path
    assert isinstance(body["error"], str) and body["error"]
    stamp = dt.datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    return body


async def assert_pixel(resp: Any) -> None:
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert resp.headers["Pragma"] == "no-cache"
    assert resp.headers["Expires"] == "0"
    assert await resp.read() == tracking.PIXEL_PNG


@dataclass
class CertServer:
    server: TestServer
    hits: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def pattern(self) -> str:
        return rf"^http://127\.0\.0\.1:{self.server.port}/"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"


def fixture_text(name: str, request_id: int | None = None) -> str:
    text = (FIXTURES / name).read_text()
    if request_id is None:
        return text
    data = json.loads(text)
    data["mail"].setdefault("headers", []).append({"name": "X-Request-ID",
                                                   "value": str(request_id)})
    return json.dumps(data)


def signed_notification(key: rsa.RSAPrivateKey, cert_url: str, message: str, *,
                        version: str = "1", message_id: str = "msg-1", **kwargs: Any
                        ) -> dict[str, Any]:
    return sign({**notification(message=message), "MessageId": message_id}, key, version,
                cert_url=cert_url, **kwargs)


async def post_sns(env: Env, message: dict[str, Any] | bytes, kind: str | None = None) -> Any:
    """POST as SNS does; the type header is the message's own Type unless `kind` is given."""
    if kind is None:
        assert isinstance(message, dict)
        kind = message["Type"]
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": kind}
    data = message if isinstance(message, bytes) else orjson.dumps(message)
    return await env.client.post("/v1/events/results", data=data, headers=headers)


async def new_request(env: Env, email: str = "a@example.com") -> int:
    assert (await env.post([msg(emails=[email])])).status == 200
    return env.request_ids()[-1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
