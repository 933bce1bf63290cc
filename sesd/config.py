"""The one frozen configuration object, parsed and validated once at start."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError

# Region-shaped ("sns.us-east-1.amazonaws.com", "sns.cn-north-1.amazonaws.com.cn"), so S3 hosts
# such as sns.s3.amazonaws.com, which serve any bucket named "sns", never match.
DEFAULT_SNS_CERT_URL_PATTERN = (
    r"^https://sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+\.amazonaws\.com(\.cn)?/")
TRANSPORTS = ("ses", "outbox")
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_TRACKING_KEY_LEN = 16
# botocore's own check on region names (it raises at client creation, in a child, otherwise).
_REGION_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?")
_CONFIG_SET_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BIND_RE = re.compile(r"[A-Za-z0-9.:%\[\]-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Settings whose values never appear in a repr (logs, Sentry events, tracebacks).
SECRET_FIELDS = frozenset({"api_key", "tracking_key", "sentry_dsn"})
# AWS variables whose values are not secret; every other one (keys, tokens) is redacted.
_PUBLIC_AWS_VARS = re.compile(r"AWS_(DEFAULT_)?REGION|AWS_PROFILE|AWS_ENDPOINT_URL(_\w+)?")
REDACTED = "<redacted>"


@dataclass(frozen=True, repr=False)
class Settings:
    aws_region: str = "ap-northeast-2"
    email_sender: str = ""
    ses_config_set: str = ""
    email_transport: str = "outbox"
    server_port: int = 3000
    server_host: str = "http://localhost:3000"
    server_bind: str = "0.0.0.0"
    api_key: str = ""
    db_path: Path = Path("data/app.db")
    outbox_dir: Path = Path("data/outbox")
    # Sends per second over any sliding one-second window; 0 means unlimited.
    email_rate: float = 14.0
    max_concurrent: int = 28
    max_request_mb: float = 32.0
    sns_cert_url_pattern: str = DEFAULT_SNS_CERT_URL_PATTERN
    sns_topic_arns: frozenset[str] = field(default_factory=frozenset)
    sentry_dsn: str = ""
    env: str = "dev"
    log_format: str = "json"
    log_level: str = "info"
    tracking_key: str = ""
    bulk: bool = True
    shutdown_grace: float = 10.0
    # Seconds an SES call may take to answer before it counts as failed (and is retried).
    ses_timeout: float = 20.0
    # Seconds between two reads of the account's quota (GetAccount MaxSendRate): sending runs at
    # min(EMAIL_RATE, MaxSendRate), and accounts are raised and lowered.
    ses_quota_refresh: float = 300.0
    # Seconds between two probes of a hold (account paused, credentials refused, From identity
    # unverified): one message tries again; its success lifts the hold.
    ses_hold_probe: float = 30.0
    max_attempts: int = 8
    # Most recipients one POST may carry; bounds the API's memory whatever MAX_REQUEST_MB allows.
    max_recipients: int = 100_000
    # Hours an Idempotency-Key is remembered; a retry after that creates the requests again.
    idempotency_ttl_hours: float = 24.0
    # Test and operations hook: cap the database size (pages) to rehearse a full disk.
    sqlite_max_pages: int = 0
    # Test hook (SESD_FAULT_CRASH_EMAIL): the sender process dies, as a crash would, when it
    # receives a job for this address. Exercises the isolation of a message that kills it.
    fault_crash_email: str = ""
    # Who a message's `from` may be: addresses and "@domain"s. Empty: EMAIL_SENDER's address only.
    allowed_senders: frozenset[str] = field(default_factory=frozenset)
    # An address for the `mailto:` alternative of List-Unsubscribe (sesd does not read its mail:
    # the operator's mailbox must act on it); empty: the HTTPS one-click link only.
    unsubscribe_mailto: str = ""
    # Connection deadlines (seconds) and cap, so the API can face the internet without a proxy:
    # a request's headers must arrive within http_header_timeout of its first byte, its body
    # within http_body_timeout of its headers; a connection with no request in flight is closed
    # after http_idle_timeout. Past http_max_connections, the longest-idle one makes room.
    http_header_timeout: float = 10.0
    http_body_timeout: float = 60.0
    http_idle_timeout: float = 30.0
    http_max_connections: int = 1000
    # Webhooks: a URL whose host resolves to a loopback, private or link-local address is
    # refused (at registration and at connect time) unless this is set. Each attempt has
    # webhook_timeout seconds in all; at most webhook_concurrency attempts per endpoint are in
    # flight. A failed delivery is retried from webhook_retry_base seconds, doubling up to
    # webhook_retry_max, for webhook_retry_window seconds after its first attempt.
    webhook_allow_private: bool = False
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 8
    webhook_retry_base: float = 5.0
    webhook_retry_max: float = 3600.0
    webhook_retry_window: float = 86_400.0
    # Environment variables botocore reads itself (endpoint overrides, credentials) are passed
    # through untouched; this keeps the record of them for the children.
    aws_env: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = REDACTED
            elif f.name == "aws_env":
                value = tuple((k, v if _PUBLIC_AWS_VARS.fullmatch(k) else REDACTED)
                              for k, v in value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def secrets(self) -> list[str]:
        """Every secret value these settings hold (for scrubbing error reports)."""
        values = [getattr(self, name) for name in sorted(SECRET_FIELDS)]
        values += [v for k, v in self.aws_env if not _PUBLIC_AWS_VARS.fullmatch(k)]
        return [v for v in values if v]

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def idempotency_ttl_ms(self) -> int:
        return int(self.idempotency_ttl_hours * 3_600_000)

    @property
    def unlimited_rate(self) -> bool:
        return self.email_rate == 0

    @property
    def cert_url_re(self) -> re.Pattern[str]:
        return re.compile(self.sns_cert_url_pattern)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def _number(name: str, raw: str, *, minimum: float, maximum: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise ConfigError(name, f"must be {bound}, got {raw!r}")
    return value


def _control_free(name: str, value: str) -> str:
    if _CONTROL_RE.search(value):
        raise ConfigError(name, f"must not contain control characters (CR, LF, ...): {value!r}")
    return value


def _integer(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(name, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _mailbox(name: str, raw: str) -> str:
    """A plain address (no display name) in canonical form, or "" when unset."""
    if not raw:
        return ""
    from .addresses import AddressError, canonical_address

    try:
        return canonical_address(raw)
    except AddressError as exc:
        raise ConfigError(name, str(exc)) from None


def _allowed_senders(raw: str, sender: str) -> frozenset[str]:
    """ALLOWED_SENDERS as lower-cased addresses and "@domain"s (unset: EMAIL_SENDER's)."""
    from email.utils import parseaddr

    from .addresses import AddressError, canonical_address

    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries:
        address = parseaddr(sender)[1]
        return frozenset({address.lower()}) if address else frozenset()
    allowed: set[str] = set()
    for entry in entries:
        try:
            if entry.startswith("@"):
                allowed.add("@" + canonical_address(f"x{entry}").partition("@")[2])
            else:
                allowed.add(canonical_address(entry).lower())
        except AddressError:
            raise ConfigError("ALLOWED_SENDERS", f"not an address or @domain: {entry[:100]!r}"
                              ) from None
    return frozenset(allowed)


def _has_aws_credentials(env: Mapping[str, str]) -> bool:
    return bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")) or bool(
        env.get("AWS_PROFILE")
    )


