"""What crosses process boundaries: small, plain, picklable records and nothing else.

Jobs travel as tuples inside a `Batch` rather than as one object each: pickling one list of
tuples per batch is several times cheaper than a dataclass per recipient, and the sender pulls
whole batches off its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Job(NamedTuple):
    """One claimed request: send `content_id` to `email`, with the recipient's template data."""

    request_id: int
    email: str
    content_id: int
    data: str | None = None  # JSON object text: this recipient's template data, if any


BULK, TRANSACTIONAL = "bulk", "transactional"
STREAMS = (BULK, TRANSACTIONAL)
DEFAULT_LIST = "default"
# The variable (and, in non-template content, the literal `{{unsubscribeUrl}}`) that becomes a
# bulk recipient's unsubscribe page URL.
UNSUBSCRIBE_VARIABLE = "unsubscribeUrl"


@dataclass(frozen=True, slots=True)
class Content:
    """One stored message: what all its recipients share (SPEC "Message options").

    Empty strings and tuples mean "the service's default" (EMAIL_SENDER, SES_CONFIG_SET, none)."""

    topic_id: str
    subject: str
    html: str
    text: str | None = None  # the text/plain part (a template too when `template`)
    stream: str = BULK
    list_id: str = DEFAULT_LIST
    sender: str = ""  # From: "addr" or "Name <addr>"
    reply_to: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    config_set: str = ""
    template: bool = False  # subject, html and text are Handlebars, rendered per recipient
    data: str | None = None  # JSON object text: template defaults for every recipient
    track_opens: bool = True
    track_clicks: bool = True
    links: tuple[str, ...] = ()  # the click-tracked URLs of the HTML, by link number

    @property
    def bulk(self) -> bool:
        return self.stream == BULK

    def options(self) -> dict[str, Any]:
        """What differs from the defaults, as stored with the content (JSON)."""
        out: dict[str, Any] = {}
        for name in _OPTION_FIELDS:
            value = getattr(self, name)
            if value != _DEFAULTS[name]:
                out[name] = [list(v) if isinstance(v, tuple) else v for v in value] \
                    if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_stored(cls, topic_id: str, subject: str, html: str, text: str | None,
                    options: dict[str, Any] | None) -> Content:
        values: dict[str, Any] = {}
        for name, value in (options or {}).items():
            if name not in _DEFAULTS:
                continue  # written by a later release: ignore rather than fail the send
            if isinstance(_DEFAULTS[name], tuple):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[name] = value
        return cls(topic_id, subject, html, text, **values)


_OPTION_FIELDS = ("stream", "list_id", "sender", "reply_to", "headers", "tags", "config_set",
                  "template", "data", "track_opens", "track_clicks", "links")
_DEFAULTS: dict[str, Any] = {name: Content.__dataclass_fields__[name].default
                             for name in _OPTION_FIELDS}


@dataclass(frozen=True, slots=True)
class Batch:
    """Scheduler → sender: claimed jobs plus each distinct content they need, sent once."""

    jobs: list[Job]
    contents: dict[int, Content]


@dataclass(frozen=True, slots=True)
class Credit:
    """Sender → scheduler: `n` jobs have left the sender's hands (finished or handed back)."""

    n: int


# Roles, in the order they start; shutdown drains them in this order too. The notifier stops
# last: it keeps delivering while the others drain.
ROLES: tuple[str, ...] = ("api", "scheduler", "sender", "notifier")
