"""Every change to an enquiry: sent from the public page, replied to, closed, converted into a
patient with a course in evaluation, purged. The admin, the page, commands and tests call
these, and nothing else writes an enquiry."""

import datetime as dt

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import Refused
from common.zones import local_words
from enquiries.consultations import consultation_protocol, enquirer_send_after
from enquiries.messages import closing_reply_text
from enquiries.models import (
    CloseReason,
    Enquiry,
    EnquiryReply,
    EnquiryStatus,
    ReplyKind,
    SmokingAnswer,
)
from enquiries.selectors import zone_country
from enquiries.suggestions import enquiry_suggestion
from pathway.services import course_create, course_start_evaluation
from patients.access import user_sites
from patients.models import Patient, SmokingStatus
from scheduling.models import (
    Channel,
    InboundMessage,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    ReplyIntent,
)
from scheduling.outbox import notifications_write
from scheduling.replies import STOP_SOURCES, reply_channel


def enquiry_channels(enquiry: Enquiry) -> list[str]:
    """The channels this enquirer may be written to now: email, SMS and WhatsApp, each where
    they gave an address and consented to it (`Enquiry.consents_to`)."""
    return enquiry.channels()


def _acknowledgements_write(enquiry: Enquiry) -> list[Notification]:
    """The acknowledgement, due at once, on every consented channel; written once per enquiry
    and channel, ever (its idempotency key)."""
    now = timezone.now()
    return notifications_write(
        [
            Notification(
                template=NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT,
                channel=channel,
                enquiry=enquiry,
                send_after=now,
                idempotency_key=f"enquiry_ack.e{enquiry.pk}.{channel}",
            )
            for channel in enquiry_channels(enquiry)
        ]
    )


def enquiry_submit(
    *, fields: dict, site, language: str, submission_key: str
) -> tuple[Enquiry, bool]:
    """Store what a person sent from the enquiry page, once per submission key: a post
    retried with the same key returns the enquiry the first one made. Returns the enquiry
    and whether it is new."""
    existing = Enquiry.objects.filter(submission_key=submission_key).first()
    if existing is not None:
        return existing, False
    zone = fields.get("time_zone")
    try:
        with transaction.atomic():
            enquiry = Enquiry.objects.create(
                **fields,
                site=site,
                language=language,
                country=zone_country(str(zone)) if zone else "",
                submission_key=submission_key,
                submitted_at=timezone.now(),
            )
            _acknowledgements_write(enquiry)
    except IntegrityError:  # the same key, posted twice at once: the other post stored it
        return Enquiry.objects.get(submission_key=submission_key), False
    return enquiry, True


REPLY_MAX_CHARACTERS = 2000


def enquiry_may_act(*, user, enquiry: Enquiry) -> bool:
    """A coordinator of the enquiry's site (or whoever sees every site) with the permission
    to work on enquiries: the lab never does."""
    return (
        user.has_perm("enquiries.change_enquiry")
        and user_sites(user).filter(pk=enquiry.site_id).exists()
    )


def _authorise(*, by, enquiry: Enquiry) -> None:
    if not enquiry_may_act(user=by, enquiry=enquiry):
        raise PermissionDenied("Enquiries are for the coordinators of their site.")


def _locked_open(enquiry: Enquiry, *, doing: str) -> Enquiry:
    """The enquiry, locked for the change, refused in words if it is no longer open."""
    locked = Enquiry.objects.select_for_update().select_related("site").get(pk=enquiry.pk)
    if locked.status == EnquiryStatus.CONVERTED:
        raise Refused(
            [f"This enquiry cannot be {doing}: it is already a patient ({locked.patient})."]
        )
    if locked.status == EnquiryStatus.CLOSED:
        raise Refused(
            [
                f"This enquiry cannot be {doing}: it was closed "
                f"{local_words(locked.closed_at, locked.site.time_zone)} "
                f"({locked.get_close_reason_display().lower()})."
            ]
        )
    return locked


