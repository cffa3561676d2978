"""Fill the benchmark database quickly: server-side INSERT … SELECT generate_series, so no row
crosses the wire. Ids are explicit and ranges are contiguous, so later phases can add more."""

from django.db import connection

SITES = 20
STATES = [
    "referred",
    "evaluation",
    "eligible",
    "ineligible",
    "harvest_scheduled",
    "harvested",
    "expanding",
    "released",
    "transplant_scheduled",
    "follow_up",
    "follow_up",
    "completed",
    "withdrawn",
]


def _execute(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


BENCH_USER = 1_000_000


def sites() -> None:
    _execute(
        """
        INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name,
            email, is_staff, is_active, date_joined)
        VALUES (%s, '!', false, 'bench-coordinator', '', '', '', true, true, now())
        """,
        [BENCH_USER],
    )
    _execute(
        """
        INSERT INTO patients_site (id, name, code, time_zone, patient_facing_name, patient_phone)
        SELECT i, 'Bench site ' || i, 'B' || chr(64 + i), 'Europe/London', '', ''
        FROM generate_series(1, %s) AS i
        """,
        [SITES],
    )


def patients_and_courses(first: int, last: int) -> None:
    """Patients `first`..`last`, each with one course (same id), spread over sites and states."""
    _execute(
        """
        INSERT INTO patients_patient (id, mrn, first_name, last_name, date_of_birth, sex, email,
            phone, consent_email, consent_sms, whatsapp, consent_whatsapp, preferred_language,
            smoking_status, created_at, site_id)
        SELECT i, 'MRN' || lpad(i::text, 8, '0'), 'First' || i, 'Last' || lpad(i::text, 8, '0'),
            date '1950-01-01' + (i %% 9000), 'female', 'p' || i || '@example.com',
            '+4479' || lpad(i::text, 8, '0'), true, true, '', false, 'en', 'never', now(),
            1 + i %% %s
        FROM generate_series(%s, %s) AS i
        """,
        [SITES, first, last],
    )
    _execute(
        """
        INSERT INTO pathway_treatmentcourse (id, state, state_changed_at, state_before_hold,
            referred_at, low_fev1_justification, notes, patient_id, protocol_id, site_id,
            transplanted_at, transplanted_on, coi_id)
        SELECT i, (%s::text[])[1 + i %% %s], now() - (i %% 90) * interval '1 day', '',
            now() - (i %% 700) * interval '1 day', '', '', i,
            (SELECT id FROM pathway_protocol WHERE is_default), 1 + i %% %s,
            now() - (i %% 200) * interval '1 day', (now() - (i %% 200) * interval '1 day')::date,
            'BB26-' || lpad(i::text, 6, '0') || '-X'
        FROM generate_series(%s, %s) AS i
        """,
        [STATES, len(STATES), SITES, first, last],
    )
    # Each course's last step, when it took its state (the weekly report reads states at a
    # week's end back from this log). The hashes are placeholders: no bench verifies chains.
    _execute(
        """
        INSERT INTO pathway_transitionlog (transition, source_state, target_state, at, note,
            data, by_id, course_id, entry_hash, previous_hash)
        SELECT 'start_evaluation', 'referred', state, state_changed_at, '', '{}', %s, id,
            md5(id::text), ''
        FROM pathway_treatmentcourse WHERE id BETWEEN %s AND %s AND state <> 'referred'
        """,
        [BENCH_USER, first, last],
    )


def visits(first: int, last: int, per_course: int) -> None:
    """Visits `first`..`last`: visit v belongs to course 1 + (v - 1) / per_course."""
    _execute(
        """
        INSERT INTO scheduling_visit (id, kind, scheduled_at, place, window_opens_on,
            window_closes_on, status, created_at, course_id, protocol_visit_id, missed_reason)
        SELECT v, 'follow_up', now() + ((v %% 400) - 200) * interval '1 day', '',
            (now() + ((v %% 400) - 207) * interval '1 day')::date,
            (now() + ((v %% 400) - 193) * interval '1 day')::date,
            CASE WHEN v %% 400 < 180 THEN 'done' ELSE 'planned' END,
            now() + ((v %% 400) - 290) * interval '1 day',
            1 + (v - 1) / %s,
            (SELECT min(id) FROM pathway_protocolvisit) + v %% 4, ''
        FROM generate_series(%s, %s) AS v
        """,
        [per_course, first, last],
    )
    _execute(
        "UPDATE scheduling_visit SET done_at = scheduled_at WHERE id BETWEEN %s AND %s "
        "AND status = 'done'",
        [first, last],
    )
    # Each done follow-up's stored change from baseline, as measuring it would have stored it.
    _execute(
        """
        INSERT INTO reporting_followupoutcome (visit_id, course_id, site_id, protocol_visit_id,
            done_at, dlco_relative_pct, dlco_pct_points, fev1_ml, walk_m, cat, mmrc)
        SELECT v.id, v.course_id, c.site_id, v.protocol_visit_id, v.done_at, v.id %% 41 - 10,
            v.id %% 13 - 4, v.id %% 301 - 100, v.id %% 121 - 40, v.id %% 9 - 4, v.id %% 3 - 1
        FROM scheduling_visit v JOIN pathway_treatmentcourse c ON c.id = v.course_id
        WHERE v.id BETWEEN %s AND %s AND v.status = 'done'
        """,
        [first, last],
    )


def notifications(
    first: int, last: int, *, status: str, per_course_visits: int, visits_total: int, due: int = 0
) -> None:
    """Notifications `first`..`last` with `status`: sent ones in the past, pending ones in the
    future except the first `due`, which are due now."""
    if status == "sent":
        timing = (
            "now() - (n % 300 + 1) * interval '1 day', 'sent', now() - (n % 300) * interval '1 day'"
        )
    else:
        timing = (
            f"CASE WHEN n - {first} < {due} THEN now() - interval '1 minute' "
            "ELSE now() + (n % 60 + 1) * interval '1 day' END, 'pending', NULL"
        )
    _execute(
        f"""
        INSERT INTO scheduling_notification (id, template, channel, send_after, status, sent_at,
            attempts, max_attempts, last_error, provider_message_id, idempotency_key, created_at,
            patient_id, visit_id, report_week)
        SELECT n, 'visit_reminder', CASE WHEN n % 2 = 0 THEN 'email' ELSE 'sms' END, {timing},
            0, 5, '', '', 'bench.' || n, now(),
            1 + ((1 + (n - 1) % {visits_total}) - 1) / {per_course_visits},
            1 + (n - 1) % {visits_total}, ''
        FROM generate_series({first}, {last}) AS n
        """
    )


def alerts_and_batches(first: int, last: int) -> None:
    _execute(
        """
        INSERT INTO scheduling_alert (id, kind, severity, message, condition_key, created_at,
            course_id, site_id, acknowledged_at, acknowledged_note)
        SELECT i, 'visit_overdue', 'warning', 'Bench alert ' || i, 'bench.' || i,
            now() - (i %% 300) * interval '1 day', i, 1 + i %% 20,
            CASE WHEN i %% 5 = 0 THEN NULL
                ELSE now() - (i %% 300) * interval '1 day' + interval '2 days' END, ''
        FROM generate_series(%s, %s) AS i
        """,
        [first, last],
    )
    _execute(
        """
        INSERT INTO pathway_batch (id, coi_id, collected_at, received_at, temperature_c,
            transit_hours, status, extra_qc_results, course_id, release_meaning)
        SELECT i, 'BB26-' || lpad(i::text, 6, '0') || '-X', now() - (i %% 400) * interval '1 day',
            now() - (i %% 400) * interval '1 day', 4.5, 20,
            CASE WHEN i %% 10 = 0 THEN 'expanding' ELSE 'released' END, '{}', i, ''
        FROM generate_series(%s, %s) AS i
        """,
        [first, last],
    )


def reset_sequences() -> None:
    for table in (
        "patients_site",
        "patients_patient",
        "pathway_treatmentcourse",
        "scheduling_visit",
        "scheduling_notification",
        "scheduling_alert",
        "pathway_batch",
        "pathway_transitionlog",
    ):
        _execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )
    # VACUUM too: the visibility map lets index-only scans skip the heap, and autovacuum will
    # not wake up on the fresh rows in the middle of a measurement.
    _execute("VACUUM (ANALYZE)")


