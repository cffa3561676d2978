"""Visits and their reminders. Called inside the pathway's transactions, so a visit and its
reminders are written, moved or cancelled together with the change that causes them."""

import datetime as dt

from django.db import connection, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from pathway.models import TreatmentCourse
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    Channel,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.rules import after_quiet_hours, reminder_time
from scheduling.windows import follow_up_slot


def reminders_schedule(*, visit: Visit, now: dt.datetime | None = None) -> list[Notification]:
    """Outbox rows for the protocol's reminders of one visit, on each consented channel.

    Reminders whose time has already passed are not written. An SMS due in the patient's
    quiet hours waits until they end, in the patient's own time zone.
    """
    now = now or timezone.now()
    course = visit.course
    patient, protocol = course.patient, course.protocol
    channels = [
        channel
        for channel, allowed in (
            (Channel.EMAIL, patient.consent_email and patient.email),
            (Channel.SMS, patient.consent_sms and patient.phone),
        )
        if allowed
    ]
    stamp = int(visit.scheduled_at.timestamp())
    reminders = []
    for lead_days in sorted(set(protocol.reminder_lead_days), reverse=True):
        send_at = reminder_time(
            appointment_at=visit.scheduled_at, lead_days=lead_days, zone=course.site.time_zone
        )
        for channel in channels:
            send_after = send_at
            if channel == Channel.SMS:
                send_after = after_quiet_hours(
                    send_at,
                    zone=patient.zone,
                    start=protocol.quiet_hours_start,
                    end=protocol.quiet_hours_end,
                )
            if send_after <= now or send_after >= visit.scheduled_at:
                continue
            reminders.append(
                Notification(
                    template=NotificationTemplate.VISIT_REMINDER,
                    channel=channel,
                    patient=patient,
                    visit=visit,
                    send_after=send_after,
                    max_attempts=protocol.delivery_max_attempts,
                    idempotency_key=f"reminder.v{visit.pk}.{lead_days}d.{channel}.{stamp}",
                )
            )
    return _write_reminders(reminders)


def _write_reminders(reminders: list[Notification]) -> list[Notification]:
    """Write new reminders; one whose key exists (the visit moved back to a time it had) is
    revived if it was cancelled, and left alone if it was already sent or is pending."""
    existing = {
        n.idempotency_key: n
        for n in Notification.objects.filter(
            idempotency_key__in=[r.idempotency_key for r in reminders]
        )
    }
    for reminder in reminders:
        earlier = existing.get(reminder.idempotency_key)
        if earlier and earlier.status == NotificationStatus.CANCELLED:
            Notification.objects.filter(pk=earlier.pk).update(
                status=NotificationStatus.PENDING,
                send_after=reminder.send_after,
                attempts=0,
                last_error="",
            )
    return Notification.objects.bulk_create(
        [r for r in reminders if r.idempotency_key not in existing]
    )


def reminders_cancel(*, visits) -> int:
    """Cancel reminders not yet sent for these visits."""
    return Notification.objects.filter(visit__in=visits, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.CANCELLED
    )


def _procedure_window(scheduled_at: dt.datetime, zone) -> dict:
    day = timezone.localdate(scheduled_at, zone)
    return {"window_opens_on": day, "window_closes_on": day}


def visit_book(
    *, course: TreatmentCourse, kind: VisitKind, scheduled_at: dt.datetime, place: str
) -> Visit:
    """Book a procedure and its reminders, replacing any open booking of the same kind."""
    with transaction.atomic():
        replaced = Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES)
        reminders_cancel(visits=replaced)
        _change_each(replaced, status=VisitStatus.CANCELLED)
        visit = Visit.objects.create(
            course=course,
            kind=kind,
            scheduled_at=scheduled_at,
            place=place,
            status=VisitStatus.BOOKED,
            **_procedure_window(scheduled_at, course.site.time_zone),
        )
        reminders_schedule(visit=visit)
        return visit


def visit_mark_done(*, course: TreatmentCourse, kind: VisitKind, done_at: dt.datetime) -> int:
    """Mark the open booking of a procedure done; its remaining reminders are cancelled."""
    visits = Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES)
    reminders_cancel(visits=visits)
    return _change_each(visits, status=VisitStatus.DONE, done_at=done_at)


def visit_record_done(*, visit: Visit, done_at: dt.datetime) -> Visit:
    """A visit took place: it is done and its remaining reminders are cancelled."""
    with transaction.atomic():
        reminders_cancel(visits=[visit])
        visit.status, visit.done_at = VisitStatus.DONE, done_at
        visit.save(update_fields=["status", "done_at"])
    return visit


def visits_schedule_follow_ups(*, course: TreatmentCourse) -> list[Visit]:
    """Create the protocol's follow-up visits and their reminders, from the actual transplant."""
    zone = course.site.time_zone
    visits = []
    for protocol_visit in course.protocol.visits.all():
        slot = follow_up_slot(
            transplanted_at=course.transplanted_at,
            zone=zone,
            weeks_after=protocol_visit.weeks_after_transplant,
            window_days=protocol_visit.window_days,
        )
        visits.append(
            Visit(
                course=course,
                kind=VisitKind.FOLLOW_UP,
                protocol_visit=protocol_visit,
                scheduled_at=slot.scheduled_at,
                window_opens_on=slot.window_opens_on,
                window_closes_on=slot.window_closes_on,
                status=VisitStatus.PLANNED,
            )
        )
    visits = bulk_create_with_history(visits, Visit)
    for visit in visits:
        reminders_schedule(visit=visit)
    return visits