def read_environment(env_file: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The process environment over the values of a `.env` file (the environment wins)."""
    merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    merged.update(os.environ)
    return merged


def _default(name: str) -> str:
    """A setting's default as the environment would spell it: Settings is the one place
    defaults are written."""
    value = getattr(_DEFAULTS, name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raises ConfigError naming the bad variable."""
    if env is None:
        env = read_environment()

    def get(name: str, default: str = "") -> str:
        return env.get(name, default).strip()

    # Each variable's default is its Settings field's (the field named like the variable unless
    # given): Settings is the one place defaults are written.
    def num(name: str, field: str = "", *, minimum: float, maximum: float | None = None
            ) -> float:
        raw = get(name, _default(field or name.lower()))
        return _number(name, raw, minimum=minimum, maximum=maximum)

    def whole(name: str, field: str = "", *, minimum: int, maximum: int) -> int:
        raw = get(name, _default(field or name.lower()))
        return _integer(name, raw, minimum=minimum, maximum=maximum)

    def flag(name: str, field: str = "") -> bool:
        return _bool(name, get(name, _default(field or name.lower())))

    transport = get("EMAIL_TRANSPORT").lower() or (
        "ses" if _has_aws_credentials(env) else "outbox"
    )
    if transport not in TRANSPORTS:
        choices = " or ".join(TRANSPORTS)
        raise ConfigError("EMAIL_TRANSPORT", f"must be {choices}, got {transport!r}")

    region = get("AWS_REGION") or _default("aws_region")
    if not _REGION_RE.fullmatch(region):
        raise ConfigError("AWS_REGION", f"not an AWS region name (like eu-west-1): {region!r}")

    sender = get("EMAIL_SENDER")
    if transport == "ses" and not sender:
        raise ConfigError("EMAIL_SENDER", "required when EMAIL_TRANSPORT is ses (the From address)")
    _control_free("EMAIL_SENDER", sender)
    if sender and "@" not in sender:
        raise ConfigError("EMAIL_SENDER", f"not an e-mail address: {sender!r}")
    config_set = get("SES_CONFIG_SET")
    if config_set and not _CONFIG_SET_RE.fullmatch(config_set):
        raise ConfigError(
            "SES_CONFIG_SET", f"must be 1-64 letters, digits, '_' or '-', got {config_set!r}"
        )

    rate = num("EMAIL_RATE", minimum=0, maximum=100_000)
    default_concurrency = max(1, min(int(2 * rate), 1000)) if rate else 100
    concurrency = _integer(
        "MAX_CONCURRENT", get("MAX_CONCURRENT", str(default_concurrency)), minimum=1, maximum=10_000
    )

    host = get("SERVER_HOST", _default("server_host")).rstrip("/")
    if not re.fullmatch(r"https?://[^/\s?#]+(/\S*)?", host):
        raise ConfigError("SERVER_HOST", f"must be an http(s) base URL, got {host!r}")

    bind = get("SERVER_BIND") or _default("server_bind")
    if not _BIND_RE.fullmatch(bind):
        raise ConfigError("SERVER_BIND", f"must be an IP address or host name, got {bind!r}")

    pattern = get("SNS_CERT_URL_PATTERN", _default("sns_cert_url_pattern"))
    if not pattern:
        # An empty pattern would match every URL: certificates could be fetched from anywhere.
        raise ConfigError("SNS_CERT_URL_PATTERN", "must not be empty (unset it for the default)")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ConfigError(
            "SNS_CERT_URL_PATTERN", f"not a valid regular expression: {exc}"
        ) from None
    topics = frozenset(a.strip() for a in get("SNS_TOPIC_ARNS").split(",") if a.strip())
    for arn in sorted(topics):
        if not arn.startswith("arn:") or arn.count(":") < 5:
            raise ConfigError("SNS_TOPIC_ARNS", f"not a topic ARN (arn:aws:sns:...): {arn!r}")

    sentry_dsn = get("SENTRY_DSN")
    if sentry_dsn:
        from sentry_sdk.utils import BadDsn, Dsn

        try:
            Dsn(sentry_dsn)
        except (BadDsn, ValueError) as exc:
            raise ConfigError("SENTRY_DSN", f"not a valid Sentry DSN: {exc}") from None

    tracking_key = get("TRACKING_KEY")
    if tracking_key and len(tracking_key) < MIN_TRACKING_KEY_LEN:
        raise ConfigError(
            "TRACKING_KEY",
            f"too weak: use at least {MIN_TRACKING_KEY_LEN} random characters "
            f"(got {len(tracking_key)}), or unset it to have one generated",
        )

    log_format = get("LOG_FORMAT") or ("console" if os.isatty(2) else "json")
    if log_format not in LOG_FORMATS:
        raise ConfigError("LOG_FORMAT", f"must be console or json, got {log_format!r}")
    log_level = (get("LOG_LEVEL") or _default("log_level")).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be {', '.join(LOG_LEVELS)}, got {log_level!r}")

    db_path = Path(_control_free("DB_PATH", get("DB_PATH", _default("db_path"))))
    if not db_path.name or db_path.name in (".", ".."):
        raise ConfigError("DB_PATH", "must name a file")
    outbox_dir = Path(_control_free("OUTBOX_DIR", get("OUTBOX_DIR")) or db_path.parent / "outbox")

    retry_base = num("WEBHOOK_RETRY_BASE", minimum=0.01,
                         maximum=86_400)
    retry_max = num("WEBHOOK_RETRY_MAX", minimum=0.01,
                        maximum=86_400)
    if retry_max < retry_base:
        raise ConfigError("WEBHOOK_RETRY_MAX", f"must be at least WEBHOOK_RETRY_BASE "
                          f"({retry_base:g}), got {retry_max:g}")

    return Settings(
        aws_region=region,
        email_sender=sender,
        ses_config_set=config_set,
        email_transport=transport,
        server_port=whole("SERVER_PORT", minimum=0, maximum=65535),
        server_host=host,
        server_bind=bind,
        api_key=get("API_KEY"),
        db_path=db_path,
        outbox_dir=outbox_dir,
        email_rate=rate,
        max_concurrent=concurrency,
        max_request_mb=num("MAX_REQUEST_MB", minimum=0.001),
        sns_cert_url_pattern=pattern,
        sns_topic_arns=topics,
        sentry_dsn=sentry_dsn,
        env=get("ENV") or _default("env"),
        log_format=log_format,
        log_level=log_level,
        tracking_key=tracking_key,
        bulk=flag("EMAIL_BULK", "bulk"),
        ses_timeout=num("SES_TIMEOUT", minimum=0.1, maximum=300),
        ses_quota_refresh=num("SES_QUOTA_REFRESH", minimum=1, maximum=86_400),
        ses_hold_probe=num("SES_HOLD_PROBE", minimum=0.1, maximum=3600),
        shutdown_grace=num("SHUTDOWN_GRACE", minimum=0, maximum=600
        ),
        max_attempts=whole("MAX_ATTEMPTS", minimum=1, maximum=100),
        max_recipients=whole("MAX_RECIPIENTS", minimum=1,
                                maximum=10_000_000),
        idempotency_ttl_hours=num("IDEMPOTENCY_TTL_HOURS", minimum=0.001, maximum=24 * 366),
        sqlite_max_pages=whole("SQLITE_MAX_PAGES", minimum=0,
                                  maximum=2**31 - 1),
        fault_crash_email=get("SESD_FAULT_CRASH_EMAIL"),
        allowed_senders=_allowed_senders(get("ALLOWED_SENDERS"), sender),
        unsubscribe_mailto=_mailbox("UNSUBSCRIBE_MAILTO", get("UNSUBSCRIBE_MAILTO")),
        http_header_timeout=num("HTTP_HEADER_TIMEOUT", minimum=0.1, maximum=600),
        http_body_timeout=num("HTTP_BODY_TIMEOUT", minimum=0.1, maximum=3600),
        http_idle_timeout=num("HTTP_IDLE_TIMEOUT", minimum=0.1, maximum=3600),
        http_max_connections=whole("HTTP_MAX_CONNECTIONS", minimum=8,
                                      maximum=1_000_000),
        webhook_allow_private=_bool("WEBHOOK_ALLOW_PRIVATE", get("WEBHOOK_ALLOW_PRIVATE")),
        webhook_timeout=num("WEBHOOK_TIMEOUT", minimum=0.1,
                                maximum=300),
        webhook_concurrency=whole("WEBHOOK_CONCURRENCY", minimum=1, maximum=1000),
        webhook_retry_base=retry_base,
        webhook_retry_max=retry_max,
        webhook_retry_window=num("WEBHOOK_RETRY_WINDOW", minimum=1,
                                     maximum=30 * 86_400),
        aws_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("AWS_"))),
    )


_DEFAULTS = Settings()
