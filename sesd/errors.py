"""One root exception; what a failure *means* is its type, never a string match elsewhere."""

from __future__ import annotations


class SesdError(Exception):
    """Root of every error sesd raises on purpose."""


class ConfigError(SesdError):
    """A configuration value is missing or invalid; names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class StorageFullError(SesdError):
    """The database cannot grow (disk full or page limit reached)."""


class SendError(SesdError):
    """A send attempt failed; subclasses say whether to try again."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class RetryableSendError(SendError):
    """Transient: network, timeout, 5xx. Retry with backoff."""


class ThrottledError(RetryableSendError):
    """SES said we are over the sending rate. Retry, and slow down."""


class PermanentSendError(SendError):
    """SES refused this message for good (rejected, bad address, unverified identity)."""


class SendingPausedError(SendError):
    """The account cannot send at all right now (paused, suspended, no valid credentials).
    Hold all work; burn no attempts."""


class IdentityNotVerifiedError(SendError):
    """SES refused the From identity itself (unverified address or domain): every message from
    it would fail alike, so it is an account-level mistake, not a verdict on the recipient.
    Hold the mail from that identity; burn no attempts."""

    def __init__(self, message: str, *, identity: str, code: str = "MessageRejected") -> None:
        super().__init__(message, code=code)
        self.identity = identity


class BulkUnsupportedError(SendError):
    """The endpoint does not implement SendBulkEmail (an emulator such as moto answers 404):
    not the recipients' fault. Switch to SendEmail and send the jobs again, burning no attempts."""
