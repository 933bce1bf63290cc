"""SES v2's two send operations straight over aiohttp, signed by botocore's own SigV4.

A SendEmail through the aiobotocore client costs ~1 ms of CPU on its own, most of it not the
request: a dozen events emitted through the hierarchical emitter, the endpoint ruleset resolved
again, the request dict built and rebuilt, the answer parsed by walking the output shape. For
the two calls the sender makes thousands of times a second the wire is simple — rest-json, a
POST of the parameters as JSON, every member in the body under its own name — so this module
sends them directly: the endpoint URL, the credentials (refreshed as botocore refreshes them) and
the signer are botocore's, the HTTP client is aiohttp, the body is orjson. Errors come back as
botocore's `ClientError`, shaped as botocore's rest-json parser would shape them, so
`ses.classify` reads them as it reads any other.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, NoCredentialsError

SEND_EMAIL = ("SendEmail", "/v2/email/outbound-emails")
SEND_BULK_EMAIL = ("SendBulkEmail", "/v2/email/outbound-bulk-emails")
MAX_ANSWER = 4 * 1024 * 1024  # an answer to 50 entries is a few kB; a page of HTML less


class SesWire:
    def __init__(self, *, endpoint_url: str, region: str, signing_name: str, credentials: Any,
                 user_agent: str, max_connections: int, connect_timeout: float,
                 read_timeout: float) -> None:
        self._base = endpoint_url.rstrip("/")
        self._region = region
        self._signing_name = signing_name
        self._credentials = credentials  # botocore's (aiobotocore's async refreshable) object
        self._user_agent = user_agent
        self._limit = max_connections
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                              sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                               auto_decompress=False, trust_env=False)

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def call(self, operation: tuple[str, str], params: dict[str, Any]) -> dict[str, Any]:
        """POST `params` to the operation; its JSON answer, or ClientError / a network error."""
        name, path = operation
        if self._http is None:
            raise RuntimeError("SesWire.start() was not awaited")
        credentials = self._credentials
        frozen = await credentials.get_frozen_credentials() if credentials is not None else None
        if frozen is None or not frozen.access_key:
            raise NoCredentialsError()
        body = orjson.dumps(params)
        url = self._base + path
        request = AWSRequest(method="POST", url=url, data=body,
                             headers={"Content-Type": "application/json",
                                      "User-Agent": self._user_agent})
        SigV4Auth(frozen, self._signing_name, self._region).add_auth(request)
        async with self._http.post(url, data=body, headers=dict(request.headers),
                                   allow_redirects=False) as response:
            raw = await response.content.read(MAX_ANSWER)
            if response.status == 200:
                answer = orjson.loads(raw)
                if not isinstance(answer, dict):
                    raise ClientError(_error(response.status, "InvalidAnswer",
                                             "SES answered something other than an object"),
                                      name)
                return answer
            raise ClientError(_parse_error(response.status, response.headers, raw), name)


def _error(status: int, code: str, message: str, request_id: str = "") -> Any:
    return {"Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id}}


def _parse_error(status: int, headers: Any, raw: bytes) -> Any:
    """An error answer as botocore's rest-json parser reads it: the code from x-amzn-ErrorType
    (or the body's __type/code), the message from the body; a body that is no JSON (an HTML
    page from a proxy or an emulator) is the message, and the HTTP status the code."""
    code = (headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    message = ""
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = None
        message = raw[:2000].decode("utf-8", "replace")
    if isinstance(body, dict):
        code = code or str(body.get("__type") or body.get("code") or "").rpartition("#")[2]
        message = str(body.get("message") or body.get("Message") or "")
    return _error(status, code or str(status), message,
                  headers.get("x-amzn-RequestId") or "")
