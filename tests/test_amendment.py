"""A protocol amendment moves every open follow-up and its reminders, the same way the
one-course path does."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from pathway.amendments import follow_ups_recompute
from pathway.states import CourseState
from scheduling.models import Notification, NotificationStatus, Visit
from scheduling.services import visit_reschedule

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
    twelve = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    booked_at = dt.datetime.combine(
        twelve.window_opens_on + dt.timedelta(days=2), dt.time(10), tzinfo=ZoneInfo("Europe/London")
    )
    visit_reschedule(visit=twelve, scheduled_at=booked_at)
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
    # A booked follow-up keeps the time the patient was given.
    twelve.refresh_from_db()
    assert twelve.scheduled_at == booked_at
    # The reminders are those the one-course path writes for the new times.
    from scheduling.services import reminders_cancel, reminders_schedule

    after_sql = pending(course)
    reminders_cancel(visits=Visit.objects.filter(course=course))
    for v in Visit.objects.filter(course=course, kind="follow_up"):
        reminders_schedule(visit=v)
    assert pending(course) == after_sql and after_sql


def test_an_amendment_moves_an_infusion_courses_follow_ups_from_the_infusion(msc, msc_site):
    """An MSC course's follow-ups count from the infusion the protocol names: an amended
    schedule moves them from it, as a transplant course's move from the transplant."""
    msc.lot(msc_site)
    course = msc.advance(msc.course(msc_site), CourseState.FOLLOW_UP)
    protocol = course.protocol
    protocol.visits.filter(weeks_after_transplant=12).update(weeks_after_transplant=13)
    assert follow_ups_recompute(protocol=protocol) == 4
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=13)
    infused_on = course.follow_up_anchor_on
    assert infused_on == course.first_infused_on
    due = infused_on + dt.timedelta(weeks=13)
    assert (visit.window_opens_on, visit.window_closes_on) == (
        due - dt.timedelta(days=14),
        due + dt.timedelta(days=14),
    )
