"""Fixtures of the in-process API tests: an app on a fresh database, and a certificate server."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd.api.app import create_app
from sesd.config import Settings
from sesd.store import Store
from tests.api.helpers import API_KEY, CertServer, Env, MakeEnv, Recorder
from tests.test_sns import TOPIC, _make_cert


@pytest.fixture
async def make_env(tmp_path, aiohttp_client) -> AsyncIterator[MakeEnv]:
    stores: list[Store] = []

    async def make(recorder: Recorder | None = None, **overrides: Any) -> Env:
        recorder = recorder or Recorder()
        # The SNS tests' topic is allowed unless a test says otherwise (empty refuses all).
        settings = dataclasses.replace(
            Settings(), **{"db_path": tmp_path / "app.db", "api_key": API_KEY,
                           "sns_topic_arns": frozenset({TOPIC}), **overrides})
        client = await aiohttp_client(create_app(settings, recorder.hooks()))
        store = Store(settings.db_path)
        stores.append(store)
        return Env(client, recorder, store, settings)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    return await make_env()


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sns_cert(sns_key: rsa.RSAPrivateKey) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return _make_cert(sns_key, not_before=now - dt.timedelta(days=1),
                      not_after=now + dt.timedelta(days=30))


@pytest.fixture
async def cert_server(aiohttp_server, sns_cert: bytes) -> CertServer:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path_qs)
        if request.path.startswith("/chunked/"):  # the certificate in two writes, apart
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(sns_cert[:100])
            await asyncio.sleep(0.05)
            await resp.write(sns_cert[100:])
            await resp.write_eof()
            return resp
        if request.path.startswith("/huge/"):
            return web.Response(body=sns_cert + b"\n" * 100_000)
        if request.path.startswith("/redirect/"):
            raise web.HTTPFound("/SimpleNotificationService-test.pem")
        if request.path.endswith(".pem") and not request.path.startswith("/missing/"):
            return web.Response(body=sns_cert, content_type="application/x-pem-file")
        if request.path == "/confirm":
            return web.Response(text="<ConfirmSubscriptionResponse/>")
        return web.Response(status=404 if request.path.startswith("/missing/") else 500)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return CertServer(server, hits)


@pytest.fixture
async def sns_env(make_env: MakeEnv, cert_server: CertServer) -> Env:
    env = await make_env(sns_cert_url_pattern=cert_server.pattern)
    env.cert_hits = cert_server.hits
    return env
