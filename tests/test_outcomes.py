import datetime as dt
import math
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pathway.models import OutcomeMeasure, ProtocolVisit, TreatmentCourse
from pathway.records import clinical_record_save
from pathway.services import course_create
from pathway.states import CourseState
from patients.models import LungFunctionTest, SixMinuteWalkTest, SymptomScore
from reporting.models import FollowUpOutcome
from reporting.outcomes import (
    CHANGES,
    cohort_outcomes,
    course_outcomes,
    follow_up_changes,
    follow_up_outcomes_rebuild,
)
from reporting.statistics import t_975
from scheduling.models import Visit, VisitKind, VisitStatus
from tests.factories import ChestCTFactory, ClinicalAssessmentFactory, PatientFactory

pytestmark = pytest.mark.django_db

# (baseline, 4-week) per patient: FEV1 L, DLCO % predicted, walk m, CAT, mMRC
COHORT = [
    (("1.20", "40", 300, 20, 3), ("1.25", "46", 360, 15, 2)),
    (("1.00", "50", 350, 18, 2), ("1.10", "55", 380, 17, 2)),
    (("1.50", "44", 280, 25, 3), ("1.65", "55", 350, 20, 2)),
]


def record(patient, on, values, visit=None, by=None):
    fev1, dlco, walk, cat, mmrc = values
    common = {"patient": patient, "taken_on": on, "visit": visit}
    clinical_record_save(
        record=LungFunctionTest(
            fev1_l=Decimal(fev1),
            fev1_pct_predicted=Decimal(45),
            fvc_l=Decimal("2.80"),
            dlco_pct_predicted=Decimal(dlco),
            **common,
        ),
        by=by,
    )
    clinical_record_save(record=SixMinuteWalkTest(distance_m=walk, **common), by=by)
    clinical_record_save(record=SymptomScore(cat=cat, mmrc=mmrc, **common), by=by)


@pytest.fixture
def cohort(pathway, coordinator, clinician):
    # The transplants were four weeks ago, so today is inside each 4-week visit's window.
    pathway = pathway.starting(timezone.now().replace(microsecond=0) - dt.timedelta(days=61))
    courses = []
    for baseline, four_weeks in COHORT:
        course = course_create(patient=PatientFactory(), by=coordinator)
        ChestCTFactory(patient=course.patient, taken_on=pathway.at(0).date())
        ClinicalAssessmentFactory(patient=course.patient, taken_on=pathway.at(0).date())
        record(course.patient, pathway.at(0).date(), baseline, by=clinician)
        pathway.advance(course, CourseState.FOLLOW_UP)
        visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
        record(course.patient, timezone.localdate(), four_weeks, visit=visit, by=clinician)
        courses.append(course)
    return courses


def test_entering_measurements_marks_the_visit_done(cohort):
    visits = Visit.objects.filter(protocol_visit__weeks_after_transplant=4)
    assert set(visits.values_list("status", flat=True)) == {VisitStatus.DONE}


def test_one_courses_change_from_baseline(cohort):
    [four_weeks] = course_outcomes(course=cohort[0])
    assert four_weeks["weeks"] == 4
    assert four_weeks[OutcomeMeasure.FEV1_ML] == pytest.approx(50)
    assert four_weeks[OutcomeMeasure.DLCO_RELATIVE] == pytest.approx(15)
    assert four_weeks[OutcomeMeasure.DLCO_POINTS] == pytest.approx(6)
    assert four_weeks[OutcomeMeasure.WALK_M] == pytest.approx(60)
    assert (four_weeks[OutcomeMeasure.CAT], four_weeks[OutcomeMeasure.MMRC]) == (-5, -1)


def test_cohort_figures_computed_by_hand(cohort):
    [four_weeks] = cohort_outcomes(courses=TreatmentCourse.objects.all())
    measures = {key: value["summary"] for key, value in four_weeks["measures"].items()}

    fev1 = measures[OutcomeMeasure.FEV1_ML]  # +50, +100, +150 mL
    half = 4.303 * 50 / math.sqrt(3)  # t(0.975, 2) × s / √n = 124.21
    assert (fev1.n, fev1.mean, fev1.median) == (3, pytest.approx(100), pytest.approx(100))
    assert (fev1.ci_low, fev1.ci_high) == (pytest.approx(100 - half), pytest.approx(100 + half))
    assert fev1.ci_low == pytest.approx(-24.21, abs=0.01)

    dlco = measures[OutcomeMeasure.DLCO_RELATIVE]  # +15 %, +10 %, +25 %
    sd = math.sqrt(((15 - 50 / 3) ** 2 + (10 - 50 / 3) ** 2 + (25 - 50 / 3) ** 2) / 2)  # 7.638
    assert (dlco.mean, dlco.median) == (pytest.approx(50 / 3), pytest.approx(15))
    assert dlco.ci_high == pytest.approx(50 / 3 + 4.303 * sd / math.sqrt(3))

    assert measures[OutcomeMeasure.DLCO_POINTS].mean == pytest.approx(22 / 3)  # 6, 5, 11
    walk = measures[OutcomeMeasure.WALK_M]  # 60, 30, 70
    assert (walk.mean, walk.median) == (pytest.approx(160 / 3), pytest.approx(60))
    cat = measures[OutcomeMeasure.CAT]  # −5, −1, −5
    assert (cat.mean, cat.median) == (pytest.approx(-11 / 3), pytest.approx(-5))
    assert measures[OutcomeMeasure.MMRC].median == pytest.approx(-1)


