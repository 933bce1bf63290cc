"""Sentry events carry no local variables, request data or secrets (a local transport looks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from sesd import telemetry
from sesd.config import load

SECRETS = {"API_KEY": "api-key-value-0123456789", "TRACKING_KEY": "tracking-key-0123456789",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-value-0123"}


class Captured(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                self.events.append(item.payload.json)


@pytest.fixture
def captured() -> Iterator[Captured]:
    transport = Captured()
    settings = load({**SECRETS, "SENTRY_DSN": "https://public0123@o1.ingest.sentry.io/42"})
    telemetry.setup_sentry(settings, "api", transport=transport)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def fail_with_secrets_in_scope(settings: Any, body: bytes) -> None:
    recipients = ["victim@example.com"]  # noqa: F841 - a local a frame would have held
    raise RuntimeError(f"broke while holding {settings.api_key}")


def test_event_holds_no_locals_no_request_and_no_secret(captured: Captured) -> None:
    settings = load({**SECRETS})
    try:
        fail_with_secrets_in_scope(settings, b'{"emails": ["victim@example.com"]}')
    except RuntimeError as exc:
        telemetry.capture(exc)
    sentry_sdk.flush()
    assert len(captured.events) == 1
    event = captured.events[0]
    text = json.dumps(event)
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames and all("vars" not in frame for frame in frames)
    assert "request" not in event
    for secret in SECRETS.values():
        assert secret not in text
    assert "victim@example.com" not in text
    assert "<redacted>" in text  # the exception message quoted the key
    assert event["tags"]["role"] == "api"
