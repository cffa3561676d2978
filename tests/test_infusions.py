"""The MSC infusion pathway, step by step through its services: allocation from a released
lot, the infusion chair's chain, the bedside checks, the doses' loop and the follow-up."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from pathway import services
from pathway.models import (
    CellBankLot,
    CustodyKind,
    LotStatus,
    ProductUnit,
    TransitionLog,
    TreatmentCourse,
    UnitStatus,
)
from pathway.services import TransitionRefused
from pathway.states import CourseState as S
from patients.models import AdverseEvent
from scheduling.models import (
    Alert,
    AlertKind,
    DeviationKind,
    ProtocolDeviation,
    Reservation,
    ReservationPurpose,
    Visit,
    VisitKind,
    VisitStatus,
)
from tests.conftest import vital_signs
from tests.support import chair_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def stocked(msc, msc_site):
    """An MSC site with a released lot of six 100 × 10⁶-cell units in stock."""
    return msc_site, msc.lot(msc_site)


@pytest.fixture
def msc_course(msc, stocked):
    site, _lot = stocked
    return msc.course(site)


def test_the_happy_path_of_one_dose(msc, msc_course):
    course = msc.advance(msc_course, S.FOLLOW_UP)
    assert course.coi_id and course.coi_id.startswith("MAD")
    assert course.doses_given == 1 and course.first_infused_at == course.last_infused_at
    assert course.follow_ups_from == course.first_infused_at
    assert list(
        TransitionLog.objects.filter(course=course).values_list("transition", flat=True)
    ) == [
        "start_evaluation",
        "approve",
        "allocate_product",
        "schedule_infusion",
        "record_infusion",
    ]
    [unit] = ProductUnit.objects.filter(course=course)
    assert unit.status == UnitStatus.INFUSED
    assert list(unit.custody_events.values_list("kind", flat=True)) == [
        CustodyKind.ALLOCATED,
        CustodyKind.SHIPPED_TO_SITE,
        CustodyKind.RECEIVED_AT_SITE,
        CustodyKind.THAWED,
        CustodyKind.ADMINISTERED,
    ]
    assert set(unit.custody_events.values_list("coi_id", flat=True)) == {course.coi_id}
    infusion = course.infusions.get()
    assert {v.timepoint for v in infusion.vital_signs.all()} == {"before", "during", "after"}
    weeks = sorted(
        Visit.objects.filter(course=course, kind=VisitKind.FOLLOW_UP).values_list(
            "protocol_visit__weeks_after_transplant", flat=True
        )
    )
    assert weeks == [4, 12, 24, 26]


@pytest.mark.parametrize(
    "state, expected",
    [
        (S.ELIGIBLE, {"allocate_product", "hold", "withdraw"}),
        (S.PRODUCT_ALLOCATED, {"schedule_infusion", "hold", "withdraw"}),
        (S.INFUSION_SCHEDULED, {"record_infusion", "hold", "withdraw"}),
        (S.FOLLOW_UP, {"complete", "hold", "withdraw"}),
    ],
)
def test_an_msc_course_is_offered_only_its_own_steps(msc, msc_course, state, expected):
    msc.advance(msc_course, state)
    assert {t.name for t in msc_course.get_available_state_transitions()} == expected


def test_a_p63_step_is_refused_on_an_msc_course_with_its_reason(msc, msc_course):
    msc.advance(msc_course, S.ELIGIBLE)
    with pytest.raises(TransitionRefused) as refused:
        services.course_schedule_harvest(
            course=msc_course,
            by=msc.coordinator,
            scheduled_at=timezone.now() + dt.timedelta(days=3),
            place="Suite",
        )
    assert refused.value.reasons == [
        "This course follows MSC infusion, standard (MSC): “Schedule harvest” is a step of the "
        "P63+ pathway only."
    ]
    assert TreatmentCourse.objects.get(pk=msc_course.pk).state == S.ELIGIBLE


def test_an_msc_step_is_refused_on_a_p63_course_with_its_reason(course, pathway):
    pathway.advance(course, S.ELIGIBLE)
    with pytest.raises(TransitionRefused) as refused:
        services.course_allocate_product(course=course, by=pathway.coordinator)
    assert refused.value.reasons == [
        "This course follows P63+ progenitor cells, standard (P63+): “Allocate product” is a "
        "step of the MSC pathway only."
    ]
    assert {t.name for t in course.get_available_state_transitions()} == {
        "schedule_harvest",
        "hold",
        "withdraw",
    }


def test_msc_eligibility_applies_its_own_rules(msc, msc_site):
    """No CT and no bronchoscopy fitness asked; an infusion fitness that is not recorded fails."""
    course = msc.course(msc_site)
    msc.advance(course, S.EVALUATION)
    course.patient.clinicalassessments.update(fit_for_infusion=None)
    with pytest.raises(TransitionRefused) as refused:
        services.course_approve(course=course, by=msc.clinician)
    assert refused.value.reasons == [
        f"The assessment of {_day_words(course)} does not say whether the patient is fit for an "
        "intravenous infusion."
    ]
    course.patient.clinicalassessments.update(fit_for_infusion=True)
    services.course_approve(course=course, by=msc.clinician)
    rules = [
        row["rule"] for row in course.transition_logs.get(transition="approve").data["checklist"]
    ]
    assert "Emphysema on CT" not in rules and "Fit for bronchoscopy" not in rules
    assert "Fit for an intravenous infusion" in rules


def _day_words(course):
    from common.zones import date_words

    return date_words(course.patient.clinicalassessments.first().taken_on)


def test_the_dose_takes_units_by_weight_and_cells_per_unit(msc, msc_site):
    msc.lot(msc_site, number="SMALL", units=10, cells_per_unit=30_000_000)
    course = msc.advance(msc.course(msc_site), S.PRODUCT_ALLOCATED)
    units = ProductUnit.objects.filter(course=course)
    # 1 × 10⁶/kg at 70 kg is 70 × 10⁶ cells: three units of 30 × 10⁶.
    assert units.count() == 3 and {u.lot.lot_number for u in units} == {"SMALL"}


def test_allocation_is_refused_from_an_unreleased_or_expired_lot(msc, msc_site):
    from pathway.lots import lot_receive

    with time_machine.travel(msc.at(-5), tick=False):
        lot_receive(
            by=msc.lab,
            lot_number="QUAR",
            protocol=msc.protocol(),
            site=msc_site,
            bank="Bank",
            tissue_source="umbilical_cord",
            donor_code="D1",
            donor_eligibility_accepted_by="Dr B",
            donor_eligibility_accepted_on=msc.at(-30).date(),
            passage=3,
            units_received=4,
            cells_per_unit=100_000_000,
            expires_on=msc.at(300).date(),
            storage_temperature_c=Decimal(-180),
            received_at=timezone.now(),
        )
    expired = msc.lot(msc_site, number="OLD")
    CellBankLot.objects.filter(pk=expired.pk).update(expires_on=msc.at(0.1).date())
    course = msc.advance(msc.course(msc_site), S.ELIGIBLE)
    with time_machine.travel(msc.at(0.2), tick=False), pytest.raises(TransitionRefused) as refused:
        services.course_allocate_product(course=course, by=msc.coordinator)
    assert (
        "No released lot of MSC infusion, standard at Madrid Infusion Unit expires after"
        in (refused.value.reasons[0])
    )
    assert course.state == S.ELIGIBLE and not ProductUnit.objects.filter(course=course).exists()
    assert not course.infusions.exists()


def test_a_unit_past_expiry_at_the_bedside_is_refused(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    lot = ProductUnit.objects.get(course=msc_course).lot
    CellBankLot.objects.filter(pk=lot.pk).update(expires_on=msc.at(1).date())
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course)
    assert any(f"Lot {lot.lot_number} expired on" in r for r in refused.value.reasons)
    assert msc_course.state == S.INFUSION_SCHEDULED


def test_a_unit_from_a_lot_no_longer_released_is_refused(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    lot = ProductUnit.objects.get(course=msc_course).lot
    CellBankLot.objects.filter(pk=lot.pk).update(status=LotStatus.QUARANTINE)
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course)
    assert any("its units may not be given" in r for r in refused.value.reasons)


def test_a_label_mismatch_blocks_the_infusion_and_alerts(msc, msc_course, stocked):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    other = ProductUnit.objects.filter(status=UnitStatus.FREE).first()
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course, scanned_unit_ids=[other.unit_id])
    assert refused.value.by_field["scanned_unit_ids"][0].startswith(
        "The unit labels scanned do not match the units allocated to this dose"
    )
    assert msc_course.state == S.INFUSION_SCHEDULED
    [alert] = Alert.objects.filter(course=msc_course, kind=AlertKind.COI_MISMATCH)
    assert other.unit_id in alert.message and alert.severity == "urgent"
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course, scanned_coi_id="MAD26-999999-X")
    assert "scanned_coi_id" in refused.value.by_field


def test_thaw_to_infusion_over_the_limit_needs_a_reason(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    with time_machine.travel(msc.at(2.1), tick=False):
        started = timezone.now() - dt.timedelta(hours=1)
        late = {"started_at": started, "thawed_at": started - dt.timedelta(minutes=150)}
        with pytest.raises(TransitionRefused) as refused:
            msc.infuse(msc_course, **late)
        assert refused.value.by_field["thaw_delay_reason"] == [
            "The infusion started 150 minutes after thaw; the protocol allows 120. Give the "
            "reason (a protocol deviation), or correct the times."
        ]
        assert msc_course.state == S.INFUSION_SCHEDULED
        msc.infuse(msc_course, **late, thaw_delay_reason="Cannula resited twice")
    assert msc_course.state == S.FOLLOW_UP
    [deviation] = ProtocolDeviation.objects.filter(course=msc_course)
    assert deviation.kind == DeviationKind.THAW_TO_INFUSION
    assert deviation.reason == "Cannula resited twice"


def test_more_cells_than_the_units_held_are_refused(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course, cells_given=120_000_000, weight_kg=Decimal(90))
    assert refused.value.by_field["cells_given"] == [
        "120.0 × 10⁶ cells is more than the units held (100.0 × 10⁶): check the count."
    ]


def test_a_dose_outside_the_range_per_kg_is_refused(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course, cells_given=30_000_000)
    assert refused.value.by_field["cells_given"] == [
        "The dose is 0.429 × 10⁶ cells/kg for 70 kg; the protocol allows 0.5–2 × 10⁶/kg."
    ]


def test_units_not_received_at_the_site_are_refused(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course)
    assert any("received at Madrid Infusion Unit" in r for r in refused.value.reasons)


def test_vital_signs_are_required_and_possible(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    signs = vital_signs(after_heart_rate_bpm=400)
    del signs["during"]["spo2_pct"]
    with time_machine.travel(msc.at(2.1), tick=False), pytest.raises(TransitionRefused) as refused:
        msc.infuse(msc_course, vital_signs=signs)
    assert refused.value.by_field["after_heart_rate_bpm"] == [
        "Heart rate must be between 20 /min and 250 /min; 400 /min was entered."
    ]
    assert refused.value.by_field["during_spo2_pct"] == ["Record the SpO2 (%) during the infusion."]


def test_a_serious_infusion_reaction_alerts_the_clinicians_at_once(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    with time_machine.travel(msc.at(2.1), tick=False):
        msc.infuse(
            msc_course,
            reaction_grade=3,
            reaction_serious=True,
            reaction_description="Rigors and fever 39.1 °C at 40 minutes",
        )
    [event] = AdverseEvent.objects.filter(course=msc_course)
    assert event.grade == 3 and event.visit.kind == VisitKind.INFUSION
    [alert] = Alert.objects.filter(course=msc_course, kind=AlertKind.INFUSION_REACTION)
    assert alert.severity == "urgent" and "Rigors" in alert.message
    recipients = set(alert.notifications.values_list("user__username", flat=True))
    assert {"coordinator", "clinician", "clinician2"} <= recipients


def test_withdrawing_returns_units_never_thawed_to_stock(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    [unit] = ProductUnit.objects.filter(course=msc_course)
    services.course_withdraw(course=msc_course, by=msc.coordinator, reason="Moved away")
    unit.refresh_from_db()
    assert (unit.status, unit.course) == (UnitStatus.FREE, None)
    assert unit.custody_events.last().kind == CustodyKind.RETURNED_TO_STOCK


# Several doses, as one chain in the infusion chair.


def four_doses(msc):
    return msc.protocol(dose_count=4, dose_interval_days=28, follow_up_anchor="last")


def test_four_doses_four_weeks_apart_are_booked_as_one_chain(msc, msc_site):
    four_doses(msc)
    msc.lot(msc_site)
    long_ago = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=120))
    course = long_ago.course(msc_site)
    first = long_ago.at(2).replace(hour=8, minute=0, second=0)
    first = timezone.localtime(first, msc_site.time_zone).replace(hour=10, minute=0, second=0)
    chair_for(msc_site)
    long_ago.advance(course, S.PRODUCT_ALLOCATED)
    with time_machine.travel(long_ago.at(0.3), tick=False):
        services.course_schedule_infusion(
            course=course, by=msc.coordinator, scheduled_at=first, place="Day unit"
        )
    held = list(
        Reservation.objects.filter(
            course=course, purpose=ReservationPurpose.INFUSION, released_at__isnull=True
        ).order_by("starts_at")
    )
    local = [timezone.localtime(r.starts_at, msc_site.time_zone) for r in held]
    assert [(t.date() - local[0].date()).days for t in local] == [0, 28, 56, 84]
    assert {t.time() for t in local} == {dt.time(10)}
    assert [r.visit_id is not None for r in held] == [True, False, False, False]
    # Only the booked dose is told to the patient.
    assert Visit.objects.filter(course=course, kind=VisitKind.INFUSION).count() == 1


def test_a_slip_of_dose_two_moves_doses_three_and_four(msc, msc_site):
    from scheduling.services import visit_reschedule

    four_doses(msc)
    msc.lot(msc_site)
    now = timezone.now().replace(microsecond=0)
    path = msc.starting(now - dt.timedelta(days=20))
    course = path.course(msc_site)
    first = timezone.localtime(path.at(2), msc_site.time_zone).replace(hour=10, minute=0, second=0)
    chair_for(msc_site)
    path.advance(course, S.PRODUCT_ALLOCATED)
    with time_machine.travel(path.at(0.3), tick=False):
        services.course_schedule_infusion(
            course=course, by=msc.coordinator, scheduled_at=first, place="Day unit"
        )
    path.deliver_units(course, 2)
    with time_machine.travel(first + dt.timedelta(hours=2), tick=False):
        path.infuse(course, started_at=first + dt.timedelta(minutes=20))
    assert course.state == S.INFUSED
    held = Reservation.objects.filter(
        course=course,
        purpose=ReservationPurpose.INFUSION,
        released_at__isnull=True,
        starts_at__gt=timezone.now(),
    ).order_by("starts_at")
    dose_two = first + dt.timedelta(days=28)
    assert [r.starts_at for r in held] == [dose_two + dt.timedelta(days=28 * n) for n in range(3)]
    # Dose 2 booked in its held slot, then slips by two days: 3 and 4 follow.
    services.course_schedule_infusion(
        course=course, by=msc.coordinator, scheduled_at=dose_two, place="Day unit"
    )
    assert ProductUnit.objects.filter(course=course, status=UnitStatus.ALLOCATED).count() == 1
    visit = Visit.objects.get(course=course, kind=VisitKind.INFUSION, status=VisitStatus.BOOKED)
    slipped = dose_two + dt.timedelta(days=2)
    visit_reschedule(visit=visit, scheduled_at=slipped, by=msc.coordinator)
    held = Reservation.objects.filter(
        course=course,
        purpose=ReservationPurpose.INFUSION,
        released_at__isnull=True,
        starts_at__gt=timezone.now(),
    ).order_by("starts_at")
    assert [timezone.localtime(r.starts_at, msc_site.time_zone) for r in held] == [
        timezone.localtime(slipped + dt.timedelta(days=28 * n), msc_site.time_zone)
        for n in range(3)
    ]


def test_a_chain_with_a_dose_not_free_is_refused_whole(msc, msc_site):
    four_doses(msc)
    msc.lot(msc_site)
    path = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=1))
    course = path.course(msc_site)
    first = timezone.localtime(timezone.now() + dt.timedelta(days=3), msc_site.time_zone).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    chair = chair_for(msc_site)
    from scheduling.models import ResourceClosure

    third = (first + dt.timedelta(days=56)).date()
    ResourceClosure.objects.create(resource=chair, first_day=third, last_day=third, reason="Audit")
    path.advance(course, S.PRODUCT_ALLOCATED)
    with pytest.raises(TransitionRefused) as refused:
        services.course_schedule_infusion(
            course=course, by=msc.coordinator, scheduled_at=first, place="Day unit"
        )
    assert refused.value.reasons[0].startswith("Dose 3, ")
    assert course.state == S.PRODUCT_ALLOCATED
    assert not Reservation.objects.filter(course=course, released_at__isnull=True).exists()
    assert not Visit.objects.filter(course=course, status=VisitStatus.BOOKED).exists()


def test_follow_ups_count_from_the_last_dose_when_the_protocol_says(msc, msc_site):
    four_doses(msc)
    msc.lot(msc_site)
    path = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=100))
    course = path.advance(path.course(msc_site), S.INFUSED)
    assert course.doses_given == 1
    path.advance(course, S.FOLLOW_UP)
    assert course.doses_given == 4
    assert ProductUnit.objects.filter(course=course, status=UnitStatus.INFUSED).count() == 4
    four_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    last = timezone.localdate(course.last_infused_at, msc_site.time_zone)
    assert four_weeks.window_opens_on == last + dt.timedelta(weeks=4, days=-7)
    assert course.follow_up_anchor_at == course.last_infused_at != course.first_infused_at


def test_follow_ups_count_from_the_first_dose_by_default(msc, msc_site):
    msc.protocol(dose_count=2, dose_interval_days=14)
    msc.lot(msc_site)
    path = msc.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=60))
    course = path.advance(path.course(msc_site), S.FOLLOW_UP)
    four_weeks = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    first = timezone.localdate(course.first_infused_at, msc_site.time_zone)
    assert four_weeks.window_opens_on == first + dt.timedelta(weeks=4, days=-7)


# A unit thawed and not given, and the reading an hour after.


def _thaw(msc, course, at):
    from pathway.custody import units_custody_record, units_on_their_way

    with time_machine.travel(at, tick=False):
        return units_custody_record(
            course=course,
            kind=CustodyKind.THAWED,
            by=msc.clinician,
            scanned_unit_ids=[
                u.unit_id for u in units_on_their_way(course=course, kind=CustodyKind.THAWED)
            ],
            at=timezone.now(),
            location=course.site.name,
        )


def test_a_unit_thawed_and_not_given_is_discarded_when_the_course_is_withdrawn(
    msc, msc_course, stocked
):
    _site, lot = stocked
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    [event] = _thaw(msc, msc_course, msc.at(2) - dt.timedelta(minutes=20))
    [unit] = ProductUnit.objects.filter(course=msc_course)
    assert unit.status == UnitStatus.THAWED and event.unit == unit
    free = lot.units.filter(status=UnitStatus.FREE).count()
    with time_machine.travel(msc.at(2), tick=False):
        services.course_withdraw(course=msc_course, by=msc.coordinator, reason="Fever at the unit")
    unit.refresh_from_db()
    assert unit.status == UnitStatus.DISCARDED and unit.course == msc_course
    last = unit.custody_events.last()
    assert last.kind == CustodyKind.DISCARDED and "thawed, not given" in last.note
    assert lot.units.filter(status=UnitStatus.FREE).count() == free


def test_units_thawed_before_the_bedside_are_given_at_their_recorded_thaw(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    thawed = msc.at(2) - dt.timedelta(minutes=20)
    _thaw(msc, msc_course, thawed)
    with time_machine.travel(msc.at(2) + dt.timedelta(hours=2), tick=False):
        started = msc.at(2)
        with pytest.raises(TransitionRefused) as refused:
            msc.infuse(msc_course, started_at=started, thawed_at=thawed - dt.timedelta(minutes=30))
        assert "The units' thaw is recorded at" in refused.value.by_field["thawed_at"][0]
        msc.infuse(msc_course, started_at=started, thawed_at=thawed)
    msc_course.refresh_from_db()
    assert msc_course.state == S.FOLLOW_UP
    [unit] = ProductUnit.objects.filter(course=msc_course)
    assert unit.status == UnitStatus.INFUSED
    assert unit.custody_events.filter(kind=CustodyKind.THAWED).count() == 1


def test_the_vital_signs_after_are_an_hour_after_the_start(msc, msc_course):
    msc.advance(msc_course, S.INFUSION_SCHEDULED)
    msc.deliver_units(msc_course, 2)
    with time_machine.travel(msc.at(2) + dt.timedelta(minutes=40), tick=False):
        with pytest.raises(TransitionRefused) as refused:
            msc.infuse(msc_course, started_at=msc.at(2))
        [words] = refused.value.by_field["started_at"]
        assert words.startswith("The vital signs after are taken 60 minutes after")
    with time_machine.travel(msc.at(2) + dt.timedelta(minutes=60), tick=False):
        msc.infuse(msc_course, started_at=msc.at(2))
    msc_course.refresh_from_db()
    assert msc_course.state == S.FOLLOW_UP


# The protocol's therapy and defaults.


def test_a_protocol_keeps_its_therapy_once_courses_follow_it(msc, msc_course):
    from django.core.exceptions import ValidationError

    protocol = msc_course.protocol
    protocol.therapy = "p63"
    with pytest.raises(ValidationError) as refused:
        protocol.full_clean()
    assert "its therapy cannot change" in refused.value.message_dict["therapy"][0]
    unused = services.protocol_create(name="Not yet used", therapy="msc")
    unused.therapy = "p63"
    unused.full_clean()  # no course follows it yet


def test_a_new_msc_protocol_takes_specs_dose_unless_given_its_own():
    protocol = services.protocol_create(
        name="MSC high", therapy="msc", dose_target_million_per_kg=Decimal("1.50")
    )
    assert (
        protocol.dose_min_million_per_kg,
        protocol.dose_max_million_per_kg,
        protocol.dose_target_million_per_kg,
    ) == (Decimal("0.50"), Decimal("2.00"), Decimal("1.50"))
    assert protocol.visits.exists()
    assert {v.patient_description for v in protocol.visits.filter(includes_ct=False)} == {
        "breathing tests and a blood test"
    }
