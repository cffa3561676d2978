"""Delivery channels: email through Django's email backend, SMS and WhatsApp through a
provider's API (WhatsApp on the same Messages endpoint, to `whatsapp:` addresses).

Every channel has one interface, `send(message) -> provider_id`, and raises `DeliveryError`
when it cannot deliver, saying whether the failure is permanent (an address that will never
work: a malformed number, an unsubscribed phone, a mailbox that does not exist) or temporary
(the provider is down, a timeout): only a temporary failure is worth retrying.
"""

from dataclasses import dataclass
from typing import Protocol


class DeliveryError(Exception):
    """The channel could not deliver the message. Retried with backoff unless `permanent`."""

    def __init__(self, message: str, *, permanent: bool = False, advice: str = ""):
        super().__init__(message)
        self.permanent = permanent
        # For a permanent failure: what a coordinator can do about it, said in their alert
        # (without it: the provider refused the address).
        self.advice = advice


@dataclass(frozen=True)
class OutgoingMessage:
    to: str
    text: str
    idempotency_key: str
    subject: str = ""
    html: str = ""
    # (filename, content, MIME type); an image whose filename is in `inline` is shown in the HTML.
    attachments: tuple = ()
    inline: tuple = ()
    # A WhatsApp template, sent in place of the text: the provider's id for it, and its
    # variables as JSON (delivery/whatsapp.py).
    content_sid: str = ""
    content_variables: str = ""


class DeliveryChannel(Protocol):
    def send(self, message: OutgoingMessage) -> str:
        """Hand the message to the provider; returns the provider's id for it."""
