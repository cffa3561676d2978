"""Delivery channels: email through Django's email backend, SMS through a small backend API."""

from dataclasses import dataclass


class DeliveryError(Exception):
    """The channel could not deliver the message this time; it may be retried."""


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
