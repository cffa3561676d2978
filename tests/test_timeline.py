import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from common.zones import date_words, local_words
from pathway import services
from pathway.states import CourseState
from patients.models import SixMinuteWalkTest
from reporting.dashboard import site_dashboard
from reporting.timeline import StepStatus, course_timeline
from scheduling.models import VisitKind, VisitStatus
from scheduling.services import visit_record_done
from tests.factories import SiteFactory, UserFactory

pytestmark = pytest.mark.django_db


def steps_of(course, now=None):
    timeline = course_timeline(course=course, now=now)
    return {step.name: step for step in timeline.steps}, timeline


def test_a_new_referral_shows_every_step_ahead_and_its_next_action(course):
    steps, timeline = steps_of(course)
    assert list(steps) == [
        "Referral",
        "Evaluation",
        "Harvest",
        "Expansion",
        "Release",
        "Transplant",
        "4-week lung function",
        "12-week lung function",
        "24-week lung function",
        "6-month chest CT",
        "Completion",
    ]
    assert steps["Referral"].status == StepStatus.DONE
    assert {steps[name].status for name in list(steps)[1:]} == {StepStatus.UPCOMING}
    assert steps["4-week lung function"].detail == "4 weeks after the transplant, ± 7 days"
    assert timeline.next_action == "Start the evaluation."


def test_a_booked_harvest_is_due_then_overdue_once_its_day_has_passed(course, pathway):
    pathway.advance(course, CourseState.HARVEST_SCHEDULED)
    harvest_day = timezone.localdate(pathway.at(2), course.site.time_zone)
    steps, timeline = steps_of(course, now=pathway.at(1))
    assert steps["Harvest"].status == StepStatus.DUE
    assert steps["Harvest"].when == f"booked for {date_words(harvest_day)}"
    assert steps["Evaluation"].status == StepStatus.DONE
    assert timeline.next_action == f"Record the harvest (booked for {date_words(harvest_day)})."

    steps, timeline = steps_of(course, now=pathway.at(4))
    assert steps["Harvest"].status == StepStatus.OVERDUE
    assert timeline.next_action_overdue


def test_an_expansion_counts_its_days_and_turns_red_after_its_window(course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    received_on = timezone.localdate(pathway.at(2.9), course.site.time_zone)
    window = (
        f"release window {date_words(received_on + dt.timedelta(days=21))} – "
        f"{date_words(received_on + dt.timedelta(days=35))}"
    )

    steps, timeline = steps_of(course, now=pathway.on_expansion_day(course, 10))
    assert steps["Expansion"].status == StepStatus.CURRENT
    assert steps["Expansion"].detail == "day 10 of 21–35 days"
    assert steps["Release"].status == StepStatus.UPCOMING and steps["Release"].when == window
    assert timeline.next_action == f"Record QC and release the batch ({window})."

    steps, _ = steps_of(course, now=pathway.on_expansion_day(course, 21))
    assert steps["Release"].status == StepStatus.DUE

    steps, timeline = steps_of(course, now=pathway.on_expansion_day(course, 36))
    assert steps["Expansion"].status == StepStatus.OVERDUE
    assert steps["Release"].status == StepStatus.OVERDUE
    assert timeline.next_action_overdue and "day 36 of 21–35 days" in timeline.next_action


def test_a_released_product_must_be_booked_within_the_protocols_days(course, pathway):
    pathway.advance(course, CourseState.RELEASED)
    # The alert's own deadline, to the minute, in the site's zone.
    book_by = local_words(course.released_at + dt.timedelta(days=14), course.site.time_zone)
    steps, timeline = steps_of(course, now=pathway.at(32))
    assert steps["Release"].status == StepStatus.DONE
    # Days in the site's calendar, receipt to release: 28 or 29, by the time of day it runs.
    zone = course.site.time_zone
    days = (
        timezone.localdate(pathway.at(31), zone) - timezone.localdate(pathway.at(2.9), zone)
    ).days
    assert steps["Expansion"].detail == f"{days} days (21–35 days)"
    assert steps["Transplant"] == steps["Transplant"].__class__(
        "Transplant", StepStatus.DUE, f"book by {book_by}"
    )
    assert timeline.next_action == f"Schedule the transplant (book by {book_by})."
    steps, timeline = steps_of(course, now=pathway.at(46))
    assert steps["Transplant"].status == StepStatus.OVERDUE and timeline.next_action_overdue


def test_follow_ups_appear_with_their_windows_after_the_transplant(course, pathway):
    pathway.advance(course, CourseState.FOLLOW_UP)
    zone = course.site.time_zone
    transplanted_on = timezone.localdate(pathway.at(33), zone)
    four_weeks = transplanted_on + dt.timedelta(weeks=4)
    window = (
        f"window {date_words(four_weeks - dt.timedelta(days=7))} – "
        f"{date_words(four_weeks + dt.timedelta(days=7))}"
    )

    steps, timeline = steps_of(course)
    assert steps["Transplant"].status == StepStatus.DONE
    assert steps["Transplant"].when == date_words(transplanted_on)
    assert steps["4-week lung function"].status == StepStatus.UPCOMING
    assert steps["4-week lung function"].when == window
    assert timeline.next_action == f"Record the 4-week lung function ({window})."

    steps, timeline = steps_of(course, now=pathway.at(33 + 28 + 8))
    assert steps["4-week lung function"].status == StepStatus.OVERDUE
    assert timeline.next_action_overdue

    visit = course.visits.get(kind=VisitKind.FOLLOW_UP, protocol_visit__weeks_after_transplant=4)
    with time_machine.travel(pathway.at(33 + 28), tick=False):
        walk = SixMinuteWalkTest.objects.create(
            patient=course.patient, visit=visit, taken_on=timezone.localdate(), distance_m=320
        )
        visit_record_done(visit=visit, measurement=walk)
    steps, timeline = steps_of(course, now=pathway.at(33 + 29))
    assert steps["4-week lung function"].status == StepStatus.DONE
    assert timeline.next_action.startswith("Record the 12-week lung function")


def test_a_withdrawn_course_strikes_out_what_it_did_not_reach(course, pathway, coordinator):
    pathway.advance(course, CourseState.EXPANDING)
    services.course_withdraw(course=course, by=coordinator, reason="Patient moved away")
    steps, timeline = steps_of(course)
    assert steps["Harvest"].status == StepStatus.DONE
    assert steps["Release"].status == StepStatus.SKIPPED
    assert steps["Completion"].status == StepStatus.SKIPPED
    assert timeline.next_action.startswith("None: the course was withdrawn on ")


def test_the_course_page_shows_the_timeline_in_constant_queries(client, course, pathway):
    client.force_login(pathway.coordinator)
    url = reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
    page = client.get(url).content.decode()
    assert "Pathway at a glance" in page and "Next:</strong> Start the evaluation." in page
    assert "pathway/admin.css" in page

    pathway.advance(course, CourseState.FOLLOW_UP)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url).content.decode()
    assert page.count('class="step step-') == 11
    assert "step step-done" in page and "Record the 4-week lung function" in page
    timeline_queries = [
        q["sql"]
        for q in queries
        if '"pathway_transitionlog"' in q["sql"] and '"transition" IN' in q["sql"]
    ]
    assert len(timeline_queries) == 1