def visit_reschedule(*, visit: Visit, scheduled_at: dt.datetime, place: str | None = None) -> Visit:
    """Move an appointment and what hangs on it.

    Its pending reminders are cancelled and written anew for the new time. Moving a done
    transplant (a correction of when it happened) moves the course's open follow-ups,
    their windows and their reminders with it.
    """
    if visit.status not in (*OPEN_VISIT_STATUSES, VisitStatus.DONE):
        raise ValueError(f"A {visit.get_status_display().lower()} visit cannot be moved.")
    course = visit.course
    zone = course.site.time_zone
    if scheduled_at == visit.scheduled_at:
        # Only the place changed: reminders read it when they are sent.
        if place is not None:
            visit.place = place
            visit.save(update_fields=["place"])
        return visit
    with transaction.atomic():
        reminders_cancel(visits=[visit])
        visit.scheduled_at = scheduled_at
        if place is not None:
            visit.place = place
        if visit.kind != VisitKind.FOLLOW_UP:
            for field, value in _procedure_window(scheduled_at, zone).items():
                setattr(visit, field, value)
        if visit.status == VisitStatus.DONE:
            visit.done_at = scheduled_at
        visit.save()
        if visit.status in OPEN_VISIT_STATUSES:
            reminders_schedule(visit=visit)
        if visit.kind == VisitKind.TRANSPLANT and visit.status == VisitStatus.DONE:
            transplanted_on = timezone.localdate(scheduled_at, zone)
            course.transplanted_at, course.transplanted_on = scheduled_at, transplanted_on
            course.save(update_fields=["transplanted_at", "transplanted_on"])
            _move_follow_ups(course)
    return visit


def _move_follow_ups(course: TreatmentCourse) -> None:
    follow_ups = list(
        Visit.objects.filter(
            course=course, kind=VisitKind.FOLLOW_UP, status__in=OPEN_VISIT_STATUSES
        ).select_related("protocol_visit")
    )
    reminders_cancel(visits=follow_ups)
    for visit in follow_ups:
        slot = follow_up_slot(
            transplanted_at=course.transplanted_at,
            zone=course.site.time_zone,
            weeks_after=visit.protocol_visit.weeks_after_transplant,
            window_days=visit.protocol_visit.window_days,
        )
        visit.scheduled_at = slot.scheduled_at
        visit.window_opens_on, visit.window_closes_on = slot.window_opens_on, slot.window_closes_on
    bulk_update_with_history(
        follow_ups, Visit, ["scheduled_at", "window_opens_on", "window_closes_on"]
    )
    for visit in follow_ups:
        reminders_schedule(visit=visit)


def reminders_suspend(*, course: TreatmentCourse) -> int:
    """A course on hold sends no reminders; its visits stay as booked."""
    return reminders_cancel(
        visits=Visit.objects.filter(course=course, status__in=OPEN_VISIT_STATUSES)
    )


def reminders_resume(*, course: TreatmentCourse) -> None:
    """Write again the reminders of a resumed course's open visits that are still ahead."""
    for visit in Visit.objects.filter(
        course=course, status__in=OPEN_VISIT_STATUSES, scheduled_at__gt=timezone.now()
    ).select_related("course__patient", "course__protocol", "course__site"):
        reminders_schedule(visit=visit)


def visits_cancel_open(*, course: TreatmentCourse) -> int:
    """Cancel a course's open visits and every reminder not yet sent."""
    visits = Visit.objects.filter(course=course, status__in=OPEN_VISIT_STATUSES)
    reminders_cancel(visits=visits)
    return _change_each(visits, status=VisitStatus.CANCELLED)


def _change_each(visits, **fields) -> int:
    """Change a course's few visits one by one, so that the audit history records each."""
    changed = list(visits)
    for visit in changed:
        for name, value in fields.items():
            setattr(visit, name, value)
        visit.save(update_fields=list(fields))
    return len(changed)


