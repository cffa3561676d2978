"""Helpers more than one test module uses, other than servers (those are in servers.py)."""

import threading

from django.db import connection
from django.forms.models import model_to_dict
from django_fsm import ConcurrentTransition

from pathway.models import TransitionLog, TreatmentCourse
from scheduling.models import Visit


def run_together(jobs):
    """Run each (course id, attempt) in its own thread and connection, all starting together.

    Returns per job "won", "lost" (ConcurrentTransition) or the unexpected error."""
    barrier = threading.Barrier(len(jobs))
    outcomes = [None] * len(jobs)

    def run(index, course_id, attempt):
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

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def snapshot(course):
    """Everything stored about a course, its log and its visits, fresh from the database."""
    fresh = TreatmentCourse.objects.get(pk=course.pk)
    return (
        model_to_dict(fresh) | {"state": fresh.state, "state_changed_at": fresh.state_changed_at},
        list(TransitionLog.objects.filter(course=course).values_list("id", flat=True)),
        list(Visit.objects.filter(course=course).values_list("id", "status")),
    )
