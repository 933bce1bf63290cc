"""Tests for the local SES v2 stand-in (sesd.testing.ses_standin), driven
through a real aiobotocore ``sesv2`` client."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import botocore
import pytest
import pytest_asyncio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.testing.ses_standin import (
    UNLIMITED_QUOTA,
    RenderingFailure,
    SesStandin,
    StandinConfig,
    TemplateError,
    render_template,
    start_standin,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- fixtures


@pytest_asyncio.fixture
async def standin_factory():
    runners = []

    async def make(config: StandinConfig | None = None) -> tuple[SesStandin, str]:
        standin, runner, url = await start_standin(config or StandinConfig())
        runners.append(runner)
        return standin, url

    yield make
    for runner in runners:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def ses_client(url: str, **config_kwargs):
    config = AioConfig(retries={"total_max_attempts": 1}, **config_kwargs)
    async with get_session().create_client(
        "sesv2",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    ) as client:
        yield client


def simple_email(to, *, request_id=None, subject="Hello", html="<p>Hi</p>", cc=(), **extra):
    content = {
        "Simple": {
            "Subject": {"Data": subject},
            "Body": {"Html": {"Data": html}, "Text": {"Data": "Hi"}},
        }
    }
    if request_id is not None:
        content["Simple"]["Headers"] = [{"Name": "X-Request-ID", "Value": request_id}]
    dest = {"ToAddresses": list(to) if not isinstance(to, str) else [to]}
    if cc:
        dest["CcAddresses"] = list(cc)
    kwargs = {"FromEmailAddress": "sender@example.com", "Destination": dest, "Content": content}
    kwargs.update(extra)
    return kwargs


def bulk_email(
    entries,
    *,
    default_data=None,
    subject="Hi {{name}}",
    html="<p>Hello {{name}}, code {{code}}</p>",
):
    return {
        "FromEmailAddress": "sender@example.com",
        "ConfigurationSetName": "bulk-set",
        "DefaultContent": {
            "Template": {
                "TemplateContent": {"Subject": subject, "Html": html, "Text": "Hello {{name}}"},
                "TemplateData": json.dumps(default_data or {"name": "friend", "code": "000"}),
            }
        },
        "BulkEmailEntries": entries,
    }


def bulk_entry(addr, *, data=None, request_id=None):
    entry = {"Destination": {"ToAddresses": [addr]}}
    if data is not None:
        entry["ReplacementEmailContent"] = {
            "ReplacementTemplate": {"ReplacementTemplateData": json.dumps(data)}
        }
    if request_id is not None:
        entry["ReplacementHeaders"] = [{"Name": "X-Request-ID", "Value": request_id}]
    return entry


# ----------------------------------------------------------------- SendEmail


@pytest.mark.asyncio
async def test_send_email_logged_with_request_id(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        resp = await ses.send_email(
            **simple_email(
                ["a@example.com"],
                cc=["c@example.com"],
                request_id="req-123",
                ConfigurationSetName="cs1",
            )
        )
        resp2 = await ses.send_email(**simple_email("b@example.com"))
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["MessageId"] and resp["MessageId"] != resp2["MessageId"]
    assert len(standin.sends) == 2
    s = standin.sends[0]
    assert s["message_id"] == resp["MessageId"]
    assert s["request_id"] == "req-123"
    assert s["to"] == ["a@example.com"]
    assert s["cc"] == ["c@example.com"]
    assert s["from"] == "sender@example.com"
    assert s["subject"] == "Hello"
    assert s["html"] == "<p>Hi</p>"
    assert s["config_set"] == "cs1"
    assert s["bulk"] is False
    assert abs(s["t"] - time.time()) < 10
    assert standin.sends[1]["request_id"] is None
    assert standin.sends[1]["config_set"] is None
    assert standin.counters.accepted == 2
    assert standin.counters.accepted_recipients == 3
    assert standin.counters.requests == 2


@pytest.mark.asyncio
async def test_send_email_template_and_raw_content(standin_factory):
    standin, url = await standin_factory()
    raw = (
        b"From: s@example.com\r\nTo: r@example.com\r\nSubject: Raw one\r\n"
        b"X-Request-ID: raw-1\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<b>raw</b>\r\n"
    )
    async with ses_client(url) as ses:
        await ses.send_email(
            FromEmailAddress="s@example.com",
            Destination={"ToAddresses": ["t@example.com"]},
            Content={
                "Template": {
                    "TemplateContent": {"Subject": "Hi {{name}}", "Html": "<i>{{ name }}</i>"},
                    "TemplateData": json.dumps({"name": "Ann"}),
                    "Headers": [{"Name": "x-request-id", "Value": "tpl-1"}],
                }
            },
        )
        await ses.send_email(Content={"Raw": {"Data": raw}})
    tpl, rawsend = standin.sends
    assert (tpl["subject"], tpl["html"], tpl["request_id"]) == ("Hi Ann", "<i>Ann</i>", "tpl-1")
    assert rawsend["to"] == ["r@example.com"]
    assert rawsend["from"] == "s@example.com"
    assert rawsend["subject"] == "Raw one"
    assert rawsend["request_id"] == "raw-1"
    assert "<b>raw</b>" in rawsend["html"]


# ----------------------------------------------------------------- SendBulkEmail


@pytest.mark.asyncio
async def test_send_bulk_email_logs_each_entry(standin_factory):
    standin, url = await standin_factory()
    entries = [
        bulk_entry("a@example.com", data={"name": "Alice", "code": "111"}, request_id="r-a"),
        bulk_entry("b@example.com", data={"name": "Bob"}, request_id="r-b"),
        bulk_entry("c@example.com", request_id="r-c"),
    ]
    async with ses_client(url) as ses:
        resp = await ses.send_bulk_email(**bulk_email(entries))
    results = resp["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS"] * 3
    assert len(standin.sends) == 3
    assert [s["message_id"] for s in standin.sends] == [r["MessageId"] for r in results]
    assert len({r["MessageId"] for r in results}) == 3
    assert [s["request_id"] for s in standin.sends] == ["r-a", "r-b", "r-c"]
    assert [s["to"] for s in standin.sends] == [
        ["a@example.com"],
        ["b@example.com"],
        ["c@example.com"],
    ]
    assert [s["html"] for s in standin.sends] == [
        "<p>Hello Alice, code 111</p>",
        "<p>Hello Bob, code 000</p>",  # missing key falls back to DefaultContent TemplateData
        "<p>Hello friend, code 000</p>",
    ]
    assert [s["subject"] for s in standin.sends] == ["Hi Alice", "Hi Bob", "Hi friend"]
    assert all(s["bulk"] and s["config_set"] == "bulk-set" for s in standin.sends)
    assert all(s["from"] == "sender@example.com" for s in standin.sends)
    assert standin.counters.accepted == 3
    assert standin.counters.requests == 1
    assert standin.peak_window() == 3


@pytest.mark.asyncio
async def test_bulk_reject_pattern_per_entry(standin_factory):
    standin, url = await standin_factory(StandinConfig(reject_pattern=r"@blocked\."))
    entries = [
        bulk_entry("ok1@example.com", request_id="1"),
        bulk_entry("no@blocked.example", request_id="2"),
        bulk_entry("ok2@example.com", request_id="3"),
    ]
    async with ses_client(url) as ses:
        resp = await ses.send_bulk_email(**bulk_email(entries))
    results = resp["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS", "MESSAGE_REJECTED", "SUCCESS"]
    assert "no@blocked.example" in results[1]["Error"]
    assert "MessageId" not in results[1]
    assert [s["request_id"] for s in standin.sends] == ["1", "3"]
    assert standin.counters.rejected == 1
    assert standin.counters.accepted == 2


# ----------------------------------------------------------------- rate limit


@pytest.mark.asyncio
async def test_max_rate_throttles_sixth_recipient(standin_factory):
    standin, url = await standin_factory(StandinConfig(max_rate=5))
    async with ses_client(url) as ses:
        start = time.monotonic()
        for i in range(5):
            await ses.send_email(**simple_email(f"u{i}@example.com"))
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("u5@example.com"))
        assert time.monotonic() - start < 1.0, "test machine too slow for a 1 s window"
        err = ei.value.response
        assert err["Error"]["Code"] == "TooManyRequestsException"
        assert err["Error"]["Message"] == "Maximum sending rate exceeded."
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert len(standin.sends) == 5
        assert standin.counters.throttled == 1
        assert standin.counters.accepted == 5
        assert standin.peak_window() == 5
        # the window slides: a second later there is room again
        await asyncio.sleep(1.05)
        await ses.send_email(**simple_email("late@example.com"))
    assert len(standin.sends) == 6
    assert standin.peak_window() == 5


@pytest.mark.asyncio
async def test_max_rate_counts_all_recipients_and_bulk_entries(standin_factory):
    standin, url = await standin_factory(StandinConfig(max_rate=5))
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:  # 3 To + 3 Cc = 6 > 5
            await ses.send_email(
                **simple_email(
                    ["a@x.com", "b@x.com", "c@x.com"], cc=["d@x.com", "e@x.com", "f@x.com"]
                )
            )
        assert ei.value.response["Error"]["Code"] == "TooManyRequestsException"
        await ses.send_email(**simple_email(["a@x.com", "b@x.com"], cc=["c@x.com"]))  # 3
        with pytest.raises(ClientError) as ei:  # 3 + 3 entries > 5
            await ses.send_bulk_email(**bulk_email([bulk_entry(f"{i}@x.com") for i in range(3)]))
        assert ei.value.response["Error"]["Code"] == "TooManyRequestsException"
        resp = await ses.send_bulk_email(**bulk_email([bulk_entry(f"{i}@x.com") for i in range(2)]))
        assert len(resp["BulkEmailEntryResults"]) == 2
    assert standin.counters.throttled == 2
    assert standin.peak_window() == 5
    assert len(standin.sends) == 3


# ----------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_reject_pattern_message_rejected(standin_factory):
    standin, url = await standin_factory(StandinConfig(reject_pattern=r"^bounce"))
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email(["ok@example.com"], cc=["bounce@example.com"]))
        await ses.send_email(**simple_email("fine@example.com"))
    err = ei.value.response
    assert err["Error"]["Code"] == "MessageRejected"
    assert err["Error"]["Message"].startswith("Email address is not verified.")
    assert "bounce@example.com" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [s["to"] for s in standin.sends] == [["fine@example.com"]]
    assert standin.counters.rejected == 1


@pytest.mark.asyncio
async def test_paused_then_unpaused_at_runtime(standin_factory):
    standin, url = await standin_factory(StandinConfig(paused=True))
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("a@example.com"))
        assert ei.value.response["Error"]["Code"] == "SendingPausedException"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(ClientError) as ei:
            await ses.send_bulk_email(**bulk_email([bulk_entry("a@example.com")]))
        assert ei.value.response["Error"]["Code"] == "SendingPausedException"
        account = await ses.get_account()
        assert account["SendingEnabled"] is False

        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/_standin/config", json={"paused": False, "max_rate": 100}
            ) as r:
                assert r.status == 200
                body = await r.json()
            assert body["paused"] is False and body["max_rate"] == 100
            async with http.post(f"{url}/_standin/config", json={"bogus": 1}) as r:
                assert r.status == 400
            async with http.post(f"{url}/_standin/config", json={"reject_pattern": "("}) as r:
                assert r.status == 400
        assert standin.config.paused is False
        await ses.send_email(**simple_email("a@example.com"))
    assert standin.counters.paused == 2
    assert len(standin.sends) == 1


@pytest.mark.asyncio
async def test_error_codes_surface_through_botocore(standin_factory):
    standin, url = await standin_factory(StandinConfig(error_rate=1.0))
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("a@example.com"))
        assert ei.value.response["Error"]["Code"] == "InternalFailure"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert standin.counters.errors == 1

        standin.config = StandinConfig(throttle_rate=1.0)
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("a@example.com"))
        assert ei.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert ei.value.response["Error"]["Message"] == "Maximum sending rate exceeded."

        standin.config = StandinConfig()
        with pytest.raises(ClientError) as ei:  # no FromEmailAddress
            await ses.send_email(
                Destination={"ToAddresses": ["a@x.com"]}, Content=simple_email("a@x.com")["Content"]
            )
        assert ei.value.response["Error"]["Code"] == "BadRequestException"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "FromEmailAddress" in ei.value.response["Error"]["Message"]
    assert standin.sends == []
    assert standin.counters.throttled == 1
    assert standin.counters.bad_requests == 1


@pytest.mark.asyncio
async def test_requires_sigv4_authorization(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url, signature_version=botocore.UNSIGNED) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("a@example.com"))
    assert ei.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/v2/email/outbound-emails",
            json={},
            headers={"Authorization": "Basic Zm9vOmJhcg=="},
        ) as r,
    ):
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        assert "message" in await r.json()
    assert standin.sends == []
    assert standin.counters.auth_failures == 2


# ----------------------------------------------------------------- GetAccount, latency, hangs


@pytest.mark.asyncio
async def test_get_account_reports_send_quota(standin_factory):
    _standin, url = await standin_factory(StandinConfig(max_send_rate_reported=42.0))
    async with ses_client(url) as ses:
        await ses.send_email(**simple_email(["a@x.com", "b@x.com"]))
        account = await ses.get_account()
    assert account["SendQuota"]["MaxSendRate"] == 42.0
    assert account["SendQuota"]["Max24HourSend"] > 0
    assert account["SendQuota"]["SentLast24Hours"] == 2.0
    assert account["SendingEnabled"] is True
    assert account["ProductionAccessEnabled"] is True


@pytest.mark.asyncio
async def test_latency_delays_answers(standin_factory):
    _standin, url = await standin_factory(StandinConfig(latency_ms=200))
    async with ses_client(url) as ses:
        start = time.monotonic()
        await ses.send_email(**simple_email("a@x.com"))
        assert time.monotonic() - start >= 0.19


@pytest.mark.asyncio
async def test_hang_times_out_client_but_send_is_accepted(standin_factory):
    standin, url = await standin_factory(StandinConfig(hang_rate=1.0, hang_seconds=5))
    async with ses_client(url, read_timeout=0.3, connect_timeout=2) as ses:
        with pytest.raises(ReadTimeoutError):
            await ses.send_email(**simple_email("a@x.com", request_id="hung-1"))
    assert [s["request_id"] for s in standin.sends] == ["hung-1"]


@pytest.mark.asyncio
async def test_seeded_randomness_is_reproducible(standin_factory):
    outcomes = []
    for _ in range(2):
        _standin, url = await standin_factory(StandinConfig(error_rate=0.5, seed=7))
        async with ses_client(url) as ses:
            run = []
            for i in range(12):
                try:
                    await ses.send_email(**simple_email(f"{i}@x.com"))
                    run.append("ok")
                except ClientError as e:
                    run.append(e.response["Error"]["Code"])
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert "ok" in outcomes[0] and "InternalFailure" in outcomes[0]


# ----------------------------------------------------------------- control endpoints


@pytest.mark.asyncio
async def test_log_paging_and_reset(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        for i in range(3):
            await ses.send_email(**simple_email(f"{i}@x.com", request_id=f"r{i}"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/_standin/log") as r:
            log = await r.json()
        assert [s["request_id"] for s in log["sends"]] == ["r0", "r1", "r2"]
        assert log["counters"]["accepted"] == 3
        assert log["counters"]["requests"] == 3
        assert log["counters"]["peak_window"] == 3
        assert log["next"] == 3
        async with http.get(f"{url}/_standin/log", params={"since": "2"}) as r:
            log = await r.json()
        assert [s["request_id"] for s in log["sends"]] == ["r2"]
        async with http.get(f"{url}/_standin/config") as r:
            assert (await r.json())["max_rate"] is None
        async with http.post(f"{url}/_standin/reset") as r:
            assert r.status == 200
        async with http.get(f"{url}/_standin/log") as r:
            log = await r.json()
    assert log["sends"] == []
    assert all(v == 0 for v in log["counters"].values())
    assert standin.peak_window() == 0


def test_render_template_is_handlebars_as_ses_renders_it():
    data = {"name": "Ann & <Bob>", "n": 3, "flag": True, "user": {"city": "Oslo"}, "none": None}
    assert render_template(
        "Hi {{name}}/{{ n }}/{{{name}}}/{{flag}}/{{user.city}}", data
    ) == ("Hi Ann &amp; &lt;Bob&gt;/3/Ann & <Bob>/true/Oslo")
    assert render_template("{{#if flag}}x{{else}}y{{/if}}", data) == "x"
    assert render_template("{{#if missing}}x{{else}}y{{/if}}", data) == "y"  # falsy, no failure
    assert render_template(None, data) is None
    assert render_template("no braces & <b>", data) == "no braces & <b>"  # never escaped
    for text in ("{{missing}}", "{{{missing}}}", "{{user.zip}}", "{{none}}", "{{nope.deeper}}"):
        with pytest.raises(RenderingFailure, match="is not present in the rendering data"):
            render_template(text, data)
    with pytest.raises(TemplateError, match="unsupported operations"):
        render_template("{{#if flag}}x{{/if}}", data, blocks=False)
    for broken in ("{{#if flag}}x", "x {{/if}}", "{{name", "{{#if a}}{{/each}}"):
        with pytest.raises(TemplateError, match="invalid"):
            render_template(broken, data)


def test_config_validation():
    with pytest.raises(ValueError):
        StandinConfig(error_rate=2)
    with pytest.raises(ValueError):
        StandinConfig(reject_pattern="(")
    with pytest.raises(ValueError):
        StandinConfig().updated({"nope": 1})
    cfg = StandinConfig().updated({"max_rate": 10, "paused": True})
    assert cfg.max_rate == 10 and cfg.paused


# ----------------------------------------------------------------- CLI


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cli_runs_as_subprocess_and_exits_on_sigterm():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sesd.testing.ses_standin",
        "--port",
        "0",
        "--max-send-rate-reported",
        "33",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        url = line.split(" ", 1)[1]
        async with ses_client(url) as ses:
            account = await ses.get_account()
            assert account["SendQuota"]["MaxSendRate"] == 33.0
            resp = await ses.send_email(**simple_email("a@x.com", request_id="cli-1"))
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_standin/log") as r:
            log = await r.json()
        assert [(s["message_id"], s["request_id"]) for s in log["sends"]] == [
            (resp["MessageId"], "cli-1")
        ]
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 15)
        assert rc == 0, (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_help_documents_flags(capsys):
    from sesd.testing.ses_standin import main

    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--port",
        "--host",
        "--max-rate",
        "--latency-ms",
        "--error-rate",
        "--throttle-rate",
        "--hang-rate",
        "--hang-seconds",
        "--reject-pattern",
        "--paused",
        "--seed",
        "--max-send-rate-reported",
        "--max-24-hour-send",
        "--unverified-senders",
        "--bulk-unsupported",
        "--sending-disabled",
        "--sandbox",
        "--template-blocks",
        "--suppressed",
    ):
        assert flag in out
    for endpoint in ("/_standin/config", "/_standin/log", "/_standin/reset"):
        assert endpoint in out


def test_every_config_field_has_a_cli_flag():
    import dataclasses

    from sesd.testing.ses_standin import _build_parser

    dests = {a.dest for a in _build_parser()._actions}
    assert {f.name for f in dataclasses.fields(StandinConfig)} <= dests


@pytest.mark.asyncio
@pytest.mark.slow
async def test_cli_fault_flags_in_a_subprocess(tmp_path):
    listing = tmp_path / "suppressed.json"
    listing.write_text(json.dumps([{"email": "gone@example.com", "reason": "BOUNCE"}]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sesd.testing.ses_standin",
        "--bulk-unsupported",
        "--sandbox",
        "--unverified-senders",
        "^blocked@",
        "--template-blocks",
        "--suppressed",
        f"@{listing}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        url = line.split(" ", 1)[1]
        async with ses_client(url) as ses:
            account = await ses.get_account()
            assert (account["ProductionAccessEnabled"], account["SendingEnabled"]) == (False, True)
            listed = await ses.list_suppressed_destinations()
            assert [s["EmailAddress"] for s in listed["SuppressedDestinationSummaries"]] == [
                "gone@example.com"
            ]
            with pytest.raises(ClientError) as ei:
                await ses.send_bulk_email(**bulk_email([bulk_entry("a@example.com")]))
            assert ei.value.response["Error"]["Code"] == "404"
            with pytest.raises(ClientError) as ei:
                await ses.send_email(
                    **simple_email("a@example.com", FromEmailAddress="blocked@example.com")
                )
            assert ei.value.response["Error"]["Code"] == "MessageRejected"
            await ses.send_email(**template_email("s", "{{#if a}}A{{else}}B{{/if}}", {}))
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_standin/log") as r:
            log = await r.json()
        assert [s["html"] for s in log["sends"]] == ["B"]
        assert log["counters"]["not_implemented"] == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_refuses_a_bad_suppressed_list(capsys):
    from sesd.testing.ses_standin import main

    with pytest.raises(SystemExit) as ei:
        main(["--suppressed", '[{"email": "a@b.c", "reason": "SOFT"}]'])
    assert ei.value.code == 2
    assert "BOUNCE or COMPLAINT" in capsys.readouterr().err


# ----------------------------------------------------------------- what each send records


async def configure(url: str, **changes) -> dict:
    async with aiohttp.ClientSession() as http, http.post(
        f"{url}/_standin/config", json=changes
    ) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def raw_call(url: str, method: str, path: str, body=None) -> tuple[int, dict, bytes]:
    """An SES call past botocore's own checks (a signed-looking header is all it takes)."""
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=k/20240101/eu-west-1/ses/aws4_request, "
        "SignedHeaders=host, Signature=x"
    }
    data = None if body is None else io.BytesIO(json.dumps(body).encode())
    async with aiohttp.ClientSession() as http, http.request(
        method, url + path, data=data, headers=headers
    ) as r:
        return r.status, dict(r.headers), await r.read()


