"""The routes anyone can reach: body caps, what an SNS event may touch, reflected input, replays."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import structlog.testing

from sesd import tracking
from sesd.api.base import OPENS, PUBLIC_BODY_LIMIT, SNS_MESSAGE_MAX
from sesd.api.handlers import SNS_PATH
from sesd.api.resources import MAX_CERT_BYTES, OPEN_FLUSH_INTERVAL
from tests.api.helpers import (
    EMPTY,
    MERGE,
    CertServer,
    Env,
    MakeEnv,
    assert_error,
    assert_pixel,
    fixture_text,
    msg,
    new_request,
    post_sns,
    signed_notification,
)

SNS_HEADERS = {"x-amz-sns-message-type": "Notification"}


# -- body caps ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [SNS_PATH, tracking.OPEN_PATH])
async def test_public_body_over_the_cap_is_413_before_reading(env: Env, path: str) -> None:
    """MAX_REQUEST_MB (32) is for the keyed ingest: an anonymous body is capped far lower."""
    body = b" " * (PUBLIC_BODY_LIMIT + 1)
    method = "POST" if path == SNS_PATH else "GET"
    resp = await env.client.request(method, path, data=body, headers=SNS_HEADERS)
    await assert_error(resp, 413, method, path)
    assert resp.headers.get("Connection", "").lower() == "close"
    assert env.counts() == EMPTY


async def test_chunked_sns_body_over_the_cap_is_413(env: Env) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(PUBLIC_BODY_LIMIT // 65536 + 2):
            yield b" " * 65536

    resp = await env.client.post(SNS_PATH, data=chunks(), headers=SNS_HEADERS)
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413, "POST", SNS_PATH)
    assert (await env.client.get("/health")).status == 200


async def test_sns_body_at_the_cap_is_read(sns_env: Env, cert_server: CertServer,
                                           sns_key) -> None:
    """An SNS message near its 256 KB limit, escaped in its envelope, still goes in."""
    data = json.loads(fixture_text("event-send.json"))
    data["mail"]["commonHeaders"]["subject"] = '"' * 120_000  # each quote is escaped twice over
    text = json.dumps(data)
    assert len(text) <= SNS_MESSAGE_MAX  # what SNS itself accepts
    message = signed_notification(sns_key, cert_server.cert_url, text)
    body = orjson.dumps(message)
    assert 400_000 < len(body) <= PUBLIC_BODY_LIMIT
    resp = await post_sns(sns_env, body, kind="Notification")
    assert resp.status == 200, await resp.text()
    assert sns_env.counts()["results"] == 1


# -- 400 / 403 / 503 ----------------------------------------------------------------------------

def _without(message: dict[str, Any], *keys: str) -> bytes:
    return orjson.dumps({k: v for k, v in message.items() if k not in keys})


@pytest.mark.parametrize("case", ["not-json", "not-an-object", "no-message-id", "unsigned",
                                  "no-signature", "no-version", "no-cert-url", "bad-timestamp",
                                  "message-not-a-string", "no-type"])
async def test_malformed_sns_body_is_400_and_fetches_nothing(
        sns_env: Env, cert_server: CertServer, sns_key, case: str) -> None:
    good = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-send.json"))
    body = {
        "not-json": b"{not json",
        "not-an-object": b"[1, 2]",
        "no-message-id": _without(good, "MessageId"),
        "unsigned": _without(good, "Signature", "SignatureVersion", "SigningCertURL"),
        "no-signature": _without(good, "Signature"),
        "no-version": _without(good, "SignatureVersion"),
        "no-cert-url": _without(good, "SigningCertURL"),
        "bad-timestamp": orjson.dumps({**good, "Timestamp": "last tuesday"}),
        "message-not-a-string": orjson.dumps({**good, "Message": {"eventType": "Send"}}),
        "no-type": _without(good, "Type"),
    }[case]
    resp = await post_sns(sns_env, body, kind="Notification")
    await assert_error(resp, 400, "POST", SNS_PATH)
    assert sns_env.counts() == EMPTY
    assert cert_server.hits == []


async def test_certificate_sent_in_pieces_is_read_whole(sns_env: Env, cert_server: CertServer,
                                                       sns_key) -> None:
    url = f"{cert_server.base}/chunked/cert.pem"
    for i in range(2):
        message = signed_notification(sns_key, url, fixture_text("event-send.json"),
                                      message_id=f"m{i}")
        resp = await post_sns(sns_env, message)
        assert resp.status == 200, await resp.text()
    assert cert_server.hits == ["/chunked/cert.pem"]  # parsed, so cached


async def test_oversized_certificate_is_refused(sns_env: Env, cert_server: CertServer,
                                                sns_key) -> None:
    message = signed_notification(sns_key, f"{cert_server.base}/huge/cert.pem",
                                  fixture_text("event-send.json"))
    body = await assert_error(await post_sns(sns_env, message), 403, "POST", SNS_PATH)
    assert str(MAX_CERT_BYTES) in body["error"]
    assert sns_env.counts() == EMPTY


async def test_empty_allow_list_logs_at_start_and_refuses_each(
        make_env: MakeEnv, cert_server: CertServer, sns_key) -> None:
    with structlog.testing.capture_logs(MERGE) as logs:
        env = await make_env(sns_cert_url_pattern=cert_server.pattern,
                             sns_topic_arns=frozenset())
        assert (await env.client.get("/health")).status == 200  # the app has started
        for i in range(20):
            message = signed_notification(sns_key, cert_server.cert_url,
                                          fixture_text("event-bounce.json"), message_id=f"m{i}")
            await assert_error(await post_sns(env, message), 403, "POST", SNS_PATH)
    starts = [e for e in logs if "SNS_TOPIC_ARNS is empty" in e["event"]]
    assert len(starts) == 1
    refusals = [e for e in logs if e["event"].startswith("SNS message refused: topic")]
    # One line per refusal, but a flood is throttled: 20 refusals, a handful of lines.
    assert 1 <= len(refusals) < 20
    assert env.counts() == EMPTY
    assert cert_server.hits == []


# -- what an SES event may touch ----------------------------------------------------------------

async def test_event_for_another_address_is_not_applied(sns_env: Env, cert_server: CertServer,
                                                        sns_key) -> None:
    """A genuine event whose X-Request-ID names a request mailed to someone else (a guessable
    sequential id) is kept unmatched: it changes nothing of that request's results."""
    victim = await new_request(sns_env, "victim@example.com")
    text = fixture_text("event-bounce.json", victim)  # recipients: recipient@example.com
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text))
    assert await resp.json() == {"status": "stored", "requestId": None}
    assert sns_env.rows("SELECT request_id FROM results") == [(None,)]
    stats = await (await sns_env.client.get("/v1/topics/t1",
                                            headers={"x-api-key": sns_env.settings.api_key})
                   ).json()
    assert stats["result"]["statuses"] == {}
    # Falling back to the SES message id finds the right request when the header is wrong.
    owner = await new_request(sns_env, "recipient@example.com")
    sns_env.exec("UPDATE requests SET message_id = 'ses-id' WHERE id = ?", owner)
    data = json.loads(text)
    data["mail"]["messageId"] = "ses-id"
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url,
                                                       json.dumps(data), message_id="m2"))
    assert (await resp.json())["requestId"] == owner


