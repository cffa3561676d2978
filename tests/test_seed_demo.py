import itertools

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from pathway.models import TreatmentCourse
from pathway.states import CourseState
from patients.models import Patient, Site

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo")]


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    """The demo, loaded once for the module (about 15 s): each test runs in a savepoint of
    the transaction that holds it, and the transaction is rolled back at the end."""
    with django_db_blocker.unblock(), transaction.atomic():
        call_command("seed_demo")
        yield
        transaction.set_rollback(True)


def test_the_demo_covers_every_state_and_loads_once(capsys):
    assert set(TreatmentCourse.objects.values_list("state", flat=True)) == set(CourseState.values)
    assert Patient.objects.count() == 40
    call_command("seed_demo")
    assert Patient.objects.count() == 40
    assert "already loaded" in capsys.readouterr().out


def test_demo_histories_are_consistent():
    for course in TreatmentCourse.objects.prefetch_related("transition_logs"):
        logs = list(course.transition_logs.all())
        states = [CourseState.REFERRED] + [log.target_state for log in logs]
        assert states[-1] == course.state
        assert all(a.target_state == b.source_state for a, b in itertools.pairwise(logs))
        assert [log.at for log in logs] == sorted(log.at for log in logs)


def test_the_demo_books_against_calendars_and_counts_every_batch_in_culture():
    from django.db.models import Sum

    from pathway.models import BatchStatus
    from scheduling.models import Reservation, ReservationPurpose, Resource, SlotHold

    assert Resource.objects.filter(kind="bronchoscopy").count() == 3
    assert Resource.objects.filter(kind="expansion", site=None).count() == 1
    held = Reservation.objects.filter(released_at__isnull=True)
    # Every place held is counted in its slot, and no slot holds more than its capacity.
    assert held.count() == SlotHold.objects.aggregate(n=Sum("held"))["n"]
    for state in (CourseState.HARVEST_SCHEDULED, CourseState.EXPANDING, CourseState.RELEASED):
        for course in TreatmentCourse.objects.filter(state=state):
            assert held.filter(course=course, purpose=ReservationPurpose.TRANSPLANT).exists()
    for course in TreatmentCourse.objects.filter(state=CourseState.HARVEST_SCHEDULED):
        assert held.filter(course=course, purpose=ReservationPurpose.EXPANSION).count() == 36
    for course in TreatmentCourse.objects.filter(
        state__in=[CourseState.WITHDRAWN, CourseState.INELIGIBLE]
    ):
        assert not held.filter(course=course, starts_at__gt=timezone.now()).exists()
    for course in TreatmentCourse.objects.filter(state=CourseState.EXPANDING):
        batch = course.batches.get(status=BatchStatus.EXPANDING)
        assert batch.cell_counts.count() >= 1


def test_the_demos_patients_are_told_where_to_go_in_their_language():
    from django.utils import translation

    from delivery.messages import visit_page_context
    from scheduling.models import Resource, Visit, VisitStatus

    staff_names = set(Resource.objects.values_list("name", flat=True))
    booked = Visit.objects.filter(status=VisitStatus.BOOKED).select_related(
        "course__patient", "course__site", "course__protocol", "protocol_visit"
    )
    assert {visit.kind for visit in booked} >= {"harvest", "transplant", "follow_up"}
    for visit in booked:
        for language in ("en", "es", "zh-hans"):
            visit.course.patient.preferred_language = language
            with translation.override(language):
                context = visit_page_context(visit)
            assert context["place"] not in staff_names and context["address"], visit.place
            assert "ronchoscop" not in context["place"] and "suite" not in context["place"]


def test_the_demo_has_patients_in_each_language():
    languages = set(Patient.objects.values_list("preferred_language", flat=True))
    assert languages == {"en", "es", "zh-hans"}


def test_the_demo_shows_every_path_of_the_worklist():
    """Each kind of row on the worklist of someone who does everything at every site, a visit
    to mark missed and a product on its way."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from pathway.models import CustodyKind
    from reporting.worklist import worklist
    from scheduling.models import Visit, VisitStatus
    from scheduling.services import visit_missed_refusals

    everyone = get_user_model().objects.create(username="everything", is_staff=True)
    everyone.groups.set(Group.objects.filter(name__in=["coordinator", "clinician", "lab"]))
    sites = list(Site.objects.all())
    rows = {item.key.split(".")[0] for item in worklist(user=everyone, sites=sites)}
    assert {
        "decide",
        "harvest",
        "receive",
        "transplant",
        "qc",
        "received_at_site",
        "confirm",
        "alert",
    } <= rows, rows
    assert "overdue" in rows, rows
    missable = [
        visit
        for visit in Visit.objects.filter(
            status=VisitStatus.BOOKED, scheduled_at__lt=timezone.now()
        )
        if not visit_missed_refusals(visit=visit)
    ]
    assert missable, "no booked visit whose time has passed"
    in_transit = TreatmentCourse.objects.filter(
        custody_events__kind=CustodyKind.SHIPPED_TO_SITE, state=CourseState.TRANSPLANT_SCHEDULED
    ).exclude(custody_events__kind=CustodyKind.RECEIVED_AT_SITE)
    assert in_transit.exists()
    assert TreatmentCourse.objects.filter(state=CourseState.ON_HOLD).exists()
