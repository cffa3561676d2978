"""The outbox kept the size of what is pending: settled notifications (sent, failed, cancelled)
move to `NotificationArchive` after NOTIFICATION_ARCHIVE_AFTER_DAYS, and archived ones lose
what they hold about the patient after NOTIFICATION_PURGE_AFTER_DAYS. Counts stay.

Both run in bounded batches, each its own short transaction that skips rows another
transaction holds, so the dispatcher's tick never waits on them for long. `archive_run` is the
entry point of the command and of beat's task.
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from scheduling.models import (
    DeliveryAttempt,
    Notification,
    NotificationArchive,
    NotificationStatus,
    NotificationTemplate,
)
from scheduling.outbox import PURGED_KEY_PREFIX, purged_key

ARCHIVE_BATCH_SIZE = 10_000


def settled_before(cutoff: dt.datetime) -> Q:
    """Outbox rows settled before `cutoff`: sent or failed then; a cancelled one has no time of
    its own and counts from when it would have been sent (`send_after`), so a cancelled
    reminder whose time is still ahead, which a visit moved back would revive, stays."""
    return (
        Q(status=NotificationStatus.SENT, sent_at__lt=cutoff)
        | Q(status=NotificationStatus.FAILED, failed_at__lt=cutoff)
        | Q(status=NotificationStatus.CANCELLED, send_after__lt=cutoff)
    )


# One statement per batch on PostgreSQL: lock a batch of settled rows (skipping any another
# transaction holds), delete their attempts and them, and insert them into the archive with
# the site they count towards. Walking the primary key from where the last batch stopped reads
# the outbox once per run, and needs no index on it that every send would pay for.
_ARCHIVE_BATCH_SQL = """
WITH batch AS (
    SELECT id FROM scheduling_notification
    WHERE id > %(after)s AND (
        (status = 'sent' AND sent_at < %(cutoff)s)
        OR (status = 'failed' AND failed_at < %(cutoff)s)
        OR (status = 'cancelled' AND send_after < %(cutoff)s))
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM scheduling_deliveryattempt WHERE notification_id IN (SELECT id FROM batch)
), moved AS (
    DELETE FROM scheduling_notification AS n USING batch WHERE n.id = batch.id
    RETURNING n.*
), archived AS (
    INSERT INTO scheduling_notificationarchive (id, template, channel, status, site_id,
        patient_id, user_id, visit_id, enquiry_id, report_week, send_after, attempts, last_error,
        provider_message_id, idempotency_key, sent_at, failed_at, delivered_at, created_at,
        settled_at, archived_at)
    SELECT m.id, m.template, m.channel, m.status,
        coalesce(p.site_id, a.site_id, e.site_id, m.report_site_id),
        m.patient_id, m.user_id, m.visit_id, m.enquiry_id, m.report_week, m.send_after, m.attempts,
        m.last_error, m.provider_message_id, m.idempotency_key, m.sent_at, m.failed_at,
        m.delivered_at, m.created_at,
        CASE m.status WHEN 'sent' THEN m.sent_at WHEN 'failed' THEN m.failed_at
            ELSE m.send_after END,
        %(now)s
    FROM moved AS m
    LEFT JOIN patients_patient AS p ON p.id = m.patient_id
    LEFT JOIN scheduling_alert AS a ON a.id = m.alert_id
    LEFT JOIN enquiries_enquiry AS e ON e.id = m.enquiry_id
    RETURNING id
)
SELECT count(*), max(id) FROM archived
"""


def _archive_batch(*, cutoff: dt.datetime, after: int, batch_size: int, now) -> tuple[int, int]:
    """Move one batch; returns how many rows moved and the highest id moved."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    _ARCHIVE_BATCH_SQL,
                    {"after": after, "cutoff": cutoff, "batch_size": batch_size, "now": now},
                )
                moved, last = cursor.fetchone()
            return moved, last or after
        return _archive_batch_in_python(cutoff=cutoff, after=after, batch_size=batch_size, now=now)


