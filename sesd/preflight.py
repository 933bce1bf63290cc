"""Checks made once at start, before any process is spawned: what the configuration names must
exist and make sense (an SES endpoint that is a URL, AWS credentials that resolve), so a mistake
stops sesd with one line instead of a sender that crash-loops or mail that waits for ever."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Settings
from .errors import ConfigError

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class SesTarget:
    """Where the `ses` transport will send, for the start-up log line."""

    region: str
    endpoint: str  # the override, or "aws" for SES's own endpoint of the region
    credentials: str  # where botocore found them (env, shared-credentials-file, iam-role, ...)


def endpoint_override(settings: Settings) -> tuple[str, str] | None:
    """(variable, URL) of the SES endpoint override botocore will use, if one is set."""
    env = dict(settings.aws_env)
    for name in ENDPOINT_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def check_endpoint(name: str, url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(name, f"must be an http(s) URL such as http://localhost:4566, "
                                f"got {url[:200]!r}")


def check_ses(settings: Settings) -> SesTarget:
    """Validate what the `ses` transport needs; raises ConfigError naming the problem."""
    override = endpoint_override(settings)
    if override is not None:
        check_endpoint(*override)
    # botocore reads os.environ; values from .env live only in settings until the children put
    # them there, so resolve with them in place (the environment wins, as in load()).
    for name, value in settings.aws_env:
        os.environ.setdefault(name, value)
    import botocore.exceptions
    import botocore.session

    try:
        credentials = botocore.session.Session().get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError("AWS_PROFILE", str(exc)) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError("AWS credentials", f"cannot be resolved: {exc}") from None
    if credentials is None or not credentials.access_key:
        raise ConfigError("AWS credentials", "EMAIL_TRANSPORT is ses but no AWS credentials were "
                          "found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, "
                          "or run with an IAM role), or use EMAIL_TRANSPORT=outbox")
    return SesTarget(settings.aws_region, override[1] if override else "aws",
                     getattr(credentials, "method", "") or "unknown")