def test_reference_figures_stand_beside_the_outcomes(cohort):
    [four_weeks] = cohort_outcomes(courses=TreatmentCourse.objects.all())
    walk_references = four_weeks["measures"][OutcomeMeasure.WALK_M]["references"]
    assert sorted((r.kind, r.value) for r in walk_references) == [("mcid", 30), ("reported", 52)]
    # DLCO +18.2 % is a 24-week figure: it does not stand beside the 4-week results.
    assert four_weeks["measures"][OutcomeMeasure.DLCO_RELATIVE]["references"] == []


def test_a_single_value_has_no_interval(cohort):
    [four_weeks] = cohort_outcomes(courses=[cohort[0]])
    fev1 = four_weeks["measures"][OutcomeMeasure.FEV1_ML]["summary"]
    assert (fev1.n, fev1.ci_low, fev1.ci_high) == (1, None, None)


def test_t_quantiles():
    assert t_975(2) == 4.303 and t_975(30) == 2.042
    assert 2.021 > t_975(50) > 2.000
    assert 1.98 > t_975(1000) > 1.96


def _bulk_cohort(size, protocol):
    """`size` courses with a baseline and a done 4-week visit, written in bulk."""
    four_weeks = ProtocolVisit.objects.get(protocol=protocol, weeks_after_transplant=4)
    patients = PatientFactory.create_batch(size)
    transplanted_on = timezone.localdate() - dt.timedelta(days=30)
    courses = TreatmentCourse.objects.bulk_create(
        TreatmentCourse(patient=p, site=p.site, protocol=protocol, transplanted_on=transplanted_on)
        for p in patients
    )
    TreatmentCourse.objects.filter(pk__in=[c.pk for c in courses]).update(
        state=CourseState.FOLLOW_UP
    )
    visits = Visit.objects.bulk_create(
        Visit(
            course=c,
            kind=VisitKind.FOLLOW_UP,
            protocol_visit=four_weeks,
            scheduled_at=timezone.now(),
            status=VisitStatus.DONE,
        )
        for c in courses
    )
    LungFunctionTest.objects.bulk_create(
        LungFunctionTest(
            patient_id=v.course.patient_id,
            visit=visit_or_none,
            taken_on=on,
            fev1_l=Decimal(fev1),
            fev1_pct_predicted=45,
            fvc_l=Decimal("2.8"),
            dlco_pct_predicted=40,
        )
        for v in visits
        for visit_or_none, on, fev1 in (
            (None, transplanted_on, "1.2"),
            (v, timezone.localdate(), "1.3"),
        )
    )


def test_the_cohort_costs_the_same_queries_for_5_and_500_courses(protocol):
    counts = []
    for size in (5, 495):
        _bulk_cohort(size, protocol)
        follow_up_outcomes_rebuild()  # bulk writes pass no receiver: a bulk load rebuilds
        with CaptureQueriesContext(connection) as queries:
            [four_weeks] = cohort_outcomes(courses=TreatmentCourse.objects.all())
        counts.append(len(queries))
        assert four_weeks["measures"][OutcomeMeasure.FEV1_ML]["summary"].mean == pytest.approx(100)
    assert counts == [2, 2]
    assert four_weeks["measures"][OutcomeMeasure.FEV1_ML]["summary"].n == 500


# The stored changes: the same figures as working them out, kept right on every correction.


def _walk_mean(courses=None):
    [four_weeks] = cohort_outcomes(courses=courses or TreatmentCourse.objects.all())
    return four_weeks["measures"][OutcomeMeasure.WALK_M]["summary"].mean


def _stored_equals_worked_out():
    worked_out = {
        v.pk: tuple(getattr(v, m) for m in CHANGES)
        for v in follow_up_changes(courses=TreatmentCourse.objects.all())
    }
    stored = {
        o.visit_id: tuple(getattr(o, m) for m in CHANGES) for o in FollowUpOutcome.objects.all()
    }
    return stored == worked_out


def test_each_done_follow_up_is_stored_with_exactly_its_worked_out_changes(cohort):
    assert FollowUpOutcome.objects.count() == 3
    assert _stored_equals_worked_out()


def test_a_corrected_follow_up_measurement_corrects_the_cohort(cohort, clinician):
    walk = SixMinuteWalkTest.objects.get(patient=cohort[0].patient, visit__isnull=False)
    walk.distance_m = 330  # 360 was a typing slip: +30, not +60
    walk.save()
    assert _walk_mean() == pytest.approx((30 + 30 + 70) / 3)
    assert _stored_equals_worked_out()


