"""What a patient's text message means, and what it does.

CONFIRM marks their next booked visit confirmed; CHANGE asks a coordinator for another time;
STOP withdraws their SMS consent at once (recorded, and every text not yet sent cancelled);
HELP gets the clinic's number; anything else goes to a coordinator with its words. The
provider's message id makes a webhook delivered twice act once. The answer never names a
diagnosis or a procedure: only the clinic's patient-facing name, the time and the number.
"""

import datetime as dt
import re
from dataclasses import dataclass

from django.db import IntegrityError, transaction
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


def sms_reply_handle(
    *,
    provider_message_id: str,
    from_number: str,
    body: str,
    characters_removed: int = 0,
    now: dt.datetime | None = None,
) -> Handled:
    """Act on a patient's text once; returns what to answer. The body is kept whole;
    `characters_removed` says how many characters the webhook had to take out of it."""
    now = now or timezone.now()
    known = InboundMessage.objects.filter(provider_message_id=provider_message_id).first()
    if known:
        return Handled(known, "", repeat=True)
    matches = list(Patient.objects.filter(phone=from_number).select_related("site")[:10])
    patient = matches[0] if len(matches) == 1 else None
    intent = reply_intent(body)
    try:
        with transaction.atomic():
            inbound = InboundMessage.objects.create(
                provider_message_id=provider_message_id,
                from_number=from_number[:32],
                body=body,
                characters_removed=characters_removed,
                received_at=now,
                intent=intent,
                patient=patient,
            )
            if patient:
                answer = _act(inbound, patient, intent, now)
            elif intent == ReplyIntent.STOP:  # a shared phone: nobody on it is texted again
                for sharer in matches:
                    sms_consent_withdraw(patient=sharer, at=now, source="SMS reply STOP")
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
    if intent == ReplyIntent.STOP:
        sms_consent_withdraw(patient=patient, at=now, source="SMS reply STOP")
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
        source="sms",
        inbound=inbound,
        created_at=now,
    )
    if kind == PatientRequestKind.CHANGE:
        return gettext("%(clinic)s: we will contact you to find another time.") % words
    return gettext("%(clinic)s: thank you, we have your message.") % words


def sms_consent_withdraw(*, patient: Patient, at: dt.datetime, source: str) -> int:
    """No more texts, from now: the consent is withdrawn and recorded with its source, and
    every text not yet sent is cancelled. Returns how many were cancelled."""
    Patient.objects.filter(pk=patient.pk).update(consent_sms=False)
    patient.consent_sms = False
    ConsentChange.objects.create(
        patient=patient, channel=Channel.SMS, consents=False, at=at, source=source
    )
    return Notification.objects.filter(
        patient=patient, channel=Channel.SMS, status=NotificationStatus.PENDING
    ).update(status=NotificationStatus.CANCELLED)