def _reply_write(*, enquiry: Enquiry, by, text: str, channel: str, kind: str) -> EnquiryReply:
    """The reply's text, and its message in the outbox (once, ever, by its key): a text waits
    for the end of the channel's quiet hours in the person's own zone."""
    reply = EnquiryReply.objects.create(
        enquiry=enquiry, kind=kind, channel=channel, text=text, by=by
    )
    send_after = enquirer_send_after(
        reply.at,
        channel=channel,
        enquiry=enquiry,
        protocol=consultation_protocol(site=enquiry.site),
    )
    notifications_write(
        [
            Notification(
                template=NotificationTemplate.ENQUIRY_REPLY,
                channel=channel,
                enquiry=enquiry,
                send_after=send_after,
                idempotency_key=reply.idempotency_key,
            )
        ]
    )
    return reply


def _checked_text(text: str, *, field: str = "text") -> str:
    text = (text or "").replace("\x00", "").strip()
    if len(text) > REPLY_MAX_CHARACTERS:
        raise Refused(
            by_field={field: [f"At most {REPLY_MAX_CHARACTERS} characters ({len(text)} now)."]}
        )
    return text


def _checked_channel(enquiry: Enquiry, channel: str) -> str:
    allowed = enquiry_channels(enquiry)
    if channel not in allowed:
        said = ", ".join(allowed) or "none"
        raise Refused(
            by_field={
                "channel": [
                    f"They did not give and consent to {channel or 'that channel'}; they may "
                    f"be written to by: {said}."
                ]
            }
        )
    return channel


def enquiry_reply(*, enquiry: Enquiry, by, text: str, channel: str) -> EnquiryReply:
    """Answer an enquirer on a channel they consented to; the text goes as written (in their
    language: `enquiry.language`), inside a greeting and the clinic's name and number in it.
    The first answer marks the enquiry answered."""
    _authorise(by=by, enquiry=enquiry)
    text = _checked_text(text)
    if not text:
        raise Refused(by_field={"text": ["Write the reply."]})
    with transaction.atomic():
        locked = _locked_open(enquiry, doing="answered")
        channel = _checked_channel(locked, channel)
        reply = _reply_write(
            enquiry=locked, by=by, text=text, channel=channel, kind=ReplyKind.REPLY
        )
        if locked.status == EnquiryStatus.NEW:
            locked.status = EnquiryStatus.ANSWERED
            locked.first_answered_at = reply.at
            locked._history_user = by
            locked.save(update_fields=["status", "first_answered_at"])
    enquiry.refresh_from_db()
    return reply


def enquiry_close(
    *, enquiry: Enquiry, by, reason: str, personal_line: str = "", channel: str = ""
) -> EnquiryReply | None:
    """Close an enquiry for `reason`, with the kind reply written for that reason in the
    enquirer's language (and a line of the coordinator's own, if given), on `channel` or
    their first consented one. Spam gets no reply; nor does someone who gave no consented
    channel. Returns the reply sent, if any."""
    _authorise(by=by, enquiry=enquiry)
    if reason not in CloseReason.values:
        raise Refused(by_field={"reason": ["Choose why it is closed."]})
    personal_line = _checked_text(personal_line, field="personal_line")
    with transaction.atomic():
        locked = _locked_open(enquiry, doing="closed")
        words = closing_reply_text(reason=reason, language=locked.language)
        reply = None
        channels = enquiry_channels(locked)
        if words and channels:
            channel = _checked_channel(locked, channel) if channel else channels[0]
            text = f"{words}\n\n{personal_line}" if personal_line else words
            reply = _reply_write(
                enquiry=locked, by=by, text=text, channel=channel, kind=ReplyKind.CLOSING
            )
        locked.status = EnquiryStatus.CLOSED
        locked.closed_at = timezone.now()
        locked.close_reason = reason
        locked._history_user = by
        locked.save(update_fields=["status", "closed_at", "close_reason"])
    enquiry.refresh_from_db()
    return reply


ANSWER_LABELS = (
    ("copd_diagnosed", "COPD diagnosed by a doctor"),
    ("emphysema_on_ct", "Emphysema on a chest CT"),
    ("smoking", "Smoking"),
    ("smoking_quit_on", "Stopped smoking on"),
    ("fev1_pct_predicted", "Last FEV1 (% predicted)"),
    ("home_oxygen", "Oxygen at home"),
    ("bronchoscopy_ok", "Able to have a bronchoscopy"),
    ("chest_infection_now", "A chest infection now"),
)


