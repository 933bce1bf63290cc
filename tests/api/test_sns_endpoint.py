"""POST /v1/events/results: SNS verification, SES events, subscriptions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd.errors import StorageFullError
from sesd.store import PROCESSING, Store
from tests.api.helpers import (
    AUTH,
    EMPTY,
    CertServer,
    Env,
    MakeEnv,
    assert_error,
    closed_port,
    fixture_text,
    new_request,
    post_sns,
    signed_notification,
)
from tests.test_sns import EXPECTED, TOPIC, notification, sign, sns_time, subscription


@pytest.mark.parametrize("kind", [None, "", "Bogus", "notification"])
async def test_sns_requires_a_known_message_type(sns_env: Env, cert_server: CertServer, sns_key,
                                                 kind: str | None) -> None:
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-send.json"))
    headers = {} if kind is None else {"x-amz-sns-message-type": kind}
    resp = await sns_env.client.post("/v1/events/results", data=orjson.dumps(message),
                                     headers=headers)
    await assert_error(resp, 400, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert sns_env.cert_hits == []


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_genuine_notification_is_stored_and_matched(
        sns_env: Env, cert_server: CertServer, sns_key, name: str, version: str) -> None:
    event_type, message_id, recipients, suppress = EXPECTED[name]
    other = await new_request(sns_env, "other@example.com")
    rid = await new_request(sns_env, recipients[0].upper())  # addresses match in any case
    if version == "1":  # matched by our X-Request-ID mail header
        text = fixture_text(name, rid)
        sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, other)
    else:  # matched by SES mail.messageId
        text = fixture_text(name)
        sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, rid)
    # Requests the sender holds (processing) for a suppressed address are stopped at once;
    # created ones are left to the scheduler's claim, which skips suppressed addresses.
    suppressed = [email for email, _ in suppress]
    held = {email: await new_request(sns_env, email.upper()) for email in suppressed}
    waiting = [await new_request(sns_env, email) for email in suppressed]
    bystander = await new_request(sns_env, "bystander@example.com")
    sns_env.exec(f"UPDATE requests SET status = {PROCESSING} "
                 "WHERE id IN (SELECT value FROM json_each(?))",
                 json.dumps([*held.values(), bystander]))
    message = signed_notification(sns_key, cert_server.cert_url, text, version=version,
                                  message_id=f"sns-{name}-{version}")
    resp = await post_sns(sns_env, message)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "stored", "requestId": rid}
    for email, reason in suppress:
        assert sns_env.rows("SELECT status, error FROM requests WHERE id = ?", held[email]) == [
            (4, f"suppressed: {reason}")]
    assert all(sns_env.rows("SELECT status FROM requests WHERE id = ?", i) == [(0,)]
               for i in waiting)
    assert sns_env.rows("SELECT status FROM requests WHERE id = ?", bystander) == [(1,)]
    assert sns_env.rows("SELECT request_id, status, raw, sns_message_id FROM results") == [
        (rid, event_type, text, f"sns-{name}-{version}")]
    assert json.loads(sns_env.rows("SELECT raw FROM results")[0][0]) == json.loads(text)
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]

    listed = await (await sns_env.client.get("/v1/suppressions", headers=AUTH)).json()
    assert [(s["email"], s["reason"]) for s in listed["suppressions"]] == sorted(suppress)
    assert all(s["event"] == f"sns-{name}-{version}" for s in listed["suppressions"])
    assert sns_env.hooks.stops == (1 if suppress else 0)
    stats = await (await sns_env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"]["statuses"] == {event_type: 1}


async def test_request_header_wins_over_message_id_and_unmatched_is_kept(
        sns_env: Env, cert_server: CertServer, sns_key) -> None:
    by_header = await new_request(sns_env, "recipient@example.com")
    by_message_id = await new_request(sns_env, "recipient@example.com")
    _, message_id, _, _ = EXPECTED["event-delivery.json"]
    sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, by_message_id)
    text = fixture_text("event-delivery.json", by_header)
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text))
    assert (await resp.json())["requestId"] == by_header
    # An X-Request-ID naming no request falls back to the message id.
    text = fixture_text("event-delivery.json", 999_999)
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text,
                                                       message_id="msg-2"))
    assert (await resp.json())["requestId"] == by_message_id
    # Nothing matches: still stored (raw kept for the operator), with no request.
    text = fixture_text("notification-delivery.json")
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text,
                                                       message_id="msg-3"))
    assert await resp.json() == {"status": "stored", "requestId": None}
    assert sns_env.rows("SELECT request_id, sns_message_id FROM results ORDER BY id") == [
        (by_header, "msg-1"), (by_message_id, "msg-2"), (None, "msg-3")]
    # One certificate fetch for all three: cached.
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]


async def test_repeated_sns_message_is_stored_once(sns_env: Env, cert_server: CertServer,
                                                   sns_key) -> None:
    rid = await new_request(sns_env, "recipient@example.com")
    text = fixture_text("event-bounce.json", rid)
    message = signed_notification(sns_key, cert_server.cert_url, text, version="2")
    first = await post_sns(sns_env, message)
    assert (await first.json())["status"] == "stored"
    for _ in range(3):
        again = await post_sns(sns_env, message)
        assert again.status == 200
        assert await again.json() == {"status": "duplicate", "requestId": rid}
    assert sns_env.counts() == {**EMPTY, "contents": 1, "requests": 1, "results": 1,
                                "suppressions": 1}
    assert sns_env.hooks.stops == 0  # nothing was held for the address


async def test_transient_bounce_is_stored_without_suppressing(sns_env: Env, cert_server: CertServer,
                                                              sns_key) -> None:
    rid = await new_request(sns_env, "recipient@example.com")
    data = json.loads(fixture_text("event-bounce.json", rid))
    data["bounce"]["bounceType"] = "Transient"
    message = signed_notification(sns_key, cert_server.cert_url, json.dumps(data))
    resp = await post_sns(sns_env, message)
    assert await resp.json() == {"status": "stored", "requestId": rid}
    assert sns_env.counts()["suppressions"] == 0
    assert sns_env.hooks.stops == 0


async def test_allowed_topic_list(make_env: MakeEnv, cert_server: CertServer, sns_key) -> None:
    env = await make_env(sns_cert_url_pattern=cert_server.pattern,
                         sns_topic_arns=frozenset({TOPIC}))
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-send.json"))
    assert (await post_sns(env, message)).status == 200
    assert env.counts()["results"] == 1


def _other_key_message(cert_url: str) -> dict[str, Any]:
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return signed_notification(other, cert_url, fixture_text("event-send.json"))


@pytest.mark.parametrize(
    "forge",
    [
        "tampered-message",
        "tampered-message-id",
        "bad-base64",
        "version-3",
        "version-2-signed-sha1",
        "foreign-cert-host",
        "localhost-not-allowed",
        "cert-url-with-userinfo",
        "other-key",
        "header-type-mismatch",
        "disallowed-topic",
        "empty-allow-list",
        "stale",
        "newline-moves-a-field",
    ],
)
async def test_unverifiable_notification_is_403_and_stores_nothing(
        make_env: MakeEnv, cert_server: CertServer, sns_key, forge: str) -> None:
    overrides: dict[str, Any] = {"sns_cert_url_pattern": cert_server.pattern}
    if forge == "disallowed-topic":
        overrides["sns_topic_arns"] = frozenset({"arn:aws:sns:us-east-1:123456789012:other"})
    elif forge == "empty-allow-list":
        overrides["sns_topic_arns"] = frozenset()
    env = await make_env(**overrides)
    rid = await new_request(env, "recipient@example.com")
    url = cert_server.cert_url
    bounce = fixture_text("event-bounce.json", rid)
    good = signed_notification(sns_key, url, fixture_text("event-delivery.json", rid))
    kind: str | None = None
    body: dict[str, Any] | bytes
    fetched = True
    if forge == "tampered-message":
        body = {**good, "Message": bounce}
    elif forge == "tampered-message-id":
        body = {**good, "MessageId": "other"}
    elif forge == "bad-base64":
        body = {**good, "Signature": "!!not base64!!"}
        fetched = False
    elif forge == "version-3":
        body = {**good, "SignatureVersion": "3"}
        fetched = False
    elif forge == "version-2-signed-sha1":
        body = signed_notification(sns_key, url, bounce, version="2", digest=hashes.SHA1())
    elif forge == "foreign-cert-host":
        body = signed_notification(sns_key, "http://evil.example/cert.pem", bounce)
        fetched = False
    elif forge == "localhost-not-allowed":
        body = signed_notification(sns_key, url.replace("127.0.0.1", "localhost"), bounce)
        fetched = False
    elif forge == "cert-url-with-userinfo":
        body = signed_notification(sns_key, f"{cert_server.base}@evil.example/cert.pem", bounce)
        fetched = False
    elif forge == "other-key":
        body = _other_key_message(url)
    elif forge == "header-type-mismatch":
        body, kind = good, "SubscriptionConfirmation"
        fetched = False
    elif forge == "stale":
        stale = sns_time(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        body = sign({**notification(message=bounce, timestamp=stale), "MessageId": "msg-1"},
                    sns_key, cert_url=url)
        fetched = False
    elif forge == "newline-moves-a-field":
        # The same signed bytes with a new MessageId: would pass deduplication.
        body = {k: v for k, v in good.items() if k != "Subject"}
        body["MessageId"] = f"{good['MessageId']}\nSubject\n{good['Subject']}"
        fetched = False
    elif forge == "empty-allow-list":
        body = good
        fetched = False
    else:
        body = signed_notification(sns_key, url, bounce)
        fetched = False
    before = env.counts()
    resp = await post_sns(env, body, kind=kind)
    await assert_error(resp, 403, "POST", "/v1/events/results")
    assert env.counts() == before
    assert env.hooks.stops == 0
    assert cert_server.hits == (["/SimpleNotificationService-test.pem"] if fetched else [])


@pytest.mark.parametrize("text", ['{"notificationType": "AmazonSnsSubscriptionSucceeded", '
                                  '"message": "ok"}', '{"hello": "world"}', "not json"])
async def test_signed_notification_that_is_no_ses_event_is_acknowledged(
        sns_env: Env, cert_server: CertServer, sns_key, text: str) -> None:
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text))
    assert resp.status == 200
    assert await resp.json() == {"status": "ignored"}
    assert sns_env.counts() == EMPTY


async def test_store_failure_on_a_notification_is_503(
        sns_env: Env, cert_server: CertServer, sns_key, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Store, **kwargs: Any) -> bool:
        raise StorageFullError("the database is full")

    monkeypatch.setattr(Store, "record_result", full)
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-bounce.json"))
    await assert_error(await post_sns(sns_env, message), 503, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert sns_env.hooks.stops == 0


@pytest.mark.parametrize("version", ["1", "2"])
async def test_subscription_is_confirmed_by_one_get(sns_env: Env, cert_server: CertServer,
                                                   sns_key, version: str) -> None:
    confirm = f"{cert_server.base}/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=x"
    message = sign({**subscription(), "SubscribeURL": confirm}, sns_key, version,
                   cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "confirmed"
    confirms = [h for h in cert_server.hits if h.startswith("/confirm")]
    assert confirms == [confirm.removeprefix(cert_server.base)]
    assert sns_env.counts() == EMPTY


async def test_unsubscribe_confirmation_fetches_nothing(sns_env: Env, cert_server: CertServer,
                                                       sns_key) -> None:
    message = sign({**subscription("UnsubscribeConfirmation"),
                    "SubscribeURL": f"{cert_server.base}/confirm?Action=ConfirmSubscription"},
                   sns_key, cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    assert resp.status == 200
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]
    assert sns_env.counts() == EMPTY


@pytest.mark.parametrize("where", ["foreign-host", "tampered", "userinfo"])
async def test_subscribe_url_elsewhere_is_refused_unfetched(
        sns_env: Env, cert_server: CertServer, sns_key, where: str) -> None:
    local = f"{cert_server.base}/confirm?Action=ConfirmSubscription"
    if where == "foreign-host":
        message = sign({**subscription(), "SubscribeURL": "http://evil.example/confirm?x=1"},
                       sns_key, cert_url=cert_server.cert_url)
    elif where == "userinfo":
        message = sign({**subscription(),
                        "SubscribeURL": f"{cert_server.base}@evil.example/confirm?x=1"},
                       sns_key, cert_url=cert_server.cert_url)
    else:
        message = sign({**subscription(), "SubscribeURL": local}, sns_key,
                       cert_url=cert_server.cert_url)
        message["SubscribeURL"] = local + "&extra=1"
    resp = await post_sns(sns_env, message)
    await assert_error(resp, 403, "POST", "/v1/events/results")
    assert not [h for h in cert_server.hits if h.startswith("/confirm")]


async def test_subscribe_url_failing_is_an_error(sns_env: Env, cert_server: CertServer,
                                                 sns_key) -> None:
    message = sign({**subscription(), "SubscribeURL": f"{cert_server.base}/broken?x=1"},
                   sns_key, cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    body = await assert_error(resp, 502, "POST", "/v1/events/results")
    assert "500" in body["error"]


async def test_certificate_server_down_is_503(make_env: MakeEnv, sns_key) -> None:
    port = closed_port()
    env = await make_env(sns_cert_url_pattern=rf"^http://127\.0\.0\.1:{port}/")
    rid = await new_request(env, "recipient@example.com")
    message = signed_notification(sns_key, f"http://127.0.0.1:{port}/cert.pem",
                                  fixture_text("event-bounce.json", rid))
    resp = await post_sns(env, message)
    await assert_error(resp, 503, "POST", "/v1/events/results")
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 1}
    assert env.hooks.stops == 0


async def test_certificate_not_found_is_503(sns_env: Env, cert_server: CertServer,
                                            sns_key) -> None:
    message = signed_notification(sns_key, f"{cert_server.base}/missing/cert.pem",
                                  fixture_text("event-send.json"))
    resp = await post_sns(sns_env, message)
    await assert_error(resp, 503, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert cert_server.hits == ["/missing/cert.pem"]


async def test_certificate_redirect_is_not_followed(sns_env: Env, cert_server: CertServer,
                                                    sns_key) -> None:
    url = f"{cert_server.base}/redirect/cert.pem"
    message = signed_notification(sns_key, url, fixture_text("event-send.json"))
    await assert_error(await post_sns(sns_env, message), 503, "POST", "/v1/events/results")
    assert cert_server.hits == ["/redirect/cert.pem"]
    assert sns_env.counts() == EMPTY
