"""Timing rules: reminders, retries, quiet hours, and the notice a booking leaves."""

import datetime as dt
from zoneinfo import ZoneInfo

from django.utils import timezone

from common.zones import date_words, local_words
from patients.sites import clinic_hours_text, within_clinic_hours
from scheduling.models import Channel, DeviationKind, VisitKind

MAX_RETRY_DELAY = dt.timedelta(days=1)


def reminder_time(*, appointment_at: dt.datetime, lead_days: int, zone: ZoneInfo) -> dt.datetime:
    """`lead_days` before the appointment at the same local clock time (DST-safe)."""
    local = appointment_at.astimezone(zone)
    day = local.date() - dt.timedelta(days=lead_days)
    return dt.datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone).astimezone(
        dt.UTC
    )


def in_quiet_hours(local_time: dt.time, *, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= local_time < end
    return local_time >= start or local_time < end  # the quiet hours cross midnight


def after_quiet_hours(
    at: dt.datetime, *, zone: ZoneInfo, start: dt.time, end: dt.time
) -> dt.datetime:
    """`at`, or if that falls in the quiet hours in `zone`, the moment they end."""
    local = at.astimezone(zone)
    if not in_quiet_hours(local.time().replace(tzinfo=None), start=start, end=end):
        return at
    day = local.date()
    if local.time().replace(tzinfo=None) >= end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=zone).astimezone(dt.UTC)


def retry_delay(*, failed_attempts: int, base_seconds: int) -> dt.timedelta:
    """Exponential backoff: base, 2×base, 4×base, … capped at a day."""
    delay = dt.timedelta(seconds=base_seconds * 2 ** max(failed_attempts - 1, 0))
    return min(delay, MAX_RETRY_DELAY)


def booking_deviations(
    *,
    scheduled_at: dt.datetime,
    zone: ZoneInfo,
    clinic_hours,
    window_opens_on: dt.date | None = None,
    window_closes_on: dt.date | None = None,
) -> list[tuple[str, str]]:
    """How a booking departs from the plan, as (DeviationKind, what the plan was): outside the
    visit's window (dates in the site's calendar) or outside the site's clinic hours."""
    deviations = []
    day = scheduled_at.astimezone(zone).date()
    if (window_opens_on and day < window_opens_on) or (window_closes_on and day > window_closes_on):
        deviations.append(
            (
                DeviationKind.OUTSIDE_WINDOW,
                f"{date_words(day)} is outside the visit's window, "
                f"{date_words(window_opens_on)} to {date_words(window_closes_on)}.",
            )
        )
    hours = list(clinic_hours)
    if not within_clinic_hours(scheduled_at, zone=zone, hours=hours):
        local = scheduled_at.astimezone(zone)
        deviations.append(
            (
                DeviationKind.OUTSIDE_CLINIC_HOURS,
                f"{local:%A %H:%M} {local.tzname()} is outside the clinic's hours "
                f"({clinic_hours_text(hours)}).",
            )
        )
    return deviations


def booking_notice(*, protocol, kind: str, protocol_visit=None) -> dt.timedelta:
    """The notice a booking of this kind leaves the patient at least: a bronchoscopy's
    fasting and escort, an infusion's half day, a follow-up's preparation (data on the
    protocol and its visits)."""
    hours = {
        VisitKind.HARVEST: protocol.harvest_notice_hours,
        VisitKind.TRANSPLANT: protocol.transplant_notice_hours,
        VisitKind.INFUSION: protocol.infusion_notice_hours,
    }.get(kind)
    if hours is None:
        hours = protocol_visit.notice_hours if protocol_visit is not None else 0
    return dt.timedelta(hours=hours)


def quiet_hours(*, channel: str, protocol) -> tuple[dt.time, dt.time] | None:
    """The protocol's quiet hours for `channel` (start, end), in the patient's own time: each
    text channel has its own; an email has none."""
    if channel == Channel.SMS:
        return protocol.quiet_hours_start, protocol.quiet_hours_end
    if channel == Channel.WHATSAPP:
        return protocol.whatsapp_quiet_hours_start, protocol.whatsapp_quiet_hours_end
    return None


def patient_send_after(at: dt.datetime, *, channel: str, patient, protocol) -> dt.datetime:
    """When a message due at `at` may go to the patient on `channel`: an email then, an SMS
    or a WhatsApp message once that channel's quiet hours are over in the patient's own zone."""
    hours = quiet_hours(channel=channel, protocol=protocol)
    if hours is None:
        return at
    return after_quiet_hours(at, zone=patient.zone, start=hours[0], end=hours[1])


# Every channel a patient may be written to, in the order they are written.
PATIENT_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.WHATSAPP)


def told_channels(patient) -> list[str]:
    """The channels the patient consents to and has an address for: every message to a
    patient goes on each of these (one outbox row per channel)."""
    return [channel for channel in PATIENT_CHANNELS if patient.consents_to(channel)]


def inside_last_reminder(*, course, scheduled_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether the protocol's last reminder before `scheduled_at` would already be past."""
    leads = course.protocol.reminder_lead_days or [0]
    last = reminder_time(
        appointment_at=scheduled_at, lead_days=min(leads), zone=course.site.time_zone
    )
    return last <= now


def booking_notice_refusals(
    *,
    course,
    kind: str,
    scheduled_at: dt.datetime,
    protocol_visit=None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Why a booking at `scheduled_at` would not leave the patient the notice the visit needs,
    or could not be told to them in time; empty if it can be kept. No reason excuses these:
    a patient cannot fast for six hours in four."""
    now = now or timezone.now()
    protocol, zone = course.protocol, course.site.time_zone
    notice = booking_notice(protocol=protocol, kind=kind, protocol_visit=protocol_visit)
    what = protocol_visit.name if protocol_visit is not None else VisitKind(kind).label.lower()
    hours = int(notice.total_seconds() // 3600)
    if scheduled_at < now + notice:
        return [
            f"The {what} needs {hours} h notice, for the patient to prepare: book it for "
            f"{local_words(now + notice, zone)} or later."
        ]
    if not inside_last_reminder(course=course, scheduled_at=scheduled_at, now=now):
        return []  # the reminders will tell the patient
    patient = course.patient
    told_at = min(
        (
            patient_send_after(now, channel=channel, patient=patient, protocol=protocol)
            for channel in told_channels(patient)
        ),
        default=None,
    )
    if told_at is None:
        return [
            f"So soon, the patient must be told at once, and {patient.first_name} has not "
            "consented to email, SMS or WhatsApp: record their consent, or book it after the "
            "last reminder's lead time."
        ]
    if told_at + notice > scheduled_at:
        return [
            f"The patient can be texted only from {local_words(told_at, patient.zone)} (their "
            f"quiet hours), less than the {hours} h notice the {what} needs: book it for "
            f"{local_words(told_at + notice, zone)} or later."
        ]
    return []