# A protocol amendment moves every open follow-up at once: done in SQL on PostgreSQL, where a
# national programme has hundreds of thousands of them.
_RECOMPUTE_VISITS_SQL = """
UPDATE scheduling_visit AS v
SET scheduled_at = ((c.transplanted_on + pv.weeks_after_transplant * 7)::timestamp
                    + (c.transplanted_at AT TIME ZONE s.time_zone)::time) AT TIME ZONE s.time_zone,
    window_opens_on = c.transplanted_on + pv.weeks_after_transplant * 7 - pv.window_days,
    window_closes_on = c.transplanted_on + pv.weeks_after_transplant * 7 + pv.window_days
FROM pathway_treatmentcourse AS c, pathway_protocolvisit AS pv, patients_site AS s
WHERE v.course_id = c.id AND v.protocol_visit_id = pv.id AND c.site_id = s.id
  AND c.protocol_id = %(protocol)s AND v.kind = 'follow_up' AND v.status IN ('planned', 'booked')
  AND c.transplanted_on IS NOT NULL
"""
_CANCEL_REMINDERS_SQL = """
UPDATE scheduling_notification AS n SET status = 'cancelled'
FROM scheduling_visit AS v, pathway_treatmentcourse AS c
WHERE n.visit_id = v.id AND v.course_id = c.id AND c.protocol_id = %(protocol)s
  AND v.kind = 'follow_up' AND v.status IN ('planned', 'booked') AND n.status = 'pending'
"""
# One reminder per lead time and consented channel, at the appointment's local clock time; an
# SMS in the patient's quiet hours waits for them to end; keys as reminders_schedule makes them.
_WRITE_REMINDERS_SQL = """
INSERT INTO scheduling_notification (template, channel, patient_id, visit_id, send_after, status,
    attempts, max_attempts, last_error, provider_message_id, idempotency_key, created_at,
    report_week)
SELECT 'visit_reminder', r.channel, r.patient_id, r.visit_id, r.send_after, 'pending', 0,
    %(max_attempts)s, '', '',
    'reminder.v' || r.visit_id || '.' || r.lead || 'd.' || r.channel || '.'
        || floor(extract(epoch FROM r.scheduled_at))::bigint,
    now(), ''
FROM (
    SELECT v.id AS visit_id, p.id AS patient_id, v.scheduled_at, lead, ch.channel,
        CASE WHEN ch.channel = 'sms' AND (
                 (%(quiet_start)s::time > %(quiet_end)s::time AND
                  ((due AT TIME ZONE pz)::time >= %(quiet_start)s::time
                   OR (due AT TIME ZONE pz)::time < %(quiet_end)s::time))
              OR (%(quiet_start)s::time <= %(quiet_end)s::time AND
                  (due AT TIME ZONE pz)::time >= %(quiet_start)s::time
                  AND (due AT TIME ZONE pz)::time < %(quiet_end)s::time))
             THEN (((due AT TIME ZONE pz)::date
                    + CASE WHEN (due AT TIME ZONE pz)::time >= %(quiet_end)s::time
                           THEN 1 ELSE 0 END)
                   + %(quiet_end)s::time) AT TIME ZONE pz
             ELSE due END AS send_after
    FROM scheduling_visit AS v
    JOIN pathway_treatmentcourse AS c ON c.id = v.course_id
    JOIN patients_patient AS p ON p.id = c.patient_id
    JOIN patients_site AS s ON s.id = c.site_id
    CROSS JOIN unnest(%(leads)s::int[]) AS lead
    CROSS JOIN LATERAL (
        SELECT 'email' AS channel WHERE p.consent_email AND p.email <> ''
        UNION ALL SELECT 'sms' WHERE p.consent_sms AND p.phone <> ''
    ) AS ch
    CROSS JOIN LATERAL (
        SELECT ((v.scheduled_at AT TIME ZONE s.time_zone) - lead * interval '1 day')
               AT TIME ZONE s.time_zone AS due,
               coalesce(p.time_zone, s.time_zone) AS pz
    ) AS t
    WHERE c.protocol_id = %(protocol)s AND v.kind = 'follow_up'
      AND v.status IN ('planned', 'booked')
) AS r
WHERE r.send_after > now() AND r.send_after < r.scheduled_at
ON CONFLICT (idempotency_key) DO UPDATE
    SET status = 'pending', send_after = EXCLUDED.send_after, attempts = 0, last_error = ''
    WHERE scheduling_notification.status = 'cancelled'
"""


def follow_ups_recompute(*, protocol) -> int:
    """After a protocol amendment, move every open follow-up of the protocol's courses to its
    new date and window, and rewrite the reminders not yet sent. Returns the visits moved."""
    if connection.vendor != "postgresql":
        return _follow_ups_recompute_in_python(protocol)
    params = {
        "protocol": protocol.pk,
        "max_attempts": protocol.delivery_max_attempts,
        "leads": sorted(set(protocol.reminder_lead_days)),
        "quiet_start": protocol.quiet_hours_start,
        "quiet_end": protocol.quiet_hours_end,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RECOMPUTE_VISITS_SQL, params)
        moved = cursor.rowcount
        cursor.execute(_CANCEL_REMINDERS_SQL, params)
        cursor.execute(_WRITE_REMINDERS_SQL, params)
    return moved


def _follow_ups_recompute_in_python(protocol) -> int:
    """The same for SQLite's small databases, one course at a time."""
    courses = TreatmentCourse.objects.filter(protocol=protocol, transplanted_on__isnull=False)
    moved = 0
    with transaction.atomic():
        for course in courses.select_related("site", "patient", "protocol"):
            moved += Visit.objects.filter(
                course=course, kind=VisitKind.FOLLOW_UP, status__in=OPEN_VISIT_STATUSES
            ).count()
            _move_follow_ups(course)
    return moved
