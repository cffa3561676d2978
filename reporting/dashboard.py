"""The admin index's per-site counts."""

import datetime as dt

from django.db.models import Count
from django.utils import timezone

from pathway.models import Batch, BatchStatus
from pathway.states import CourseState
from patients.models import Site
from scheduling.alerts import alerts_for
from scheduling.models import Alert, Visit
from scheduling.selectors import upcoming_procedures


def _count_by_site(queryset, site_path: str) -> dict[int, int]:
    return dict(queryset.values_list(site_path).annotate(n=Count("id")).values_list(site_path, "n"))


def site_dashboard(*, sites=None, user=None, now: dt.datetime | None = None) -> list[dict]:
    """Per site: open alerts (those `user` may act on, when given), overdue visits,
    procedures in the next 14 days and batches in expansion. Five queries."""
    now = now or timezone.now()
    sites = list(sites if sites is not None else Site.objects.all())
    alerts = Alert.objects.filter(acknowledged_at__isnull=True, site__in=sites)
    if user is not None:
        alerts = alerts.filter(alerts_for(user))
    open_alerts = _count_by_site(alerts, "site")
    overdue = _count_by_site(Visit.objects.overdue(sites=sites, at=now), "course__site")
    upcoming = _count_by_site(upcoming_procedures(sites=sites, now=now), "course__site")
    # A held course's batch is on hold, not counted as in expansion.
    expanding = _count_by_site(
        Batch.objects.filter(course__site__in=sites, status=BatchStatus.EXPANDING).exclude(
            course__state=CourseState.ON_HOLD
        ),
        "course__site",
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
