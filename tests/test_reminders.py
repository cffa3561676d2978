import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from common.errors import Refused
from delivery.messages import notification_message
from pathway import services
from pathway.states import CourseState
from patients.models import ClinicHours
from scheduling.models import (
    Channel,
    DeviationKind,
    Notification,
    NotificationStatus,
    ProtocolDeviation,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.rules import after_quiet_hours, reminder_time
from scheduling.services import visit_book_again, visit_mark_missed, visit_reschedule
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


def _book(visit, day_offset=0, hour=10, **kwargs):
    """Book a follow-up at `hour` o'clock, site time, `day_offset` days into its window."""
    zone = visit.course.site.time_zone
    at = dt.datetime.combine(
        visit.window_opens_on + dt.timedelta(days=day_offset), dt.time(hour), tzinfo=zone
    )
    return visit_reschedule(visit=visit, scheduled_at=at, **kwargs)


def test_moving_a_transplant_moves_the_follow_ups_windows_and_the_booked_ones_reminders(
    course, pathway, coordinator
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    four_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    twelve_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    _book(twelve_weeks, day_offset=3, by=coordinator)
    twelve_weeks.refresh_from_db()
    booked_at, old_reminders = twelve_weeks.scheduled_at, set(pending(twelve_weeks))
    old_twelve_window = twelve_weeks.window_closes_on
    assert old_reminders and pending(four_weeks) == []
    due_at, old_window = four_weeks.scheduled_at, four_weeks.window_closes_on
    transplant = Visit.objects.get(course=course, kind=VisitKind.TRANSPLANT)
    moved_to = transplant.scheduled_at + dt.timedelta(days=3)

    visit_reschedule(visit=transplant, scheduled_at=moved_to)

    four_weeks.refresh_from_db()
    twelve_weeks.refresh_from_db()
    course.refresh_from_db()
    assert course.transplanted_at == moved_to
    # The one only due moves with its window and still tells the patient nothing.
    assert four_weeks.window_closes_on == old_window + dt.timedelta(days=3)
    assert four_weeks.scheduled_at == due_at + dt.timedelta(days=3)
    assert pending(four_weeks) == []
    # The booked one keeps the time the patient was given, and its reminders.
    assert twelve_weeks.scheduled_at == booked_at
    assert twelve_weeks.window_closes_on == old_twelve_window + dt.timedelta(days=3)
    assert set(pending(twelve_weeks)) == old_reminders


def test_a_follow_up_nobody_booked_tells_the_patient_nothing_and_booking_it_does(
    course, pathway, coordinator
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    follow_ups = Visit.objects.filter(course=course, kind=VisitKind.FOLLOW_UP)
    assert {v.status for v in follow_ups} == {VisitStatus.PLANNED}
    assert not Notification.objects.filter(visit__in=follow_ups).exists()
    twelve_weeks = follow_ups.get(protocol_visit__weeks_after_transplant=12)
    _book(twelve_weeks, day_offset=2, by=coordinator)
    twelve_weeks.refresh_from_db()
    assert twelve_weeks.status == VisitStatus.BOOKED
    assert len(pending(twelve_weeks)) == 4  # 7 days and 1 day before, by email and SMS


def test_booking_outside_the_window_needs_a_reason_logged_as_a_deviation(
    course, pathway, coordinator
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    late = (visit.window_closes_on - visit.window_opens_on).days + 1
    with pytest.raises(Refused, match="outside the visit's window"):
        _book(visit, day_offset=late, by=coordinator)
    visit.refresh_from_db()
    assert visit.status == VisitStatus.PLANNED and pending(visit) == []
    _book(visit, day_offset=late, by=coordinator, deviation_reason="Patient abroad until then")
    [deviation] = ProtocolDeviation.objects.filter(visit=visit)
    assert (deviation.kind, deviation.by) == (DeviationKind.OUTSIDE_WINDOW, coordinator)
    assert deviation.reason == "Patient abroad until then"


def test_booking_outside_clinic_hours_is_refused_or_needs_a_reason(course, pathway, coordinator):
    pathway.advance(course, CourseState.FOLLOW_UP)
    for weekday in range(5):
        ClinicHours.objects.create(
            site=course.site, weekday=weekday, opens_at=dt.time(8), closes_at=dt.time(17)
        )
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    zone = course.site.time_zone
    day = next(
        visit.window_opens_on + dt.timedelta(days=n)
        for n in range(7)
        if (visit.window_opens_on + dt.timedelta(days=n)).weekday() == 2  # a Wednesday
    )
    evening = dt.datetime.combine(day, dt.time(19, 30), tzinfo=zone)
    with pytest.raises(Refused, match="outside the clinic's hours"):
        visit_reschedule(visit=visit, scheduled_at=evening, by=coordinator)
    visit_reschedule(
        visit=visit, scheduled_at=dt.datetime.combine(day, dt.time(16, 59), tzinfo=zone)
    )
    visit.refresh_from_db()
    assert visit.status == VisitStatus.BOOKED


def test_a_follow_up_whose_window_closed_unbooked_is_marked_missed_and_booked_again(
    course, pathway, coordinator
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    with pytest.raises(Refused, match="can still take place"):
        visit_mark_missed(visit=visit, by=coordinator, reason="No answer")
    after = dt.datetime.combine(
        visit.window_closes_on + dt.timedelta(days=1), dt.time(9), tzinfo=course.site.time_zone
    )
    with time_machine.travel(after, tick=False):
        with pytest.raises(Refused, match="Give the reason"):
            visit_mark_missed(visit=visit, by=coordinator, reason=" ")
        visit_mark_missed(visit=visit, by=coordinator, reason="Patient unreachable")
        visit.refresh_from_db()
        assert (visit.status, visit.missed_reason) == (VisitStatus.MISSED, "Patient unreachable")
        with pytest.raises(Refused, match="book it again instead"):
            visit_reschedule(visit=visit, scheduled_at=after + dt.timedelta(days=2))
        again = visit_book_again(
            visit=visit,
            scheduled_at=after + dt.timedelta(days=2),
            by=coordinator,
            deviation_reason="Rebooked after a missed visit",
        )
    assert (again.status, again.protocol_visit) == (VisitStatus.BOOKED, visit.protocol_visit)
    assert pending(again)
    assert ProtocolDeviation.objects.filter(visit=again, kind=DeviationKind.OUTSIDE_WINDOW).exists()


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
            assert len(message.text) <= 3 * 153  # at most three concatenated SMS parts
            assert message.text.isascii()  # GSM-7, not UCS-2's 70 characters a part


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


def test_a_reminder_says_what_how_to_prepare_whom_to_call_and_the_time_in_the_patients_zone(
    course, pathway
):
    site = course.site
    site.name, site.patient_facing_name = "Harbour Lung Institute", "Harbour Clinic"
    site.patient_phone = "+442079460000"
    site.save()
    course.patient.time_zone = "America/New_York"
    course.patient.save()
    at = dt.datetime(2026, 6, 11, 11, tzinfo=ZoneInfo("Europe/London"))
    with time_machine.travel(dt.datetime(2026, 6, 1, 9, tzinfo=ZoneInfo("Europe/London"))):
        visit = book_harvest(course, pathway.starting(timezone.now() - dt.timedelta(days=1)), at)
    for notification in Notification.objects.filter(visit=visit):
        message = notification_message(notification)
        text = f"{message.subject} {message.text} {message.html}"
        assert "a short procedure under sedation to take a sample" in text
        assert "bring someone to take you home" in text
        assert "+44 20 7946 0000" in text and "Harbour Clinic" in text
        assert "Lung" not in text  # the site's own name discloses a diagnosis
        assert "06:00 EDT" in text  # 11:00 in London is 06:00 in New York, named


def test_a_held_or_withdrawn_course_books_nothing_and_reminds_no_one(course, pathway, coordinator):
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    services.course_hold(course=course, by=coordinator, reason="Exacerbation")
    with pytest.raises(Refused, match="on hold: no visit is booked"):
        _book(visit, day_offset=2, by=coordinator)
    assert pending(visit) == []
    services.course_resume(course=course, by=coordinator)
    visit = Visit.objects.get(pk=visit.pk)
    _book(visit, day_offset=2, by=coordinator)
    assert pending(visit)
    services.course_hold(course=course, by=coordinator, reason="Exacerbation again")
    # An amendment does not write back the reminders a hold suspended.
    from pathway.amendments import follow_ups_recompute

    follow_ups_recompute(protocol=course.protocol)
    assert pending(visit) == []


def test_a_missed_visit_is_booked_again_once_in_the_future_and_not_on_a_closed_course(
    course, pathway, coordinator
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    after = dt.datetime.combine(
        visit.window_closes_on + dt.timedelta(days=1), dt.time(9), tzinfo=course.site.time_zone
    )
    with time_machine.travel(after, tick=False):
        visit_mark_missed(visit=visit, by=coordinator, reason="No answer")
        book = {"visit": visit, "by": coordinator, "deviation_reason": "Late"}
        with pytest.raises(Refused, match="must be in the future"):
            visit_book_again(scheduled_at=after - dt.timedelta(days=30), **book)
        visit_book_again(scheduled_at=after + dt.timedelta(days=2), **book)
        with pytest.raises(Refused, match="already booked again"):
            visit_book_again(scheduled_at=after + dt.timedelta(days=3), **book)
        services.course_withdraw(course=course, by=coordinator, reason="Moved away")
        book["visit"] = Visit.objects.get(pk=visit.pk)
        with pytest.raises(Refused, match="withdrawn: no visit is booked"):
            visit_book_again(scheduled_at=after + dt.timedelta(days=3), **book)


def test_a_visit_that_took_place_is_corrected_only_within_the_record(course, pathway):
    pathway.advance(course, CourseState.FOLLOW_UP)
    transplant = Visit.objects.get(course=course, kind=VisitKind.TRANSPLANT)
    with pytest.raises(Refused, match="into the future"):
        visit_reschedule(visit=transplant, scheduled_at=timezone.now() + dt.timedelta(days=60))
    with pytest.raises(Refused, match="before the product's release"):
        visit_reschedule(visit=transplant, scheduled_at=course.released_at - dt.timedelta(days=1))
    harvest = Visit.objects.get(course=course, kind=VisitKind.HARVEST)
    with pytest.raises(Refused, match="took place cannot be moved"):
        visit_reschedule(visit=harvest, scheduled_at=harvest.scheduled_at + dt.timedelta(days=1))


def test_an_amendment_handles_a_patient_in_the_sites_own_zone(course, pathway, coordinator):
    from pathway.amendments import follow_ups_recompute

    assert not course.patient.time_zone  # the site's zone
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    _book(visit, day_offset=2, by=coordinator)
    before = pending(visit)
    assert follow_ups_recompute(protocol=course.protocol) == 4
    assert pending(visit) == before


# Bookings a patient can keep.


def test_a_harvest_inside_its_notice_is_refused_with_when_it_can_be(course, pathway):
    with time_machine.travel(local(LONDON, 2026, 6, 1, 8), tick=False):
        path = pathway.starting(timezone.now() - dt.timedelta(days=1))
        with pytest.raises(Refused) as refused:
            book_harvest(course, path, local(LONDON, 2026, 6, 1, 12))  # 4 h ahead
        assert refused.value.reasons == [
            "The harvest bronchoscopy needs 24 h notice, for the patient to prepare: book it "
            "for Tue 2 Jun 2026 08:00 BST or later."
        ]
        assert course.state == CourseState.ELIGIBLE
        assert not Visit.objects.filter(course=course, kind=VisitKind.HARVEST).exists()
        visit = book_harvest(course, path, local(LONDON, 2026, 6, 2, 9))
    assert visit.status == VisitStatus.BOOKED


def test_a_booking_too_soon_for_any_reminder_tells_the_patient_at_once(course, pathway):
    """A follow-up whose protocol asks 2 h notice, booked for this afternoon: the 7- and
    1-day reminders are past, so the patient is told now by email, and by SMS (it is day)."""
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    visit.protocol_visit.notice_hours = 2
    visit.protocol_visit.save()
    zone = course.site.time_zone
    day = visit.window_opens_on + dt.timedelta(days=2)
    with time_machine.travel(dt.datetime.combine(day, dt.time(9), tzinfo=zone), tick=False):
        visit_reschedule(
            visit=visit, scheduled_at=dt.datetime.combine(day, dt.time(14), tzinfo=zone)
        )
        now = timezone.now()
    assert pending(visit) == [("email", now), ("sms", now)]
    assert Notification.objects.filter(visit=visit, idempotency_key__contains=".booked.").count()


def test_a_booking_the_patient_could_not_be_told_of_in_time_is_refused(course, pathway):
    """SMS only, at 22:00: the text waits for 08:00, and a visit at 09:00 leaves 1 h of the
    2 h notice it needs."""
    pathway.advance(course, CourseState.FOLLOW_UP)
    course.patient.consent_email = False
    course.patient.save()
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    visit.protocol_visit.notice_hours = 2
    visit.protocol_visit.save()
    zone = course.site.time_zone
    day = visit.window_opens_on + dt.timedelta(days=2)
    evening = dt.datetime.combine(day, dt.time(22), tzinfo=zone)
    with (
        time_machine.travel(evening, tick=False),
        pytest.raises(Refused, match=r"can be texted only from .* 08:00"),
    ):
        visit_reschedule(
            visit=visit,
            scheduled_at=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(9), zone),
            deviation_reason="The patient asked for it",  # no reason excuses it
        )
    visit.refresh_from_db()
    assert visit.status == VisitStatus.PLANNED


def test_no_chain_is_offered_inside_the_harvests_notice(course, pathway):
    from pathway.chains import course_chains
    from scheduling.models import Resource, ResourceKind, ResourceSession

    pathway.advance(course, CourseState.ELIGIBLE)
    zone = course.site.time_zone
    suite = Resource.objects.create(
        name="Suite", kind=ResourceKind.BRONCHOSCOPY, site=course.site, time_zone=zone
    )
    for weekday in range(7):
        for hour in range(8, 17):  # a free slot every hour of the day
            ResourceSession.objects.create(
                resource=suite,
                weekday=weekday,
                starts_at=dt.time(hour),
                ends_at=dt.time(hour, 30),
                capacity=1,
            )
    early = dt.datetime.combine(timezone.localdate(timezone=zone), dt.time(4), tzinfo=zone)
    with time_machine.travel(early, tick=False):
        chains = course_chains(course)
        assert chains
        # Today's slots from 08:00 are free, and 4 hours away: none is offered.
        assert min(c.harvest.starts_at for c in chains) == early + dt.timedelta(hours=28)


def test_the_admin_refuses_a_harvest_inside_its_notice_beside_the_time(client, course, pathway):
    pathway.advance(course, CourseState.ELIGIBLE)
    client.force_login(pathway.coordinator)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "schedule_harvest"])
    soon = timezone.localtime(timezone.now() + dt.timedelta(hours=4), course.site.time_zone)
    response = client.post(
        url,
        {
            "scheduled_at_0": soon.date().isoformat(),
            "scheduled_at_1": soon.strftime("%H:%M"),
            "place": "Suite 2",
            "deviation_reason": "Urgent",
        },
    )
    assert response.status_code == 200
    errors = response.context["transition_form"].errors["scheduled_at"]
    assert any("needs 24 h notice" in e for e in errors), errors
    course.refresh_from_db()
    assert course.state == CourseState.ELIGIBLE


def test_an_infusion_is_reminded_in_plain_words_that_name_no_treatment(msc, msc_site):
    msc.lot(msc_site)
    path = msc.starting(timezone.now().replace(microsecond=0))
    course = path.advance(path.course(msc_site), CourseState.PRODUCT_ALLOCATED)
    services.course_schedule_infusion(
        course=course,
        by=msc.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=10),
        place="Day unit",
    )
    reminders = Notification.objects.filter(visit__course=course, visit__kind="infusion")
    assert {(n.channel, n.idempotency_key.split(".")[2]) for n in reminders} == {
        ("email", "7d"),
        ("email", "1d"),
        ("sms", "7d"),
        ("sms", "1d"),
    }
    sms = notification_message(reminders.filter(channel="sms").first()).text
    assert "a visit of about three hours at the day unit" in sms
    for word in ("infusion", "stem", "MSC", "cell", "COPD"):
        assert word.lower() not in sms.lower(), word
