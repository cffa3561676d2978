"""The consultation: the first meeting with someone who enquired and is not a patient yet, in
person or by video, in the site's clinic hours, with reminders.

One entry point per change (`consultation_book`, `_move`, `_cancel`, `_mark_done`,
`_mark_missed`), each refusing with reasons in words (`Refused`, by field where a field is
wrong); `consultation_booking_refusals` is the one check, which the admin's form shows beside
its fields before it calls the service. The numbers (the notice a booking leaves, the reminders'
lead times, quiet hours, tries) are the site's default protocol's, as for its patients.
"""

import datetime as dt

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from common.errors import Refused
from common.zones import local_words
from enquiries.models import (
    Consultation,
    ConsultationMode,
    ConsultationStatus,
    Enquiry,
    EnquiryStatus,
)
from pathway.models import Protocol
from pathway.services import site_default_protocol
from patients.access import user_sites
from scheduling.chains import course_resource
from scheduling.models import (
    Notification,
    NotificationStatus,
    NotificationTemplate,
    ResourceKind,
)
from scheduling.outbox import notifications_write
from scheduling.rules import after_quiet_hours, booking_deviations, quiet_hours, reminder_time

# An enquiry in these states takes no consultation: it has ended, or it is a patient's now.
ENDED_ENQUIRY_STATUSES = (EnquiryStatus.CLOSED, EnquiryStatus.CONVERTED)
CONSULTATION_PERMISSION = "enquiries.add_consultation"
_HTTPS_ONLY = URLValidator(schemes=["https"])


def consultation_protocol(*, site) -> Protocol:
    """Where a consultation's numbers come from: the site's default protocol, or, where none
    is set up yet, the protocol's defaults."""
    try:
        return site_default_protocol(site=site)
    except Protocol.DoesNotExist:
        return Protocol()


def enquirer_zone(enquiry: Enquiry):
    """The zone the person reads times in: their own, as given, else their site's."""
    return enquiry.time_zone or enquiry.site.time_zone


def enquirer_send_after(
    at: dt.datetime, *, channel: str, enquiry: Enquiry, protocol: Protocol
) -> dt.datetime:
    """When a message due at `at` may go: an email then, an SMS or WhatsApp message once that
    channel's quiet hours are over in the person's own zone."""
    hours = quiet_hours(channel=channel, protocol=protocol)
    if hours is None:
        return at
    return after_quiet_hours(at, zone=enquirer_zone(enquiry), start=hours[0], end=hours[1])


def default_place(*, site) -> str:
    """Where an in-person consultation is, unless the coordinator writes another place: the
    site's clinic (its resource, whose name and address for patients the reminders read)."""
    clinic = course_resource(site=site, kind=ResourceKind.LUNG_FUNCTION)
    return clinic.name if clinic is not None else ""


def may_book(*, user, site) -> bool:
    """The site's coordinators book its consultations (a programme lead's view of every site
    is for reading)."""
    if user is None or not user.has_perm(CONSULTATION_PERMISSION):
        return False
    return user_sites(user).filter(pk=site.pk).exists()


def _permission_refusals(*, enquiry: Enquiry, by) -> list[str]:
    if not may_book(user=by, site=enquiry.site):
        return [f"Only the coordinators of {enquiry.site.name} book its consultations."]
    return []


def _enquiry_refusals(*, enquiry: Enquiry, consultation: Consultation | None) -> list[str]:
    if enquiry.status in ENDED_ENQUIRY_STATUSES:
        return [
            f"The enquiry is {enquiry.get_status_display().lower()}: no consultation is booked "
            "for it."
        ]
    if (
        consultation is None
        and enquiry.consultations.filter(status=ConsultationStatus.BOOKED).exists()
    ):
        return ["A consultation is already booked for this enquiry: move it instead."]
    return []


def _inside_last_reminder(
    *, enquiry: Enquiry, protocol: Protocol, scheduled_at: dt.datetime, now: dt.datetime
) -> bool:
    leads = protocol.reminder_lead_days or [0]
    last = reminder_time(
        appointment_at=scheduled_at, lead_days=min(leads), zone=enquirer_zone(enquiry)
    )
    return last <= now