def test_the_timeline_costs_two_queries_once_the_follow_ups_exist(
    course, pathway, django_assert_num_queries
):
    pathway.advance(course, CourseState.FOLLOW_UP)
    loaded = type(course).objects.select_related("site", "protocol").get(pk=course.pk)
    with django_assert_num_queries(2):
        course_timeline(course=loaded)


def test_the_course_list_shows_state_badges(client, course, pathway):
    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:pathway_treatmentcourse_changelist")).content.decode()
    assert '<span class="state-badge state-referred">Referred</span>' in page


def test_the_dashboard_counts_batches_in_expansion(course, pathway):
    [row] = site_dashboard(sites=[course.site])
    assert row["batches_in_expansion"] == 0
    pathway.advance(course, CourseState.EXPANDING)
    [row] = site_dashboard(sites=[course.site])
    assert row["batches_in_expansion"] == 1


def test_after_a_failed_batch_the_harvest_is_due_again_not_done(course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    first_harvest = timezone.localdate(pathway.at(2), course.site.time_zone)
    with time_machine.travel(pathway.at(10), tick=False):
        services.course_fail_qc(course=course, by=pathway.lab, reason="Sterility positive")
    steps, timeline = steps_of(course, now=pathway.at(10))
    assert steps["Harvest"].status == StepStatus.UPCOMING
    assert (
        steps["Harvest"].detail == f"again: the sample of {date_words(first_harvest)} was not used"
    )
    assert timeline.next_action == "Schedule the harvest bronchoscopy."

    with time_machine.travel(pathway.at(11), tick=False):
        services.course_schedule_harvest(
            course=course, by=pathway.coordinator, scheduled_at=pathway.at(15), place="Suite 1"
        )
    second_harvest = timezone.localdate(pathway.at(15), course.site.time_zone)
    steps, timeline = steps_of(course, now=pathway.at(12))
    assert steps["Harvest"].status == StepStatus.DUE
    assert timeline.next_action == f"Record the harvest (booked for {date_words(second_harvest)})."
    steps, timeline = steps_of(course, now=pathway.at(17))
    assert steps["Harvest"].status == StepStatus.OVERDUE and timeline.next_action_overdue


def test_the_booking_deadline_is_the_alerts_to_the_minute(course, pathway):
    pathway.advance(course, CourseState.RELEASED)
    deadline = course.released_at + dt.timedelta(days=14)
    steps, _ = steps_of(course, now=deadline)
    assert steps["Transplant"].status == StepStatus.DUE
    steps, _ = steps_of(course, now=deadline + dt.timedelta(minutes=1))
    assert steps["Transplant"].status == StepStatus.OVERDUE


def test_a_planned_follow_up_is_due_and_a_booked_one_is_booked(course, pathway):
    pathway.advance(course, CourseState.FOLLOW_UP)
    steps, _ = steps_of(course)
    four_weeks = course.visits.get(protocol_visit__weeks_after_transplant=4)
    local_day = timezone.localdate(four_weeks.scheduled_at, course.site.time_zone)
    assert four_weeks.status == VisitStatus.PLANNED
    assert steps["4-week lung function"].detail == f"due {date_words(local_day)}"
    four_weeks.status = VisitStatus.BOOKED
    four_weeks.save()
    steps, _ = steps_of(course)
    assert steps["4-week lung function"].detail == f"booked for {date_words(local_day)}"


def test_the_patient_list_shows_each_patients_latest_course_state(client, course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:patients_patient_changelist")).content.decode()
    assert '<span class="state-badge state-expanding">Expanding</span>' in page

    moved_to = SiteFactory(code="NEW", staff=[])
    course.patient.site = moved_to
    course.patient.save()
    newcomer = UserFactory(username="newcomer", role="coordinator", sites=[moved_to])
    client.force_login(newcomer)
    listing = client.get(reverse("admin:patients_patient_changelist"))
    assert [p.pk for p in listing.context["cl"].result_list] == [course.patient.pk]
    assert "state-expanding" not in listing.content.decode()
    filtered = client.get(
        reverse("admin:patients_patient_changelist"), {"course_state": "expanding"}
    )
    assert list(filtered.context["cl"].result_list) == []
