"""Two people pressing the same button at the same moment: exactly one wins."""

import pytest
from django_fsm import ConcurrentTransition

from pathway import services
from pathway.models import TransitionLog, TreatmentCourse
from pathway.states import CourseState
from tests.support import run_together

# serialized_rollback brings back the rows data migrations made (groups, default protocol).
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def race(course_id, *attempts):
    return run_together([(course_id, attempt) for attempt in attempts])


def test_the_same_transition_twice_at_once(course, coordinator, clinician):
    services.course_start_evaluation(course=course, by=coordinator)
    outcomes = race(
        course.pk,
        lambda c: services.course_approve(course=c, by=clinician),
        lambda c: services.course_approve(course=c, by=clinician),
    )
    assert sorted(outcomes) == ["lost", "won"]
    assert TreatmentCourse.objects.get(pk=course.pk).state == CourseState.ELIGIBLE
    assert TransitionLog.objects.filter(course=course, transition="approve").count() == 1


def test_two_different_transitions_from_the_same_state(course, coordinator, clinician):
    services.course_start_evaluation(course=course, by=coordinator)
    outcomes = race(
        course.pk,
        lambda c: services.course_approve(course=c, by=clinician),
        lambda c: services.course_decline(course=c, by=clinician, reason="Changed mind"),
    )
    assert sorted(outcomes) == ["lost", "won"]
    fresh = TreatmentCourse.objects.get(pk=course.pk)
    winner = "approve" if outcomes[0] == "won" else "decline"
    assert (
        fresh.state == {"approve": CourseState.ELIGIBLE, "decline": CourseState.INELIGIBLE}[winner]
    )
    assert list(
        TransitionLog.objects.filter(course=course).values_list("transition", flat=True)
    ) == [
        "start_evaluation",
        winner,
    ]


def test_a_stale_page_cannot_overwrite_a_newer_state(course, coordinator, clinician):
    services.course_start_evaluation(course=course, by=coordinator)
    stale = TreatmentCourse.objects.get(pk=course.pk)
    services.course_decline(course=course, by=clinician, reason="Not a candidate")
    with pytest.raises(ConcurrentTransition):
        services.course_approve(course=stale, by=clinician)
    # The stale copy is brought up to date, not left half-changed.
    assert stale.state == CourseState.INELIGIBLE
    assert TreatmentCourse.objects.get(pk=course.pk).state == CourseState.INELIGIBLE


def test_chain_of_identity_ids_issued_at_once_are_unique(pathway, coordinator):
    from pathway.services import course_create
    from tests.factories import (
        ChestCTFactory,
        ClinicalAssessmentFactory,
        LungFunctionTestFactory,
        PatientFactory,
    )

    courses = []
    for _ in range(4):
        patient = PatientFactory()
        for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
            factory(patient=patient, taken_on=pathway.at(0).date())
        course = course_create(patient=patient, by=coordinator)
        pathway.advance(course, CourseState.HARVEST_SCHEDULED)
        courses.append(course)
    performed_at = pathway.at(2)

    def harvest(course):
        services.course_record_harvest(
            course=course,
            by=pathway.clinician,
            performed_at=performed_at,
            operator=pathway.clinician,
        )

    outcomes = run_together([(course.pk, harvest) for course in courses])
    assert outcomes == ["won"] * 4
    ids = list(TreatmentCourse.objects.values_list("coi_id", flat=True))
    assert len(set(ids)) == 4 and all(ids)
