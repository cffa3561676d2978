import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words
from pathway.conditions import EvaluationFacts, eligibility_checklist, evaluation_sources
from pathway.models import Protocol
from pathway.records import adverse_event_record, clinical_record_save
from pathway.states import CourseState
from patients.models import (
    AdverseEvent,
    BodyMeasurement,
    ChestCT,
    LungFunctionTest,
    SixMinuteWalkTest,
    SymptomScore,
)
from scheduling.models import (
    Alert,
    AlertKind,
    Notification,
    NotificationTemplate,
    ProtocolDeviation,
    Visit,
    VisitKind,
)
from scheduling.services import visit_mark_done, visit_record_done
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

LUNG = {"fev1_l": "1.20", "fev1_pct_predicted": "45", "fvc_l": "2.80"}

# (model, base values, field, just inside, just outside, message when outside)
BOUNDARIES = [
    (
        LungFunctionTest,
        LUNG | {"fvc_l": "9.00"},
        "fev1_l",
        "8.00",
        "8.01",
        "FEV1 must be between 0.10 L and 8.00 L; 8.01 L was entered.",
    ),
    (
        LungFunctionTest,
        LUNG,
        "fev1_l",
        "0.10",
        "-0.50",
        "FEV1 must be between 0.10 L and 8.00 L; -0.50 L was entered.",
    ),
    (LungFunctionTest, LUNG | {"fev1_l": "0.5"}, "fvc_l", "10.00", "10.01", "FVC must be between"),
    (
        LungFunctionTest,
        LUNG,
        "fev1_pct_predicted",
        "200",
        "200.1",
        "FEV1 % predicted must be between 1% and 200%; 200.1% was entered.",
    ),
    (
        LungFunctionTest,
        LUNG,
        "dlco_pct_predicted",
        "200",
        "200.5",
        "DLCO % predicted must be between 1% and 200%",
    ),
    (
        LungFunctionTest,
        LUNG,
        "tlc_pct_predicted",
        "1",
        "0.9",
        "TLC % predicted must be between 1% and 200%",
    ),
    (
        SixMinuteWalkTest,
        {},
        "distance_m",
        1000,
        1001,
        "Six-minute walk distance must be between 0 m and 1000 m; 1001 m was entered.",
    ),
    (SymptomScore, {"mmrc": 1}, "cat", 40, 41, "CAT must be between 0 and 40; 41 was entered."),
    (SymptomScore, {"cat": 10}, "mmrc", 4, 5, "mMRC must be between 0 and 4; 5 was entered."),
    (BodyMeasurement, {}, "weight_kg", "350", "350.1", "Weight must be between 20 kg and 350 kg"),
    (
        BodyMeasurement,
        {"weight_kg": "70"},
        "height_cm",
        "100",
        "99.9",
        "Height must be between 100 cm and 250 cm",
    ),
    (
        ChestCT,
        {"emphysema_present": True},
        "low_attenuation_pct",
        "100",
        "100.1",
        "Low-attenuation area must be between 0% and 100%",
    ),
]


def test_a_measurement_at_a_booked_harvest_leaves_the_harvest_booked(course, pathway, clinician):
    pathway.advance(course, CourseState.HARVEST_SCHEDULED)
    harvest = Visit.objects.get(course=course, kind="harvest")
    walk = SixMinuteWalkTest(
        visit=harvest, taken_on=timezone.localdate(pathway.at(0.2)), distance_m=350
    )
    clinical_record_save(record=walk, by=clinician)
    harvest.refresh_from_db()
    assert harvest.status == "booked" and harvest.done_at is None


@pytest.mark.parametrize("model, base, field, inside, outside, message", BOUNDARIES)
def test_each_range_at_its_boundary(clinician, model, base, field, inside, outside, message):
    patient = PatientFactory()
    values = {k: Decimal(v) if isinstance(v, str) else v for k, v in base.items()}
    accepted = model(patient=patient, taken_on=timezone.localdate(), **values | {field: inside})
    # The extremes are possible but unusual: saved once they have had their second look.
    clinical_record_save(record=accepted, by=clinician, values_checked=True)
    assert accepted.pk

    rejected = model(patient=patient, taken_on=timezone.localdate(), **values | {field: outside})
    with pytest.raises(ValidationError) as error:
        clinical_record_save(record=rejected, by=clinician, values_checked=True)
    assert any(message in m for m in error.value.message_dict[field]), error.value.message_dict
    assert rejected.pk is None
    assert model.objects.count() == 1


