"""Celery tasks: thin wrappers over the outbox, the scan and the report queue. They take no
objects. Their names are those they had when they lived in `scheduling`: beat's rows in the
database, and any message still queued, name them so."""

from celery import shared_task
from django.conf import settings

from delivery.outbox import (
    notification_batches_due,
    notifications_dispatch_batch,
    notifications_reclaim_stale,
)
from enquiries.purge import enquiries_purge
from enquiries.scans import alerts_scan_unanswered_enquiries
from pathway.checkins import checkins_tick as pathway_checkins_tick
from pathway.scans import alerts_scan_overdue
from reporting.weekly_report import weekly_reports_queue
from scheduling.outbox_archive import archive_run

# Beat runs the archive every hour; one run moves and purges at most this many rows each, so
# a backlog (the first run on an old outbox) is worked off over hours, never in one long job.
ARCHIVE_ROWS_PER_RUN = 200_000


@shared_task(name="scheduling.tasks.dispatch_due_notifications", ignore_result=True)
def dispatch_due_notifications() -> int:
    """Beat, every minute: one batch task per batch of due rows. Returns how many it sent."""
    notifications_reclaim_stale()
    batches = notification_batches_due(batch_size=settings.NOTIFICATION_BATCH_SIZE)
    for _ in range(batches):
        dispatch_notification_batch.delay()
    return batches


@shared_task(name="scheduling.tasks.dispatch_notification_batch", ignore_result=True)
def dispatch_notification_batch() -> int:
    """Claim and deliver one batch. Losing this message loses nothing: the rows stay due."""
    return notifications_dispatch_batch().sent


@shared_task(name="scheduling.tasks.scan_overdue", ignore_result=True)
def scan_overdue() -> int:
    return alerts_scan_overdue() + alerts_scan_unanswered_enquiries()


@shared_task(name="scheduling.tasks.checkins_tick", ignore_result=True)
def checkins_tick() -> dict:
    """Beat, every 15 minutes: open the check-ins due, remind once, close the missed."""
    return pathway_checkins_tick()


@shared_task(name="scheduling.tasks.queue_weekly_reports", ignore_result=True)
def queue_weekly_reports() -> int:
    """Beat, every 5 minutes: the reports due on Monday 07:00 in each site's time."""
    return weekly_reports_queue()


@shared_task(name="scheduling.tasks.archive_notifications", ignore_result=True)
def archive_notifications() -> dict:
    """Beat, every hour: move notifications settled past the retention to the archive, then
    purge what archived ones hold about patients past the purge period."""
    run = archive_run(limit=ARCHIVE_ROWS_PER_RUN)
    return {"archived": run.archived, "purged": run.purged}


@shared_task(name="enquiries.tasks.purge_enquiries", ignore_result=True)
def purge_enquiries() -> int:
    """Beat, every night: enquiries past their retention deleted, their counts kept."""
    return enquiries_purge()
