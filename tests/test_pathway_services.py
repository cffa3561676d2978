import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from pathway import services
from pathway.models import TreatmentCourse
from pathway.services import TransitionRefused
from pathway.states import CourseState
from scheduling.models import Visit, VisitKind, VisitStatus
from tests.factories import PASSWORD
from tests.support import snapshot

pytestmark = pytest.mark.django_db

S = CourseState


def available(course, user):
    return {t.name for t in course.get_available_user_state_transitions(user)}


def test_the_happy_path_logs_every_step(course, pathway, coordinator):
    pathway.advance(course, S.FOLLOW_UP)
    logs = list(course.transition_logs.values_list("transition", "source_state", "target_state"))
    assert logs == [
        ("start_evaluation", "referred", "evaluation"),
        ("approve", "evaluation", "eligible"),
        ("schedule_harvest", "eligible", "harvest_scheduled"),
        ("record_harvest", "harvest_scheduled", "harvested"),
        ("receive_at_lab", "harvested", "expanding"),
        ("release", "expanding", "released"),
        ("schedule_transplant", "released", "transplant_scheduled"),
        ("record_transplant", "transplant_scheduled", "follow_up"),
    ]
    assert all(log.by_id for log in course.transition_logs.all())


def test_record_harvest_issues_the_coi_id_once(course, pathway, expected_coi):
    pathway.advance(course, S.HARVESTED)
    assert course.coi_id == expected_coi(year=pathway.at(2).year)
    assert course.transition_logs.get(transition="record_harvest").data["coi_id"] == course.coi_id


def test_record_transplant_books_follow_ups_from_the_actual_transplant(course, pathway):
    pathway.advance(course, S.FOLLOW_UP)
    follow_ups = Visit.objects.filter(course=course, kind=VisitKind.FOLLOW_UP)
    transplant_day = timezone.localdate(course.transplanted_at, course.site.time_zone)
    due = {v.protocol_visit.weeks_after_transplant: v for v in follow_ups}
    assert sorted(due) == [4, 12, 24, 26]
    assert due[4].window_opens_on == transplant_day + dt.timedelta(weeks=4, days=-7)
    assert due[4].window_closes_on == transplant_day + dt.timedelta(weeks=4, days=7)
    assert due[12].window_closes_on == transplant_day + dt.timedelta(weeks=12, days=14)
    harvest, transplant = (
        Visit.objects.get(course=course, kind=k) for k in (VisitKind.HARVEST, VisitKind.TRANSPLANT)
    )
    assert (harvest.status, transplant.status) == (VisitStatus.DONE, VisitStatus.DONE)


def test_complete_needs_the_24_week_visit_done(course, pathway, coordinator):
    pathway.advance(course, S.FOLLOW_UP)
    before = snapshot(course)
    with pytest.raises(TransitionRefused, match="The 24-week lung function visit is not done yet"):
        services.course_complete(course=course, by=coordinator)
    assert snapshot(course) == before

    Visit.objects.filter(course=course, protocol_visit__completes_course=True).update(
        status=VisitStatus.DONE, done_at=timezone.now()
    )
    services.course_complete(course=course, by=coordinator)
    assert TreatmentCourse.objects.get(pk=course.pk).state == S.COMPLETED


def test_decline_ends_the_course(course, coordinator, clinician):
    services.course_start_evaluation(course=course, by=coordinator)
    services.course_decline(course=course, by=clinician, reason="Prefers not to proceed")
    assert course.state == S.INELIGIBLE
    assert available(course, clinician) == set()


def test_reject_sample_and_fail_qc_return_to_eligible(course, pathway, lab):
    pathway.advance(course, S.EXPANDING)
    services.course_reject_sample(course=course, by=lab, reason="Contaminated tube")
    assert course.state == S.ELIGIBLE
    pathway2 = pathway.starting(pathway.start)
    # A second harvest keeps the COI id issued by the first.
    coi = course.coi_id
    for _state, day, step in pathway2.steps(course)[2:5]:
        with time_machine.travel(pathway2.at(day), tick=False):
            step()
    assert course.state == S.EXPANDING and course.coi_id == coi
    services.course_fail_qc(course=course, by=lab, reason="Mycoplasma positive")
    assert course.state == S.ELIGIBLE


@pytest.mark.parametrize(
    "temperature, hours, reason",
    [
        ("1.9", "20", "arrived at 1.9 °C; the cold chain allows 2–8 °C"),
        ("8.1", "20", "arrived at 8.1 °C"),
        ("2", "48.5", "48.5 h in transit; the cold chain allows 48 h"),
    ],
)
def test_broken_cold_chain_rejects_the_sample(course, pathway, lab, temperature, hours, reason):
    pathway.advance(course, S.HARVESTED)
    services.course_receive_at_lab(
        course=course,
        scanned_coi_id=course.coi_id,
        by=lab,
        received_at=pathway.at(2.9),
        temperature_c=Decimal(temperature),
        transit_hours=Decimal(hours),
    )
    assert course.state == S.ELIGIBLE
    rejection = course.transition_logs.last()
    assert rejection.transition == "reject_sample" and reason in rejection.note


