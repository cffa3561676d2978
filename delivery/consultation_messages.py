"""What a consultation's reminder says, to someone who enquired and is not a patient yet: their
first name, "a consultation" in plain words (never a diagnosis or a treatment), the date and
time in their own zone (named), the place (the clinic's name and address for patients, in their
language, where the place is one of the site's resources) or the video link, and the clinic's
patient-facing name and number; in the language they wrote in."""

from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext

from delivery.channels import OutgoingMessage
from delivery.whatsapp import whatsapp_to_enquirer
from enquiries.consultations import enquirer_zone
from enquiries.models import ConsultationMode
from scheduling.models import TEXT_CHANNELS, Channel, Notification
from scheduling.places import resource_place_for_patients

# The reminders' relations, read with a batch of them (`prefetch_related` on notifications).
CONSULTATION_PREFETCH = ("consultation__enquiry__site__resources__wordings",)


def _place_for_enquirer(consultation, clinic: str) -> tuple[str, str]:
    """The place's name and address as the person reads them: a site resource's words for
    patients in their language (never the staff's name for it), else the place as written."""
    enquiry = consultation.enquiry
    written = consultation.place.strip()
    resource = next(
        (
            r
            for r in enquiry.site.resources.all()
            if written and r.name.strip().casefold() == written.casefold()
        ),
        None,
    )
    if resource is None:
        return written or clinic, ""
    words = resource_place_for_patients(resource, enquiry.language)
    return words.name or clinic, words.address


def consultation_message_context(consultation, *, booked: bool = False) -> dict:
    """The words of a consultation's reminder; call it inside `translation.override` of the
    person's language."""
    enquiry = consultation.enquiry
    site = enquiry.site
    clinic = site.patient_facing_name or gettext("your clinic")
    local = timezone.localtime(consultation.scheduled_at, enquirer_zone(enquiry))
    video = consultation.mode == ConsultationMode.VIDEO
    place, address = ("", "") if video else _place_for_enquirer(consultation, clinic)
    place_line = ", ".join([place, *filter(None, map(str.strip, address.splitlines()))])
    return {
        "language": enquiry.language,
        "first_name": enquiry.first_name,
        "booked": booked,
        "date": date_format(local, "DATE_FORMAT"),
        "time": f"{local:%H:%M} {local.tzname()}",
        "video_link": consultation.video_link if video else "",
        "place": place,
        "address": address,
        "place_line": place_line,
        # Where, on one line, for a WhatsApp template: the video link or the place.
        "where": consultation.video_link if video else place_line,
        "clinic": clinic,
        "phone": site.patient_phone.as_international if site.patient_phone else "",
    }


def consultation_reminder_message(
    notification: Notification, whatsapp_templates=None
) -> OutgoingMessage:
    """A consultation's reminder (or, booked too soon for one, its confirmation): a WhatsApp
    message carries the SMS's words, or outside the person's window the approved template."""
    enquiry = notification.consultation.enquiry
    booked = notification.idempotency_key.split(".")[2] == "booked"
    with translation.override(enquiry.language):
        context = consultation_message_context(notification.consultation, booked=booked)
        if notification.channel in TEXT_CHANNELS:
            text = render_to_string("enquiries/consultation_reminder_sms.txt", context).strip()
        if notification.channel == Channel.WHATSAPP:
            return whatsapp_to_enquirer(
                number=str(enquiry.whatsapp),
                message=notification.template,
                language=enquiry.language,
                text=text,
                words=context,
                idempotency_key=notification.idempotency_key,
                templates=whatsapp_templates,
            )
        if notification.channel == Channel.SMS:
            return OutgoingMessage(
                to=str(enquiry.phone), text=text, idempotency_key=notification.idempotency_key
            )
        subject = render_to_string("enquiries/consultation_reminder_subject.txt", context)
        return OutgoingMessage(
            to=enquiry.email,
            subject=" ".join(subject.split()),
            text=render_to_string("enquiries/consultation_reminder.txt", context),
            idempotency_key=notification.idempotency_key,
        )
