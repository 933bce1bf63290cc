"""Tests for the local SES v2 stand-in (sesd.testing.ses_standin), driven
through a real aiobotocore ``sesv2`` client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
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

from sesd.testing.ses_standin import (
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
    ):
        assert flag in out
