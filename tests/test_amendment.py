"""A protocol amendment moves every open follow-up and its reminders, the same way the
one-course path does."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from pathway.amendments import follow_ups_recompute
from pathway.states import CourseState
from scheduling.models import Notification, NotificationStatus, Visit

pytestmark = pytest.mark.django_db


def pending(course):
    return sorted(
        Notification.objects.filter(
            visit__course=course, status=NotificationStatus.PENDING
        ).values_list("idempotency_key", "send_after")
    )


def test_an_amended_window_and_schedule_reach_every_open_follow_up(course, pathway):
    course.patient.time_zone = "America/New_York"  # quiet hours in another zone
    course.patient.save()
    pathway.advance(course, CourseState.FOLLOW_UP)
    protocol = course.protocol
    four = protocol.visits.get(weeks_after_transplant=4)
    four.weeks_after_transplant, four.window_days = 5, 3
    four.save()

    moved = follow_ups_recompute(protocol=protocol)

    assert moved == 4
    visit = Visit.objects.get(course=course, protocol_visit=four)
    assert visit.window_opens_on == course.transplanted_on + dt.timedelta(weeks=5, days=-3)
    assert visit.window_closes_on == course.transplanted_on + dt.timedelta(weeks=5, days=3)
    local = visit.scheduled_at.astimezone(ZoneInfo("Europe/London"))
    transplant_local = course.transplanted_at.astimezone(ZoneInfo("Europe/London"))
    assert (local.date(), local.time()) == (
        course.transplanted_on + dt.timedelta(weeks=5),
        transplant_local.time(),
    )
    # The reminders are those the one-course path writes for the new times.
    from scheduling.services import reminders_cancel, reminders_schedule

    after_sql = pending(course)
    reminders_cancel(visits=Visit.objects.filter(course=course))
    for v in Visit.objects.filter(course=course, kind="follow_up"):
        reminders_schedule(visit=v)
    assert pending(course) == after_sql and after_sql