# -- reflected input ----------------------------------------------------------------------------

async def test_reflected_values_are_truncated(sns_env: Env, cert_server: CertServer,
                                              sns_key) -> None:
    huge = "https://evil.example/" + "a" * 300_000 + ".pem"
    message = signed_notification(sns_key, huge, fixture_text("event-send.json"))
    with structlog.testing.capture_logs(MERGE) as logs:
        resp = await post_sns(sns_env, message)
        body = await assert_error(resp, 403, "POST", SNS_PATH)
    assert len(body["error"]) < 1000
    assert logs and all(len(json.dumps(e, default=str)) < 2000 for e in logs)
    resp = await sns_env.client.get("/" + "p" * 5000)
    assert resp.status == 404
    assert len((await resp.json())["path"]) < 300


# -- pixel replays --------------------------------------------------------------------------------

async def test_pixel_replays_add_no_rows(env: Env) -> None:
    assert (await env.post([msg(emails=["a@example.com", "b@example.com"])])).status == 200
    first, second = env.request_ids()
    key = env.rows("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0]
    url = f"/v1/events/open?requestId={first}&token={tracking.make_token(key, first)}"
    for _ in range(200):
        await assert_pixel(await env.client.get(url))
    assert env.rows("SELECT request_id, status, hits FROM results") == [(first, "Open", 1)]
    # The replays were counted in memory, and reach the row in one write.
    app = env.client.app
    assert app is not None and app[OPENS].drain() == {first: 199}
    other = f"/v1/events/open?requestId={second}&token={tracking.make_token(key, second)}"
    await assert_pixel(await env.client.get(other))
    assert env.counts()["results"] == 2
    assert OPEN_FLUSH_INTERVAL <= 10  # counts reach the database within seconds
