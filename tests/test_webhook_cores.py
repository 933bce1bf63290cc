"""The notifier's pure cores: signatures (checked by the third-party standardwebhooks verifier),
SSRF address classification, the retry schedule and the endpoint gate, and payload data."""

from __future__ import annotations

import base64
import ipaddress
import json
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sesd import events
from sesd.notifier import payload, signing
from sesd.notifier.addresses import refusal
from sesd.notifier.policy import EndpointGate, RetrySchedule
from sesd.store import DueDelivery
from tests.test_sns import FIXTURES

# ------------------------------------------------------------------------------------ signing


def test_new_secrets_are_whsec_and_distinct() -> None:
    made = {signing.new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(signing.secret_key(secret)) == signing.SECRET_BYTES


@given(body=st.binary(max_size=2000), event_id=st.integers(1, 2**62),
       skew=st.integers(-200, 200))
def test_signatures_verify_with_standardwebhooks(body: bytes, event_id: int, skew: int) -> None:
    secret = signing.new_secret()
    stamp = int(time.time()) + skew
    msg_id = events.webhook_id(event_id)
    headers = signing.headers(signing.secret_key(secret), msg_id, stamp, body)
    assert headers["webhook-id"] == msg_id
    assert headers["webhook-signature"].startswith("v1,")
    # The verifier parses JSON: wrap arbitrary bytes as a JSON string payload.
    doc = orjson.dumps({"b": base64.b64encode(body).decode()})
    headers = signing.headers(signing.secret_key(secret), msg_id, stamp, doc)
    assert Webhook(secret).verify(doc, headers) == json.loads(doc)


def test_a_changed_body_id_timestamp_or_secret_does_not_verify() -> None:
    secret = signing.new_secret()
    key = signing.secret_key(secret)
    doc = b'{"type":"message.sent"}'
    now = int(time.time())
    good = signing.headers(key, "evt_1", now, doc)
    Webhook(secret).verify(doc, good)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"type":"message.failed"}', good)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(doc, {**good, "webhook-id": "evt_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(doc, {**good, "webhook-timestamp": str(now + 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(doc, good)


# -------------------------------------------------------------------------------- addresses

REFUSED = {
    "127.0.0.1": "loopback", "127.255.0.9": "loopback", "::1": "loopback",
    "10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private",
    "fc00::1": "private", "fd12:3456::1": "private",
    "169.254.169.254": "a cloud metadata address", "fd00:ec2::254": "a cloud metadata address",
    "100.100.100.200": "a cloud metadata address",
    "169.254.1.1": "link-local", "fe80::1": "link-local", "[fe80::1%eth0]": "link-local",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "224.0.0.1": "multicast", "ff02::1": "multicast",
    "100.64.0.1": "not publicly routable", "192.0.2.1": "private", "240.0.0.1": "private",
    "nonsense": "not an IP address", "": "not an IP address",
}


@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal(address) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34",
                                     "2606:4700:4700::1111", "[2001:4860:4860::8888]"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:10.0.0.1",
                                     "::ffff:169.254.169.254", "2002:7f00:1::1",
                                     "64:ff9b::a00:1"])
def test_ipv6_forms_embedding_a_private_ipv4_are_refused(address: str) -> None:
    reason = refusal(address)
    assert reason is not None and "embedded in" in reason


PRIVATE_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                "127.0.0.0/8", "169.254.0.0/16")]


@given(net=st.sampled_from(PRIVATE_V4), offset=st.integers(0, 2**24 - 1))
def test_every_private_ipv4_is_refused_in_every_spelling(net: ipaddress.IPv4Network,
                                                         offset: int) -> None:
    ip = net[offset % net.num_addresses]
    assert refusal(str(ip)) is not None
    assert refusal(f"::ffff:{ip}") is not None  # IPv4-mapped
    assert refusal(ipaddress.IPv6Address(0x2002 << 112 | int(ip) << 80)) is not None  # 6to4


@given(text=st.text(max_size=100))
def test_refusal_never_raises_on_hostile_text(text: str) -> None:
    assert refusal(text) is None or isinstance(refusal(text), str)


# ------------------------------------------------------------------------------------ policy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_delays_double_with_jitter_up_to_the_cap() -> None:
    low = RetrySchedule(base=5, cap=60, window=86_400, rng=lambda: 0.0)
    high = RetrySchedule(base=5, cap=60, window=86_400, rng=lambda: 0.999999)
    delays = [low.next_at(n, 0, 100) - 100 for n in range(1, 8)]  # type: ignore[operator]
    assert delays == [2.5, 5, 10, 20, 30, 30, 30]  # half the delay at the low jitter end
    assert high.next_at(1, 0, 100) == pytest.approx(105, abs=1e-3)
    assert high.next_at(20, 0, 100) == pytest.approx(160, abs=1e-3)


