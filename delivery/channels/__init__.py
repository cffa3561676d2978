"""Delivery channels: email through Django's email backend, SMS through a provider's API.

Every channel has one interface, `send(message) -> provider_id`, and raises `DeliveryError`
when it cannot deliver, saying whether the failure is permanent (an address that will never
work: a malformed number, an unsubscribed phone, a mailbox that does not exist) or temporary
(the provider is down, a timeout): only a temporary failure is worth retrying.
"""

from dataclasses import dataclass
from typing import Protocol


class DeliveryError(Exception):
    """The channel could not deliver the message. Retried with backoff unless `permanent`."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


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


class DeliveryChannel(Protocol):
    def send(self, message: OutgoingMessage) -> str:
        """Hand the message to the provider; returns the provider's id for it."""
