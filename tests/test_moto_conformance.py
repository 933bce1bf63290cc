"""SesTransport against moto's SES v2 server: a second, independent reading of the wire format.

moto runs as a subprocess (`python -m moto.server`), so none of its global state leaks into this
process. What moto keeps of a SendEmail is From, To, Subject and body (GET /moto-api/data.json);
it drops the headers and the configuration set, so those are checked in moto's request recording
(MOTO_ENABLE_RECORDING), i.e. exactly the JSON body moto received.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiobotocore.session import AioSession

from sesd.config import Settings
from sesd.errors import BulkUnsupportedError, IdentityNotVerifiedError
from sesd.transports import BulkEntry, BulkTemplate, Email, Envelope
from sesd.transports.ses import SesTransport

# moto's server is a subprocess, started once for the module.
pytestmark = pytest.mark.slow

SENDER = "sender@example.com"
REGION = "us-east-1"


class Moto:
    def __init__(self, url: str, recording: Path) -> None:
        self.url = url
        self.recording = recording

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as http:
            for path in ("/moto-api/reset", "/moto-api/recorder/reset-recording"):
                async with http.post(self.url + path) as response:
                    assert response.status == 200

    async def ses_state(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + "/moto-api/data.json") as response,
        ):
            assert response.status == 200
            return (await response.json(content_type=None))["ses"]

    def recorded_bodies(self, path: str) -> list[dict[str, Any]]:
        bodies = []
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            if entry["method"] == "POST" and entry["url"].split("?")[0].endswith(path):
                raw = entry["body"]
                if entry["body_encoded"]:
                    raw = base64.b64decode(raw).decode()
                bodies.append(json.loads(raw))
        return bodies


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    folder = tmp_path_factory.mktemp("moto")
    recording, log = folder / "recording.jsonl", folder / "server.log"
    env = {
        **os.environ,
        "MOTO_ENABLE_RECORDING": "true",
        "MOTO_RECORDER_FILEPATH": str(recording),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None, f"moto server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"moto server did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield Moto(match.group(1), recording)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest_asyncio.fixture
async def moto(moto_server: Moto, aws_env: Callable[[str], None]) -> AsyncIterator[Moto]:
    aws_env(moto_server.url)
    await moto_server.reset()
    # Verify the sender the way an operator would, with a plain client.
    async with AioSession().create_client("sesv2", region_name=REGION) as client:
        await client.create_email_identity(EmailIdentity=SENDER)
    yield moto_server


def email(request_id: int, to: str, subject: str, html: str, *, text: str | None = None,
          sender: str = SENDER) -> Email:
    return Email(request_id, to, Envelope(sender, ("reply@example.net",), "sesd-events"),
                 subject, html, text, (("X-Request-ID", str(request_id)),),
                 (("campaign", "spring"),))


async def transport(sender: str = SENDER) -> SesTransport:
    settings = Settings(
        email_transport="ses", email_sender=sender, ses_config_set="sesd-events", aws_region=REGION
    )
    ses = SesTransport(settings)
    await ses.start()
    return ses


async def test_send_email_as_moto_reads_it(moto: Moto) -> None:
    html = '<p>안녕하세요</p><img src="https://t.example/o?r=42&amp;s=x">'
    ses = await transport()
    try:
        message_id = await ses.send(email(42, "rcpt@example.net", "Grüße 👋", html,
                                          text="안녕하세요"))
    finally:
        await ses.close()

    [message] = (await moto.ses_state())["Message"]
    assert message["id"] == message_id
    assert message["source"] == SENDER
    assert message["destinations"] == {"ToAddresses": ["rcpt@example.net"]}
    assert message["subject"] == "Grüße 👋"
    assert message["body"] == html

    [request] = moto.recorded_bodies("/v2/email/outbound-emails")
    simple = request["Content"]["Simple"]
    assert simple["Headers"] == [{"Name": "X-Request-ID", "Value": "42"}]
    assert simple["Subject"] == {"Data": "Grüße 👋", "Charset": "UTF-8"}
    assert simple["Body"] == {"Html": {"Data": html, "Charset": "UTF-8"},
                              "Text": {"Data": "안녕하세요", "Charset": "UTF-8"}}
    assert request["ConfigurationSetName"] == "sesd-events"
    assert request["FromEmailAddress"] == SENDER
    assert request["ReplyToAddresses"] == ["reply@example.net"]
    assert request["EmailTags"] == [{"Name": "campaign", "Value": "spring"}]


async def test_unverified_sender_holds_its_mail(moto: Moto) -> None:
    """moto refuses a From it has not verified, in its own words; sesd reads that as the From
    identity's fault (its mail is held), not the recipient's."""
    ses = await transport(sender="stranger@example.org")
    try:
        with pytest.raises(IdentityNotVerifiedError) as info:
            await ses.send(email(1, "rcpt@example.net", "s", "<p>h</p>",
                                 sender="stranger@example.org"))
    finally:
        await ses.close()
    assert info.value.code == "MessageRejected"
    assert info.value.identity == "stranger@example.org"
    assert str(info.value) == "MessageRejected: Email address not verified stranger@example.org"
    assert (await moto.ses_state())["Message"] == []


async def test_send_bulk_email(moto: Moto) -> None:
    # The pass-through shape: each entry its own finished message.
    entries = [
        BulkEntry(i, f"r{i}@example.net", json.dumps({"s": f"S{i}", "h": f"<p>{i}</p>",
                                                       "t": str(i)}),
                  (("X-Request-ID", str(i)),)) for i in (1, 2)
    ]
    ses = await transport()
    try:
        results = await ses.send_bulk(Envelope(SENDER),
                                      BulkTemplate("{{{s}}}", "{{{h}}}", "{{{t}}}"), entries)
    except BulkUnsupportedError as exc:
        # What the sender needs to fall back to SendEmail: the 404 page read as "no such
        # operation", and a one-line reason, not the page's markup.
        assert exc.code == "404" and "<" not in str(exc), str(exc)
        pytest.skip(
            "moto 5.2.5 does not implement SES v2 SendBulkEmail (answers 404); "
            "bulk is covered against the stand-in in test_transport_ses.py"
        )
    finally:
        await ses.close()
    assert [(r.request_id, r.error) for r in results] == [(1, None), (2, None)]
    assert all(r.message_id for r in results)


async def test_get_account(moto: Moto) -> None:
    ses = await transport()
    try:
        rate = await ses.max_send_rate()
    finally:
        await ses.close()
    if rate is None:
        pytest.skip("moto 5.2.5 does not implement SES v2 GetAccount (answers 404)")
    assert rate > 0