def _time_refusals(
    *, enquiry: Enquiry, protocol: Protocol, scheduled_at: dt.datetime, now: dt.datetime
) -> list[str]:
    """In the future, with the notice the protocol asks, and told in time: the same rule as a
    procedure's booking notice (`scheduling.rules.booking_notice_refusals`), for a person who
    is not a patient. No reason excuses these."""
    zone = enquiry.site.time_zone
    if scheduled_at <= now:
        return ["The consultation must be in the future."]
    notice = dt.timedelta(hours=protocol.consultation_notice_hours)
    hours = protocol.consultation_notice_hours
    if scheduled_at < now + notice:
        return [
            f"A consultation needs {hours} h notice: book it for "
            f"{local_words(now + notice, zone)} or later."
        ]
    if not _inside_last_reminder(
        enquiry=enquiry, protocol=protocol, scheduled_at=scheduled_at, now=now
    ):
        return []  # the reminders will tell them
    told_at = min(
        (
            enquirer_send_after(now, channel=channel, enquiry=enquiry, protocol=protocol)
            for channel in enquiry.channels()
        ),
        default=None,
    )
    if told_at is None:
        return [
            f"So soon, {enquiry.first_name} must be told at once, and has not consented to "
            "email or SMS: book it after the last reminder's lead time, or reply to them first."
        ]
    if told_at + notice > scheduled_at:
        return [
            f"{enquiry.first_name} can be texted only from "
            f"{local_words(told_at, enquirer_zone(enquiry))} (their quiet hours), less than "
            f"the {hours} h notice: book it for {local_words(told_at + notice, zone)} or later."
        ]
    return []


def _clinic_hours_refusals(*, enquiry: Enquiry, scheduled_at: dt.datetime, reason: str):
    """Inside the site's clinic hours, the procedures' rule, unless a reason is given."""
    if reason.strip():
        return []
    site = enquiry.site
    deviations = booking_deviations(
        scheduled_at=scheduled_at, zone=site.time_zone, clinic_hours=site.clinic_hours.all()
    )
    if not deviations:
        return []
    return [detail for _, detail in deviations] + [
        "Choose another time, or give a reason to book it outside the clinic's hours."
    ]


def _where_refusals(*, mode: str, place: str, video_link: str) -> dict[str, list[str]]:
    if mode not in ConsultationMode.values:
        return {"mode": ["Choose in person or by video."]}
    if mode == ConsultationMode.VIDEO:
        if not video_link:
            return {"video_link": ["A video consultation needs the link the person joins by."]}
        try:
            _HTTPS_ONLY(video_link)
        except ValidationError:
            return {
                "video_link": [
                    "The link must be a whole https:// address (the video service's meeting "
                    "link), so that it is private on the way."
                ]
            }
        return {}
    if not place:
        return {
            "place": [
                "An in-person consultation needs a place: the site keeps no clinic to default to."
            ]
        }
    return {}


def consultation_booking_refusals(
    *,
    enquiry: Enquiry,
    by,
    scheduled_at: dt.datetime | None,
    mode: str,
    place: str = "",
    video_link: str = "",
    reason: str = "",
    consultation: Consultation | None = None,
    now: dt.datetime | None = None,
) -> Refused | None:
    """Why this booking (or this move of `consultation`) is refused, by field; None if it may
    be made. Who books, the enquiry's state, the time (future, notice, told in time, clinic
    hours unless `reason`) and the place or link."""
    now = now or timezone.now()
    general = _permission_refusals(enquiry=enquiry, by=by)
    general += _enquiry_refusals(enquiry=enquiry, consultation=consultation)
    if consultation is not None and consultation.status != ConsultationStatus.BOOKED:
        general.append(
            f"A {consultation.get_status_display().lower()} consultation cannot be moved: "
            "book another."
        )
    by_field = _where_refusals(mode=mode, place=place.strip(), video_link=video_link.strip())
    if scheduled_at is None:
        by_field["scheduled_at"] = ["Give the date and time."]
    else:
        protocol = consultation_protocol(site=enquiry.site)
        at = _time_refusals(enquiry=enquiry, protocol=protocol, scheduled_at=scheduled_at, now=now)
        at = at or _clinic_hours_refusals(enquiry=enquiry, scheduled_at=scheduled_at, reason=reason)
        if at:
            by_field["scheduled_at"] = at
    if general or by_field:
        return Refused(general, by_field=by_field)
    return None


def _locked(enquiry: Enquiry) -> Enquiry:
    """The enquiry, its row locked: two coordinators booking at once book one consultation."""
    return Enquiry.objects.select_for_update().select_related("site").get(pk=enquiry.pk)


