"""Each site's own calendar, for queries that span sites in different time zones."""

import datetime as dt
from collections.abc import Iterable

from django.db.models import Case, DateField, Value, When
from django.utils import timezone


def local_date_by_site(sites, at: dt.datetime, *, site_path: str) -> Case:
    """The date of `at` in each row's site's calendar, as an SQL expression.

    `site_path` leads from the queried model to its site's id (e.g. "course__site_id"). One
    `WHEN` per site: a national programme has tens of sites, not thousands.
    """
    return Case(
        *(
            When(**{site_path: site.pk}, then=Value(timezone.localdate(at, site.time_zone)))
            for site in sites
        ),
        output_field=DateField(),
    )


def clinic_hours_text(hours: Iterable) -> str:
    """A site's clinic hours in words: "Monday 08:00–17:00, Tuesday 08:00–17:00"."""
    return ", ".join(str(h) for h in hours) or "no hours set"


def within_clinic_hours(at: dt.datetime, *, zone, hours: Iterable) -> bool:
    """Whether `at` falls in one of a site's `ClinicHours` (a site with none: always)."""
    hours = list(hours)
    if not hours:
        return True
    local = timezone.localtime(at, zone)
    clock = local.time().replace(tzinfo=None)
    return any(h.weekday == local.weekday() and h.opens_at <= clock < h.closes_at for h in hours)
