import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from delivery.messages import notification_message
from pathway import services
from pathway.states import CourseState
from scheduling.models import Channel, Notification, NotificationStatus, Visit, VisitKind
from scheduling.rules import after_quiet_hours, reminder_time
from scheduling.services import visit_reschedule
from scheduling.windows import follow_up_slot

pytestmark = pytest.mark.django_db

LONDON, NEW_YORK = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")


def local(zone, *args):
    return dt.datetime(*args, tzinfo=zone)


def book_harvest(course, pathway, at):
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course, by=pathway.coordinator, scheduled_at=at, place="Suite 2"
    )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def pending(visit):
    return list(
        Notification.objects.filter(visit=visit, status=NotificationStatus.PENDING)
        .order_by("send_after", "channel")
        .values_list("channel", "send_after")
    )


def test_booking_writes_a_reminder_per_lead_time_and_consented_channel(course, pathway):
    with time_machine.travel(local(LONDON, 2026, 6, 1, 12), tick=False):
        path = pathway.starting(timezone.now() - dt.timedelta(days=1))
        at = local(LONDON, 2026, 6, 11, 14, 30)
        visit = book_harvest(course, path, at)
    assert pending(visit) == [
        ("email", local(LONDON, 2026, 6, 4, 14, 30)),
        ("sms", local(LONDON, 2026, 6, 4, 14, 30)),
        ("email", local(LONDON, 2026, 6, 10, 14, 30)),
        ("sms", local(LONDON, 2026, 6, 10, 14, 30)),
    ]


def test_only_consented_channels_get_reminders(course, pathway):
    course.patient.consent_sms = False
    course.patient.save()
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=10))
    assert {channel for channel, _ in pending(visit)} == {Channel.EMAIL}


def test_reminders_already_past_are_not_written(course, pathway):
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=3))
    assert len(pending(visit)) == 2  # only the 1-day reminders


def test_an_sms_in_the_patients_quiet_hours_waits_for_their_morning(course, pathway):
    """The site is in London, the patient in New York: 10:00 in London is 05:00 for them."""
    course.patient.time_zone = "America/New_York"
    course.patient.save()
    with time_machine.travel(local(LONDON, 2026, 6, 1, 9), tick=False):
        pathway = pathway.starting(timezone.now() - dt.timedelta(days=1))
        visit = book_harvest(course, pathway, local(LONDON, 2026, 6, 20, 10))
    by_channel = {}
    for channel, send_after in pending(visit):
        by_channel.setdefault(channel, []).append(send_after)
    assert by_channel[Channel.EMAIL][-1] == local(LONDON, 2026, 6, 19, 10)
    assert by_channel[Channel.SMS][-1] == local(NEW_YORK, 2026, 6, 19, 8)  # 13:00 in London


def test_quiet_hours_across_midnight():
    start, end = dt.time(21), dt.time(8)
    evening = local(LONDON, 2026, 3, 28, 22, 30)
    assert after_quiet_hours(evening, zone=LONDON, start=start, end=end) == local(
        LONDON, 2026, 3, 29, 8
    )
    early = local(LONDON, 2026, 3, 29, 6)
    assert after_quiet_hours(early, zone=LONDON, start=start, end=end) == local(
        LONDON, 2026, 3, 29, 8
    )
    noon = local(LONDON, 2026, 3, 29, 12)
    assert after_quiet_hours(noon, zone=LONDON, start=start, end=end) == noon


def test_a_reminder_keeps_the_appointments_clock_time_across_dst():
    appointment = local(LONDON, 2026, 4, 2, 10)  # BST
    assert reminder_time(appointment_at=appointment, lead_days=7, zone=LONDON) == local(
        LONDON, 2026, 3, 26, 10
    )


def test_follow_ups_across_a_dst_change_keep_their_local_time(course, pathway):
    # Transplant at 10:00 GMT on 1 March 2026; British Summer Time starts on 29 March.
    path = pathway.starting(local(LONDON, 2026, 1, 27, 10))
    path.advance(course, CourseState.FOLLOW_UP)
    assert timezone.localtime(course.transplanted_at, LONDON) == local(LONDON, 2026, 3, 1, 10)
    four_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    assert timezone.localtime(four_weeks.scheduled_at, LONDON).time() == dt.time(10)
    assert four_weeks.scheduled_at == dt.datetime(2026, 3, 29, 9, tzinfo=dt.UTC)


def test_a_transplant_on_29_february_gets_correct_windows(course, pathway):
    path = pathway.starting(local(LONDON, 2028, 1, 27, 10))
    path.advance(course, CourseState.FOLLOW_UP)
    assert timezone.localdate(course.transplanted_at, LONDON) == dt.date(2028, 2, 29)
    windows = {
        v.protocol_visit.weeks_after_transplant: (v.window_opens_on, v.window_closes_on)
        for v in Visit.objects.filter(course=course, kind=VisitKind.FOLLOW_UP)
    }
    assert windows == {
        4: (dt.date(2028, 3, 21), dt.date(2028, 4, 4)),
        12: (dt.date(2028, 5, 9), dt.date(2028, 6, 6)),
        24: (dt.date(2028, 8, 1), dt.date(2028, 8, 29)),
        26: (dt.date(2028, 8, 15), dt.date(2028, 9, 12)),
    }