def test_fev1_cannot_exceed_fvc(clinician):
    test = LungFunctionTest(
        patient=PatientFactory(),
        taken_on=timezone.localdate(),
        fev1_l=Decimal("2.50"),
        fev1_pct_predicted=45,
        fvc_l=Decimal("2.40"),
    )
    with pytest.raises(ValidationError, match=r"FEV1 \(2.50 L\) cannot exceed FVC \(2.40 L\)"):
        clinical_record_save(record=test, by=clinician)


def test_a_record_dated_tomorrow_in_the_sites_calendar_is_refused(clinician):
    patient = PatientFactory(site__time_zone="Asia/Shanghai")
    today_there = timezone.localdate(timezone=patient.site.time_zone)
    clinical_record_save(
        record=SixMinuteWalkTest(patient=patient, taken_on=today_there, distance_m=300),
        by=clinician,
    )
    tomorrow = SixMinuteWalkTest(
        patient=patient, taken_on=today_there + dt.timedelta(days=1), distance_m=300
    )
    with pytest.raises(ValidationError, match="cannot be in the future"):
        clinical_record_save(record=tomorrow, by=clinician)


def test_a_follow_up_measurement_dated_before_the_transplant_is_refused(course, pathway, clinician):
    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    early = SixMinuteWalkTest(
        visit=visit, taken_on=course.transplanted_on - dt.timedelta(days=1), distance_m=350
    )
    with pytest.raises(ValidationError, match="before the transplant on"):
        clinical_record_save(record=early, by=clinician)
    assert visit.status == "planned"
    on_the_day = SixMinuteWalkTest(visit=visit, taken_on=course.transplanted_on, distance_m=350)
    clinical_record_save(record=on_the_day, by=clinician)
    assert on_the_day.patient == course.patient


@pytest.mark.parametrize("distance, unusual", [(50, False), (49, True), (700, False), (701, True)])
def test_an_unusual_value_is_saved_only_after_a_second_look(clinician, distance, unusual):
    patient = PatientFactory()
    walk = SixMinuteWalkTest(patient=patient, taken_on=timezone.localdate(), distance_m=distance)
    if unusual:
        with pytest.raises(ValidationError) as refused:
            clinical_record_save(record=walk, by=clinician)
        assert refused.value.message_dict["distance_m"] == [
            f"Six-minute walk distance of {distance} m is unusual (expected between 50 m and "
            "700 m). If it is right, type it again to confirm it; otherwise correct it."
        ]
        assert walk.pk is None
    clinical_record_save(record=walk, by=clinician, values_checked=unusual)
    assert walk.pk


def test_the_protocol_says_what_it_expects(clinician, course):
    course.protocol.expected_ranges = {"walk_m": [100, 600]}
    course.protocol.full_clean()
    course.protocol.save()
    walk = SixMinuteWalkTest(patient=course.patient, taken_on=timezone.localdate(), distance_m=80)
    with pytest.raises(ValidationError, match="expected between 100 m and 600 m"):
        clinical_record_save(record=walk, by=clinician)


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"walk_m": [0, 2000]}, "must lie within what is possible"),
        ({"walk_m": [600, 100]}, "low end must be below"),
        ({"walking": [0, 10]}, "no measure named 'walking'"),
        ({"walk_m": "far"}, "give the range as [low, high]"),
        ({"purity_pct": ["NaN", 100]}, "give the range as two numbers"),
        ({"purity_pct": [float("nan"), 100]}, "give the range as two numbers"),
    ],
)
def test_a_protocol_cannot_expect_the_impossible(ranges, message):
    protocol = Protocol(name="Narrow", expected_ranges=ranges)
    with pytest.raises(ValidationError) as error:
        protocol.full_clean()
    assert message in " ".join(error.value.message_dict["expected_ranges"])


def test_a_walk_is_kept_to_the_metre_it_was_measured_at_never_cut(clinician):
    walk = SixMinuteWalkTest(
        patient=PatientFactory(), taken_on=timezone.localdate(), distance_m=Decimal("478.75")
    )
    with pytest.raises(ValidationError) as error:
        clinical_record_save(record=walk, by=clinician, values_checked=True)
    assert error.value.message_dict["distance_m"] == [
        "Six-minute walk distance is measured to the nearest 1 m; 478.75 m was entered: enter "
        "it as it was measured."
    ]
    assert not SixMinuteWalkTest.objects.exists()
    walk.distance_m = Decimal("479")
    clinical_record_save(record=walk, by=clinician)
    walk.refresh_from_db()
    assert walk.distance_m == 479