@pytest.mark.asyncio
async def test_send_email_records_headers_reply_to_tags_text(standin_factory):
    standin, url = await standin_factory()
    headers = [
        {"Name": "X-Request-ID", "Value": "41"},
        {"Name": "List-Unsubscribe", "Value": "<https://u.example/t>"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        {"Name": "X-Subject-Note", "Value": "=?utf-8?q?Gr=C3=BC=C3=9Fe?="},
    ]
    async with ses_client(url) as ses:
        await ses.send_email(
            FromEmailAddress="News <news@example.com>",
            Destination={"ToAddresses": ["a@example.com"]},
            ReplyToAddresses=["help@example.com", "desk@example.com"],
            EmailTags=[{"Name": "campaign", "Value": "spring-2024"}, {"Name": "t_2", "Value": "x"}],
            ConfigurationSetName="cs-9",
            Content={
                "Simple": {
                    "Subject": {"Data": "Hi & bye"},
                    "Body": {"Html": {"Data": "<p>{{keep}}</p>"}, "Text": {"Data": "plain"}},
                    "Headers": headers,
                }
            },
        )
    [s] = standin.sends
    assert s["from"] == "News <news@example.com>"
    assert s["reply_to"] == ["help@example.com", "desk@example.com"]
    assert s["tags"] == {"campaign": "spring-2024", "t_2": "x"}
    assert s["config_set"] == "cs-9"
    assert s["headers"] == [[h["Name"], h["Value"]] for h in headers]
    assert s["request_id"] == "41"
    # Simple content is never rendered: braces and ampersands go out verbatim.
    assert (s["subject"], s["html"], s["text"]) == ("Hi & bye", "<p>{{keep}}</p>", "plain")


@pytest.mark.asyncio
async def test_bulk_records_merged_headers_and_tags_per_entry(standin_factory):
    standin, url = await standin_factory()
    body = bulk_email(
        [
            {
                "Destination": {"ToAddresses": ["a@example.com"]},
                "ReplacementHeaders": [
                    {"Name": "x-campaign", "Value": "entry-a"},  # same name, other case
                    {"Name": "X-Request-ID", "Value": "r-a"},
                ],
                "ReplacementTags": [
                    {"Name": "variant", "Value": "b"},
                    {"Name": "who", "Value": "a"},
                ],
            },
            {"Destination": {"ToAddresses": ["b@example.com"]}},
        ]
    )
    body["DefaultContent"]["Template"]["Headers"] = [
        {"Name": "List-Id", "Value": "news.example.com"},
        {"Name": "X-Campaign", "Value": "default"},
    ]
    body["DefaultEmailTags"] = [
        {"Name": "variant", "Value": "a"},
        {"Name": "list", "Value": "news"},
    ]
    body["ReplyToAddresses"] = ["help@example.com"]
    async with ses_client(url) as ses:
        resp = await ses.send_bulk_email(**body)
    assert [r["Status"] for r in resp["BulkEmailEntryResults"]] == ["SUCCESS", "SUCCESS"]
    a, b = standin.sends
    assert dict(a["headers"]) == {
        "List-Id": "news.example.com",
        "x-campaign": "entry-a",
        "X-Request-ID": "r-a",
    }
    assert len(a["headers"]) == 3  # replaced, not added twice
    assert a["request_id"] == "r-a"
    assert b["headers"] == [["List-Id", "news.example.com"], ["X-Campaign", "default"]]
    assert b["request_id"] is None
    assert a["tags"] == {"variant": "b", "list": "news", "who": "a"}
    assert b["tags"] == {"variant": "a", "list": "news"}
    assert a["reply_to"] == b["reply_to"] == ["help@example.com"]
    assert (a["text"], b["text"]) == ("Hello friend", "Hello friend")


@pytest.mark.asyncio
async def test_raw_message_records_its_headers_and_reply_to(standin_factory):
    standin, url = await standin_factory()
    raw = (
        b"From: s@example.com\r\nTo: r@example.com\r\nReply-To: back@example.com\r\n"
        b"Subject: Raw\r\nX-Request-ID: raw-2\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    )
    async with ses_client(url) as ses:
        await ses.send_email(Content={"Raw": {"Data": raw}})
    [s] = standin.sends
    assert s["reply_to"] == ["back@example.com"]
    assert ["X-Request-ID", "raw-2"] in s["headers"]
    assert s["text"].strip() == "hello" and s["html"] is None
    assert s["tags"] == {}


# ----------------------------------------------------------------- rendering as SES renders


def template_email(subject, html, data, *, text=None, to="t@example.com"):
    content = {"Subject": subject, "Html": html}
    if text is not None:
        content["Text"] = text
    return {
        "FromEmailAddress": "s@example.com",
        "Destination": {"ToAddresses": [to]},
        "Content": {"Template": {"TemplateContent": content, "TemplateData": json.dumps(data)}},
    }


@pytest.mark.asyncio
async def test_send_email_template_escapes_double_and_keeps_triple_braces(standin_factory):
    standin, url = await standin_factory()
    data = {"name": 'Ann & "Bo" <b>', "n": 2.5, "vip": False, "link": "https://x.example/?a=1&b=2"}
    async with ses_client(url) as ses:
        await ses.send_email(
            **template_email(
                "For {{name}}",
                '<a href="{{link}}">{{name}}</a> {{{name}}} {{n}} {{vip}}',
                data,
                text="Dear {{{name}}}, {{n}}",
            )
        )
    [s] = standin.sends
    assert s["subject"] == "For Ann &amp; &quot;Bo&quot; &lt;b&gt;"
    assert s["html"] == (
        '<a href="https://x.example/?a=1&amp;b=2">Ann &amp; &quot;Bo&quot; &lt;b&gt;</a> '
        'Ann & "Bo" <b> 2.5 false'
    )
    assert s["text"] == 'Dear Ann & "Bo" <b>, 2.5'


@pytest.mark.asyncio
async def test_bulk_replacement_data_merges_key_by_key_and_recursively(standin_factory):
    standin, url = await standin_factory()
    default = {"name": "friend", "a": {"x": "defX", "y": "defY"}, "list": ["d1", "d2"]}
    entries = [
        bulk_entry("one@example.com", data={"a": {"x": "repX"}, "list": ["r1"]}),
        bulk_entry("two@example.com", data={"name": "Two"}),
        bulk_entry("three@example.com", data={}),  # {} means: the defaults as they are
    ]
    async with ses_client(url) as ses:
        await ses.send_bulk_email(
            **bulk_email(
                entries,
                default_data=default,
                subject="{{name}}",
                html="x={{a.x}} y={{a.y}} list={{list.0}}/{{list.1}}",
            )
        )
    # arrays are replaced wholesale, so list.1 of the first entry is missing: a failure
    assert [f["to"] for f in standin.rendering_failures] == [["one@example.com"]]
    assert [s["subject"] for s in standin.sends] == ["Two", "friend"]
    assert [s["html"] for s in standin.sends] == [
        "x=defX y=defY list=d1/d2",
        "x=defX y=defY list=d1/d2",
    ]
    standin.reset()
    async with ses_client(url) as ses:
        await ses.send_bulk_email(
            **bulk_email(
                entries[:1], default_data=default, subject="s", html="x={{a.x}} y={{a.y}}"
            )
        )
    assert [s["html"] for s in standin.sends] == ["x=repX y=defY"]


@pytest.mark.asyncio
async def test_missing_variable_is_a_rendering_failure_not_a_send(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        resp = await ses.send_email(
            **template_email("Hi {{name}}", "<p>{{color}}</p>", {"name": "Ann"})
        )
        nulled = await ses.send_email(
            **template_email("Hi {{name}}", "<p>x</p>", {"name": None}, to="n@example.com")
        )
        ok = await ses.send_email(**template_email("Hi {{name}}", "<p>x</p>", {"name": "Bo"}))
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200  # SES says yes...
    assert [s["message_id"] for s in standin.sends] == [ok["MessageId"]]  # ...and sends nothing
    failed, null_failed = standin.rendering_failures
    assert failed["message_id"] == resp["MessageId"]
    assert failed["to"] == ["t@example.com"]
    assert failed["error"] == "Attribute 'color' is not present in the rendering data."
    assert null_failed["message_id"] == nulled["MessageId"]
    assert "'name'" in null_failed["error"]
    c = standin.counters
    assert (c.rendering_failures, c.accepted, c.accepted_recipients) == (2, 1, 1)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_standin/log") as r:
        log = await r.json()
    assert [f["message_id"] for f in log["rendering_failures"]] == [
        resp["MessageId"],
        nulled["MessageId"],
    ]
    assert log["counters"]["rendering_failures"] == 2


@pytest.mark.asyncio
async def test_bulk_entry_missing_a_variable_succeeds_but_is_not_sent(standin_factory):
    standin, url = await standin_factory()
    entries = [
        bulk_entry("a@example.com", data={"name": "A", "code": "1"}, request_id="ra"),
        bulk_entry("b@example.com", data={"name": "B"}, request_id="rb"),
        bulk_entry("c@example.com", data={"name": "C", "code": "3"}, request_id="rc"),
    ]
    async with ses_client(url) as ses:
        resp = await ses.send_bulk_email(
            **bulk_email(entries, default_data={"name": "x"}, html="{{name}} {{code}}")
        )
    results = resp["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS"] * 3
    assert [s["request_id"] for s in standin.sends] == ["ra", "rc"]
    [failure] = standin.rendering_failures
    assert failure["message_id"] == results[1]["MessageId"]
    assert (failure["request_id"], failure["bulk"]) == ("rb", True)
    assert "'code'" in failure["error"]


@pytest.mark.asyncio
async def test_block_helpers_answer_400_unless_enabled(standin_factory):
    standin, url = await standin_factory()
    html = (
        "{{#if vip}}VIP {{name}}{{else}}Hello {{name}}{{/if}}: {{#each items}}[{{this}}]{{/each}}"
    )
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**template_email("s", html, {"name": "A"}))
        err = ei.value.response
        assert err["Error"]["Code"] == "BadRequestException"
        assert err["Error"]["Message"] == "Template contains unsupported operations."
        with pytest.raises(ClientError) as ei:
            await ses.send_bulk_email(**bulk_email([bulk_entry("a@x.com")], html=html))
        assert ei.value.response["Error"]["Message"] == "Template contains unsupported operations."
        assert standin.counters.bad_requests == 2 and standin.sends == []

        await configure(url, template_blocks=True)
        await ses.send_email(**template_email("s", html, {"name": "A", "items": [1, "b"]}))
        await ses.send_email(
            **template_email("s", html, {"name": "V", "vip": True, "items": []}, to="v@x.com")
        )
        with pytest.raises(ClientError) as ei:  # an unclosed block is refused, not dropped
            await ses.send_email(**template_email("s", "{{#if vip}}never closed", {}))
        assert "{{#if vip}} is never closed" in ei.value.response["Error"]["Message"]
    assert [s["html"] for s in standin.sends] == ["Hello A: [1][b]", "VIP V: "]


@pytest.mark.asyncio
async def test_template_validation_and_stored_templates(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(
                FromEmailAddress="s@example.com",
                Destination={"ToAddresses": ["t@example.com"]},
                Content={"Template": {"TemplateName": "welcome", "TemplateData": "{}"}},
            )
        assert ei.value.response["Error"]["Code"] == "NotFoundException"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        for data, message in (("not json", "not valid JSON"), ("[1]", "JSON object")):
            body = template_email("s", "{{a}}", {})
            body["Content"]["Template"]["TemplateData"] = data
            with pytest.raises(ClientError) as ei:
                await ses.send_email(**body)
            assert message in ei.value.response["Error"]["Message"]
        entry = bulk_entry("a@example.com")
        entry["ReplacementEmailContent"] = {"ReplacementTemplate": {"ReplacementTemplateData": "{"}}
        with pytest.raises(ClientError) as ei:  # one bad entry refuses the whole call
            await ses.send_bulk_email(**bulk_email([bulk_entry("ok@example.com"), entry]))
        message = ei.value.response["Error"]["Message"]
        assert "BulkEmailEntries[1].ReplacementTemplateData" in message
    assert standin.sends == [] and standin.counters.bad_requests == 4


@pytest.mark.asyncio
async def test_template_data_and_content_size_limits(standin_factory):
    standin, url = await standin_factory()
    pad = 262_144 - len('{"a":"","b":""}')
    at_limit = json.dumps({"a": "x" * pad, "b": ""}, separators=(",", ":"))
    assert len(at_limit) == 262_144
    over = json.dumps({"a": "x" * (pad + 1), "b": ""}, separators=(",", ":"))
    async with ses_client(url) as ses:
        body = template_email("s", "{{b}}", {})
        body["Content"]["Template"]["TemplateData"] = at_limit
        await ses.send_email(**body)
        body["Content"]["Template"]["TemplateData"] = over
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**body)
        assert "262145 characters" in ei.value.response["Error"]["Message"]
    # Subject "s" + HTML: 1 MB is counted in UTF-8 bytes, not in characters.
    html = "x" + "é" * ((1024 * 1024 - 2) // 2)
    assert len(("s" + html).encode()) == 1024 * 1024
    status, _, raw = await raw_call(
        url, "POST", "/v2/email/outbound-emails", template_email("s", "x" + html, {})
    )
    assert status == 400 and b"1 MB" in raw
    status, _, raw = await raw_call(
        url, "POST", "/v2/email/outbound-emails", template_email("s", html, {})
    )
    assert status == 200, raw
    assert len(standin.sends) == 2


def test_simple_message_size_limit_counts_base64():
    from sesd.testing.ses_standin import _check_message_size, _Refused

    limit = 40 * 1024 * 1024 * 3 // 4
    _check_message_size(("s", "x" * (limit - 1), None), "Content.Simple")
    with pytest.raises(_Refused, match="40 MB"):
        _check_message_size(("s", "x" * limit, None), "Content.Simple")
    with pytest.raises(_Refused, match="40 MB"):  # bytes, not characters
        _check_message_size(("s", "é" * (limit // 2 + 1), None), "Content.Simple")


# ----------------------------------------------------------------- properties (hypothesis)

_NAMES = ["a", "b", "c_d", "e-f", "items", "a.b", "a.b.c", "b.items"]  # items: a dict method
_literals = st.text(alphabet=st.sampled_from(list("ab <>&\"'`=/\n{}é")), max_size=12).filter(
    lambda s: "{{" not in s and not s.endswith("{") and not s.startswith("}")
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(st.sampled_from(["a", "b", "c", "items"]), inner, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(_literals, st.sampled_from(_NAMES), st.booleans()), min_size=1, max_size=5
    ),
    tail=_literals,
    data=st.dictionaries(st.sampled_from(["a", "b", "c_d", "e-f", "items"]), _values, max_size=5),
)
def test_plain_substitution_fast_path_renders_exactly_what_pybars_renders(pieces, tail, data):
    from sesd.testing.ses_standin import _plain_renderer, _pybars_renderer

    text = "".join(lit + ("{{%s}}" if esc else "{{{%s}}}") % name for lit, name, esc in pieces)
    text += tail
    full = _pybars_renderer(text)
    fast = _plain_renderer(text, full)
    assert fast is not None  # these templates must take the fast path

    def outcome(render):
        try:
            return "ok", render(data)
        except RenderingFailure as e:
            return "failure", str(e)

    assert outcome(fast) == outcome(full)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=130), value=st.text(max_size=1000))
def test_header_validation_accepts_exactly_the_messageheader_model(name, value):
    from sesd.testing.ses_standin import _headers, _Refused

    valid = (
        1 <= len(name) <= 126
        and all(33 <= ord(ch) <= 126 and ch != ":" for ch in name)
        and 1 <= len(value) <= 995
        and all(32 <= ord(ch) <= 126 for ch in value)
        and name.lower()
        not in {"to", "cc", "bcc", "from", "reply-to", "subject", "date", "message-id",
                "mime-version", "content-type", "content-disposition", "return-path"}
    )
    try:
        assert _headers([{"Name": name, "Value": value}], "H") == [[name, value]]
        assert valid
    except _Refused as e:
        assert not valid
        assert len(str(e)) < 300  # the reflected value is truncated


@settings(max_examples=200, deadline=None)
@given(addrs=st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=4))
def test_address_validation_refuses_cleanly(addrs):
    from sesd.testing.ses_standin import _address_list, _Refused

    ok = all(isinstance(a, str) and a.isascii() and "@" in a for a in addrs)
    try:
        assert _address_list(addrs, "Destination", ".ToAddresses") is addrs
        assert ok
    except _Refused as e:
        assert not ok and "Destination.ToAddresses" in str(e)


# ----------------------------------------------------------------- validation like SES


@pytest.mark.asyncio
async def test_non_ascii_addresses_are_refused_and_fail_a_whole_bulk_call(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        for kwargs in (
            simple_email("jürgen@example.com"),
            simple_email("a@example.com", cc=["b@exämple.com"]),  # Punycode the domain
            simple_email("a@example.com", FromEmailAddress="Grüße <s@example.com>"),
            simple_email("a@example.com", ReplyToAddresses=["ü@example.com"]),
            simple_email("no-at-sign"),
        ):
            with pytest.raises(ClientError) as ei:
                await ses.send_email(**kwargs)
            assert ei.value.response["Error"]["Code"] == "BadRequestException"
            assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        entries = [bulk_entry(f"ok{i}@example.com") for i in range(3)]
        entries.insert(2, bulk_entry("ünicode@example.com"))
        with pytest.raises(ClientError) as ei:
            await ses.send_bulk_email(**bulk_email(entries))
        message = ei.value.response["Error"]["Message"]
        assert "BulkEmailEntries[2].Destination.ToAddresses" in message and "7-bit" in message
        # the ASCII forms of the same addresses go through
        await ses.send_email(
            **simple_email("a@xn--exmple-cua.com", FromEmailAddress="=?utf-8?q?Gr=C3=BC=C3=9Fe?= "
                           "<s@example.com>")
        )
    assert len(standin.sends) == 1
    assert standin.counters.bad_requests == 6


def headers_email(headers):
    body = simple_email("a@example.com")
    body["Content"]["Simple"]["Headers"] = headers
    return body


def h(name, value="v"):
    return {"Name": name, "Value": value}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([h("X:Colon")], "Invalid header name"),
        ([h("X Space")], "Invalid header name"),
        ([h("X-" + "n" * 125)], "Invalid header name"),  # 127 characters
        ([h("X-Note", "Grüße")], "RFC 2047"),
        ([h("X-Note", "line\r\nBcc: victim@example.com")], "RFC 2047"),
        ([h("X-Note", "v" * 996)], "995"),
        ([h(f"X-H{i}") for i in range(16)], "at most 15"),
        ([h("From", "evil@example.com")], "set by SES"),
        ([h("reply-to", "x@example.com")], "set by SES"),
        ([h("Content-Type", "text/plain")], "set by SES"),
        ([h("List-Unsubscribe", "<a>"), h("list-unsubscribe", "<b>")], "more than once"),
    ],
)
@pytest.mark.asyncio
async def test_header_rules(standin_factory, headers, message):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**headers_email(headers))
    assert ei.value.response["Error"]["Code"] == "BadRequestException"
    assert message in ei.value.response["Error"]["Message"]
    assert len(ei.value.response["Error"]["Message"]) < 300  # reflected input is truncated
    assert standin.sends == []


@pytest.mark.asyncio
async def test_headers_at_the_limits_are_accepted(standin_factory):
    standin, url = await standin_factory()
    limits = [h("X-" + "n" * 124, "v" * 995), h("X-Twice", "1"), h("X-Twice", "2")]
    limits += [h(f"X-H{i}") for i in range(12)]  # 15 in all
    async with ses_client(url) as ses:
        await ses.send_email(**headers_email(limits))
        bulk = bulk_email([bulk_entry("b@example.com", request_id="1")])
        bulk["DefaultContent"]["Template"]["Headers"] = [h("X-Q", "=?utf-8?b?w7w=?=")]
        await ses.send_bulk_email(**bulk)
    assert len(standin.sends[0]["headers"]) == 15
    assert ["X-Q", "=?utf-8?b?w7w=?="] in standin.sends[1]["headers"]


@pytest.mark.parametrize(
    "tag",
    [
        {"Name": "has space", "Value": "v"},
        {"Name": "ses:caller", "Value": "v"},
        {"Name": "n", "Value": "ümlaut"},
        {"Name": "n" * 257, "Value": "v"},
        {"Name": "n", "Value": "v" * 257},
        {"Name": "n", "Value": "a.b"},
    ],
)
@pytest.mark.asyncio
async def test_tag_rules(standin_factory, tag):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(**simple_email("a@example.com", EmailTags=[tag]))
        assert "Invalid tag" in ei.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as ei:
            body = bulk_email([bulk_entry("a@example.com")])
            body["BulkEmailEntries"][0]["ReplacementTags"] = [tag]
            await ses.send_bulk_email(**body)
        assert "BulkEmailEntries[0].ReplacementTags" in ei.value.response["Error"]["Message"]
        ok = [{"Name": "N_-9" * 64, "Value": "v-_0" * 64}]  # 256 characters each
        await ses.send_email(**simple_email("a@example.com", EmailTags=ok))
    assert standin.sends[0]["tags"] == {"N_-9" * 64: "v-_0" * 64}


# ----------------------------------------------------------------- fault modes


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """moto's own server, to compare the stand-in's 'no SendBulkEmail' answer with."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_bulk_unsupported_answers_like_moto(standin_factory, moto_url):
    standin, url = await standin_factory()
    body = bulk_email([bulk_entry("a@example.com")])
    await configure(url, bulk_unsupported=True)
    status, headers, page = await raw_call(url, "POST", "/v2/email/outbound-bulk-emails", body)
    m_status, m_headers, m_page = await raw_call(
        moto_url, "POST", "/v2/email/outbound-bulk-emails", body
    )
    assert (status, headers["Content-Type"], page) == (
        m_status,
        m_headers["Content-Type"],
        m_page,
    )
    assert status == 404 and page.startswith(b"<!doctype html>")
    async with ses_client(url) as ses, ses_client(moto_url) as moto:
        errors = []
        for client in (ses, moto):
            with pytest.raises(ClientError) as ei:
                await client.send_bulk_email(**body)
            errors.append(ei.value.response["Error"])
        assert errors[0] == errors[1] and errors[0]["Code"] == "404"
        await ses.send_email(**simple_email("a@example.com"))  # SendEmail still works
        await configure(url, bulk_unsupported=False)
        await ses.send_bulk_email(**body)
    assert standin.counters.not_implemented == 2
    assert standin.counters.send_bulk_email_calls == 3
    assert [s["bulk"] for s in standin.sends] == [False, True]


@pytest.mark.asyncio
async def test_unverified_sender_is_rejected_for_the_whole_call(standin_factory):
    standin, url = await standin_factory(
        StandinConfig(unverified_senders=r"@unverified\.example$")
    )
    expected = (
        "Email address is not verified. The following identities failed the check in "
        "region US-EAST-1: news@unverified.example"
    )
    async with ses_client(url) as ses:
        with pytest.raises(ClientError) as ei:
            await ses.send_email(
                **simple_email("a@example.com", FromEmailAddress="News <news@unverified.example>")
            )
        assert ei.value.response["Error"]["Code"] == "MessageRejected"
        assert ei.value.response["Error"]["Message"] == expected
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        body = bulk_email([bulk_entry(f"{i}@example.com") for i in range(3)])
        body["FromEmailAddress"] = "news@unverified.example"
        with pytest.raises(ClientError) as ei:
            await ses.send_bulk_email(**body)
        assert ei.value.response["Error"]["Message"] == expected
        await ses.send_email(**simple_email("a@example.com"))  # sender@example.com is verified
        await configure(url, unverified_senders=None)  # the identity got verified
        await ses.send_bulk_email(**body)
    assert [s["from"] for s in standin.sends] == ["sender@example.com"] + [
        "news@unverified.example"
    ] * 3
    assert standin.counters.rejected == 2


@pytest.mark.asyncio
async def test_check_order_validation_paused_unverified_throttle(standin_factory):
    standin, url = await standin_factory(
        StandinConfig(paused=True, unverified_senders="sender@", throttle_rate=1.0)
    )
    async with ses_client(url) as ses:

        async def code(**kwargs):
            with pytest.raises(ClientError) as ei:
                await ses.send_email(**kwargs)
            return ei.value.response["Error"]["Code"]

        assert await code(**simple_email("ü@example.com")) == "BadRequestException"
        assert await code(**simple_email("a@example.com")) == "SendingPausedException"
        await configure(url, paused=False)
        assert await code(**simple_email("a@example.com")) == "MessageRejected"
        await configure(url, unverified_senders=None)
        assert await code(**simple_email("a@example.com")) == "TooManyRequestsException"
    c = standin.counters
    assert (c.bad_requests, c.paused, c.rejected, c.throttled) == (1, 1, 1, 1)


@pytest.mark.asyncio
async def test_get_account_follows_runtime_changes(standin_factory):
    _standin, url = await standin_factory()
    async with ses_client(url) as ses:
        before = await ses.get_account()
        await configure(
            url,
            max_send_rate_reported=250.0,
            sending_enabled=False,
            production_access_enabled=False,
        )
        after = await ses.get_account()
        with pytest.raises(ClientError) as ei:  # a disabled account does not send either
            await ses.send_email(**simple_email("a@example.com"))
        await configure(url, sending_enabled=True, max_send_rate_reported=None, max_rate=12)
        again = await ses.get_account()
    # Unlimited unless configured: reported as a quota nothing reaches...
    assert before["SendQuota"]["MaxSendRate"] == UNLIMITED_QUOTA
    assert (before["SendingEnabled"], before["ProductionAccessEnabled"]) == (True, True)
    assert after["SendQuota"]["MaxSendRate"] == 250.0
    assert (after["SendingEnabled"], after["ProductionAccessEnabled"]) == (False, False)
    assert ei.value.response["Error"]["Code"] == "SendingPausedException"
    assert again["SendingEnabled"] is True
    assert again["SendQuota"]["MaxSendRate"] == 12.0  # ...or what the rate limit enforces


@pytest.mark.asyncio
async def test_list_suppressed_destinations_pages_and_filters(standin_factory):
    standin, url = await standin_factory()
    suppressed = [
        {"email": f"b{i}@example.com", "reason": "BOUNCE", "last_update_time": 1_700_000_000 + i}
        for i in range(5)
    ] + [{"email": "c@example.com", "reason": "COMPLAINT"}]
    await configure(url, suppressed=suppressed)
    async with ses_client(url) as ses:
        pages = [await ses.list_suppressed_destinations(PageSize=2)]
        while "NextToken" in pages[-1]:  # botocore has no paginator for this operation
            pages.append(
                await ses.list_suppressed_destinations(PageSize=2, NextToken=pages[-1]["NextToken"])
            )
        every = [s["EmailAddress"] for p in pages for s in p["SuppressedDestinationSummaries"]]
        assert every == [s["email"] for s in suppressed]
        assert len(pages) == 3 and "NextToken" not in pages[-1]
        first = pages[0]["SuppressedDestinationSummaries"][0]
        assert first["Reason"] == "BOUNCE"
        assert first["LastUpdateTime"].timestamp() == 1_700_000_000
        complaints = await ses.list_suppressed_destinations(Reasons=["COMPLAINT"])
        assert [s["EmailAddress"] for s in complaints["SuppressedDestinationSummaries"]] == [
            "c@example.com"
        ]
        recent = await ses.list_suppressed_destinations(
            Reasons=["BOUNCE"],
            StartDate=datetime.datetime.fromtimestamp(1_700_000_003, datetime.UTC),
        )
        assert [s["EmailAddress"] for s in recent["SuppressedDestinationSummaries"]] == [
            "b3@example.com",
            "b4@example.com",
        ]
        with pytest.raises(ClientError) as ei:
            await ses.list_suppressed_destinations(NextToken="not-a-token!")
        assert ei.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert standin.counters.list_suppressed_calls == 6
    async with aiohttp.ClientSession() as http, http.post(
        f"{url}/_standin/config", json={"suppressed": [{"email": "x@y.z", "reason": "NOPE"}]}
    ) as r:
        assert r.status == 400
        assert "BOUNCE or COMPLAINT" in (await r.json())["message"]


@pytest.mark.asyncio
async def test_counters_per_operation_show_how_many_calls_carried_the_messages(standin_factory):
    standin, url = await standin_factory()
    async with ses_client(url) as ses:
        for start in range(0, 500, 50):
            await ses.send_bulk_email(
                **bulk_email([bulk_entry(f"u{i}@example.com") for i in range(start, start + 50)])
            )
        await ses.send_email(**simple_email("one@example.com"))
        await ses.get_account()
        with pytest.raises(ClientError):
            await ses.send_email(**simple_email("ü@example.com"))
    c = standin.counters
    assert c.accepted == 501
    assert (c.send_bulk_email_calls, c.send_email_calls, c.get_account_calls) == (10, 2, 1)
    assert c.requests == 13


def test_compiled_templates_stay_bounded_and_eviction_keeps_rendering_right():
    """pybars registers each compiled template as a module; the cache must be the only owner."""
    from sesd.testing.ses_standin import _renderer

    before = len(sys.modules)
    texts = [f"<p>{i}: {{{{v}}}}</p>" for i in range(_renderer.cache_info().maxsize + 20)]
    for text in texts:
        render_template(text, {"v": "x"})
    assert len(sys.modules) == before  # nothing left behind in sys.modules
    assert _renderer.cache_info().currsize <= _renderer.cache_info().maxsize
    assert render_template(texts[0], {"v": "<again>"}) == "<p>0: &lt;again&gt;</p>"  # evicted


def test_a_large_plain_template_renders_without_the_slow_pybars_parser():
    """pybars parses 100 KB in seconds; a newsletter with only {{vars}} must not pay that."""
    html = "<p>Plenty of newsletter text &amp; links.</p>\n" * 2500 + '<img src="{{pixel}}">'
    start = time.process_time()
    out = render_template(html, {"pixel": "https://t.example/o?r=1&s=2"}, blocks=False)
    assert time.process_time() - start < 0.5
    assert out.endswith('<img src="https://t.example/o?r=1&amp;s=2">')
