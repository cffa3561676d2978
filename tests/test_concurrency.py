"""Two people pressing the same button at the same moment: exactly one wins."""

import threading

import pytest
from django.db import connection
from django_fsm import ConcurrentTransition

from pathway import services
from pathway.models import TransitionLog, TreatmentCourse
from pathway.states import CourseState

# serialized_rollback brings back the rows data migrations made (groups, default protocol).
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def race(course_id, *attempts):
    """Run each attempt(course) in its own thread and connection, all starting together."""
    barrier = threading.Barrier(len(attempts))
    outcomes = [None] * len(attempts)

    def run(index, attempt):
        try:
            course = TreatmentCourse.objects.select_related("patient", "site", "protocol").get(
                pk=course_id
            )
            barrier.wait(timeout=10)
            attempt(course)
            outcomes[index] = "won"
        except ConcurrentTransition:
            outcomes[index] = "lost"
        except Exception as error:  # reported below, so a surprise fails the test
            outcomes[index] = repr(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


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
