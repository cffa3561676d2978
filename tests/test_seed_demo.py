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
    # Every kind reporting/worklist.py makes, but "measure" (a follow-up booked for today or
    # the last three days, not yet measured): whether one is there depends on a follow-up's
    # window being open on the day the demo is loaded.
    every_kind = {
        # each state's next step
        "decide",
        "harvest",
        "receive",
        "transplant",
        "allocate",
        "infusion",
        "next_infusion",
        # the lab's batches and lots
        "qc",
        "release",
        "lot_qc",
        "lot_release",
        # the product's and the units' journey, and the bedside
        "shipped_to_site",
        "received_at_site",
        "units_shipped",
        "units_received",
        "record_transplant",
        "record_infusion",
        # the visits and the patients
        "confirm",
        "follow_up",
        "overdue",
        "request",
        "alert",
        # the front door
        "enquiry",
        "consultation",
    }
    assert every_kind - rows == set(), f"not in the demo: {sorted(every_kind - rows)}"
    from enquiries.models import Consultation, ConsultationMode, Enquiry

    assert Enquiry.objects.count() == 3
    assert Consultation.objects.filter(mode=ConsultationMode.VIDEO).exists()
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


def test_the_demos_msc_site_runs_its_day_in_the_admin(client):
    """Staff who belong to the MSC site alone see none of the P63+ pathway, and work its day
    through the admin: approve, allocate, book (the next dose of a 4-dose course too), the
    lot's QC and a release signed by a second lab user, then each booked dose's units sent,
    received and infused."""
    import datetime as dt
    import html
    import re

    import time_machine
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.urls import reverse

    from common.passwords import DEMO_PASSWORD
    from pathway.models import CellBankLot, LotStatus, ProductUnit, UnitStatus
    from reporting.worklist import worklist
    from scheduling.models import VisitKind, VisitStatus
    from tests.conftest import LOT_QC, VITALS

    S = CourseState
    p63_rows = {"harvest", "receive", "transplant", "qc", "release", "received_at_site"}
    p63_rows |= {"record_transplant"}
    site = Site.objects.get(code="MAD")
    zone = site.time_zone
    courses = TreatmentCourse.objects.filter(site=site)

    def split(prefix, moment):
        local = timezone.localtime(moment, zone)
        return {f"{prefix}_0": local.date().isoformat(), f"{prefix}_1": local.strftime("%H:%M")}

    def member(name, role, coordinator=False):
        user = get_user_model()(username=name, is_staff=True, first_name=name)
        user.set_password(DEMO_PASSWORD)
        user.save()
        user.groups.add(Group.objects.get(name=role))
        (site.coordinators if coordinator else site.members).add(user)
        return user

    def rows(user):
        return {item.key.split(".")[0] for item in worklist(user=user, sites=[site])}

    def step(name, course):
        return reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, name])

    coord = member("mad_coord", "coordinator", coordinator=True)
    clin, clin2 = member("mad_clin", "clinician"), member("mad_clin2", "clinician")
    lab, lab2 = member("mad_lab", "lab"), member("mad_lab2", "lab")
    for user in (coord, clin, lab, lab2):
        assert not rows(user) & p63_rows, (user.username, rows(user) & p63_rows)
        client.force_login(user)
        assert client.get(reverse("admin:index")).status_code == 200
    assert {"allocate", "infusion", "next_infusion", "alert"} <= rows(coord)
    assert "decide" in rows(clin)

    # Every MSC course page opens and offers no P63+ step.
    client.force_login(coord)
    for course in courses:
        url = reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
        page = html.unescape(client.get(url).content.decode())
        buttons = set(re.findall(r'name="_fsm_transition_to" value="(\w+)"', page))
        assert not buttons & {"schedule_harvest", "record_harvest", "release"}, buttons
        assert not buttons & {"schedule_transplant", "record_transplant"}, buttons
        assert "Book the harvest" not in page

    # The clinician approves; the coordinator allocates and books.
    client.force_login(clin)
    [evaluating] = courses.filter(state=S.EVALUATION)
    client.post(step("approve", evaluating), {"note": ""})
    evaluating.refresh_from_db()
    assert evaluating.state == S.ELIGIBLE
    client.force_login(coord)
    for course in courses.filter(state=S.ELIGIBLE):
        client.post(step("allocate_product", course), {"note": ""})
        course.refresh_from_db()
        assert course.state == S.PRODUCT_ALLOCATED
    for course in courses.filter(state__in=[S.PRODUCT_ALLOCATED, S.INFUSED]):
        form = client.get(step("schedule_infusion", course)).context["transition_form"]
        chain = form.fields["chain"].widget.choices[0][0]
        place = form.fields["place"].initial
        client.post(step("schedule_infusion", course), {"chain": chain, "place": place})
        course.refresh_from_db()
        assert course.state == S.INFUSION_SCHEDULED

    # The lab enters a lot's QC; another lab user signs the release waiting.
    client.force_login(lab)
    new = CellBankLot.objects.get(lot_number="BM-2026-07")
    qc = {n: str(v) for n, v in LOT_QC.items() if not isinstance(v, bool)}
    qc |= {"sterility_negative": "true", "mycoplasma_negative": "true"}
    response = client.post(reverse("admin:pathway_cellbanklot_change", args=[new.pk]), qc)
    assert response.status_code == 302
    client.force_login(lab2)
    waiting = CellBankLot.objects.get(lot_number="UC-2026-05")
    client.post(
        reverse("admin:pathway_cellbanklot_release", args=[waiting.pk]),
        {"release": "1", "password": DEMO_PASSWORD, "meaning": "Released"},
    )
    waiting.refresh_from_db()
    assert waiting.status == LotStatus.RELEASED
    stock = client.get(
        reverse("admin:pathway_cellbanklot_changelist") + f"?site__id__exact={site.pk}"
    )
    assert stock.status_code == 200 and "UC-2026-05" in stock.content.decode()

    # Each booked dose: its units sent and received, labels scanned; then the bedside.
    given = 0
    on_the_way = [UnitStatus.ALLOCATED, UnitStatus.SHIPPED, UnitStatus.RECEIVED]
    for course in courses.filter(state=S.INFUSION_SCHEDULED).order_by("pk"):
        booked = course.visits.get(kind=VisitKind.INFUSION, status=VisitStatus.BOOKED)
        units = list(
            ProductUnit.objects.filter(course=course, status__in=on_the_way).order_by("unit_id")
        )
        units = [unit for unit in units if unit.infusion_id == units[0].infusion_id]
        for who, name, before, after in (
            (lab, "units_shipped", UnitStatus.ALLOCATED, UnitStatus.SHIPPED),
            (coord, "units_received", UnitStatus.SHIPPED, UnitStatus.RECEIVED),
        ):
            if not any(unit.status == before for unit in units):
                continue
            with time_machine.travel(booked.scheduled_at - dt.timedelta(hours=3), tick=False):
                client.force_login(who)
                url = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, name])
                scanned = "\n".join(unit.unit_id for unit in units)
                data = {"scanned_unit_ids": scanned, "location": "Day unit"}
                data |= {"temperature_c": "-160"} | split("at", timezone.now())
                assert client.post(url, data).status_code == 302
            for unit in units:
                unit.refresh_from_db()
                assert unit.status == after
        start = booked.scheduled_at + dt.timedelta(minutes=15)
        with time_machine.travel(start + dt.timedelta(hours=2), tick=False):
            client.force_login(clin)
            assert "Record the infusion" in html.unescape(
                client.get(reverse("admin:index")).content.decode()
            )
            weight = course.patient.bodymeasurements.order_by("-taken_on").first().weight_kg
            cells = int(course.protocol.dose_target_million_per_kg * weight * 1_000_000)
            vitals = {
                f"{moment}_{name}": str(value)
                for moment in ("before", "during", "after")
                for name, value in VITALS.items()
            }
            client.post(
                step("record_infusion", course),
                {
                    "scanned_unit_ids": "\n".join(unit.unit_id for unit in units),
                    "scanned_coi_id": course.coi_id,
                    **split("thawed_at", start - dt.timedelta(minutes=30)),
                    **split("started_at", start),
                    "cells_given": str(cells),
                    "weight_kg": str(weight),
                    "weighed_on": timezone.localdate(start, zone).isoformat(),
                    **vitals,
                    "second_person": clin2.pk,
                    "second_person_password": DEMO_PASSWORD,
                },
            )
            course.refresh_from_db()
            assert course.state in (S.INFUSED, S.FOLLOW_UP), course.pk
            given += 1
    assert given >= 4
