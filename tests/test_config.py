"""Configuration: SPEC's defaults, one ConfigError naming the variable per bad value, `.env`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sesd import config
from sesd.config import DEFAULT_SNS_CERT_URL_PATTERN, Settings, load, read_environment
from sesd.errors import ConfigError
from sesd.testing.harness import Service

REPO_ROOT = Path(__file__).resolve().parent.parent
SES_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_defaults_match_the_spec() -> None:
    s = load({})
    assert isinstance(s, Settings)
    assert s.aws_region == "ap-northeast-2"
    assert s.server_port == 3000
    assert s.server_host == "http://localhost:3000"
    assert s.db_path == Path("./data/app.db")
    assert s.outbox_dir == Path("data/outbox")
    assert s.email_rate == 14
    assert s.max_concurrent == 28
    assert s.max_request_mb == 32
    assert s.max_request_bytes == 32 * 1024 * 1024
    assert s.sns_cert_url_pattern == DEFAULT_SNS_CERT_URL_PATTERN
    assert s.sns_cert_url_pattern == (
        r"^https://sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+\.amazonaws\.com(\.cn)?/")
    assert s.sns_topic_arns == frozenset()
    assert s.env == "dev"
    assert s.api_key == "" and s.sentry_dsn == "" and s.ses_config_set == ""
    assert s.email_transport == "outbox"
    assert s.log_format in ("console", "json")
    assert s.log_level == "info"
    assert s.tracking_key == ""


def test_max_concurrent_defaults_to_twice_the_rate() -> None:
    assert load({"EMAIL_RATE": "5"}).max_concurrent == 10
    assert load({"EMAIL_RATE": "0.2"}).max_concurrent == 1
    assert load({"EMAIL_RATE": "5", "MAX_CONCURRENT": "3"}).max_concurrent == 3


@pytest.mark.parametrize(
    "credentials",
    [SES_CREDENTIALS, {"AWS_PROFILE": "prod"}],
    ids=["keys", "profile"],
)
def test_transport_is_ses_when_credentials_are_present(credentials: dict[str, str]) -> None:
    s = load({**credentials, "EMAIL_SENDER": "noreply@example.com"})
    assert s.email_transport == "ses"
    assert s.email_sender == "noreply@example.com"


def test_transport_is_outbox_without_complete_credentials() -> None:
    assert load({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"}).email_transport == "outbox"
    assert load({**SES_CREDENTIALS, "EMAIL_TRANSPORT": "outbox"}).email_transport == "outbox"


def test_valid_values_are_parsed() -> None:
    s = load({
        "AWS_REGION": "eu-west-1",
        "SERVER_PORT": "8080",
        "SERVER_HOST": "https://mail.example.com/",
        "SERVER_BIND": "::1",
        "DB_PATH": "/var/lib/sesd/app.db",
        "EMAIL_RATE": "0",
        "MAX_REQUEST_MB": "0.5",
        "SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:a, arn:aws:sns:eu-west-1:1:b,",
        "SES_CONFIG_SET": "my-set_1",
        "SENTRY_DSN": "https://key@o1.ingest.sentry.io/42",
        "TRACKING_KEY": "x" * 16,
        "LOG_LEVEL": "DEBUG",
        "EMAIL_BULK": "no",
    })
    assert s.aws_region == "eu-west-1"
    assert s.server_port == 8080
    assert s.server_host == "https://mail.example.com"
    assert s.server_bind == "::1"
    assert s.outbox_dir == Path("/var/lib/sesd/outbox")
    assert s.unlimited_rate
    assert s.max_request_bytes == 512 * 1024
    assert s.sns_topic_arns == {"arn:aws:sns:eu-west-1:123456789012:a", "arn:aws:sns:eu-west-1:1:b"}
    assert s.log_level == "debug"
    assert s.bulk is False
    assert s.aws_env == (("AWS_REGION", "eu-west-1"),)


BAD_VALUES = [
    ({"EMAIL_RATE": "abc"}, "EMAIL_RATE"),
    ({"EMAIL_RATE": "-1"}, "EMAIL_RATE"),
    ({"EMAIL_RATE": "nan"}, "EMAIL_RATE"),
    ({"EMAIL_RATE": "inf"}, "EMAIL_RATE"),
    ({"EMAIL_RATE": ""}, "EMAIL_RATE"),
    ({"MAX_CONCURRENT": "0"}, "MAX_CONCURRENT"),
    ({"MAX_CONCURRENT": "2.5"}, "MAX_CONCURRENT"),
    ({"SERVER_PORT": "70000"}, "SERVER_PORT"),
    ({"SERVER_PORT": "http"}, "SERVER_PORT"),
    ({"MAX_REQUEST_MB": "inf"}, "MAX_REQUEST_MB"),
    ({"MAX_REQUEST_MB": "0"}, "MAX_REQUEST_MB"),
    ({"SNS_CERT_URL_PATTERN": "("}, "SNS_CERT_URL_PATTERN"),
    ({"SNS_CERT_URL_PATTERN": "a{99999999999}"}, "SNS_CERT_URL_PATTERN"),
    ({"SNS_CERT_URL_PATTERN": ""}, "SNS_CERT_URL_PATTERN"),
    ({"SNS_TOPIC_ARNS": "my-topic"}, "SNS_TOPIC_ARNS"),
    ({"EMAIL_TRANSPORT": "smtp"}, "EMAIL_TRANSPORT"),
    ({"EMAIL_TRANSPORT": "ses"}, "EMAIL_SENDER"),
    (SES_CREDENTIALS, "EMAIL_SENDER"),
    ({"EMAIL_SENDER": "a@example.com\r\nBcc: victim@example.com"}, "EMAIL_SENDER"),
    ({"EMAIL_SENDER": "not-an-address"}, "EMAIL_SENDER"),
    ({"SES_CONFIG_SET": "has space"}, "SES_CONFIG_SET"),
    ({"AWS_REGION": "eu west 1"}, "AWS_REGION"),
    ({"SERVER_HOST": "ftp://x"}, "SERVER_HOST"),
    ({"SERVER_HOST": "localhost:3000"}, "SERVER_HOST"),
    ({"SERVER_HOST": "http://a b"}, "SERVER_HOST"),
    ({"SERVER_BIND": "0.0.0.0 extra"}, "SERVER_BIND"),
    ({"DB_PATH": "/"}, "DB_PATH"),
    ({"DB_PATH": "data/a\nb.db"}, "DB_PATH"),
    ({"OUTBOX_DIR": "out\x00box"}, "OUTBOX_DIR"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ({"SENTRY_DSN": "not a dsn"}, "SENTRY_DSN"),
    ({"SENTRY_DSN": "https://host/1"}, "SENTRY_DSN"),
    ({"TRACKING_KEY": "short"}, "TRACKING_KEY"),
    ({"TRACKING_KEY": "x" * 15}, "TRACKING_KEY"),
    ({"EMAIL_BULK": "maybe"}, "EMAIL_BULK"),
    ({"SHUTDOWN_GRACE": "-1"}, "SHUTDOWN_GRACE"),
    ({"SHUTDOWN_GRACE": "nan"}, "SHUTDOWN_GRACE"),
    ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
    ({"MAX_RECIPIENTS": "lots"}, "MAX_RECIPIENTS"),
    ({"SQLITE_MAX_PAGES": "-5"}, "SQLITE_MAX_PAGES"),
]


@pytest.mark.parametrize(
    ("env", "variable"), BAD_VALUES, ids=[f"{v}={next(iter(e.values()))!r}" for e, v in BAD_VALUES]
)
def test_bad_value_raises_config_error_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    assert info.value.variable == variable
    assert info.value.problem
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message  # one line on stderr, whatever the bad value held


def test_tracking_key_message_says_it_is_too_weak() -> None:
    with pytest.raises(ConfigError, match="too weak"):
        load({"TRACKING_KEY": "abc"})


def test_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nEMAIL_RATE=3\nSERVER_PORT=4000\nAPI_KEY=from-file\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("EMAIL_RATE", "API_KEY", "MAX_CONCURRENT", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVER_PORT", "5000")

    env = read_environment()
    assert env["EMAIL_RATE"] == "3"
    assert env["SERVER_PORT"] == "5000"

    s = load(env)
    assert s.email_rate == 3
    assert s.max_concurrent == 6
    assert s.server_port == 5000
    assert s.api_key == "from-file"


def test_load_without_arguments_reads_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("EMAIL_RATE=not-a-number\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMAIL_RATE", raising=False)
    with pytest.raises(ConfigError) as info:
        config.load()
    assert info.value.variable == "EMAIL_RATE"


def test_missing_dotenv_file_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENV", "staging")
    assert read_environment()["ENV"] == "staging"


@pytest.mark.slow
def test_bad_configuration_stops_run_py_with_one_line(spawn_sesd: Callable[..., Service]) -> None:
    sesd = spawn_sesd({"EMAIL_RATE": "abc"}, start=False)
    proc = sesd.run(timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sesd: configuration error: EMAIL_RATE: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not sesd.db_path.exists()


EXAMPLE = REPO_ROOT / "config" / "sesd.env.example"


def test_example_env_file_lists_every_variable() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    source = Path(config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'get\("([A-Z0-9_]+)"', source))
    read |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2"}
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert read <= listed, sorted(read - listed)


def test_example_env_file_defaults_load(tmp_path: Path) -> None:
    from dotenv import dotenv_values

    text = EXAMPLE.read_text(encoding="utf-8")
    only_api_key = {k: v or "" for k, v in dotenv_values(EXAMPLE).items()}
    assert only_api_key == {"API_KEY": "change-me"}

    uncommented = tmp_path / "all.env"
    uncommented.write_text(
        "\n".join(line[2:] if line.startswith("# ") and "=" in line.split()[1] else line
                  for line in text.splitlines()),
        encoding="utf-8",
    )
    values = {k: v or "" for k, v in dotenv_values(uncommented).items()}
    assert len(values) > 20
    s = load(values)
    defaults = load({})
    for name in ("aws_region", "server_port", "server_host", "db_path", "outbox_dir",
                 "email_rate", "max_concurrent", "max_request_mb", "sns_cert_url_pattern",
                 "email_transport", "env", "log_level", "bulk", "max_attempts",
                 "shutdown_grace", "max_recipients", "sqlite_max_pages", "http_header_timeout",
                 "http_body_timeout", "http_idle_timeout", "http_max_connections"):
        assert getattr(s, name) == getattr(defaults, name), name


def test_repr_redacts_every_secret() -> None:
    secrets = {"API_KEY": "api-key-value-0123456789", "TRACKING_KEY": "tracking-key-0123456789",
               "AWS_SECRET_ACCESS_KEY": "aws-secret-value-0123", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
               "AWS_SESSION_TOKEN": "session-token-value",
               "SENTRY_DSN": "https://publickey0123@o1.ingest.sentry.io/42"}
    s = load({**secrets, "EMAIL_SENDER": "a@example.com", "AWS_REGION": "eu-west-1",
              "AWS_ENDPOINT_URL_SESV2": "http://127.0.0.1:9"})
    text = repr(s)
    for value in secrets.values():
        assert value not in text
        assert value in s.secrets()  # what the Sentry scrubber replaces
    assert "<redacted>" in text
    # What is not secret stays readable for the operator.
    assert "eu-west-1" in text and "http://127.0.0.1:9" in text and "a@example.com" in text
    assert "api_key=''" in repr(load({}))  # an unset secret shows as unset


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.ap-northeast-2.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
])
def test_default_cert_url_pattern_matches_sns_regions(url: str) -> None:
    assert Settings().cert_url_re.match(url)


@pytest.mark.parametrize("url", [
    "https://sns.s3.amazonaws.com/cert.pem",  # the S3 bucket named "sns"
    "https://sns.s3.us-east-1.amazonaws.com/cert.pem",
    "https://sns.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
    "http://sns.us-east-1.amazonaws.com/cert.pem",
])
def test_default_cert_url_pattern_refuses_other_hosts(url: str) -> None:
    assert not Settings().cert_url_re.match(url)


@pytest.mark.parametrize(("name", "value"), [
    ("HTTP_HEADER_TIMEOUT", "0"), ("HTTP_HEADER_TIMEOUT", "soon"), ("HTTP_BODY_TIMEOUT", "-1"),
    ("HTTP_IDLE_TIMEOUT", "nan"), ("HTTP_MAX_CONNECTIONS", "2"), ("HTTP_MAX_CONNECTIONS", "1.5"),
])
def test_connection_limits_are_checked(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load({name: value})
    assert load({}).http_header_timeout == 10
    assert load({"HTTP_MAX_CONNECTIONS": "50"}).http_max_connections == 50
