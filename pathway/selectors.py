import datetime as dt

from django.db.models import Q
from django.utils import timezone

from pathway.conditions import EvaluationFacts
from pathway.models import Batch, BatchStatus, Protocol, TreatmentCourse
from patients.models import BodyMeasurement, ChestCT, ClinicalAssessment, LungFunctionTest


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
    """Expanding batches that have reached their protocol's first day of release."""
    now = now or timezone.now()
    due = Q(pk__in=[])
    for protocol in Protocol.objects.all():
        due |= Q(
            course__protocol=protocol,
            received_at__lte=now - dt.timedelta(days=protocol.expansion_min_days),
        )
    return Batch.objects.filter(due, status=BatchStatus.EXPANDING)
