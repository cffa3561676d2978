from django.db.models import Q
from django.utils import timezone

from pathway.conditions import EvaluationFacts
from pathway.forecast import GrowthForecast, growth_forecast
from pathway.models import Batch, BatchStatus, Protocol, TreatmentCourse, expansion_day_cutoff
from patients.models import (
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    LungFunctionTest,
    Site,
)


def course_evaluation_facts(*, course: TreatmentCourse) -> EvaluationFacts:
    """The patient's latest records, as the eligibility rules read them."""
    patient = course.patient
    return EvaluationFacts(
        today=timezone.localdate(timezone=course.site.time_zone),
        smoking_status=patient.smoking_status,
        smoking_quit_date=patient.smoking_quit_date,
        lung_function=LungFunctionTest.objects.filter(patient=patient).first(),
        chest_ct=ChestCT.objects.filter(patient=patient).first(),
        assessment=ClinicalAssessment.objects.filter(patient=patient).first(),
    )


def course_dosing_weight(*, course: TreatmentCourse) -> BodyMeasurement | None:
    """The latest weight taken on or after the day the evaluation began."""
    weights = BodyMeasurement.objects.filter(patient=course.patient)
    if course.evaluation_started_at:
        started_on = timezone.localdate(course.evaluation_started_at, course.site.time_zone)
        weights = weights.filter(taken_on__gte=started_on)
    return weights.first()


def batches_due_for_release(*, now=None):
    """Expanding batches that have reached their protocol's first day of release, the day
    counted in the site's calendar as the release itself counts it: 21 days of 24 hours
    would list a batch received in the evening only in the evening of day 21."""
    now = now or timezone.now()
    zones = set(Site.objects.values_list("time_zone", flat=True))
    due = Q(pk__in=[])
    for protocol in Protocol.objects.all():
        for zone in zones:
            due |= Q(
                course__protocol=protocol,
                course__site__time_zone=zone,
                received_at__lt=expansion_day_cutoff(
                    protocol.expansion_min_days, now=now, zone=zone
                ),
            )
    return Batch.objects.filter(due, status=BatchStatus.EXPANDING)


def batch_growth_forecast(*, batch: Batch, dose: str = "target") -> GrowthForecast | None:
    """When the batch will hold enough viable cells for the patient's `dose` ("target" or
    "minimum": the protocol's cells per kg × the dosing weight), from its cell counts."""
    course = batch.course
    weight = course_dosing_weight(course=course)
    if weight is None:
        return None
    protocol = course.protocol
    per_kg = (
        protocol.dose_target_million_per_kg
        if dose == "target"
        else protocol.dose_min_million_per_kg
    )
    points = [
        ((count.counted_at - batch.received_at).total_seconds() / 86400, count.viable_cells)
        for count in batch.cell_counts.all()
    ]
    return growth_forecast(
        points=points, target_cells=float(per_kg) * float(weight.weight_kg) * 1_000_000
    )


def patient_expected_ranges(*, patient_id: int | None) -> dict:
    """The expected ranges of the protocol the patient's latest course follows (else the
    default protocol's): the values outside them need a second look."""
    course = (
        TreatmentCourse.objects.filter(patient_id=patient_id)
        .select_related("protocol")
        .order_by("-referred_at")
        .first()
        if patient_id
        else None
    )
    protocol = course.protocol if course else Protocol.objects.filter(is_default=True).first()
    return protocol.expected_ranges if protocol else {}