@pytest.fixture
def at_four_weeks(course, pathway, clinician):
    course.patient.coordinator = pathway.coordinator
    course.patient.save()
    LungFunctionTest.objects.create(
        patient=course.patient,
        taken_on=pathway.at(0).date(),
        fev1_l=Decimal("1.20"),
        fev1_pct_predicted=45,
        fvc_l=Decimal("2.80"),
        dlco_pct_predicted=Decimal("40"),
    )
    pathway.advance(course, CourseState.FOLLOW_UP)
    return Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)


@pytest.mark.parametrize(
    "fev1, dlco, alerted",
    [
        ("1.00", "40", False),  # 200 mL: at the limit, not beyond it
        ("0.99", "40", True),  # 210 mL
        ("1.20", "34", False),  # 15 %
        ("1.20", "33.9", True),  # 15.25 %
    ],
)
def test_a_fall_in_lung_function_alerts_the_clinicians(
    at_four_weeks, clinician, fev1, dlco, alerted
):
    test = LungFunctionTest(
        visit=at_four_weeks,
        taken_on=timezone.localdate(),
        fev1_l=Decimal(fev1),
        fev1_pct_predicted=40,
        fvc_l=Decimal("2.60"),
        dlco_pct_predicted=Decimal(dlco),
    )
    clinical_record_save(record=test, by=clinician)
    alerts = Alert.objects.filter(kind=AlertKind.FUNCTION_DECLINE)
    assert alerts.count() == int(alerted)
    if alerted:
        emails = Notification.objects.filter(
            template=NotificationTemplate.ALERT, alert=alerts.get()
        )
        assert "clinician" in set(emails.values_list("user__username", flat=True))


@pytest.mark.parametrize(
    "grade, serious, alerts", [(2, False, 0), (3, False, 1), (1, True, 1), (5, True, 1)]
)
def test_a_grade_3_or_serious_adverse_event_alerts_at_once(
    course, clinician, coordinator, grade, serious, alerts
):
    course.patient.coordinator = coordinator
    course.patient.save()
    event = AdverseEvent(
        course=course,
        onset_on=timezone.localdate(),
        grade=grade,
        serious=serious,
        outcome="fatal" if grade == 5 else "recovering",
        description="Pneumothorax after bronchoscopy",
    )
    adverse_event_record(event=event, by=clinician)
    raised = Alert.objects.filter(kind=AlertKind.ADVERSE_EVENT)
    assert raised.count() == alerts
    if alerts:
        alert = raised.get()
        assert alert.severity == "urgent" and f"Grade {grade}" in alert.message
        assert Notification.objects.filter(alert=alert, user=coordinator).count() == 1


def test_grade_5_must_be_fatal(course, clinician):
    event = AdverseEvent(
        course=course,
        onset_on=timezone.localdate(),
        grade=5,
        serious=True,
        outcome="recovering",
        description="x",
    )
    with pytest.raises(ValidationError, match="fatal by definition"):
        adverse_event_record(event=event, by=clinician)
    assert not AdverseEvent.objects.exists() and not Alert.objects.exists()


def test_a_measurement_before_the_window_opens_leaves_the_follow_up_open_without_a_reason(
    at_four_weeks, clinician
):
    visit = at_four_weeks
    early = visit.window_opens_on - dt.timedelta(days=2)
    zone = visit.course.site.time_zone
    with time_machine.travel(dt.datetime.combine(early, dt.time(15), tzinfo=zone), tick=False):
        walk = SixMinuteWalkTest(visit=visit, taken_on=early, distance_m=300)
        warnings = clinical_record_save(record=walk, by=clinician)
        visit.refresh_from_db()
        assert visit.status == "planned"
        assert any("still open" in w and "give a clinician's reason" in w for w in warnings)
        symptoms = SymptomScore(visit=visit, taken_on=early, mmrc=2, cat=15)
        clinical_record_save(record=symptoms, by=clinician, early_reason="Travelling abroad")
    visit.refresh_from_db()
    assert visit.status == "done"
    [deviation] = ProtocolDeviation.objects.filter(visit=visit)
    assert (deviation.kind, deviation.reason) == ("before_window", "Travelling abroad")


def test_no_entry_point_marks_a_follow_up_done_without_its_measurement(at_four_weeks, clinician):
    """The rule lives in scheduling's service, not in its caller: marking a follow-up done
    with no measurement, with another visit's, or by kind, is refused and changes nothing."""
    visit = at_four_weeks
    reminders = Notification.objects.filter(visit=visit, status="pending").count()
    with pytest.raises(Refused, match="when a measurement taken at it is recorded"):
        visit_record_done(visit=visit, done_at=timezone.now())
    other = Visit.objects.get(course=visit.course, protocol_visit__weeks_after_transplant=12)
    elsewhere = SixMinuteWalkTest.objects.create(
        patient=visit.course.patient, visit=other, taken_on=timezone.localdate(), distance_m=300
    )
    with pytest.raises(Refused, match="when a measurement taken at it is recorded"):
        visit_record_done(visit=visit, measurement=elsewhere)
    with pytest.raises(Refused, match="not by marking it done"):
        visit_mark_done(course=visit.course, kind=VisitKind.FOLLOW_UP, done_at=timezone.now())
    visit.refresh_from_db()
    assert (visit.status, visit.done_at) == ("planned", None)
    assert Notification.objects.filter(visit=visit, status="pending").count() == reminders


