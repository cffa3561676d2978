"""A protocol amendment: every open follow-up of the protocol's courses moves to its new window
(one only due moves its due time too; a booked one keeps the time the patient was given), and
the booked ones' reminders not yet sent are written anew."""

from django.db import connection, transaction
from django.db.models import Q

from pathway.models import TreatmentCourse
from pathway.states import HOLDABLE_STATES
from scheduling.models import OPEN_VISIT_STATUSES, Visit, VisitKind
from scheduling.outbox import notifications_drop_archived
from scheduling.services import follow_ups_move

# A protocol amendment moves every open follow-up at once: done in SQL on PostgreSQL, where a
# national programme has hundreds of thousands of them.
_RECOMPUTE_VISITS_SQL = """
UPDATE scheduling_visit AS v
SET scheduled_at = CASE WHEN v.status = 'planned' THEN
        ((f.from_on + pv.weeks_after_transplant * 7)::timestamp
         + (f.from_at AT TIME ZONE s.time_zone)::time) AT TIME ZONE s.time_zone
        ELSE v.scheduled_at END,
    window_opens_on = f.from_on + pv.weeks_after_transplant * 7 - pv.window_days,
    window_closes_on = f.from_on + pv.weeks_after_transplant * 7 + pv.window_days
FROM pathway_treatmentcourse AS c
    -- what the follow-ups count from: the transplant, or the infusion the protocol names
    CROSS JOIN LATERAL (
        SELECT coalesce(c.transplanted_on, c.follow_up_anchor_on) AS from_on,
               coalesce(c.transplanted_at, c.follow_up_anchor_at) AS from_at
    ) AS f,
    pathway_protocolvisit AS pv, patients_site AS s
WHERE v.course_id = c.id AND v.protocol_visit_id = pv.id AND c.site_id = s.id
  AND c.protocol_id = %(protocol)s AND v.kind = 'follow_up' AND v.status IN ('planned', 'booked')
  AND f.from_on IS NOT NULL
"""
_CANCEL_REMINDERS_SQL = """
UPDATE scheduling_notification AS n SET status = 'cancelled'
FROM scheduling_visit AS v, pathway_treatmentcourse AS c
WHERE n.visit_id = v.id AND v.course_id = c.id AND c.protocol_id = %(protocol)s
  AND v.kind = 'follow_up' AND v.status = 'booked' AND n.status = 'pending'
"""
# One reminder per lead time and consented channel, at the appointment's local clock time; a
# text (SMS, WhatsApp) in the patient's quiet hours for its channel waits for them to end; keys
# as reminders_schedule makes them.
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
        CASE WHEN ch.quiet_start IS NOT NULL AND (
                 (ch.quiet_start > ch.quiet_end AND
                  ((due AT TIME ZONE pz)::time >= ch.quiet_start
                   OR (due AT TIME ZONE pz)::time < ch.quiet_end))
              OR (ch.quiet_start <= ch.quiet_end AND
                  (due AT TIME ZONE pz)::time >= ch.quiet_start
                  AND (due AT TIME ZONE pz)::time < ch.quiet_end))
             THEN (((due AT TIME ZONE pz)::date
                    + CASE WHEN (due AT TIME ZONE pz)::time >= ch.quiet_end
                           THEN 1 ELSE 0 END)
                   + ch.quiet_end) AT TIME ZONE pz
             ELSE due END AS send_after
    FROM scheduling_visit AS v
    JOIN pathway_treatmentcourse AS c ON c.id = v.course_id
    JOIN patients_patient AS p ON p.id = c.patient_id
    JOIN patients_site AS s ON s.id = c.site_id
    CROSS JOIN unnest(%(leads)s::int[]) AS lead
    CROSS JOIN LATERAL (
        SELECT 'email' AS channel, NULL::time AS quiet_start, NULL::time AS quiet_end
        WHERE p.consent_email AND p.email <> ''
        UNION ALL SELECT 'sms', %(sms_quiet_start)s::time, %(sms_quiet_end)s::time
        WHERE p.consent_sms AND p.phone <> ''
        UNION ALL SELECT 'whatsapp', %(whatsapp_quiet_start)s::time, %(whatsapp_quiet_end)s::time
        WHERE p.consent_whatsapp AND p.whatsapp <> ''
    ) AS ch
    CROSS JOIN LATERAL (
        SELECT ((v.scheduled_at AT TIME ZONE s.time_zone) - lead * interval '1 day')
               AT TIME ZONE s.time_zone AS due,
               coalesce(nullif(p.time_zone, ''), s.time_zone) AS pz
    ) AS t
    WHERE c.protocol_id = %(protocol)s AND v.kind = 'follow_up' AND v.status = 'booked'
      AND c.state = ANY(%(taking_appointments)s)
) AS r
WHERE r.send_after > now() AND r.send_after < r.scheduled_at
ON CONFLICT (idempotency_key) DO UPDATE
    SET status = 'pending', send_after = EXCLUDED.send_after, attempts = 0, last_error = ''
    WHERE scheduling_notification.status = 'cancelled'
RETURNING idempotency_key
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
        "sms_quiet_start": protocol.quiet_hours_start,
        "sms_quiet_end": protocol.quiet_hours_end,
        "whatsapp_quiet_start": protocol.whatsapp_quiet_hours_start,
        "whatsapp_quiet_end": protocol.whatsapp_quiet_hours_end,
        # A course on hold or closed has no reminders to write back.
        "taking_appointments": [str(state) for state in HOLDABLE_STATES],
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RECOMPUTE_VISITS_SQL, params)
        moved = cursor.rowcount
        cursor.execute(_CANCEL_REMINDERS_SQL, params)
        cursor.execute(_WRITE_REMINDERS_SQL, params)
        # The outbox's one rule for keys, for rows written in SQL: a key archived is not
        # written again.
        notifications_drop_archived(keys=[key for (key,) in cursor.fetchall()])
    return moved


def _follow_ups_recompute_in_python(protocol) -> int:
    """The same for SQLite's small databases, one course at a time."""
    courses = TreatmentCourse.objects.filter(
        Q(transplanted_on__isnull=False) | Q(follow_up_anchor_on__isnull=False), protocol=protocol
    )
    moved = 0
    with transaction.atomic():
        for course in courses.select_related("site", "patient", "protocol"):
            moved += Visit.objects.filter(
                course=course, kind=VisitKind.FOLLOW_UP, status__in=OPEN_VISIT_STATUSES
            ).count()
            follow_ups_move(course=course)
    return moved
