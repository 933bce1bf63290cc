"""The JSON body of an event, composed at delivery time from the rows the store joins.

`compose_data` is the one place that decides what `data` carries: the request, the message's
options stored on its contents row (stream, list, tags), SES's own detail and the event's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from .. import events
from ..messages import BULK
from ..store import DueDelivery

# The SES event object each result type carries (SES's own field names), passed on as it is.
SES_DETAIL = {"Bounce": "bounce", "Complaint": "complaint", "Delivery": "delivery",
              "DeliveryDelay": "deliveryDelay", "Reject": "reject"}


def timestamp(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compose_data(d: DueDelivery) -> dict[str, Any]:
    """`data` of one event. `list` is null for transactional mail (no list applies to it);
    stream, list and tags are left out only when the request row itself is gone."""
    data: dict[str, Any] = {"requestId": d.request_id, "topicId": d.topic_id, "email": d.email,
                            "messageId": d.message_id}
    if d.list_id is not None:
        stream = d.stream or BULK
        data["stream"] = stream
        data["list"] = d.list_id if stream == BULK else None
        data["tags"] = _tags(d.tags)
    if d.type in (events.FAILED, events.SUPPRESSED) and d.error:
        data["error"] = d.error
    if d.result_raw and d.result_status in SES_DETAIL:
        detail = _ses_detail(d.result_raw, SES_DETAIL[d.result_status])
        if detail is not None:
            data[SES_DETAIL[d.result_status]] = detail
    if d.detail:
        data.update(orjson.loads(d.detail))
    return data


def _tags(raw: str | None) -> dict[str, str]:
    """The message's SES tags ([[name, value], ...] as stored) as an object."""
    if not raw:
        return {}
    try:
        pairs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return {str(p[0]): str(p[1]) for p in pairs if isinstance(p, list) and len(p) == 2} \
        if isinstance(pairs, list) else {}


def _ses_detail(raw: str, key: str) -> Any:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # stored as SES sent it; a payload without the detail beats none at all
    return event.get(key) if isinstance(event, dict) else None


def render(d: DueDelivery) -> bytes:
    return orjson.dumps({"type": d.type, "timestamp": timestamp(d.created_at),
                         "data": compose_data(d)})
