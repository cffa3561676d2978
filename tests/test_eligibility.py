import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from pathway import services
from pathway.conditions import RuleStatus, add_months, eligibility_checklist
from pathway.selectors import course_evaluation_facts
from pathway.services import TransitionRefused
from pathway.states import CourseState
from patients.models import A1ATScreening, SmokingStatus
from tests.factories import ChestCTFactory, ClinicalAssessmentFactory, LungFunctionTestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluating(course, coordinator):
    services.course_start_evaluation(course=course, by=coordinator)
    return course


def checklist(course, justification=""):
    return eligibility_checklist(
        facts=course_evaluation_facts(course=course),
        protocol=course.protocol,
        low_fev1_justification=justification,
    )


def test_a_patient_who_passes_everything_is_approved(evaluating, clinician):
    results = checklist(evaluating)
    assert len(results) == 9
    assert {r.status for r in results} == {RuleStatus.PASSED}
    log = services.course_approve(course=evaluating, by=clinician)
    assert evaluating.state == CourseState.ELIGIBLE
    assert [item["status"] for item in log.data["checklist"]] == ["passed"] * 9


def _newer(factory, patient, **values):
    return factory(patient=patient, taken_on=timezone.localdate() + dt.timedelta(days=0), **values)


FAILING_RECORDS = [
    pytest.param(
        LungFunctionTestFactory,
        {"fev1_l": Decimal("1.68"), "fvc_l": Decimal("2.40")},
        "COPD confirmed",
        "FEV1/FVC is 0.700; COPD needs a post-bronchodilator ratio below 0.70.",
        id="ratio-0.70",
    ),
    pytest.param(
        LungFunctionTestFactory,
        {"fev1_pct_predicted": Decimal("74")},
        "FEV1 % predicted in range",
        "FEV1 is 74 % predicted; the protocol allows 30–70 %.",
        id="fev1-above-range",
    ),
    pytest.param(
        LungFunctionTestFactory,
        {"fev1_pct_predicted": Decimal("85")},
        "GOLD stage 2–4",
        "GOLD 1 (FEV1 85 % predicted); the pathway treats GOLD 2 to 4.",
        id="gold-1",
    ),
    pytest.param(
        ChestCTFactory,
        {"emphysema_present": False},
        "Emphysema on CT",
        "shows no emphysema",
        id="no-emphysema",
    ),
    pytest.param(
        ClinicalAssessmentFactory,
        {"fit_for_bronchoscopy": False},
        "Fit for bronchoscopy",
        "not fit for bronchoscopy",
        id="not-fit",
    ),
    pytest.param(
        ClinicalAssessmentFactory,
        {"active_respiratory_infection": True},
        "No active respiratory infection",
        "An active respiratory infection is recorded",
        id="infection",
    ),
    pytest.param(
        ClinicalAssessmentFactory,
        {"a1at_screening": A1ATScreening.PENDING},
        "A1AT screening recorded",
        "indicated but has no result yet",
        id="a1at-pending",
    ),
    pytest.param(
        ClinicalAssessmentFactory,
        {"dyspnoea_despite_optimised_therapy": False},
        "Dyspnoea despite optimised therapy",
        "is not attested",
        id="dyspnoea",
    ),
]


@pytest.mark.parametrize("factory, values, rule, reason", FAILING_RECORDS)
def test_each_failing_rule_blocks_approval_with_its_reason(
    evaluating, clinician, factory, values, rule, reason
):
    _newer(factory, evaluating.patient, **values)
    failed = [r for r in checklist(evaluating) if r.status == RuleStatus.FAILED]
    assert rule in {r.rule for r in failed}
    with pytest.raises(TransitionRefused) as refused:
        services.course_approve(course=evaluating, by=clinician)
    assert any(reason in r for r in refused.value.reasons), refused.value.reasons
    evaluating.refresh_from_db()
    assert evaluating.state == CourseState.EVALUATION
    assert evaluating.transition_logs.count() == 1


def test_a_current_smoker_is_refused(evaluating, clinician):
    patient = evaluating.patient
    patient.smoking_status, patient.smoking_quit_date = SmokingStatus.CURRENT, None
    patient.save()
    with pytest.raises(TransitionRefused, match="The patient smokes; the protocol needs 6 months"):
        services.course_approve(course=evaluating, by=clinician)


@pytest.mark.parametrize(
    "quit_on, today, allowed",
    [
        (dt.date(2026, 1, 15), dt.date(2026, 7, 14), False),
        (dt.date(2026, 1, 15), dt.date(2026, 7, 15), True),
        (dt.date(2025, 8, 31), dt.date(2026, 2, 28), True),  # six months on, clamped to month end
    ],
)
def test_months_since_quitting(evaluating, clinician, quit_on, today, allowed):
    patient = evaluating.patient
    patient.smoking_quit_date = quit_on
    patient.save()
    with time_machine.travel(dt.datetime.combine(today, dt.time(12), tzinfo=dt.UTC), tick=False):
        smoking = next(r for r in checklist(evaluating) if r.rule == "Not smoking")
    assert (smoking.status == RuleStatus.PASSED) is allowed, smoking.reason


def test_add_months_clamps_to_leap_day():
    assert add_months(dt.date(2023, 8, 31), 6) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2025, 12, 31), 2) == dt.date(2026, 2, 28)


def test_missing_records_are_named(course, coordinator, clinician):
    course.patient.lungfunctiontests.all().delete()
    course.patient.chestcts.all().delete()
    course.patient.clinicalassessments.all().delete()
    services.course_start_evaluation(course=course, by=coordinator)
    with pytest.raises(TransitionRefused) as refused:
        services.course_approve(course=course, by=clinician)
    reasons = set(refused.value.reasons)
    assert reasons == {
        "No lung function test is recorded.",
        "No chest CT is recorded.",
        "No clinical assessment is recorded.",
    }


def test_gold_4_needs_a_specialist_justification(evaluating, clinician):
    _newer(
        LungFunctionTestFactory,
        evaluating.patient,
        fev1_l=Decimal("0.70"),
        fev1_pct_predicted=Decimal("25"),
    )
    with pytest.raises(
        TransitionRefused, match="below 30 % \\(GOLD 4\\): approval needs a specialist"
    ):
        services.course_approve(course=evaluating, by=clinician)
    assert evaluating.state == CourseState.EVALUATION

    log = services.course_approve(
        course=evaluating,
        by=clinician,
        low_fev1_justification="Bronchoscopic biopsy shows a preserved basal layer.",
    )
    assert evaluating.state == CourseState.ELIGIBLE
    assert (
        evaluating.low_fev1_justification == "Bronchoscopic biopsy shows a preserved basal layer."
    )
    fev1_rule = next(i for i in log.data["checklist"] if i["rule"] == "FEV1 % predicted in range")
    assert fev1_rule["status"] == "overridden"


def test_a_justification_is_not_kept_when_not_needed(evaluating, clinician):
    services.course_approve(course=evaluating, by=clinician, low_fev1_justification="Not needed")
    assert evaluating.low_fev1_justification == ""