def test_no_entry_point_marks_a_follow_up_done_before_its_window_without_a_reason(
    at_four_weeks, clinician
):
    visit = at_four_weeks
    early = visit.window_opens_on - dt.timedelta(days=2)
    zone = visit.course.site.time_zone
    with time_machine.travel(dt.datetime.combine(early, dt.time(15), tzinfo=zone), tick=False):
        walk = SixMinuteWalkTest.objects.create(
            patient=visit.course.patient, visit=visit, taken_on=early, distance_m=300
        )
        with pytest.raises(Refused, match="before its window opens"):
            visit_record_done(visit=visit, measurement=walk)
        visit.refresh_from_db()
        assert visit.status == "planned" and not ProtocolDeviation.objects.exists()
        visit_record_done(visit=visit, measurement=walk, by=clinician, early_reason="Abroad")
    visit.refresh_from_db()
    assert visit.status == "done"
    assert timezone.localtime(visit.done_at, zone).date() == early
    [deviation] = ProtocolDeviation.objects.filter(visit=visit)
    assert (deviation.kind, deviation.reason, deviation.by) == (
        "before_window",
        "Abroad",
        clinician,
    )


def test_two_lung_function_tests_on_one_day_are_flagged_and_the_checklist_names_its_source(
    clinician,
):
    patient = PatientFactory()
    first = LungFunctionTest(patient=patient, taken_on=timezone.localdate(), **_lung("74"))
    assert clinical_record_save(record=first, by=clinician) == []
    second = LungFunctionTest(patient=patient, taken_on=timezone.localdate(), **_lung("52"))
    [warning] = clinical_record_save(record=second, by=clinician)
    assert "Another lung function test" in warning and "74" in warning
    facts = EvaluationFacts(
        today=timezone.localdate(),
        smoking_status="never",
        smoking_quit_date=None,
        lung_function=LungFunctionTest.objects.filter(patient=patient).first(),
        chest_ct=None,
        assessment=None,
    )
    assert facts.lung_function == second
    sources = evaluation_sources(facts, zone=patient.site.time_zone)
    assert f"lung function of {date_words(second.taken_on)}" in sources
    assert patient.site.time_zone.key != "UTC" or "UTC" in sources


def _lung(fev1_pct: str) -> dict:
    return {
        "fev1_l": Decimal("1.20"),
        "fev1_pct_predicted": Decimal(fev1_pct),
        "fvc_l": Decimal("2.80"),
    }


def test_no_gold_stage_and_gold_4_are_never_said_together():
    protocol = Protocol(fev1_pct_min=Decimal(30), fev1_pct_max=Decimal(70))
    test = LungFunctionTest(
        taken_on=dt.date(2026, 1, 5),
        fev1_l=Decimal("1.40"),
        fvc_l=Decimal("2.00"),  # 0.70: no obstruction
        fev1_pct_predicted=Decimal("29.9"),
    )
    facts = EvaluationFacts(
        today=dt.date(2026, 1, 6),
        smoking_status="never",
        smoking_quit_date=None,
        lung_function=test,
        chest_ct=None,
        assessment=None,
    )
    reasons = " ".join(r.reason for r in eligibility_checklist(facts=facts, protocol=protocol))
    assert "no GOLD stage" in reasons and "GOLD 4" not in reasons
    assert "below 30 %" in reasons


@pytest.mark.parametrize(
    "field, typed, says",
    [
        ("dose_max_million_per_kg", "520", "A dose must be between"),
        ("cold_chain_min_c", "9", "The lowest transit temperature must be below the highest."),
        ("fev1_pct_min", "75", "The lowest FEV1 % must be below the highest."),
        ("harvest_notice_hours", "5000", "A notice must be between"),
        ("infusion_notice_hours", "5000", "A notice must be between"),
    ],
)
def test_a_protocols_limits_are_possible_and_in_order(field, typed, says):
    protocol = Protocol.objects.get(is_default=True)
    setattr(protocol, field, Decimal(typed))
    with pytest.raises(ValidationError) as error:
        protocol.full_clean()
    assert says in str(error.value)
