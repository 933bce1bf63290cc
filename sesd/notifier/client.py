"""The notifier's HTTP client: strict timeouts, no redirects, capped answers, and the SSRF rule
applied at connect time to the addresses actually connected to.

A name is checked again on every resolution (not only at registration): a DNS answer that
changed to a private address since (DNS rebinding) is refused before any connection. aiohttp
does not consult the resolver for an IP literal, so literal hosts are checked here first.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from ..errors import SesdError
from .addresses import parse_ip, refusal

ANSWER_CAP = 4096  # bytes of an endpoint's answer kept (for the delivery's last error)
USER_AGENT = "sesd-webhooks"


class TargetRefused(SesdError):
    """The endpoint's host is, or resolves to, an address webhooks may not reach."""


def check_address(host: str, address: str) -> None:
    reason = refusal(address)
    if reason is not None:
        shown = address if host == address else f"{host} resolves to {address}"
        raise TargetRefused(f"{shown}, a {reason} address: refused (WEBHOOK_ALLOW_PRIVATE)")


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, then refuses the whole answer if any address is not public."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            check_address(host, answer["host"])
        return answers

    async def close(self) -> None:
        await self._inner.close()


class WebhookClient:
    """One aiohttp session for every endpoint; `post` answers (status, start of the body)."""

    def __init__(self, *, timeout: float, allow_private: bool,
                 resolver: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        inner = resolver or DefaultResolver()
        connector = aiohttp.TCPConnector(
            resolver=inner if allow_private else GuardedResolver(inner),
            limit=0,  # per-endpoint concurrency is the notifier's; no second queue here
            ttl_dns_cache=10, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector, trust_env=False,  # no proxy from the environment
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0)),
            auto_decompress=False, headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar())

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        if not self.allow_private:
            host = URL(url).raw_host or ""
            if parse_ip(host) is not None:
                check_address(host, host)
        async with self.session.post(url, data=body, headers=headers,
                                     allow_redirects=False) as resp:
            head = await resp.content.read(ANSWER_CAP)
            if not resp.content.at_eof():
                resp.close()  # a long answer: drop the connection rather than read on
            return resp.status, head.decode("utf-8", "replace")

    async def close(self) -> None:
        await self.session.close()