def enquiry_answers_words(enquiry: Enquiry) -> str:
    """The person's answers as they gave them, for the evaluation's notes."""
    lines = [
        f"From the {enquiry.get_kind_display().lower()} sent "
        f"{local_words(enquiry.submitted_at, enquiry.site.time_zone)} (enquiry #{enquiry.pk}); "
        "the answers are self-reported:"
    ]
    for name, label in ANSWER_LABELS:
        value = getattr(enquiry, name)
        display = getattr(enquiry, f"get_{name}_display", None)
        shown = display() if display and value else value
        lines.append(f"- {label}: {shown if shown not in (None, '') else 'not answered'}")
    lines.append(f"- {enquiry_suggestion(enquiry).words}")
    if enquiry.message:
        lines.append(f"Their message: {enquiry.message}")
    return "\n".join(lines)


def enquiry_convert(*, enquiry: Enquiry, by, mrn: str, date_of_birth: dt.date, last_name: str = ""):
    """Make the enquirer a patient of the enquiry's site, with a course in evaluation whose
    notes carry their answers, and link both to the enquiry. Refused in words when it is
    closed or converted already, and beside the field for an MRN taken or a date impossible.
    Returns the course."""
    _authorise(by=by, enquiry=enquiry)
    if not by.has_perm("patients.add_patient"):
        raise PermissionDenied("You do not have permission to add a patient.")
    with transaction.atomic():
        locked = _locked_open(enquiry, doing="converted")
        smoking = locked.smoking if locked.smoking in SmokingAnswer.values else SmokingStatus.NEVER
        patient = Patient(
            site=locked.site,
            mrn=(mrn or "").strip(),
            first_name=locked.first_name,
            last_name=(last_name or locked.last_name).strip(),
            date_of_birth=date_of_birth,
            email=locked.email,
            phone=locked.phone,
            consent_email=locked.consent_email and bool(locked.email),
            consent_sms=locked.consent_sms and bool(locked.phone),
            preferred_language=locked.language,
            time_zone=locked.time_zone,
            smoking_status=smoking,
            smoking_quit_date=locked.smoking_quit_on if smoking == SmokingStatus.FORMER else None,
            coordinator=by,
        )
        try:
            patient.full_clean()
        except ValidationError as error:
            raise Refused(
                by_field={field: list(messages) for field, messages in error.message_dict.items()}
            ) from None
        patient._history_user = by
        patient.save()
        notes = enquiry_answers_words(locked)
        course = course_create(patient=patient, by=by, note=notes)
        course_start_evaluation(course=course, by=by, note="From an enquiry.")
        locked.patient, locked.course = patient, course
        locked.status = EnquiryStatus.CONVERTED
        locked._history_user = by
        locked.save(update_fields=["patient", "course", "status"])
    enquiry.refresh_from_db()
    return course


# The consent an enquirer's STOP withdraws, by the channel it came on.
ENQUIRER_CONSENT_FIELDS = {Channel.SMS: "consent_sms", Channel.WHATSAPP: "consent_whatsapp"}


def enquirer_message_received(*, inbound: InboundMessage) -> int:
    """A text (SMS or WhatsApp) from the number of someone who enquired and is not a patient:
    STOP withdraws their consent to that channel on every such enquiry and cancels what was
    still to go on it there (acknowledgements, replies, consultations' reminders); any other
    message, from a number that is no patient's, is kept on their latest enquiry for the
    coordinator. Returns how many enquiries it touched."""
    channel, number = reply_channel(inbound.from_number)
    field = "whatsapp" if channel == Channel.WHATSAPP else "phone"
    if not number:
        return 0
    theirs = Enquiry.objects.filter(**{field: number}, patient__isnull=True)
    with transaction.atomic():
        if inbound.intent == ReplyIntent.STOP:
            consent = ENQUIRER_CONSENT_FIELDS[channel]
            stopped = list(theirs.filter(**{consent: True}).select_for_update())
            for enquiry in stopped:
                setattr(enquiry, consent, False)
                enquiry._change_reason = STOP_SOURCES[channel]
                enquiry.save(update_fields=[consent])
            Notification.objects.filter(
                Q(enquiry__in=theirs) | Q(consultation__enquiry__in=theirs),
                channel=channel,
                status=NotificationStatus.PENDING,
            ).update(status=NotificationStatus.CANCELLED)
            return len(stopped)
        latest = theirs.order_by("-submitted_at", "-id").first()
        if latest is None or inbound.patient_id is not None:
            return 0
        InboundMessage.objects.filter(pk=inbound.pk).update(enquiry=latest)
        return 1
