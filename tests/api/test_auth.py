"""API keys on the protected routes, open routes, unknown routes and methods."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.api.helpers import API_KEY, AUTH, EMPTY, Env, MakeEnv, assert_error, msg

KEYED_ROUTES = [
    ("POST", "/v1/messages"),
    ("GET", "/v1/topics/t1"),
    ("DELETE", "/v1/topics/t1"),
    ("GET", "/v1/events/counts/sent"),
    ("GET", "/v1/suppressions"),
    ("PUT", "/v1/suppressions/x@example.com"),
    ("DELETE", "/v1/suppressions/a@example.com"),
]


BAD_KEYS = [None, "", "wrong", API_KEY + "x", API_KEY[:-1], API_KEY.upper()]


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
async def test_keyed_routes_refuse_missing_or_wrong_key(env: Env, method: str, path: str) -> None:
    assert (await env.post([msg()])).status == 200
    env.db.add_suppression("a@example.com", "manual")
    before = env.counts()
    for key in BAD_KEYS:
        headers = {} if key is None else {"x-api-key": key}
        body = orjson.dumps({"messages": [msg()]}) if method == "POST" else None
        resp = await env.client.request(method, path, headers=headers, data=body)
        await assert_error(resp, 401, method, path)
    assert env.counts() == before
    assert env.rows("SELECT status FROM requests") == [(0,)]
    assert (env.hooks.nudges, env.hooks.stops) == (1, 0)


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
async def test_unset_api_key_closes_keyed_routes(make_env: MakeEnv, method: str,
                                                 path: str) -> None:
    env = await make_env(api_key="")
    for key in [None, "", "anything", API_KEY]:
        headers = {} if key is None else {"x-api-key": key}
        body = orjson.dumps({"messages": [msg()]}) if method == "POST" else None
        resp = await env.client.request(method, path, headers=headers, data=body)
        await assert_error(resp, 401, method, path)
    assert env.counts() == EMPTY


async def test_api_key_with_odd_bytes_is_401_not_500(env: Env) -> None:
    for value in ["кл\u044e\u0447", "k" * 19 + "\u00e9", API_KEY + "\u00ff"]:
        resp = await env.client.get("/v1/topics/t1", headers={"x-api-key": value})
        await assert_error(resp, 401, "GET", "/v1/topics/t1")
    # Bytes that are not UTF-8 at all reach the server only over a raw socket.
    reader, writer = await asyncio.open_connection(env.client.host, env.client.port)
    writer.write(b"GET /v1/topics/t1 HTTP/1.1\r\nHost: x\r\nx-api-key: \xff\xfe" +
                 API_KEY.encode() + b"\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


async def test_open_routes_need_no_key(make_env: MakeEnv) -> None:
    env = await make_env(api_key="")
    assert (await env.client.get("/health")).status == 200
    assert (await env.client.get("/v1/events/open?requestId=1&token=x")).status == 200
    # The SNS endpoint answers on its own terms (here: no message type header).
    await assert_error(await env.client.post("/v1/events/results", data=b"{}"), 400, "POST",
                       "/v1/events/results")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/v1/nope", 404),
        ("GET", "/v1/topics", 404),
        ("GET", "/v1/topics/a/b", 404),
        ("PUT", "/v1/messages", 405),
        ("GET", "/v1/messages", 405),
        ("PATCH", "/v1/topics/t1", 405),
        ("GET", "/v1/events/results", 405),
        ("POST", "/health", 405),
    ],
)
async def test_unknown_route_and_wrong_method_use_the_error_shape(
        env: Env, method: str, path: str, status: int) -> None:
    resp = await env.client.request(method, path, headers=AUTH)
    await assert_error(resp, status, method, path)
    if status == 405:
        assert resp.headers.get("Allow")
