"""When an enquiry must be answered by: ENQUIRY_ANSWER_WORKING_DAYS working days after it was
sent, counted in its site's calendar (Monday to Friday; Saturdays and Sundays do not count),
at the same time of day there."""

import datetime as dt

from django.conf import settings
from django.utils import timezone

WEEKEND = (5, 6)  # Saturday, Sunday


def working_days_after(at: dt.datetime, *, days: int, zone) -> dt.datetime:
    """The moment `days` working days after `at`, in `zone`'s calendar, at the same wall-clock
    time (so 10:00 stays 10:00 across a change of clocks)."""
    local = timezone.localtime(at, zone)
    day, counted = local.date(), 0
    while counted < days:
        day += dt.timedelta(days=1)
        if day.weekday() not in WEEKEND:
            counted += 1
    return dt.datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone)


def enquiry_answer_due(enquiry) -> dt.datetime:
    """When the enquiry must have its first answer by."""
    return working_days_after(
        enquiry.submitted_at,
        days=settings.ENQUIRY_ANSWER_WORKING_DAYS,
        zone=enquiry.site.time_zone,
    )
