import itertools

import pytest
from django.core.management import call_command

from pathway.models import TreatmentCourse
from pathway.states import CourseState
from patients.models import Patient

pytestmark = pytest.mark.django_db


def test_the_demo_covers_every_state_and_loads_once(capsys):
    call_command("seed_demo")
    assert set(TreatmentCourse.objects.values_list("state", flat=True)) == set(CourseState.values)
    assert Patient.objects.count() == 40
    call_command("seed_demo")
    assert Patient.objects.count() == 40
    assert "already loaded" in capsys.readouterr().out


def test_demo_histories_are_consistent(capsys):
    call_command("seed_demo")
    for course in TreatmentCourse.objects.prefetch_related("transition_logs"):
        logs = list(course.transition_logs.all())
        states = [CourseState.REFERRED] + [log.target_state for log in logs]
        assert states[-1] == course.state
        assert all(a.target_state == b.source_state for a, b in itertools.pairwise(logs))
        assert [log.at for log in logs] == sorted(log.at for log in logs)
