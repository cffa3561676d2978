"""Cell-bank lots: received with their certificate, QC'd against the ISCT minimal criteria and
the protocol, released by a second lab person, counted in stock, allocated one dose at a time
(two coordinators racing for the last units: one wins), and the alerts the stock raises."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from common.errors import Refused
from pathway import services
from pathway.lots import (
    lot_receive,
    lot_record_qc,
    lot_release,
    lot_release_refusals,
    stock_by_lot,
)
from pathway.models import CellBankLot, LotStatus, ProductUnit, TreatmentCourse, UnitStatus
from pathway.scans import stock_scan
from pathway.states import CourseState as S
from scheduling.models import Alert, AlertKind, Reservation, ReservationPurpose
from tests.conftest import LOT_QC, PASSWORD
from tests.support import chair_for, run_together

pytestmark = pytest.mark.django_db


def certificate(msc, site, **changes):
    return {
        "lot_number": "UC-2026-07",
        "protocol": msc.protocol(),
        "site": site,
        "bank": "Example Cord Bank",
        "tissue_source": "umbilical_cord",
        "donor_code": "D-0042",
        "donor_eligibility_accepted_by": "Dr A. Bank",
        "donor_eligibility_accepted_on": dt.date(2026, 1, 5),
        "passage": 4,
        "units_received": 3,
        "cells_per_unit": 100_000_000,
        "expires_on": timezone.localdate() + dt.timedelta(days=300),
        "storage_temperature_c": Decimal("-180"),
        "received_at": timezone.now() - dt.timedelta(hours=1),
    } | changes


def test_a_lot_is_received_with_its_certificate_and_one_unit_per_label(msc, msc_site):
    lot = lot_receive(
        by=msc.lab,
        unit_ids=["W1234 26 000001", "W1234 26 000002", "W1234 26 000003"],
        **certificate(msc, msc_site),
    )
    assert lot.status == LotStatus.QUARANTINE
    assert sorted(lot.units.values_list("unit_id", flat=True)) == [
        "W1234 26 000001",
        "W1234 26 000002",
        "W1234 26 000003",
    ]
    assert set(lot.units.values_list("status", flat=True)) == {UnitStatus.FREE}


def test_a_receipt_refuses_what_cannot_be(msc, msc_site, protocol):
    with pytest.raises(ValidationError) as invalid:
        lot_receive(
            by=msc.lab,
            unit_ids=["A", "B"],
            **certificate(msc, msc_site, cells_per_unit=5, protocol=protocol),
        )
    errors = invalid.value.message_dict
    assert errors["cells_per_unit"] == [
        "Cells per unit must be between 100,000 cells and 10,000,000,000 cells; 5 cells was "
        "entered."
    ]
    assert not CellBankLot.objects.exists()
    with pytest.raises(ValidationError) as invalid:
        lot_receive(by=msc.lab, unit_ids=["A", "B"], **certificate(msc, msc_site))
    assert invalid.value.message_dict == {"unit_ids": ["2 unit ids for 3 units: one id per unit."]}
    with pytest.raises(ValidationError) as invalid:
        lot_receive(by=msc.lab, **certificate(msc, msc_site, protocol=protocol))
    assert "gives no cell-bank product" in invalid.value.message_dict["protocol"][0]
    with pytest.raises(PermissionDenied):
        lot_receive(by=msc.coordinator, **certificate(msc, msc_site))


def test_an_unusual_value_needs_a_second_look(msc, msc_site):
    with pytest.raises(ValidationError) as invalid:
        lot_receive(by=msc.lab, **certificate(msc, msc_site, passage=14))
    assert "Passage of 14 is unusual" in invalid.value.message_dict["passage"][0]
    assert lot_receive(by=msc.lab, values_checked=True, **certificate(msc, msc_site, passage=14))


def test_the_lots_qc_refuses_an_impossible_marker(msc, msc_site):
    lot = lot_receive(by=msc.lab, **certificate(msc, msc_site))
    with pytest.raises(ValidationError) as invalid:
        lot_record_qc(lot=lot, by=msc.lab, **(LOT_QC | {"cd73_pct": Decimal(950)}))
    assert invalid.value.message_dict["cd73_pct"][0].startswith(
        "A positive marker (CD73, CD90, CD105) must be between 0% and 100%"
    )


def test_release_follows_the_isct_criteria_and_the_protocol(msc, msc_site):
    lot = lot_receive(by=msc.lab, **certificate(msc, msc_site))
    lot_record_qc(
        lot=lot,
        by=msc.lab,
        values_checked=True,
        **(LOT_QC | {"cd90_pct": Decimal("93.0"), "hla_dr_pct": Decimal("3.5")}),
    )
    assert lot_release_refusals(lot=lot) == [
        "CD90 is on 93 % of the cells; the protocol needs at least 95 %.",
        "HLA-DR is on 3.5 % of the cells; the protocol allows at most 2 %.",
    ]
    with pytest.raises(Refused) as refused:
        lot_release(lot=lot, by=msc.lab2, password=PASSWORD)
    assert refused.value.reasons == lot_release_refusals(lot=lot)
    assert CellBankLot.objects.get(pk=lot.pk).status == LotStatus.QUARANTINE


def test_release_is_signed_by_a_second_lab_person(msc, msc_site):
    lot = lot_receive(by=msc.lab, **certificate(msc, msc_site))
    lot_record_qc(lot=lot, by=msc.lab, **LOT_QC)
    with pytest.raises(Refused, match="a second lab user must sign"):
        lot_release(lot=lot, by=msc.lab, password=PASSWORD)
    with pytest.raises(Refused, match="Only a lab user allowed to release lots"):
        lot_release(lot=lot, by=msc.coordinator, password=PASSWORD)
    with pytest.raises(Refused, match="password was not accepted"):
        lot_release(lot=lot, by=msc.lab2, password="wrong")
    released = lot_release(lot=lot, by=msc.lab2, password=PASSWORD)
    assert (released.status, released.released_by) == (LotStatus.RELEASED, msc.lab2)


def test_stock_counts_free_allocated_used_discarded_and_expiring(msc, msc_site):
    soon = msc.lot(msc_site, number="SOON", units=4)
    CellBankLot.objects.filter(pk=soon.pk).update(
        expires_on=timezone.localdate() + dt.timedelta(20)
    )
    msc.lot(msc_site, number="LATER", units=2)
    course = msc.advance(msc.course(msc_site), S.FOLLOW_UP)  # one unit of SOON, infused
    other = msc.advance(msc.course(msc_site), S.PRODUCT_ALLOCATED)  # one more of SOON, held
    ProductUnit.objects.filter(lot__lot_number="LATER").filter(
        pk=ProductUnit.objects.filter(lot__lot_number="LATER").first().pk
    ).update(status=UnitStatus.DISCARDED)
    rows = {
        lot.lot_number: (lot.free, lot.allocated, lot.used, lot.discarded, lot.expiring)
        for lot in stock_by_lot(lots=CellBankLot.objects.all(), today=timezone.localdate())
    }
    # SOON expires within the protocol's 30 days: its free units are counted as expiring.
    assert rows == {"SOON": (2, 1, 1, 0, 2), "LATER": (1, 0, 0, 1, 0)}
    assert course.state == S.FOLLOW_UP and other.state == S.PRODUCT_ALLOCATED


def test_a_lot_expiring_with_units_allocated_alerts_the_lab(msc, msc_site):
    lot = msc.lot(msc_site)
    course = msc.advance(msc.course(msc_site), S.PRODUCT_ALLOCATED)
    assert stock_scan(site=msc_site, now=timezone.now()) == 0
    CellBankLot.objects.filter(pk=lot.pk).update(expires_on=timezone.localdate() + dt.timedelta(5))
    assert stock_scan(site=msc_site, now=timezone.now()) == 1
    assert stock_scan(site=msc_site, now=timezone.now()) == 0  # once
    [alert] = Alert.objects.filter(kind=AlertKind.LOT_EXPIRES_ALLOCATED)
    assert alert.course == course and "no infusion is booked" in alert.message
    recipients = set(alert.notifications.values_list("user__username", flat=True))
    assert {"lab", "lab2", "coordinator"} <= recipients and "clinician" not in recipients


def test_free_units_short_for_the_doses_held_ahead_alert(msc, msc_site):
    msc.protocol(dose_count=2, dose_interval_days=14)
    msc.lot(msc_site, units=1)
    path = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=5))
    course = path.course(msc_site)
    first = timezone.localtime(timezone.now() + dt.timedelta(days=2), msc_site.time_zone)
    first = first.replace(hour=10, minute=0, second=0, microsecond=0)
    chair_for(msc_site)
    path.advance(course, S.PRODUCT_ALLOCATED)  # the only unit
    services.course_schedule_infusion(
        course=course, by=msc.coordinator, scheduled_at=first, place="Day unit"
    )
    [dose_two] = Reservation.objects.filter(
        course=course, purpose=ReservationPurpose.INFUSION, visit__isnull=True
    )
    assert stock_scan(site=msc_site, now=timezone.now()) == 1
    [alert] = Alert.objects.filter(kind=AlertKind.STOCK_SHORT)
    assert alert.condition_key == f"stock_short.r{dose_two.pk}"
    assert "0 free unit(s) at MAD" in alert.message


# Two coordinators allocating the last units at once.


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_coordinators_allocating_the_last_units_at_once_give_one_winner(msc, msc_site):
    msc.lot(msc_site, units=1)
    courses = [msc.advance(msc.course(msc_site), S.ELIGIBLE) for _ in range(2)]

    def allocate(course):
        services.course_allocate_product(course=course, by=msc.coordinator)

    outcomes = run_together([(course.pk, allocate) for course in courses])
    assert outcomes.count("won") == 1, outcomes
    [lost] = [o for o in outcomes if o != "won"]
    assert "TransitionRefused" in lost and "No lot has the free units" in lost
    states = set(TreatmentCourse.objects.values_list("state", flat=True))
    assert states == {S.PRODUCT_ALLOCATED, S.ELIGIBLE}
    [unit] = ProductUnit.objects.all()
    assert unit.status == UnitStatus.ALLOCATED
    assert TreatmentCourse.objects.get(pk=unit.course_id).state == S.PRODUCT_ALLOCATED


def test_an_allocation_that_finds_no_units_changes_nothing(msc, msc_site):
    msc.lot(msc_site, units=1)
    first, second = (msc.advance(msc.course(msc_site), S.ELIGIBLE) for _ in range(2))
    with time_machine.travel(msc.at(0.2), tick=False):
        services.course_allocate_product(course=first, by=msc.coordinator)
        with pytest.raises(Refused, match="lot L1 has 0 free of the 1 a dose needs"):
            services.course_allocate_product(course=second, by=msc.coordinator)
    assert second.state == S.ELIGIBLE and second.coi_id is None
    assert not second.infusions.exists()
