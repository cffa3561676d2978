"""What the messages to an enquirer say, in their language: the acknowledgement sent at once,
a coordinator's reply, and the kind reply that closes an enquiry. Like the reminders, a text
names the clinic by its patient-facing name and number and nothing more: no diagnosis, no
treatment's name. `delivery` sends them; the address and consent are read at send time."""

from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext, gettext_lazy

from enquiries.models import CloseReason, Enquiry, EnquiryReply
from scheduling.models import Channel, Notification, NotificationTemplate

# The kind reply that closes an enquiry, for each reason, in the enquirer's language.
CLOSING_REPLIES = {
    CloseReason.NOT_ELIGIBLE: gettext_lazy(
        "Thank you for your interest. After reading your answers, the team thinks this "
        "treatment is not the right one for you now. Please keep seeing your own doctor, who "
        "knows you best, and do contact us again if things change."
    ),
    CloseReason.NO_REPLY: gettext_lazy(
        "We have tried to reach you without an answer, so we are closing your enquiry for now. "
        "You are welcome to write to us again at any time."
    ),
    CloseReason.DECLINED: gettext_lazy(
        "Thank you for letting us know that you have decided not to go on. We wish you well, "
        "and you are welcome to contact us again at any time."
    ),
    CloseReason.ANSWERED_ONLY: gettext_lazy(
        "We hope we have answered your question. You are welcome to write to us again at any time."
    ),
    CloseReason.DUPLICATE: gettext_lazy(
        "We have received your message more than once and will answer it once, through your "
        "other enquiry."
    ),
}


def closing_reply_text(*, reason: str, language: str) -> str:
    """The kind words that close an enquiry for `reason`, in `language`; "" for a reason that
    sends none (spam)."""
    words = CLOSING_REPLIES.get(reason)
    if words is None:
        return ""
    with translation.override(language):
        return str(words)


@dataclass(frozen=True)
class EnquiryMessage:
    to: str
    subject: str
    text: str
    words: dict  # what a WhatsApp template's placeholders are filled from


def enquiry_address(enquiry: Enquiry, channel: str) -> str:
    if channel == Channel.EMAIL:
        return enquiry.email
    return str(enquiry.whatsapp if channel == Channel.WHATSAPP else enquiry.phone)


def _reply_of(notification: Notification) -> EnquiryReply:
    """The reply a notification carries, named by its key ("enquiry_reply.r12.email")."""
    reply_id = notification.idempotency_key.split(".")[1].removeprefix("r")
    return EnquiryReply.objects.get(pk=int(reply_id), enquiry_id=notification.enquiry_id)


def enquiry_message(notification: Notification) -> EnquiryMessage:
    """The words of an acknowledgement or a reply, for its channel, in the enquirer's language."""
    enquiry = notification.enquiry
    site = enquiry.site
    with translation.override(enquiry.language):
        context = {
            "first_name": enquiry.first_name,
            "clinic": site.patient_facing_name or gettext("the clinic"),
            "phone": site.patient_phone.as_international if site.patient_phone else "",
            "working_days": settings.ENQUIRY_ANSWER_WORKING_DAYS,
            "is_application": enquiry.kind == "application",
        }
        if notification.template == NotificationTemplate.ENQUIRY_REPLY:
            context["text"] = _reply_of(notification).text
            subject = gettext("%(clinic)s: an answer to your message") % context
            name = "reply"
        else:
            subject = gettext("%(clinic)s: we have your message") % context
            name = "acknowledgement"
        suffix = "_sms" if notification.channel != Channel.EMAIL else ""
        text = render_to_string(f"enquiries/messages/{name}{suffix}.txt", context).strip()
    return EnquiryMessage(
        to=enquiry_address(enquiry, notification.channel),
        subject=subject,
        text=text,
        words={key: str(value) for key, value in context.items()},
    )