def _archive_batch_in_python(*, cutoff, after: int, batch_size: int, now) -> tuple[int, int]:
    """The same for SQLite's small databases (one writer at a time: no row locks to skip)."""
    rows = list(
        Notification.objects.filter(settled_before(cutoff), id__gt=after)
        .select_related("patient", "alert", "enquiry")
        .order_by("id")[:batch_size]
    )
    if not rows:
        return 0, after
    NotificationArchive.objects.bulk_create(
        NotificationArchive(
            id=n.pk,
            template=n.template,
            channel=n.channel,
            status=n.status,
            site_id=(
                (n.patient.site_id if n.patient_id else None)
                or (n.alert.site_id if n.alert_id else None)
                or (n.enquiry.site_id if n.enquiry_id else None)
                or n.report_site_id
            ),
            patient_id=n.patient_id,
            user_id=n.user_id,
            visit_id=n.visit_id,
            enquiry_id=n.enquiry_id,
            report_week=n.report_week,
            send_after=n.send_after,
            attempts=n.attempts,
            last_error=n.last_error,
            provider_message_id=n.provider_message_id,
            idempotency_key=n.idempotency_key,
            sent_at=n.sent_at,
            failed_at=n.failed_at,
            delivered_at=n.delivered_at,
            created_at=n.created_at,
            settled_at={"sent": n.sent_at, "failed": n.failed_at}.get(n.status, n.send_after),
            archived_at=now,
        )
        for n in rows
    )
    ids = [n.pk for n in rows]
    DeliveryAttempt.objects.filter(notification_id__in=ids).delete()
    Notification.objects.filter(id__in=ids).delete()
    return len(ids), ids[-1]


def notifications_archive(
    *,
    now: dt.datetime | None = None,
    after_days: int | None = None,
    batch_size: int = ARCHIVE_BATCH_SIZE,
    limit: int | None = None,
) -> int:
    """Move notifications settled more than `after_days` (NOTIFICATION_ARCHIVE_AFTER_DAYS) ago
    from the outbox to the archive, `batch_size` rows per transaction, at most `limit` rows.
    Returns how many moved.

    Their delivery attempts are deleted, not archived: the archived row keeps their count
    (`attempts`), the last error and the provider's id, and nothing reads older attempts (the
    admin's inline and /metrics' last hour read the outbox's)."""
    now = now or timezone.now()
    days = settings.NOTIFICATION_ARCHIVE_AFTER_DAYS if after_days is None else after_days
    cutoff = now - dt.timedelta(days=days)
    moved, after = 0, 0
    while limit is None or moved < limit:
        size = batch_size if limit is None else min(batch_size, limit - moved)
        count, after = _archive_batch(cutoff=cutoff, after=after, batch_size=size, now=now)
        moved += count
        if count < size:
            break  # the walk reached the end of the outbox
    return moved


# What the purge keeps: the kind of message, its channel and status, its site and times, how
# many tries it took. What it removes: the patient and the visit it was about, the error text
# (a provider's error can quote an address or a number), the provider's message id (which the
# provider can map back to the phone), and the idempotency key as written (it names the visit
# and the appointment's time), which becomes its hash so that it is still never written again.
_PURGE_BATCH_SQL = f"""
WITH batch AS (
    SELECT id FROM scheduling_notificationarchive
    WHERE purged_at IS NULL AND settled_at < %(cutoff)s
    ORDER BY settled_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
UPDATE scheduling_notificationarchive AS a
SET patient_id = NULL, visit_id = NULL, last_error = '', provider_message_id = '',
    idempotency_key = '{PURGED_KEY_PREFIX}'
        || encode(sha256(convert_to(a.idempotency_key, 'UTF8')), 'hex'),
    purged_at = %(now)s
FROM batch WHERE a.id = batch.id
"""


