"""A clinic that gives MSC infusions, its whole day through the admin: the lab receives a lot,
enters its QC and another lab user signs its release; the coordinator allocates and books from
the worklist; the units are shipped and received, their labels scanned; the clinician records
the infusion at the bedside with a second clinician. The stock page costs the same queries for
one lot or many."""

import datetime as dt
import html
import re

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pathway.models import CellBankLot, LotStatus, ProductUnit, UnitStatus
from pathway.states import CourseState
from tests.conftest import LOT_QC, PASSWORD, VITALS
from tests.support import chair_for

pytestmark = pytest.mark.django_db


def _split(prefix: str, moment: dt.datetime, zone) -> dict:
    local = timezone.localtime(moment, zone)
    return {f"{prefix}_0": local.date().isoformat(), f"{prefix}_1": local.strftime("%H:%M")}


def _infusion_typed(msc, course, *, units: str, start, thawed_before, cells: str) -> dict:
    """The bedside form as a clinician types it: units and wristband scanned, the thaw
    `thawed_before` the start, 70 kg weighed that day, normal vital signs, a second clinician."""
    zone = course.site.time_zone
    return {
        "scanned_unit_ids": units,
        "scanned_coi_id": course.coi_id,
        **_split("thawed_at", start - thawed_before, zone),
        **_split("started_at", start, zone),
        "cells_given": cells,
        "weight_kg": "70",
        "weighed_on": timezone.localdate(start, zone).isoformat(),
        **{f"{m}_{n}": str(v) for m in ("before", "during", "after") for n, v in VITALS.items()},
        "second_person": msc.clinician2.pk,
        "second_person_password": PASSWORD,
    }


def _worklist(client) -> str:
    return html.unescape(client.get(reverse("admin:index")).content.decode())


def test_the_msc_day_end_to_end_through_the_admin(client, msc, msc_site):
    msc_site.members.add(msc.clinician2)
    zone = msc_site.time_zone
    protocol = msc.protocol()
    # The lab receives a lot with its certificate of analysis.
    client.force_login(msc.lab)
    received = timezone.now() - dt.timedelta(hours=2)
    page = client.post(
        reverse("admin:pathway_cellbanklot_add"),
        {
            "lot_number": "UC-2026-11",
            "protocol": protocol.pk,
            "site": msc_site.pk,
            "bank": "Example Cord Bank",
            "tissue_source": "umbilical_cord",
            "donor_code": "D-77",
            "donor_eligibility_accepted_by": "Dr A. Bank",
            "donor_eligibility_accepted_on": (timezone.localdate() - dt.timedelta(30)).isoformat(),
            "passage": "4",
            "units_received": "3",
            "cells_per_unit": "100000000",
            "expires_on": (timezone.localdate() + dt.timedelta(300)).isoformat(),
            "storage_temperature_c": "-180",
            **_split("received_at", received, zone),
            "unit_ids": "W0001 26 000101\nW0001 26 000102\nW0001 26 000103",
        },
    )
    assert page.status_code == 302, page.context["adminform"].form.errors
    lot = CellBankLot.objects.get(lot_number="UC-2026-11")
    assert lot.status == LotStatus.QUARANTINE and lot.units.count() == 3
    assert "Enter the lot's QC" in _worklist(client)
    # Its QC, entered on its page; an impossible marker refused beside its field.
    change = reverse("admin:pathway_cellbanklot_change", args=[lot.pk])
    qc = {name: str(value) for name, value in LOT_QC.items() if not isinstance(value, bool)}
    qc |= {"sterility_negative": "true", "mycoplasma_negative": "true"}
    refused = client.post(change, qc | {"cd73_pct": "950"})
    assert refused.status_code == 200
    assert "between 0% and 100%" in str(refused.context["adminform"].form.errors["cd73_pct"])
    assert client.post(change, qc).status_code == 302
    lot.refresh_from_db()
    assert lot.qc_recorded_by == msc.lab
    # The release is signed by the other lab user, from the worklist.
    client.force_login(msc.lab2)
    assert "Sign the lot's release" in _worklist(client)
    release = reverse("admin:pathway_cellbanklot_release", args=[lot.pk])
    assert "Every result meets the specification." in client.get(release).content.decode()
    client.post(release, {"release": "1", "password": PASSWORD, "meaning": "Released"})
    lot.refresh_from_db()
    assert (lot.status, lot.released_by) == (LotStatus.RELEASED, msc.lab2)

    # A patient approved for the MSC pathway: the coordinator allocates from the worklist.
    course = msc.starting(timezone.now().replace(microsecond=0)).course(msc_site)
    msc.starting(timezone.now() - dt.timedelta(hours=1)).advance(course, CourseState.ELIGIBLE)
    chair_for(msc_site)
    client.force_login(msc.coordinator)
    worklist = _worklist(client)
    assert "Allocate the product" in worklist and "Book the harvest" not in worklist
    course_page = client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
    ).content.decode()
    buttons = set(re.findall(r'name="_fsm_transition_to" value="(\w+)"', course_page))
    assert buttons == {"allocate_product", "hold", "withdraw"}
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "allocate_product"])
    assert "UC-2026-11" in client.get(url).content.decode()
    assert client.post(url, {"note": ""}).status_code == 302
    course.refresh_from_db()
    assert course.state == CourseState.PRODUCT_ALLOCATED and course.coi_id
    # It books the infusion: one of the chair's earliest free slots.
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "schedule_infusion"])
    form = client.get(url).context["transition_form"]
    first_choice = form.fields["chain"].widget.choices[0][0]
    response = client.post(
        url, {"chain": first_choice, "place": form.fields["place"].initial, "note": ""}
    )
    assert response.status_code == 302
    course.refresh_from_db()
    assert course.state == CourseState.INFUSION_SCHEDULED
    booked = course.visits.get(kind="infusion")

    # The units travel to the site, each label scanned: the lab sends, the site receives.
    [unit] = ProductUnit.objects.filter(course=course)
    for who, step in ((msc.lab, "units_shipped"), (msc.coordinator, "units_received")):
        with time_machine.travel(booked.scheduled_at - dt.timedelta(hours=3), tick=False):
            client.force_login(who)  # a session idle since now would have ended by then
            assert "the units" in _worklist(client).lower()
            url = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, step])
            wrong = client.post(
                url,
                {"scanned_unit_ids": "W0001 26 000199", "location": "Day unit"}
                | _split("at", timezone.now(), zone),
            )
            assert "not allocated to this dose" in str(wrong.context["transition_form"].errors)
            ok = client.post(
                url,
                {"scanned_unit_ids": unit.unit_id, "location": "Day unit"}
                | _split("at", timezone.now(), zone),
            )
            assert ok.status_code == 302
    unit.refresh_from_db()
    assert unit.status == UnitStatus.RECEIVED

    # At the bedside: the clinician records it, a second clinician confirming.
    start = booked.scheduled_at + dt.timedelta(minutes=15)
    with time_machine.travel(start + dt.timedelta(hours=2), tick=False):
        client.force_login(msc.clinician)
        assert "Record the infusion" in _worklist(client)
        url = reverse(
            "admin:pathway_treatmentcourse_transition", args=[course.pk, "record_infusion"]
        )
        page = client.get(url).content.decode()
        assert "Dose 1 of 1" in page and unit.unit_id in page
        typed = _infusion_typed(
            msc,
            course,
            units=unit.unit_id,
            start=start,
            thawed_before=dt.timedelta(minutes=40),
            cells="70000000",
        )
        response = client.post(url, typed)
    assert response.status_code == 302, response.context["transition_form"].errors
    course.refresh_from_db()
    assert course.state == CourseState.FOLLOW_UP
    assert course.infusions.get().vital_signs.count() == 3
    client.force_login(msc.coordinator)
    timeline = client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
    ).content.decode()
    assert "Infusion" in timeline and "Harvest" not in timeline


