"""What a patient's text message means, and what it does, by SMS or by WhatsApp alike.

CONFIRM marks their next booked visit confirmed; CHANGE asks a coordinator for another time;
STOP withdraws their consent to the channel it came on, and that one only, at once (recorded,
and every message on it not yet sent cancelled); HELP gets the clinic's number; anything else
goes to a coordinator with its words. A WhatsApp message comes from a `whatsapp:` address, to
the same webhook, and opens the 24 hours in which the clinic may write to them freely. The
provider's message id makes a webhook delivered twice act once. The answer never names a
diagnosis or a procedure: only the clinic's patient-facing name, the time and the number.
"""

import datetime as dt
import re
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext

from patients.models import ConsentChange, Patient
from scheduling.models import (
    Channel,
    InboundMessage,
    Notification,
    NotificationStatus,
    PatientRequest,
    PatientRequestKind,
    ReplyIntent,
    Visit,
    VisitStatus,
)

# The first word decides; the carriers' own opt-out words all mean STOP.
KEYWORDS = {
    ReplyIntent.CONFIRM: {"CONFIRM", "YES", "Y", "OK", "CONFIRMAR", "SI", "SÍ", "确认", "是"},
    ReplyIntent.CHANGE: {"CHANGE", "RESCHEDULE", "CAMBIAR", "更改", "改期"},
    ReplyIntent.STOP: {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "OPTOUT",
        "PARAR",
        "BAJA",
        "退订",
    },
    ReplyIntent.HELP: {"HELP", "INFO", "AYUDA", "帮助"},
}
_FIRST_WORD = re.compile(r"[\w\u4e00-\u9fff]+")


# Said alone, these act; in a longer text ("Si no puedo ir", "Cancel my appointment") they
# are a person's words, for a coordinator to read.
ALONE_ONLY = (ReplyIntent.CONFIRM, ReplyIntent.STOP)


def reply_intent(body: str) -> ReplyIntent:
    """What a text means: CONFIRM and STOP only when the text is that word alone (as the
    carriers read opt-outs), CHANGE and HELP from the first word; in any case, punctuation
    ignored. Anything else is a message for a coordinator."""
    words = _FIRST_WORD.findall(body or "")
    first = words[0].upper() if words else ""
    for intent, keywords in KEYWORDS.items():
        if first in keywords and (len(words) == 1 or intent not in ALONE_ONLY):
            return intent
    return ReplyIntent.OTHER


@dataclass(frozen=True)
class Handled:
    inbound: InboundMessage
    answer: str  # what to text back; empty: nothing (a repeat, or a number we do not know)
    repeat: bool = False


def _next_visit(patient: Patient, now: dt.datetime) -> Visit | None:
    return (
        Visit.objects.filter(
            course__patient=patient, status=VisitStatus.BOOKED, scheduled_at__gt=now
        )
        .select_related("course__site")
        .order_by("scheduled_at")
        .first()
    )


def _when(visit: Visit) -> str:
    """In the patient's zone (named) and their language's date format."""
    local = timezone.localtime(visit.scheduled_at, visit.course.patient.zone)
    return f"{date_format(local, 'DATE_FORMAT')} {local:%H:%M} {local.tzname()}"


WHATSAPP_PREFIX = "whatsapp:"
STOP_SOURCES = {Channel.SMS: "SMS reply STOP", Channel.WHATSAPP: "WhatsApp reply STOP"}


def reply_channel(from_address: str) -> tuple[str, str]:
    """The channel a message came on and the number it came from: the provider writes a
    WhatsApp sender as `whatsapp:+E164`, an SMS sender as the number alone."""
    if from_address.lower().startswith(WHATSAPP_PREFIX):
        return Channel.WHATSAPP, from_address[len(WHATSAPP_PREFIX) :].strip()
    return Channel.SMS, from_address


def _senders(channel: str, number: str) -> list[Patient]:
    """The patients whose number (for this channel) it is: a shared phone has several."""
    found = (
        Patient.objects.filter(whatsapp=number)
        if channel == Channel.WHATSAPP
        else Patient.objects.filter(phone=number)
    )
    return list(found.select_related("site")[:10]) if number else []


