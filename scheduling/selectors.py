import datetime as dt

from django.db.models import Case, Count, DateField, F, Value, When
from django.utils import timezone

from pathway.models import Batch, BatchStatus, TreatmentCourse
from patients.models import Site
from scheduling.models import OPEN_VISIT_STATUSES, Alert, Visit, VisitKind, VisitStatus

UPCOMING_DAYS = 14


def course_completion_visit_done(*, course: TreatmentCourse) -> bool:
    """Whether the follow-up that completes the course has been done."""
    return Visit.objects.filter(
        course=course, protocol_visit__completes_course=True, status=VisitStatus.DONE
    ).exists()


def _site_today(sites, now) -> Case:
    """Each visit's site's local date, as an SQL expression."""
    return Case(
        *(
            When(course__site_id=site.pk, then=Value(timezone.localdate(now, site.time_zone)))
            for site in sites
        ),
        output_field=DateField(),
    )


def overdue_visits(*, sites, now: dt.datetime | None = None):
    """Open visits whose window closed before today in their site's calendar."""
    now = now or timezone.now()
    return (
        Visit.objects.filter(status__in=OPEN_VISIT_STATUSES, course__site__in=sites)
        .annotate(site_today=_site_today(sites, now))
        .filter(window_closes_on__lt=F("site_today"))
    )


def upcoming_procedures(*, sites, now: dt.datetime | None = None):
    """Open harvests and transplants booked in the next 14 days."""
    now = now or timezone.now()
    return Visit.objects.filter(
        course__site__in=sites,
        status__in=OPEN_VISIT_STATUSES,
        kind__in=[VisitKind.HARVEST, VisitKind.TRANSPLANT],
        scheduled_at__gte=now,
        scheduled_at__lt=now + dt.timedelta(days=UPCOMING_DAYS),
    )


def site_dashboard(*, sites=None, now: dt.datetime | None = None) -> list[dict]:
    """Per site: open alerts, overdue visits, procedures in the next 14 days and batches in
    expansion. Five queries."""
    now = now or timezone.now()
    sites = list(sites if sites is not None else Site.objects.all())
    open_alerts = dict(
        Alert.objects.filter(acknowledged_at__isnull=True, site__in=sites)
        .values_list("site")
        .annotate(n=Count("id"))
        .values_list("site", "n")
    )
    overdue = dict(
        overdue_visits(sites=sites, now=now)
        .values_list("course__site")
        .annotate(n=Count("id"))
        .values_list("course__site", "n")
    )
    upcoming = dict(
        upcoming_procedures(sites=sites, now=now)
        .values_list("course__site")
        .annotate(n=Count("id"))
        .values_list("course__site", "n")
    )
    expanding = dict(
        Batch.objects.filter(course__site__in=sites, status=BatchStatus.EXPANDING)
        .values_list("course__site")
        .annotate(n=Count("id"))
        .values_list("course__site", "n")
    )
    return [
        {
            "site": site,
            "batches_in_expansion": expanding.get(site.pk, 0),
            "open_alerts": open_alerts.get(site.pk, 0),
            "overdue_visits": overdue.get(site.pk, 0),
            "upcoming_procedures": upcoming.get(site.pk, 0),
        }
        for site in sites
    ]