def consultation_book(
    *,
    enquiry: Enquiry,
    by,
    scheduled_at: dt.datetime,
    mode: str,
    place: str = "",
    video_link: str = "",
    reason: str = "",
) -> Consultation:
    """Book a consultation for an enquiry, and its reminders; the enquiry is then
    "consultation booked". An in-person one with no place is at the site's clinic."""
    with transaction.atomic():
        enquiry = _locked(enquiry)
        if mode == ConsultationMode.IN_PERSON and not place.strip():
            place = default_place(site=enquiry.site)
        refused = consultation_booking_refusals(
            enquiry=enquiry,
            by=by,
            scheduled_at=scheduled_at,
            mode=mode,
            place=place,
            video_link=video_link,
            reason=reason,
        )
        if refused:
            raise refused
        consultation = Consultation(
            enquiry=enquiry,
            scheduled_at=scheduled_at,
            mode=mode,
            booked_by=by,
            outside_hours_reason=reason.strip(),
        )
        _set_where(consultation, mode=mode, place=place, video_link=video_link)
        consultation._history_user = by
        consultation.save()
        if enquiry.status != EnquiryStatus.CONSULTATION:
            enquiry.status = EnquiryStatus.CONSULTATION
            enquiry._history_user = by
            enquiry.save(update_fields=["status"])
        consultation_reminders_schedule(consultation=consultation)
    return consultation


def _set_where(consultation: Consultation, *, mode: str, place: str, video_link: str) -> None:
    """In person: a place and no link; by video: a link and no place."""
    consultation.mode = mode
    video = mode == ConsultationMode.VIDEO
    consultation.place = "" if video else place.strip()
    consultation.video_link = video_link.strip() if video else ""


def consultation_move(
    *,
    consultation: Consultation,
    by,
    scheduled_at: dt.datetime,
    mode: str | None = None,
    place: str | None = None,
    video_link: str | None = None,
    reason: str = "",
) -> Consultation:
    """Move a booked consultation (its time, or how or where it is held), under the booking's
    rules; its pending reminders are cancelled and written anew for the new time."""
    with transaction.atomic():
        enquiry = _locked(consultation.enquiry)
        consultation = Consultation.objects.select_for_update().get(pk=consultation.pk)
        consultation.enquiry = enquiry
        mode = mode or consultation.mode
        place = consultation.place if place is None else place
        video_link = consultation.video_link if video_link is None else video_link
        if mode == ConsultationMode.IN_PERSON and not place.strip():
            place = default_place(site=enquiry.site)
        refused = consultation_booking_refusals(
            enquiry=enquiry,
            by=by,
            scheduled_at=scheduled_at,
            mode=mode,
            place=place,
            video_link=video_link,
            reason=reason,
            consultation=consultation,
        )
        if refused:
            raise refused
        consultation_reminders_cancel(consultations=[consultation])
        consultation.scheduled_at = scheduled_at
        consultation.outside_hours_reason = reason.strip()
        _set_where(consultation, mode=mode, place=place, video_link=video_link)
        consultation._history_user = by
        consultation.save()
        consultation_reminders_schedule(consultation=consultation)
    return consultation


def _step_refusals(*, consultation: Consultation, by) -> list[str]:
    refusals = _permission_refusals(enquiry=consultation.enquiry, by=by)
    if consultation.status != ConsultationStatus.BOOKED:
        refusals.append(f"The consultation is {consultation.get_status_display().lower()} already.")
    return refusals


def _settle(consultation: Consultation, *, by, status: str, reason: str = "") -> Consultation:
    """The consultation's last step: its status, the reason, no more reminders; an enquiry
    with no consultation booked any more is back to answered."""
    consultation_reminders_cancel(consultations=[consultation])
    consultation.status, consultation.status_reason = status, reason.strip()
    consultation._history_user = by
    consultation.save(update_fields=["status", "status_reason"])
    enquiry = consultation.enquiry
    if (
        status == ConsultationStatus.CANCELLED
        and enquiry.status == EnquiryStatus.CONSULTATION
        and not enquiry.consultations.filter(status=ConsultationStatus.BOOKED).exists()
    ):
        enquiry.status = EnquiryStatus.ANSWERED
        enquiry._history_user = by
        enquiry.save(update_fields=["status"])
    return consultation


def _locked_consultation(consultation: Consultation) -> Consultation:
    locked = (
        Consultation.objects.select_for_update(of=("self",))
        .select_related("enquiry__site")
        .get(pk=consultation.pk)
    )
    return locked


def consultation_cancel(*, consultation: Consultation, by, reason: str = "") -> Consultation:
    """Cancel a booked consultation; its reminders not yet sent are cancelled."""
    with transaction.atomic():
        consultation = _locked_consultation(consultation)
        refusals = _step_refusals(consultation=consultation, by=by)
        if refusals:
            raise Refused(refusals)
        return _settle(consultation, by=by, status=ConsultationStatus.CANCELLED, reason=reason)


def consultations_cancel_open(*, enquiry: Enquiry, by, reason: str) -> int:
    """Cancel an enquiry's booked consultations and their pending reminders, as it closes:
    nobody is reminded of a meeting with a clinic that has said goodbye. For the enquiry's own
    services to call, in their transaction; returns how many were cancelled."""
    booked = list(
        Consultation.objects.select_for_update(of=("self",))
        .select_related("enquiry__site")
        .filter(enquiry=enquiry, status=ConsultationStatus.BOOKED)
    )
    for consultation in booked:
        _settle(consultation, by=by, status=ConsultationStatus.CANCELLED, reason=reason)
    return len(booked)