def _purge_batch(*, cutoff: dt.datetime, batch_size: int, now) -> int:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    _PURGE_BATCH_SQL, {"cutoff": cutoff, "batch_size": batch_size, "now": now}
                )
                return cursor.rowcount
        rows = list(
            NotificationArchive.objects.filter(purged_at__isnull=True, settled_at__lt=cutoff)
            .order_by("settled_at")
            .only("id", "idempotency_key")[:batch_size]
        )
        for row in rows:
            row.patient_id = row.visit_id = None
            row.last_error = row.provider_message_id = ""
            row.idempotency_key = purged_key(row.idempotency_key)
            row.purged_at = now
        NotificationArchive.objects.bulk_update(
            rows,
            [
                "patient",
                "visit",
                "last_error",
                "provider_message_id",
                "idempotency_key",
                "purged_at",
            ],
        )
        return len(rows)


def notifications_archive_purge(
    *,
    now: dt.datetime | None = None,
    after_days: int | None = None,
    batch_size: int = ARCHIVE_BATCH_SIZE,
    limit: int | None = None,
) -> int:
    """Remove what archived notifications settled more than `after_days`
    (NOTIFICATION_PURGE_AFTER_DAYS) ago hold about the patient, `batch_size` rows per
    transaction, at most `limit`. Returns how many were purged."""
    now = now or timezone.now()
    days = settings.NOTIFICATION_PURGE_AFTER_DAYS if after_days is None else after_days
    cutoff = now - dt.timedelta(days=days)
    purged = 0
    while limit is None or purged < limit:
        size = batch_size if limit is None else min(batch_size, limit - purged)
        count = _purge_batch(cutoff=cutoff, batch_size=size, now=now)
        purged += count
        if count < size:
            break
    return purged


@dataclass
class ArchiveRun:
    archived: int
    purged: int


def archive_run(
    *, batch_size: int = ARCHIVE_BATCH_SIZE, limit: int | None = None, now=None
) -> ArchiveRun:
    """Archive what has settled past the retention, then purge what is past the purge period:
    what beat runs every hour and `manage.py notifications_archive` runs by hand."""
    return ArchiveRun(
        archived=notifications_archive(now=now, batch_size=batch_size, limit=limit),
        purged=notifications_archive_purge(now=now, batch_size=batch_size, limit=limit),
    )


def reminder_counts(*, sites, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Appointment reminders to patients of `sites` (None: every site, read without a join):
    sent and failed in [start, end), and
    pending at `end` (written by then, settled after it or not yet; a cancellation carries no
    time, so cancelled rows are not counted), from the outbox and the archive together."""
    sent_in_week = Q(sent_at__gte=start, sent_at__lt=end)
    failed_in_week = Q(failed_at__gte=start, failed_at__lt=end)
    settled_since = Q(sent_at__gte=end) | Q(failed_at__gte=end)
    pending_then = Q(created_at__lt=end) & (
        Q(status__in=[NotificationStatus.PENDING, NotificationStatus.SENDING]) | settled_since
    )
    in_outbox = Notification.objects.filter(template=NotificationTemplate.VISIT_REMINDER)
    archive = NotificationArchive.objects.filter(template=NotificationTemplate.VISIT_REMINDER)
    if sites is not None:
        in_outbox = in_outbox.filter(patient__site__in=sites)
        archive = archive.filter(site__in=sites)
    in_outbox = in_outbox.aggregate(
        sent=Count("id", filter=sent_in_week),
        failed=Count("id", filter=failed_in_week),
        pending=Count("id", filter=pending_then),
    )
    archived = archive.filter(sent_in_week | failed_in_week | settled_since).aggregate(
        sent=Count("id", filter=sent_in_week),
        failed=Count("id", filter=failed_in_week),
        pending=Count("id", filter=Q(created_at__lt=end) & settled_since),
    )
    return {key: in_outbox[key] + archived[key] for key in ("sent", "failed", "pending")}