def test_a_corrected_baseline_corrects_every_follow_up_of_the_patient(cohort):
    baseline = SixMinuteWalkTest.objects.get(patient=cohort[1].patient, visit__isnull=True)
    baseline.distance_m = 380  # the 4-week 380 m is then no change at all
    baseline.save()
    assert _walk_mean() == pytest.approx((60 + 0 + 70) / 3)
    assert _stored_equals_worked_out()


def test_a_deleted_measurement_leaves_the_cohort(cohort):
    SixMinuteWalkTest.objects.get(patient=cohort[2].patient, visit__isnull=False).delete()
    [four_weeks] = cohort_outcomes(courses=TreatmentCourse.objects.all())
    walk = four_weeks["measures"][OutcomeMeasure.WALK_M]["summary"]
    assert (walk.n, walk.mean) == (2, pytest.approx(45))
    assert _stored_equals_worked_out()


def test_a_corrected_transplant_date_picks_the_baseline_again(cohort, clinician):
    course = cohort[0]
    later = course.transplanted_on + dt.timedelta(days=1)
    # A later evaluation walk, after the recorded transplant date: not the baseline until the
    # transplant date is corrected to the day after it.
    clinical_record_save(
        record=SixMinuteWalkTest(patient=course.patient, taken_on=later, distance_m=350),
        by=clinician,
    )
    assert _walk_mean() == pytest.approx(160 / 3)
    course.transplanted_on = later
    course.save(update_fields=["transplanted_on"])
    assert _walk_mean() == pytest.approx((10 + 30 + 70) / 3)
    assert _stored_equals_worked_out()


def test_a_follow_up_reopened_leaves_the_cohort(cohort):
    visit = Visit.objects.get(course=cohort[0], protocol_visit__weeks_after_transplant=4)
    visit.status = VisitStatus.BOOKED
    visit.save()
    assert _walk_mean() == pytest.approx((30 + 70) / 2)


def test_a_correction_in_the_admin_corrects_the_cohort(client, cohort, admin_user):
    from django.urls import reverse

    from tests.admin_forms import change_form_data

    client.force_login(admin_user)
    walk = SixMinuteWalkTest.objects.get(patient=cohort[0].patient, visit__isnull=False)
    url = reverse("admin:scheduling_visit_change", args=[walk.visit_id])
    data = change_form_data(client.get(url))
    [field] = [k for k, v in data.items() if k.endswith("-distance_m") and str(v) == "360"]
    response = client.post(url, data | {field: "330"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _walk_mean() == pytest.approx((30 + 30 + 70) / 3)


def test_the_rebuild_command_stores_what_bulk_sql_changed(cohort):
    from django.core.management import call_command

    SixMinuteWalkTest.objects.filter(patient=cohort[0].patient, visit__isnull=False).update(
        distance_m=330
    )
    assert _walk_mean() == pytest.approx(160 / 3)  # a bulk update passes no receiver
    call_command("follow_up_outcomes_rebuild")
    assert _walk_mean() == pytest.approx((30 + 30 + 70) / 3)
    assert _stored_equals_worked_out()


def test_crp_changes_from_the_baseline_before_the_first_infusion(msc, msc_site, clinician):
    """An MSC course's CRP at its 4-week follow-up against the last CRP before the first
    infusion: in the course's outcomes and in those stored for the report."""
    from patients.models import CReactiveProtein

    msc.lot(msc_site)
    course = msc.course(msc_site)
    for on, value in ((msc.at(-3).date(), "20.0"), (msc.at(-1).date(), "12.0")):
        clinical_record_save(
            record=CReactiveProtein(patient=course.patient, taken_on=on, crp_mg_l=Decimal(value)),
            by=clinician,
        )
    msc.advance(course, CourseState.FOLLOW_UP)
    # Taken after the infusion, without a visit: not a baseline.
    clinical_record_save(
        record=CReactiveProtein(
            patient=course.patient, taken_on=msc.at(10).date(), crp_mg_l=Decimal("30.0")
        ),
        by=clinician,
    )
    visit = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    clinical_record_save(
        record=CReactiveProtein(
            visit=visit,
            taken_on=visit.window_opens_on + dt.timedelta(days=7),
            crp_mg_l=Decimal("4.5"),
        ),
        by=clinician,
    )
    [four_weeks] = course_outcomes(course=course)
    assert four_weeks[OutcomeMeasure.CRP] == pytest.approx(-7.5)
    assert FollowUpOutcome.objects.get(visit=visit).crp_mg_l == pytest.approx(-7.5)
    [cohort] = cohort_outcomes(courses=[course], therapy="msc")
    assert cohort["measures"][OutcomeMeasure.CRP]["summary"].mean == pytest.approx(-7.5)