def consultation_mark_done(
    *, consultation: Consultation, by, now: dt.datetime | None = None
) -> Consultation:
    """The consultation took place: only once its time has come."""
    now = now or timezone.now()
    with transaction.atomic():
        consultation = _locked_consultation(consultation)
        refusals = _step_refusals(consultation=consultation, by=by)
        if not refusals and consultation.scheduled_at > now:
            zone = consultation.enquiry.site.time_zone
            refusals = [
                "The consultation has not taken place yet: it is booked for "
                f"{local_words(consultation.scheduled_at, zone)}."
            ]
        if refusals:
            raise Refused(refusals)
        return _settle(consultation, by=by, status=ConsultationStatus.DONE)


def consultation_mark_missed(
    *, consultation: Consultation, by, reason: str = "", now: dt.datetime | None = None
) -> Consultation:
    """The person did not come (or join): only once the booked time has passed."""
    now = now or timezone.now()
    with transaction.atomic():
        consultation = _locked_consultation(consultation)
        refusals = _step_refusals(consultation=consultation, by=by)
        if not refusals and consultation.scheduled_at > now:
            zone = consultation.enquiry.site.time_zone
            refusals = [
                "The consultation can still take place: it can be marked missed once its "
                f"booked time, {local_words(consultation.scheduled_at, zone)}, has passed."
            ]
        if refusals:
            raise Refused(refusals)
        return _settle(consultation, by=by, status=ConsultationStatus.MISSED, reason=reason)


def consultation_reminders_schedule(
    *, consultation: Consultation, now: dt.datetime | None = None
) -> list[Notification]:
    """Outbox rows for a booked consultation's reminders, on each channel the person consented
    to: the protocol's lead times before it, at the same clock time in the person's zone
    (DST-safe), and "booked" at once when it is too soon for any; a text in their quiet hours
    waits for the morning. None for a consultation not booked. Keys per consultation, lead
    time, channel and booked time: a move back to a time it had revives its reminders."""
    if consultation.status != ConsultationStatus.BOOKED:
        return []
    now = now or timezone.now()
    enquiry = consultation.enquiry
    protocol = consultation_protocol(site=enquiry.site)
    zone = enquirer_zone(enquiry)
    stamp = int(consultation.scheduled_at.timestamp())
    times = [
        (
            f"{lead_days}d",
            reminder_time(appointment_at=consultation.scheduled_at, lead_days=lead_days, zone=zone),
        )
        for lead_days in sorted(set(protocol.reminder_lead_days), reverse=True)
    ]
    if _inside_last_reminder(
        enquiry=enquiry, protocol=protocol, scheduled_at=consultation.scheduled_at, now=now
    ) and not (
        Notification.objects.filter(
            consultation=consultation,
            idempotency_key__endswith=f".{stamp}",
            status__in=[
                NotificationStatus.PENDING,
                NotificationStatus.SENDING,
                NotificationStatus.SENT,
            ],
        ).exists()
    ):
        times.append(("booked", now))
    reminders = []
    for key, send_at in times:
        for channel in enquiry.channels():
            send_after = enquirer_send_after(
                send_at, channel=channel, enquiry=enquiry, protocol=protocol
            )
            if (send_after <= now and key != "booked") or send_after >= consultation.scheduled_at:
                continue
            reminders.append(
                Notification(
                    template=NotificationTemplate.CONSULTATION_REMINDER,
                    channel=channel,
                    consultation=consultation,
                    send_after=send_after,
                    max_attempts=protocol.delivery_max_attempts,
                    idempotency_key=f"consultation.c{consultation.pk}.{key}.{channel}.{stamp}",
                )
            )
    return notifications_write(reminders, revive_cancelled=True)


def consultation_reminders_cancel(*, consultations) -> int:
    """Cancel these consultations' reminders not yet sent."""
    return Notification.objects.filter(
        consultation__in=consultations, status=NotificationStatus.PENDING
    ).update(status=NotificationStatus.CANCELLED)


def consultation_still_applies(notification: Notification, *, now: dt.datetime) -> bool:
    """A consultation's reminder goes only while it is booked and ahead, and the person still
    consents to the channel (read when the batch was claimed)."""
    consultation = notification.consultation
    if consultation.status != ConsultationStatus.BOOKED or consultation.scheduled_at <= now:
        return False
    enquiry = consultation.enquiry
    if enquiry.status == EnquiryStatus.CLOSED:
        return False
    return notification.channel in enquiry.channels()