@pytest.mark.parametrize("temperature, hours", [("2", "48"), ("8", "0")])
def test_cold_chain_at_its_limits_is_intact(course, pathway, lab, temperature, hours):
    pathway.advance(course, S.HARVESTED)
    services.course_receive_at_lab(
        course=course,
        scanned_coi_id=course.coi_id,
        by=lab,
        received_at=pathway.at(2.9),
        temperature_c=Decimal(temperature),
        transit_hours=Decimal(hours),
    )
    assert course.state == S.EXPANDING


def test_hold_and_resume_return_to_the_state_left(course, pathway, coordinator):
    pathway.advance(course, S.EXPANDING)
    services.course_hold(course=course, by=coordinator, reason="Patient in hospital with pneumonia")
    assert course.state == S.ON_HOLD
    assert available(course, coordinator) == {"resume", "withdraw"}
    services.course_resume(course=course, by=coordinator)
    assert course.state == S.EXPANDING
    assert TreatmentCourse.objects.get(pk=course.pk).state == S.EXPANDING
    assert course.state_before_hold == ""


def test_withdraw_from_hold_cancels_open_visits(course, pathway, coordinator):
    pathway.advance(course, S.HARVEST_SCHEDULED)
    services.course_hold(course=course, by=coordinator, reason="Travelling")
    services.course_withdraw(course=course, by=coordinator, reason="Moved abroad")
    assert course.state == S.WITHDRAWN
    assert set(Visit.objects.filter(course=course).values_list("status", flat=True)) == {
        VisitStatus.CANCELLED
    }


@pytest.mark.parametrize(
    "state, expected",
    [
        (S.REFERRED, {"start_evaluation", "hold", "withdraw"}),
        (S.EVALUATION, {"approve", "decline", "hold", "withdraw"}),
        (S.ELIGIBLE, {"schedule_harvest", "hold", "withdraw"}),
        (S.HARVEST_SCHEDULED, {"record_harvest", "hold", "withdraw"}),
        (S.HARVESTED, {"receive_at_lab", "hold", "withdraw"}),
        (S.EXPANDING, {"reject_sample", "fail_qc", "release", "hold", "withdraw"}),
        (S.RELEASED, {"schedule_transplant", "hold", "withdraw"}),
        (S.TRANSPLANT_SCHEDULED, {"record_transplant", "hold", "withdraw"}),
        (S.FOLLOW_UP, {"complete", "hold", "withdraw"}),
    ],
)
def test_transitions_available_from_each_state(course, pathway, state, expected):
    pathway.advance(course, state)
    assert {t.name for t in course.get_available_state_transitions()} == expected


def test_each_role_sees_only_its_own_steps(course, pathway, coordinator, clinician, lab):
    pathway.advance(course, S.EXPANDING)
    assert available(course, coordinator) == {"hold", "withdraw"}
    assert available(course, clinician) == {"hold", "withdraw"}
    assert available(course, lab) == {"reject_sample", "fail_qc", "release"}


def test_a_step_without_permission_is_refused_and_changes_nothing(course, coordinator, lab):
    services.course_start_evaluation(course=course, by=coordinator)
    before = snapshot(course)
    with pytest.raises(PermissionDenied, match="permission to approve"):
        services.course_approve(course=course, by=lab)
    with pytest.raises(PermissionDenied):
        services.course_approve(course=course, by=coordinator)
    assert snapshot(course) == before


def test_a_step_the_state_does_not_allow_is_refused(course, lab):
    with pytest.raises(TransitionRefused, match="A course that is referred cannot release"):
        services.course_release(course=course, by=lab, password=PASSWORD)


def test_state_cannot_be_assigned(course):
    with pytest.raises(AttributeError):
        course.state = S.COMPLETED


# Guards: each failing rule says which rule, and the course is left as it was.


def test_scheduling_in_the_past_is_refused(course, pathway, coordinator):
    pathway.advance(course, S.ELIGIBLE)
    with pytest.raises(TransitionRefused, match="The harvest must be in the future"):
        services.course_schedule_harvest(
            course=course,
            by=coordinator,
            scheduled_at=timezone.now() - dt.timedelta(hours=1),
            place="A",
        )
    assert course.state == S.ELIGIBLE


def test_a_reason_is_needed_to_withdraw(course, coordinator):
    with pytest.raises(TransitionRefused, match="Give a reason to withdraw"):
        services.course_withdraw(course=course, by=coordinator, reason="  ")
    assert TreatmentCourse.objects.get(pk=course.pk).state == S.REFERRED


def test_only_a_coordinator_refers_a_patient(eligible_patient, lab):
    with pytest.raises(PermissionDenied, match="permission to refer"):
        services.course_create(patient=eligible_patient, by=lab)
    assert not TreatmentCourse.objects.exists()


def test_only_one_open_course_per_patient(course, coordinator):
    from django.db import IntegrityError, transaction

    with pytest.raises(TransitionRefused, match="already has an open treatment course"):
        services.course_create(patient=course.patient, by=coordinator)
    # The database holds the rule too, against a race past the check.
    with pytest.raises(IntegrityError), transaction.atomic():
        TreatmentCourse.objects.create(
            patient=course.patient, site=course.site, protocol=course.protocol
        )
    services.course_withdraw(course=course, by=coordinator, reason="Wrong referral")
    assert services.course_create(patient=course.patient, by=coordinator).state == S.REFERRED
