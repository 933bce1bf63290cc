"""What crosses process boundaries: small, plain, picklable records and nothing else.

Jobs travel as tuples inside a `Batch` rather than as one object each: pickling one list of
tuples per batch is several times cheaper than a dataclass per recipient, and the sender pulls
whole batches off its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Job(NamedTuple):
    """One claimed request: send `content_id` to `email`."""

    request_id: int
    email: str
    content_id: int


@dataclass(frozen=True, slots=True)
class Content:
    """One stored message: what all its recipients share."""

    topic_id: str
    subject: str
    html: str


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
