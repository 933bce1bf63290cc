"""The webhook event types and which facts they name: shared by the store (which writes them),
the API (endpoint filters) and the notifier (payloads)."""

from __future__ import annotations

SENT = "message.sent"
FAILED = "message.failed"
DELIVERED = "message.delivered"
DELIVERY_DELAYED = "message.delivery_delayed"
BOUNCED = "message.bounced"
COMPLAINED = "message.complained"
REJECTED = "message.rejected"
OPENED = "message.opened"
CLICKED = "message.clicked"
UNSUBSCRIBED = "message.unsubscribed"
SUPPRESSED = "message.suppressed"

# Every type an endpoint may ask for.
EVENT_TYPES: tuple[str, ...] = (SENT, FAILED, DELIVERED, DELIVERY_DELAYED, BOUNCED, COMPLAINED,
                                REJECTED, OPENED, CLICKED, UNSUBSCRIBED, SUPPRESSED)

# SES event types (results.status) that become an event when matched to a request. Send,
# RenderingFailure, SES's own Open and Click and the rest stay results only.
FROM_SES: dict[str, str] = {"Delivery": DELIVERED, "DeliveryDelay": DELIVERY_DELAYED,
                            "Bounce": BOUNCED, "Complaint": COMPLAINED, "Reject": REJECTED}


def webhook_id(event_id: int) -> str:
    """The `webhook-id` of an event: one per event, the same on every retry and endpoint, so a
    receiver deduplicates on it."""
    return f"evt_{event_id}"
