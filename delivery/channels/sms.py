import logging
import uuid

from django.conf import settings

from common.urls import public_url_for
from delivery.channels import DeliveryChannel, DeliveryError, OutgoingMessage
from delivery.pacing import sender_pace

logger = logging.getLogger(__name__)
# What the console backends "send": in development it stands in for the patient's phone, so its
# links print whole there (config/settings.py); elsewhere it is masked like every log.
console_logger = logging.getLogger("delivery.console")


# Twilio's errors about the recipient's number itself: no retry can make them succeed.
# 21211 not a valid number, 21610 the recipient replied STOP, 21612 unroutable,
# 21614 not a mobile number, 21635 a landline.
TWILIO_PERMANENT_ERRORS = frozenset({21211, 21610, 21612, 21614, 21635})


class ConsoleSmsBackend:
    """Prints each SMS: for development."""

    def send(self, message: OutgoingMessage) -> str:
        # The number is masked: a log is no place for a patient's phone.
        masked = message.to[:3] + "…" + message.to[-3:]
        console_logger.info("SMS to %s: %s", masked, message.text)
        return f"console-{uuid.uuid4().hex[:12]}"


class NullSmsBackend:
    """Accepts and drops every SMS: for benchmarks of the dispatcher itself."""

    def send(self, message: OutgoingMessage) -> str:
        return "null"


# The header that carries a message's idempotency key to the provider: the IETF draft's name,
# which Twilio's SDK itself sends to the APIs of Twilio's that honour one.
IDEMPOTENCY_HEADER = "Idempotency-Key"


def _http_client_with_idempotency_keys(timeout: int):
    """Twilio's own HTTP client, sending the key of the message being created with it."""
    from twilio.http.http_client import TwilioHttpClient

    class IdempotentHttpClient(TwilioHttpClient):
        idempotency_key = ""

        def request(self, method, url, *args, headers=None, **kwargs):
            if self.idempotency_key and method.upper() == "POST":
                headers = {**(headers or {}), IDEMPOTENCY_HEADER: self.idempotency_key}
            return super().request(method, url, *args, headers=headers, **kwargs)

    return IdempotentHttpClient(timeout=timeout)


class TwilioSmsBackend:
    """Twilio's Messages API through the official SDK, with a timeout on every call.

    Each message is sent with its idempotency key (`Idempotency-Key`), so that a repeat after a
    worker's death is recognisable downstream: a provider or gateway that honours the key
    drops it. Twilio's Messages API does not document one, so a repeat through Twilio itself
    still reaches the phone (see the README, "Delivery is at least once").
    """

    def __init__(self):
        from twilio.rest import Client

        self.http_client = _http_client_with_idempotency_keys(settings.SMS_TIMEOUT)
        self.client = Client(
            settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=self.http_client
        )
        if settings.TWILIO_API_BASE_URL:
            self.client.api.base_url = settings.TWILIO_API_BASE_URL

    # What the provider is asked to send, its sender, and how errors are named.
    channel_name = "sms"

    def sender(self) -> str:
        return settings.TWILIO_FROM_NUMBER

    def default_per_second(self) -> float:
        return settings.SMS_SENDER_DEFAULT_PER_SECOND

    def content(self, message: OutgoingMessage) -> dict:
        return {"body": message.text}

    def refusal(self, error) -> DeliveryError:
        """What the provider's refusal of a message means: for good when it is about the
        number itself."""
        return DeliveryError(
            f"{self.channel_name}: {error} (Twilio error {error.code})",
            permanent=error.code in TWILIO_PERMANENT_ERRORS,
        )

    def send(self, message: OutgoingMessage) -> str:
        from twilio.base.exceptions import TwilioException, TwilioRestException

        options = {}
        if settings.TWILIO_STATUS_CALLBACK:
            options["status_callback"] = public_url_for("sms-status")
        sender = self.sender()
        # No faster than the provider allows this number, across every worker.
        sender_pace(sender=sender, default_per_second=self.default_per_second())
        self.http_client.idempotency_key = message.idempotency_key
        try:
            sent = self.client.messages.create(
                to=message.to, from_=sender, **self.content(message), **options
            )
        except TwilioRestException as error:
            raise self.refusal(error) from error
        except (TwilioException, OSError) as error:
            raise DeliveryError(f"{self.channel_name}: {error}") from error
        finally:
            self.http_client.idempotency_key = ""
        return sent.sid


_BACKENDS = {"console": ConsoleSmsBackend, "null": NullSmsBackend, "twilio": TwilioSmsBackend}


def sms_backend() -> DeliveryChannel:
    try:
        return _BACKENDS[settings.SMS_BACKEND]()
    except KeyError:
        raise ValueError(
            f"SMS_BACKEND must be one of {', '.join(_BACKENDS)}, not {settings.SMS_BACKEND!r}"
        ) from None
