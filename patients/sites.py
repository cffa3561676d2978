"""Each site's own calendar, for queries that span sites in different time zones."""

import datetime as dt

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