def test_follow_up_slot_in_a_zone_ahead_of_utc():
    shanghai = ZoneInfo("Asia/Shanghai")
    # 01:00 on 2 March in Shanghai is still 1 March in UTC: the local date counts.
    slot = follow_up_slot(
        transplanted_at=local(shanghai, 2026, 3, 2, 1), zone=shanghai, weeks_after=4, window_days=7
    )
    assert (slot.window_opens_on, slot.window_closes_on) == (
        dt.date(2026, 3, 23),
        dt.date(2026, 4, 6),
    )


def test_moving_a_transplant_moves_the_follow_ups_and_their_reminders(course, pathway):
    pathway.advance(course, CourseState.FOLLOW_UP)
    four_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    old_window, old_reminders = four_weeks.window_closes_on, set(pending(four_weeks))
    assert old_reminders
    transplant = Visit.objects.get(course=course, kind=VisitKind.TRANSPLANT)
    moved_to = transplant.scheduled_at + dt.timedelta(days=3)

    visit_reschedule(visit=transplant, scheduled_at=moved_to)

    four_weeks.refresh_from_db()
    course.refresh_from_db()
    assert course.transplanted_at == moved_to
    assert four_weeks.window_closes_on == old_window + dt.timedelta(days=3)
    new_reminders = set(pending(four_weeks))
    assert {at for _, at in new_reminders} == {at + dt.timedelta(days=3) for _, at in old_reminders}
    assert Notification.objects.filter(
        visit=four_weeks, status=NotificationStatus.CANCELLED
    ).count() == len(old_reminders)


def test_moving_a_booked_harvest_moves_its_reminders(course, pathway):
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=10))
    visit_reschedule(visit=visit, scheduled_at=visit.scheduled_at + dt.timedelta(days=2))
    assert all(
        at.date() >= (timezone.now() + dt.timedelta(days=4)).date() for _, at in pending(visit)
    )
    assert (
        Notification.objects.filter(visit=visit, status=NotificationStatus.CANCELLED).count() == 4
    )


def test_withdrawing_a_course_cancels_its_pending_reminders(course, pathway, coordinator):
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=10))
    assert pending(visit)
    services.course_withdraw(course=course, by=coordinator, reason="Moved away")
    assert pending(visit) == []
    assert (
        Notification.objects.filter(visit=visit, status=NotificationStatus.CANCELLED).count() == 4
    )


def test_patient_messages_hold_no_diagnosis_or_treatment(course, pathway):
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=10))
    for notification in Notification.objects.filter(visit=visit):
        message = notification_message(notification)
        text = f"{message.subject} {message.text} {message.html}".lower()
        assert course.patient.first_name.lower() in text and "suite 2" in text
        for word in ("copd", "cell", "stem", "transplant", "harvest", "bronch", "lung", "therapy"):
            assert word not in text, (word, notification.channel)
        if notification.channel == Channel.SMS:
            assert len(message.text) <= 160


def test_moving_a_visit_away_and_back_revives_its_reminders(course, pathway):
    visit = book_harvest(
        course, pathway, timezone.now().replace(microsecond=0) + dt.timedelta(days=10)
    )
    original, before = visit.scheduled_at, pending(visit)
    visit_reschedule(visit=visit, scheduled_at=original + dt.timedelta(days=1))
    visit_reschedule(visit=visit, scheduled_at=original)
    assert pending(visit) == before
    assert Notification.objects.filter(visit=visit).count() == 8  # 4 revived, 4 cancelled


def test_changing_only_the_place_keeps_the_reminders(course, pathway):
    visit = book_harvest(course, pathway, timezone.now() + dt.timedelta(days=10))
    before = pending(visit)
    visit_reschedule(visit=visit, scheduled_at=visit.scheduled_at, place="Suite 9")
    visit.refresh_from_db()
    assert visit.place == "Suite 9" and pending(visit) == before
    assert not Notification.objects.filter(
        visit=visit, status=NotificationStatus.CANCELLED
    ).exists()


def test_a_course_on_hold_sends_no_reminders_until_it_resumes(course, pathway, coordinator):
    visit = book_harvest(
        course, pathway, timezone.now().replace(microsecond=0) + dt.timedelta(days=10)
    )
    before = pending(visit)
    services.course_hold(course=course, by=coordinator, reason="In hospital")
    assert pending(visit) == []
    services.course_resume(course=course, by=coordinator)
    assert pending(visit) == before