def test_a_refused_infusion_form_shows_every_error_at_once(client, msc, msc_site):
    msc.lot(msc_site)
    course = msc.advance(msc.course(msc_site), CourseState.INFUSION_SCHEDULED)
    msc.deliver_units(course, 2)
    msc_site.members.add(msc.clinician2)
    client.force_login(msc.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_infusion"])
    with time_machine.travel(msc.at(2.1), tick=False):
        start = timezone.now() - dt.timedelta(hours=1)
        typed = _infusion_typed(
            msc,
            course,
            units="NOT-THIS-ONE",
            start=start,
            thawed_before=dt.timedelta(minutes=200),
            cells="150000000",
        )
        response = client.post(url, typed)
    assert response.status_code == 200
    errors = response.context["transition_form"].errors
    assert "scanned_unit_ids" in errors and "thaw_delay_reason" in errors
    assert any("more than the units held" in e for e in errors["cells_given"])
    course.refresh_from_db()
    assert course.state == CourseState.INFUSION_SCHEDULED


def test_the_stock_page_costs_the_same_queries_for_one_lot_or_many(client, msc, msc_site):
    client.force_login(msc.lab)
    url = reverse("admin:pathway_cellbanklot_changelist")
    msc.lot(msc_site, number="ONE")
    with CaptureQueriesContext(connection) as one:
        page = client.get(url)
    assert page.status_code == 200
    for n in range(6):
        msc.lot(msc_site, number=f"MORE{n}")
    with CaptureQueriesContext(connection) as many:
        page = client.get(url)
    assert len(one) == len(many), (len(one), len(many))
    text = page.content.decode()
    assert "MORE5" in text and "expiring" in text


def test_a_coordinator_sees_the_stock_but_does_not_release_a_lot(client, msc, msc_site):
    lot = msc.lot(msc_site)
    CellBankLot.objects.filter(pk=lot.pk).update(status=LotStatus.QUARANTINE)
    client.force_login(msc.coordinator)
    assert client.get(reverse("admin:pathway_cellbanklot_changelist")).status_code == 200
    response = client.get(reverse("admin:pathway_cellbanklot_release", args=[lot.pk]))
    assert response.status_code == 403


def test_an_msc_course_page_costs_the_same_queries_for_one_dose_or_four(client, msc, msc_site):
    msc.lot(msc_site)
    one = msc.advance(msc.course(msc_site), CourseState.FOLLOW_UP)
    msc.protocol(dose_count=4, dose_interval_days=28, follow_up_anchor="last")
    path = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=100))
    four = path.advance(path.course(msc_site), CourseState.FOLLOW_UP)
    client.force_login(msc.coordinator)
    counts = []
    for course in (one, four):
        url = reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
        client.get(url)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts.append(len(queries))
    assert four.doses_given == 4 and counts[0] == counts[1], counts