def sms_reply_handle(
    *,
    provider_message_id: str,
    from_number: str,
    body: str,
    characters_removed: int = 0,
    now: dt.datetime | None = None,
) -> Handled:
    """Act on a patient's SMS or WhatsApp message once (the channel read from the `From`
    address); returns what to answer. The body is kept whole; `characters_removed` says how
    many characters the webhook had to take out of it. A WhatsApp message records, for
    everyone on that number, when they last wrote: the 24 hours of free-form writing count
    from it."""
    now = now or timezone.now()
    known = InboundMessage.objects.filter(provider_message_id=provider_message_id).first()
    if known:
        return Handled(known, "", repeat=True)
    channel, number = reply_channel(from_number)
    matches = _senders(channel, number)
    patient = matches[0] if len(matches) == 1 else None
    intent = reply_intent(body)
    try:
        with transaction.atomic():
            inbound = InboundMessage.objects.create(
                provider_message_id=provider_message_id,
                channel=channel,
                from_number=from_number[:32],
                body=body,
                characters_removed=characters_removed,
                received_at=now,
                intent=intent,
                patient=patient,
            )
            if channel == Channel.WHATSAPP and matches:
                _whatsapp_session_opened(matches, at=now)
            if patient:
                answer = _act(inbound, patient, intent, now)
            elif intent == ReplyIntent.STOP:  # a shared phone: nobody on it is written to again
                for sharer in matches:
                    consent_withdraw(
                        patient=sharer, channel=channel, at=now, source=STOP_SOURCES[channel]
                    )
                answer = ""
            else:
                answer = ""
    except IntegrityError:  # the same message, delivered twice at once: the other one acted
        return Handled(
            InboundMessage.objects.get(provider_message_id=provider_message_id), "", True
        )
    return Handled(inbound, answer)


def _act(inbound: InboundMessage, patient: Patient, intent: ReplyIntent, now) -> str:
    """Act, and answer in the patient's language."""
    with translation.override(patient.preferred_language):
        return _act_in_language(inbound, patient, intent, now)


def _act_in_language(inbound, patient, intent, now) -> str:
    site = patient.site
    words = {
        # Never the site's own name: it may say what the clinic treats.
        "clinic": site.patient_facing_name or gettext("your clinic"),
        "phone": str(site.patient_phone or ""),
    }
    call = (" " + gettext("Call %(phone)s.") % words) if words["phone"] else ""
    channel = inbound.channel
    if intent == ReplyIntent.STOP:
        consent_withdraw(patient=patient, channel=channel, at=now, source=STOP_SOURCES[channel])
        if channel == Channel.WHATSAPP:
            return (
                gettext("%(clinic)s: you will get no more WhatsApp messages from us.") % words
                + call
            )
        return gettext("%(clinic)s: you will get no more texts from us.") % words + call
    if intent == ReplyIntent.HELP:
        return f"{words['clinic']}.{call}"
    visit = _next_visit(patient, now)
    inbound.visit = visit
    inbound.save(update_fields=["visit"])
    if intent == ReplyIntent.CONFIRM:
        if visit is None:
            return gettext("%(clinic)s: you have no appointment to confirm.") % words + call
        Visit.objects.filter(pk=visit.pk).update(confirmed_at=now)
        words["when"] = _when(visit)
        return gettext("%(clinic)s: thank you, your appointment on %(when)s is confirmed.") % words
    kind = PatientRequestKind.CHANGE if intent == ReplyIntent.CHANGE else PatientRequestKind.MESSAGE
    PatientRequest.objects.create(
        kind=kind,
        patient=patient,
        visit=visit,
        text=inbound.body,
        source=channel,
        inbound=inbound,
        created_at=now,
    )
    if kind == PatientRequestKind.CHANGE:
        return gettext("%(clinic)s: we will contact you to find another time.") % words
    return gettext("%(clinic)s: thank you, we have your message.") % words


# The consent each text channel's STOP withdraws.
CONSENT_FIELDS = {Channel.SMS: "consent_sms", Channel.WHATSAPP: "consent_whatsapp"}


def consent_withdraw(*, patient: Patient, channel: str, at: dt.datetime, source: str) -> int:
    """No more messages on `channel` (SMS or WhatsApp), from now; the other channels are left
    as they are. The consent is withdrawn and recorded with its source, and every message on
    that channel not yet sent is cancelled. Returns how many were cancelled."""
    field = CONSENT_FIELDS[channel]
    Patient.objects.filter(pk=patient.pk).update(**{field: False})
    setattr(patient, field, False)
    ConsentChange.objects.create(
        patient=patient, channel=channel, consents=False, at=at, source=source
    )
    return Notification.objects.filter(
        patient=patient, channel=channel, status=NotificationStatus.PENDING
    ).update(status=NotificationStatus.CANCELLED)


def sms_consent_withdraw(*, patient: Patient, at: dt.datetime, source: str) -> int:
    """No more texts by SMS, from now (see `consent_withdraw`)."""
    return consent_withdraw(patient=patient, channel=Channel.SMS, at=at, source=source)


def _whatsapp_session_opened(patients: list[Patient], *, at: dt.datetime) -> None:
    """They wrote on WhatsApp at `at`: the clinic may write freely for 24 hours from it. Never
    moved back by a message delivered late."""
    Patient.objects.filter(pk__in=[p.pk for p in patients]).filter(
        Q(whatsapp_last_inbound_at__isnull=True) | Q(whatsapp_last_inbound_at__lt=at)
    ).update(whatsapp_last_inbound_at=at)
    for patient in patients:
        if patient.whatsapp_last_inbound_at is None or patient.whatsapp_last_inbound_at < at:
            patient.whatsapp_last_inbound_at = at
