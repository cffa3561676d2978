"""WhatsApp's rule of its own: the 24-hour window.

WhatsApp lets a business write freely to a person only within 24 hours of that person's last
message to it (the "customer service window"). Outside it, a message the clinic starts must be
one of the provider's approved templates, sent by its ContentSid with its variables
(ContentVariables) instead of a body; a free-form body is refused (Twilio's error 63016).
`whatsapp_send_form` is that rule, and `whatsapp_content` applies it to a message: the body
within the window, else the approved template for the message and the patient's language, else
a permanent `DeliveryError` that names what is missing (the outbox then fails the row and
alerts the coordinator, as for any message that cannot be delivered).
"""

import datetime as dt
import enum
import json
from dataclasses import dataclass

from django.utils import timezone

from delivery.channels import DeliveryError, OutgoingMessage
from delivery.models import WhatsAppTemplate
from scheduling.models import NotificationTemplate
from scheduling.selectors import whatsapp_last_inbound_at

WHATSAPP_WINDOW = dt.timedelta(hours=24)
# A free-form body is sent only with this much of the window left: a message may wait a few
# minutes in the provider's queue, and one that reaches WhatsApp after the window closed is
# refused. (A refusal that comes anyway, 63016, is retried, and the retry sends the template.)
WINDOW_MARGIN = dt.timedelta(minutes=5)
WHATSAPP_PREFIX = "whatsapp:"


class SendForm(enum.StrEnum):
    FREE_FORM = "free-form"
    TEMPLATE = "template"


def whatsapp_send_form(*, last_inbound_at: dt.datetime | None, now: dt.datetime) -> SendForm:
    """How a message the clinic starts may go to a WhatsApp user who last wrote at
    `last_inbound_at` (None: never): free-form while their 24-hour window is open (with
    `WINDOW_MARGIN` to spare), else only as an approved template."""
    if last_inbound_at is not None and now < last_inbound_at + WHATSAPP_WINDOW - WINDOW_MARGIN:
        return SendForm.FREE_FORM
    return SendForm.TEMPLATE


def whatsapp_address(number) -> str:
    """The provider's address for a WhatsApp number: `whatsapp:+E164`."""
    number = str(number or "").strip()
    if number.lower().startswith(WHATSAPP_PREFIX):
        number = number[len(WHATSAPP_PREFIX) :]
    return f"{WHATSAPP_PREFIX}{number}"


def _variable(value) -> str:
    """A word as WhatsApp takes a template variable: on one line, without runs of spaces, and
    never empty (WhatsApp refuses both)."""
    return " ".join(str(value or "").split()) or "–"


def whatsapp_templates_usable() -> dict[tuple[str, str], WhatsAppTemplate]:
    """Every approved template with its ContentSid, by (message, language): one query, for a
    batch of messages."""
    return {
        (template.name, template.language): template
        for template in WhatsAppTemplate.objects.filter(approved=True).exclude(content_sid="")
    }


@dataclass(frozen=True)
class WhatsAppContent:
    """What one WhatsApp message is sent as: a body, or a template and its variables."""

    form: SendForm
    body: str = ""
    content_sid: str = ""
    content_variables: str = ""  # JSON, as the provider takes it


def whatsapp_content(
    *,
    message: str,
    language: str,
    text: str,
    words: dict,
    last_inbound_at: dt.datetime | None,
    now: dt.datetime | None = None,
    templates: dict[tuple[str, str], WhatsAppTemplate] | None = None,
) -> WhatsAppContent:
    """The body `text` within the patient's window; outside it, the approved template for
    `message` (a NotificationTemplate value) in `language`, filled from `words`. Raises a
    permanent DeliveryError when outside the window no approved template exists: the message
    is never sent free-form where WhatsApp would refuse it, nor silently dropped."""
    now = now or timezone.now()
    if whatsapp_send_form(last_inbound_at=last_inbound_at, now=now) == SendForm.FREE_FORM:
        return WhatsAppContent(SendForm.FREE_FORM, body=text)
    if templates is None:
        templates = whatsapp_templates_usable()
    template = templates.get((message, language))
    if template is None or not template.usable:
        what = NotificationTemplate(message).label.lower()
        raise DeliveryError(
            f"whatsapp: no approved WhatsApp template for the {what} in {language}, and the "
            "person has not written on WhatsApp in the last 24 hours",
            permanent=True,
            advice=(
                f"WhatsApp takes only an approved template here, and the {what} has none in "
                f"{language}. Enter its ContentSid and tick approved (WhatsApp templates, in the "
                "admin), or reach the person another way."
            ),
        )
    variables = {
        str(position): _variable(words.get(word)) for position, word in template.variables.items()
    }
    return WhatsAppContent(
        SendForm.TEMPLATE,
        content_sid=template.content_sid,
        content_variables=json.dumps(variables, ensure_ascii=False, sort_keys=True),
    )


def whatsapp_message(*, to, content: WhatsAppContent, idempotency_key: str) -> OutgoingMessage:
    """The message for the WhatsApp channel: to `whatsapp:+E164`, as a body or a template."""
    return OutgoingMessage(
        to=whatsapp_address(to),
        text=content.body,
        idempotency_key=idempotency_key,
        content_sid=content.content_sid,
        content_variables=content.content_variables,
    )


def whatsapp_to_enquirer(
    *, number, message: str, language: str, text: str, words: dict, idempotency_key: str, templates
) -> OutgoingMessage:
    """A WhatsApp message to someone who is not a patient yet (an enquirer): free-form within
    24 hours of their last WhatsApp message to the clinic, else the approved template."""
    content = whatsapp_content(
        message=message,
        language=language,
        text=text,
        words=words,
        last_inbound_at=whatsapp_last_inbound_at(number),
        templates=templates,
    )
    return whatsapp_message(to=number, content=content, idempotency_key=idempotency_key)


def whatsapp_send_unsafe(
    *,
    to: str,
    text: str,
    idempotency_key: str,
    message: str = "",
    language: str = "en",
    words: dict | None = None,
    last_inbound_at: dt.datetime | None = None,
) -> str:
    """Send one WhatsApp message now, to a raw number or `whatsapp:` address whose consent
    was given elsewhere (an enquiry's form, say); returns the provider's id. Unsafe: it sends
    at once, outside the outbox, so the caller owns retries and records; call it after commit.

    The 24-hour rule applies as to every WhatsApp message: outside the window it goes as the
    approved template for `message` in `language`, filled from `words`, or raises a permanent
    DeliveryError. The sender's pace is kept. Raises DeliveryError when it cannot deliver."""
    from delivery.channels.whatsapp import whatsapp_backend

    content = whatsapp_content(
        message=message,
        language=language,
        text=text,
        words=words or {},
        last_inbound_at=last_inbound_at,
    )
    outgoing = whatsapp_message(to=to, content=content, idempotency_key=idempotency_key)
    return whatsapp_backend().send(outgoing)