def test_units_thawed_in_the_admin_and_not_given_are_discarded_on_withdrawal(client, msc, msc_site):
    from pathway.models import CustodyKind

    lot = msc.lot(msc_site)
    course = msc.advance(msc.course(msc_site), CourseState.INFUSION_SCHEDULED)
    msc.deliver_units(course, 2)
    [unit] = course.units.all()
    zone = msc_site.time_zone
    client.force_login(msc.clinician)
    url = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, "units_thawed"])
    course_page = reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
    with time_machine.travel(msc.at(2) - dt.timedelta(days=1), tick=False):
        # The day before its infusion: a thawed unit never goes back, so not yet.
        assert url not in client.get(course_page).content.decode()
        early = client.post(
            url,
            {"scanned_unit_ids": unit.unit_id, "location": "Day unit"}
            | _split("at", timezone.now(), zone),
        )
        assert "Units are thawed on the day of their infusion" in early.content.decode()
        unit.refresh_from_db()
        assert unit.status == UnitStatus.RECEIVED
    with time_machine.travel(msc.at(2) - dt.timedelta(minutes=20), tick=False):
        client.force_login(msc.clinician)  # the session of a day before has ended
        assert url in client.get(course_page).content.decode()  # offered where the units are
        thaw_form = client.get(url).content.decode()
        assert unit.unit_id in thaw_form  # waiting to be thawed
        assert "dry shipper" not in thaw_form  # out of it by now
        response = client.post(
            url,
            {"scanned_unit_ids": unit.unit_id, "location": "Day unit"}
            | _split("at", timezone.now(), zone),
        )
        assert response.status_code == 302, response.context["transition_form"].errors
    unit.refresh_from_db()
    assert unit.status == UnitStatus.THAWED
    with time_machine.travel(msc.at(2) - dt.timedelta(minutes=15), tick=False):
        assert url not in client.get(course_page).content.decode()  # none left to thaw
        bedside = reverse(
            "admin:pathway_treatmentcourse_transition", args=[course.pk, "record_infusion"]
        )
        form = client.get(bedside).context["transition_form"]
        thawed = msc.at(2) - dt.timedelta(minutes=20)
        assert form.fields["thawed_at"].initial == thawed.replace(second=0, microsecond=0)
    free = lot.units.filter(status=UnitStatus.FREE).count()
    client.force_login(msc.coordinator)
    with time_machine.travel(msc.at(2), tick=False):
        withdraw = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "withdraw"])
        response = client.post(withdraw, {"reason": "A fever before the start"})
        assert response.status_code == 302, response.context["transition_form"].errors
    course.refresh_from_db()
    unit.refresh_from_db()
    assert course.state == CourseState.WITHDRAWN
    assert unit.status == UnitStatus.DISCARDED
    assert unit.custody_events.last().kind == CustodyKind.DISCARDED
    assert lot.units.filter(status=UnitStatus.FREE).count() == free


def test_an_infusion_recorded_before_the_hour_after_is_refused_by_its_start(client, msc, msc_site):
    msc.lot(msc_site)
    course = msc.advance(msc.course(msc_site), CourseState.INFUSION_SCHEDULED)
    msc.deliver_units(course, 2)
    [unit] = course.units.all()
    msc_site.members.add(msc.clinician2)
    client.force_login(msc.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_infusion"])
    with time_machine.travel(msc.at(2) + dt.timedelta(minutes=25), tick=False):
        start = msc.at(2)
        typed = _infusion_typed(
            msc,
            course,
            units=unit.unit_id,
            start=start,
            thawed_before=dt.timedelta(minutes=30),
            cells="70000000",
        )
        response = client.post(url, typed)
    assert response.status_code == 200
    [words] = response.context["transition_form"].errors["started_at"]
    assert words.startswith("The vital signs after are taken 60 minutes after")
    course.refresh_from_db()
    assert course.state == CourseState.INFUSION_SCHEDULED
