"""The notifier's HTTP client against a real local server: the SSRF rule at connect time
(a name that resolves to loopback, an IP literal), no redirects, capped answers, deadlines."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from sesd.notifier.client import ANSWER_CAP, TargetRefused, WebhookClient


class FixedResolver(AbstractResolver):
    """Answers every name with one address, as a DNS server that was changed would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [ResolveResult(hostname=host, host=self.address, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


@pytest.fixture
async def server(aiohttp_server: Any) -> Any:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("/landed")
        if request.path == "/huge":
            return web.Response(body=b"x" * 1_000_000)
        if request.path == "/slow":
            await asyncio.sleep(3)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    srv = await aiohttp_server(app)
    srv.hits = hits
    return srv


async def test_a_name_resolving_to_loopback_is_refused_before_connecting(server: Any) -> None:
    resolver = FixedResolver("127.0.0.1")
    client = WebhookClient(timeout=2, allow_private=False, resolver=resolver)
    try:
        with pytest.raises(TargetRefused, match=r"rebind\.example resolves to 127\.0\.0\.1"):
            await client.post(f"http://rebind.example:{server.port}/hook", b"{}", {})
    finally:
        await client.close()
    assert resolver.asked == ["rebind.example"]
    assert server.hits == []  # nothing reached the server


async def test_loopback_literals_are_refused(server: Any) -> None:
    client = WebhookClient(timeout=2, allow_private=False)
    try:
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
            with pytest.raises(TargetRefused, match="loopback"):
                await client.post(f"http://{host}:{server.port}/hook", b"{}", {})
    finally:
        await client.close()
    assert server.hits == []


async def test_allowed_private_reaches_the_server_and_sends_the_headers(server: Any) -> None:
    client = WebhookClient(timeout=2, allow_private=True, resolver=FixedResolver("127.0.0.1"))
    try:
        status, answer = await client.post(f"http://anything.example:{server.port}/hook",
                                           b"{}", {"webhook-id": "evt_1"})
    finally:
        await client.close()
    assert (status, answer) == (200, "ok")
    assert server.hits == ["/hook"]


async def test_redirects_are_not_followed_and_answers_are_capped(server: Any) -> None:
    client = WebhookClient(timeout=2, allow_private=True)
    try:
        status, _ = await client.post(f"http://127.0.0.1:{server.port}/redirect", b"{}", {})
        assert status == 302
        status, answer = await client.post(f"http://127.0.0.1:{server.port}/huge", b"{}", {})
        assert status == 200 and len(answer) <= ANSWER_CAP
        # The connection of the long answer was dropped, not drained: the next call works.
        status, _ = await client.post(f"http://127.0.0.1:{server.port}/ok", b"{}", {})
        assert status == 200
    finally:
        await client.close()
    assert server.hits == ["/redirect", "/huge", "/ok"]  # "/landed" never asked for


async def test_a_slow_endpoint_times_out(server: Any) -> None:
    client = WebhookClient(timeout=0.5, allow_private=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{server.port}/slow", b"{}", {})
    finally:
        await client.close()
    assert loop.time() - started < 1.5
