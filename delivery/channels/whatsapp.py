"""WhatsApp through the SMS provider's WhatsApp API: the same Messages endpoint, with
`whatsapp:+E164` addresses, and a template sent by its ContentSid and ContentVariables in place
of a body (which of the two a message is, is `delivery/whatsapp.py`'s rule). The backend
follows SMS_BACKEND: the provider is the same."""

import logging
import uuid

from django.conf import settings

from delivery.channels import DeliveryChannel, DeliveryError, OutgoingMessage
from delivery.channels.sms import NullSmsBackend, TwilioSmsBackend, console_logger
from delivery.whatsapp import whatsapp_address

logger = logging.getLogger(__name__)

# The provider's refusals of a template as sent: 21655 a ContentSid it does not know (a typo,
# a template deleted, another account's), 21656 variables it cannot use. No retry mends them.
TEMPLATE_REFUSALS = frozenset({21655, 21656})


def whatsapp_sender() -> str:
    """The clinic's WhatsApp sender, as the provider takes it (`whatsapp:+E164`)."""
    if not settings.WHATSAPP_FROM:
        raise DeliveryError(
            "whatsapp: WHATSAPP_FROM is not set: the clinic has no WhatsApp sender",
            permanent=True,
            advice="The tracker has no WhatsApp sender (WHATSAPP_FROM): ask its administrator.",
        )
    return whatsapp_address(settings.WHATSAPP_FROM)


class ConsoleWhatsAppBackend:
    """Prints each WhatsApp message, or the template and its variables: for development."""

    def send(self, message: OutgoingMessage) -> str:
        masked = message.to[:12] + "…" + message.to[-3:]  # a log is no place for a number
        what = message.text or f"template {message.content_sid} {message.content_variables}"
        console_logger.info("WhatsApp to %s: %s", masked, what)
        return f"console-{uuid.uuid4().hex[:12]}"


class TwilioWhatsAppBackend(TwilioSmsBackend):
    """Twilio's Messages API for WhatsApp: everything as for SMS (the idempotency key, the
    timeout, the status callback, the sender's pace), from the WhatsApp sender, which keeps a
    pace of its own (WHATSAPP_SENDER_DEFAULT_PER_SECOND at its first message)."""

    channel_name = "whatsapp"

    def sender(self) -> str:
        return whatsapp_sender()

    def default_per_second(self) -> float:
        return settings.WHATSAPP_SENDER_DEFAULT_PER_SECOND

    def refusal(self, error) -> DeliveryError:
        if error.code in TEMPLATE_REFUSALS:
            return DeliveryError(
                f"whatsapp: {error} (Twilio error {error.code})",
                permanent=True,
                advice=f"The provider refused the WhatsApp template (Twilio error {error.code}): "
                "check its ContentSid and variables under WhatsApp templates in the admin.",
            )
        return super().refusal(error)

    def content(self, message: OutgoingMessage) -> dict:
        if message.content_sid:
            return {
                "content_sid": message.content_sid,
                "content_variables": message.content_variables or "{}",
            }
        return {"body": message.text}


_BACKENDS = {
    "console": ConsoleWhatsAppBackend,
    "null": NullSmsBackend,
    "twilio": TwilioWhatsAppBackend,
}


def whatsapp_backend() -> DeliveryChannel:
    try:
        return _BACKENDS[settings.SMS_BACKEND]()
    except KeyError:
        raise ValueError(
            f"SMS_BACKEND must be one of {', '.join(_BACKENDS)}, not {settings.SMS_BACKEND!r}"
        ) from None