def reminders_ahead(count: int, *, channel: str, prefix: str, send_after: str) -> None:
    """`count` reminders on `channel` (keys `prefix` + n), to be sent at `send_after` (SQL),
    for visits still planned and more than two days ahead, so that none is cancelled when it
    is sent (the visits' dates are read, not assumed: the amendment's bench moves them)."""
    _execute(
        f"""
        WITH ahead AS (
            SELECT v.id, c.patient_id, row_number() OVER (ORDER BY v.id) - 1 AS k
            FROM scheduling_visit v JOIN pathway_treatmentcourse c ON c.id = v.course_id
            WHERE v.status = 'planned' AND v.scheduled_at > now() + interval '2 days'
            LIMIT 100000
        ), size AS (SELECT count(*) AS total FROM ahead)
        INSERT INTO scheduling_notification (template, channel, send_after, status, attempts,
            max_attempts, last_error, provider_message_id, idempotency_key, created_at,
            patient_id, visit_id, report_week)
        SELECT 'visit_reminder', %s, {send_after}, 'pending', 0, 5, '', '', %s || n, now(),
            ahead.patient_id, ahead.id, ''
        FROM generate_series(1, %s) AS n CROSS JOIN size
        JOIN ahead ON ahead.k = n %% size.total
        """,
        [channel, prefix, count],
    )
