"""Privacy: an enquiry holds health data from someone who is not a patient. Closed for longer
than ENQUIRY_RETENTION_DAYS and never converted into a patient, it is deleted, with its
replies, its messages (outbox and archive), its alerts, its consultations and its audit
history; before that, how many there were is added to `EnquiryCount`, so that the weekly
report's funnel still counts them. `manage.py enquiries_purge` and beat's nightly task run it.
"""

import datetime as dt
from collections import Counter

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from enquiries.models import (
    Consultation,
    Enquiry,
    EnquiryCount,
    EnquiryStatus,
    EnquiryStep,
)

PURGE_BATCH_SIZE = 1000


def iso_week(at: dt.datetime, zone) -> str:
    """The ISO week a moment falls in, in `zone`'s calendar: "2026-W49"."""
    year, week, _ = timezone.localdate(at, zone).isocalendar()
    return f"{year}-W{week:02d}"


def purgeable(*, now: dt.datetime, retention_days: int):
    """Enquiries past their retention: closed before the cutoff and never converted."""
    cutoff = now - dt.timedelta(days=retention_days)
    return Enquiry.objects.filter(
        status=EnquiryStatus.CLOSED, closed_at__lt=cutoff, patient__isnull=True
    )


def _step_reached(enquiry) -> str:
    if enquiry.had_consultation:
        return EnquiryStep.CONSULTATION
    if enquiry.first_answered_at is not None:
        return EnquiryStep.ANSWERED
    return EnquiryStep.ENQUIRED


def _counts_keep(enquiries) -> None:
    counts = Counter(
        (e.site_id, iso_week(e.submitted_at, e.site.time_zone), e.kind, _step_reached(e))
        for e in enquiries
    )
    for (site_id, week, kind, step), count in counts.items():
        kept, _ = EnquiryCount.objects.select_for_update().get_or_create(
            site_id=site_id, week=week, kind=kind, step=step
        )
        EnquiryCount.objects.filter(pk=kept.pk).update(count=F("count") + count)


# The audit histories are append-only for the application's role (common/db_roles.py); this
# function, made by the owner (enquiries 0002), is the one way their rows go, and only for
# enquiries that no longer exist.
_FORGET_HISTORY_SQL = "SELECT enquiries_history_forget(%s)"


def _histories_forget(ids: list[int]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_FORGET_HISTORY_SQL, [ids])
        return
    Consultation.history.filter(enquiry_id__in=ids).delete()
    Enquiry.history.filter(id__in=ids).exclude(id__in=Enquiry.objects.values("id")).delete()


def enquiries_purge(*, now: dt.datetime | None = None, retention_days: int | None = None) -> int:
    """Delete the enquiries past their retention, in batches of their own transactions, their
    counts kept first. Returns how many were deleted; running it again deletes nothing more."""
    now = now or timezone.now()
    days = settings.ENQUIRY_RETENTION_DAYS if retention_days is None else retention_days
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                purgeable(now=now, retention_days=days)
                .select_for_update(of=("self",), skip_locked=True)
                .annotate(
                    had_consultation=Exists(Consultation.objects.filter(enquiry=OuterRef("pk")))
                )
                .select_related("site")
                .order_by("closed_at", "id")[:PURGE_BATCH_SIZE]
            )
            if not batch:
                return deleted
            ids = [enquiry.pk for enquiry in batch]
            _counts_keep(batch)
            Enquiry.objects.filter(pk__in=ids).delete()
            _histories_forget(ids)
        deleted += len(ids)
