"""The periodic scan for what is late: overdue visits, expansions past their last day of
release, and released products with no transplant booked in time."""

import datetime as dt

from django.utils import timezone

from common.zones import date_words
from pathway.models import Protocol, TreatmentCourse, expansion_day, expansion_day_cutoff
from pathway.states import HOLDABLE_STATES, CourseState
from patients.models import Site
from scheduling.alerts import (
    alert_raise,
    alerts_scan_follow_ups_to_book,
    alerts_scan_overdue_visits,
)
from scheduling.models import AlertKind, Severity


def alerts_scan_overdue(*, now: dt.datetime | None = None) -> int:
    """Raise an alert for each overdue visit, follow-up to book, expansion and unbooked
    transplant; returns how many were new. Running it again raises nothing twice."""
    now = now or timezone.now()
    raised = alerts_scan_overdue_visits(now=now) + alerts_scan_follow_ups_to_book(
        now=now, course_states=HOLDABLE_STATES
    )
    for site in Site.objects.all():
        for protocol in Protocol.objects.all():
            raised += _scan_expansions(site, protocol, now)
    return raised


def _scan_expansions(site: Site, protocol: Protocol, now: dt.datetime) -> int:
    raised = 0
    zone = site.time_zone
    last_day = protocol.expansion_max_days
    received_before = expansion_day_cutoff(last_day + 1, now=now, zone=zone)  # past the last
    overdue = TreatmentCourse.objects.filter(
        site=site,
        protocol=protocol,
        state=CourseState.EXPANDING,
        lab_received_at__lt=received_before,
    ).select_related("patient", "site", "protocol")
    for course in overdue:
        day = expansion_day(received_at=course.lab_received_at, at=now, zone=zone)
        raised += alert_raise(
            kind=AlertKind.EXPANSION_OVERDUE,
            severity=Severity.URGENT,
            course=course,
            condition_key=f"expansion_overdue.c{course.pk}.{course.lab_received_at:%Y%m%d}",
            message=f"The expansion of {course.coi_id} is on day {day} and not "
            f"released; release was due by day {last_day}.",
        )[1]
    booking_days = protocol.transplant_booking_max_days
    unbooked = TreatmentCourse.objects.filter(
        site=site,
        protocol=protocol,
        state=CourseState.RELEASED,
        released_at__lt=now - dt.timedelta(days=booking_days),
    ).select_related("patient", "site", "protocol")
    for course in unbooked:
        released_on = timezone.localdate(course.released_at, zone)
        raised += alert_raise(
            kind=AlertKind.TRANSPLANT_NOT_BOOKED,
            course=course,
            condition_key=f"transplant_not_booked.c{course.pk}.{course.released_at:%Y%m%d}",
            message=f"The product {course.coi_id} was released on {date_words(released_on)} and no "
            f"transplant is booked after {booking_days} days.",
        )[1]
    return raised