def test_retries_end_with_the_window() -> None:
    schedule = RetrySchedule(base=5, cap=3600, window=86_400, rng=lambda: 0.5)
    # Near the end, the last attempt falls at the end of the window; after it, none.
    assert schedule.next_at(12, 0, 86_000) == 86_400
    assert schedule.next_at(13, 0, 86_400) is None
    assert schedule.next_at(1, 0, 90_000) is None


@given(attempts=st.integers(1, 200), start=st.floats(0, 1e9), elapsed=st.floats(0, 2e5),
       jitter=st.floats(0, 0.999999))
def test_next_attempt_is_never_in_the_past_nor_past_the_window(attempts: int, start: float,
                                                               elapsed: float,
                                                               jitter: float) -> None:
    schedule = RetrySchedule(base=5, cap=3600, window=86_400, rng=lambda: jitter)
    now = start + elapsed
    at = schedule.next_at(attempts, start, now)
    if elapsed >= 86_400:
        assert at is None
    else:
        assert at is not None and now <= at <= start + 86_400


def test_gate_shuts_after_consecutive_failures_then_probes_one_at_a_time() -> None:
    clock = Clock()
    gate = EndpointGate(clock, concurrency=8, threshold=3, cap=10)
    assert gate.slots() == 8
    assert gate.failure() is None and gate.failure() is None
    assert gate.slots() == 8
    assert gate.failure() == 1.0  # shut for 1 s
    assert gate.slots() == 0 and gate.wait() == 1.0
    assert gate.failure() is None  # an attempt that was in flight when it shut
    clock.now += 1.0
    assert gate.slots() == 1  # one probe
    assert gate.failure() == 2.0  # the probe failed: shut twice as long
    clock.now += 2.0
    assert gate.success() is True  # reopened
    assert gate.slots() == 8 and not gate.shut
    assert gate.success() is False


def test_gate_interval_is_capped() -> None:
    clock = Clock()
    gate = EndpointGate(clock, concurrency=2, threshold=1, cap=10)
    intervals = []
    for _ in range(8):
        intervals.append(gate.failure())
        clock.now += 100
    assert intervals == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


# ----------------------------------------------------------------------------------- payload


def due(kind: str, **extra: object) -> DueDelivery:
    base: dict[str, object] = dict(
        delivery_id=1, event_id=7, attempts=0, first_at=0, type=kind, created_at=1_700_000_000_123,
        request_id=42, detail=None, topic_id="news", email="a@example.com", message_id="m-1",
        error=None, result_status=None, result_raw=None)
    base.update(extra)
    return DueDelivery(**base)  # type: ignore[arg-type]


def test_payload_carries_the_request_and_the_fact_time() -> None:
    body = orjson.loads(payload.render(due(events.SENT)))
    assert body == {"type": "message.sent", "timestamp": "2023-11-14T22:13:20.123Z",
                    "data": {"requestId": 42, "topicId": "news", "email": "a@example.com",
                             "messageId": "m-1"}}


def test_failed_and_suppressed_say_why() -> None:
    failed = orjson.loads(payload.render(due(events.FAILED, error="MessageRejected: no")))
    assert failed["data"]["error"] == "MessageRejected: no"
    stopped = orjson.loads(payload.render(due(events.SUPPRESSED, error="suppressed: bounce")))
    assert stopped["data"]["error"] == "suppressed: bounce"


def test_bounce_and_complaint_carry_ses_details() -> None:
    raw = (FIXTURES / "event-bounce.json").read_text()
    data = payload.compose_data(due(events.BOUNCED, result_status="Bounce", result_raw=raw))
    assert data["bounce"]["bounceType"] == "Permanent"
    assert data["bounce"]["bouncedRecipients"][0]["diagnosticCode"].startswith("smtp; 550")
    raw = (FIXTURES / "notification-complaint.json").read_text()
    data = payload.compose_data(due(events.COMPLAINED, result_status="Complaint", result_raw=raw))
    assert data["complaint"]["complaintFeedbackType"] == "abuse"


def test_detail_json_is_merged_and_bad_raw_is_tolerated() -> None:
    data = payload.compose_data(due(events.CLICKED, detail='{"link": "https://x.example/"}',
                                    result_status="Bounce", result_raw="{not json"))
    assert data["link"] == "https://x.example/"
    assert "bounce" not in data


def test_payload_carries_the_message_options() -> None:
    bulk = payload.compose_data(due(events.OPENED, list_id="news",
                                    tags='[["campaign","spring"]]'))
    assert (bulk["stream"], bulk["list"], bulk["tags"]) == ("bulk", "news",
                                                            {"campaign": "spring"})
    receipt = payload.compose_data(due(events.SENT, list_id="default", stream="transactional"))
    assert (receipt["stream"], receipt["list"], receipt["tags"]) == ("transactional", None, {})
    # Tags not as stored (another release wrote them): the payload goes without them.
    for raw in ("{not json", '{"a": "b"}', '[["only one"], 5]'):
        assert payload.compose_data(due(events.SENT, list_id="x", tags=raw))["tags"] == {}
