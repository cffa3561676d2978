"""Writing clinical records. Each entry point validates fully (nothing half-saved), saves in
one transaction, and raises the safety alerts the record calls for, through the outbox."""

from decimal import Decimal

from django.db import transaction

from common.errors import Refused
from common.zones import date_words, local_words
from pathway.selectors import patient_expected_ranges
from patients.measures import unusual_values_refused
from patients.models import AdverseEvent, ClinicalRecord, LungFunctionTest, Patient
from patients.selectors import course_baseline_lung_function
from scheduling.alerts import alert_raise
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    AlertKind,
    Severity,
    Visit,
    VisitKind,
)
from scheduling.services import visit_record_done


def clinical_record_save(
    *, record: ClinicalRecord, by, early_reason: str = "", values_checked: bool = False
) -> list[str]:
    """Validate and save a record; returns its warnings (what was not done, and what to look
    at). A value possible but outside the protocol's expected range is refused unless
    `values_checked` says someone has looked at it twice (the forms ask it typed again).

    A record entered against an open follow-up visit marks the visit done, unless it was
    taken before the visit's window opened: that needs a clinician's reason, kept as a
    protocol deviation, and without one the visit stays open. Another lung function on the
    same day is flagged. A lung function that has fallen from baseline beyond the protocol's
    thresholds alerts.
    """
    warnings = []
    if record.entered_by_id is None:
        record.entered_by = by
    if record.visit_id and not record.patient_id:
        record.patient_id = record.visit.course.patient_id
    record.full_clean()
    unusual = record.unusual_values(patient_expected_ranges(patient_id=record.patient_id))
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    record._history_user = by
    if isinstance(record, LungFunctionTest):
        warnings += _same_day_lung_function(record)
    with transaction.atomic():
        record.save()
        if record.visit_id:
            visit = Visit.objects.select_related("course__site", "course__protocol").get(
                pk=record.visit_id
            )
            # A procedure is done only when it is recorded on the course, which checks what it
            # needs; a measurement taken at its booking leaves it booked.
            if visit.kind == VisitKind.FOLLOW_UP and visit.status in OPEN_VISIT_STATUSES:
                warnings += _follow_up_done(visit, record, by=by, early_reason=early_reason)
            if isinstance(record, LungFunctionTest):
                _alert_on_decline(record, visit)
    return warnings


def _follow_up_done(visit: Visit, record: ClinicalRecord, *, by, early_reason: str) -> list[str]:
    """Mark the follow-up done by this measurement where the rule allows (scheduling's
    `visit_record_done`: its window had opened, or a reason says why it counts anyway);
    otherwise say why it is still open."""
    try:
        visit_record_done(visit=visit, measurement=record, by=by, early_reason=early_reason)
    except Refused as refused:
        return refused.reasons
    return []


def _same_day_lung_function(test: LungFunctionTest) -> list[str]:
    """Another lung function of the patient on the same day: which one counts is not clear."""
    others = list(
        LungFunctionTest.objects.filter(patient_id=test.patient_id, taken_on=test.taken_on)
        .exclude(pk=test.pk)
        .order_by("id")
    )
    if not others:
        return []
    zone = Patient.objects.select_related("site").get(pk=test.patient_id).zone
    return [
        f"Another lung function test of this patient is recorded for "
        f"{date_words(test.taken_on)} (FEV1 {other.fev1_pct_predicted} % predicted, entered "
        f"{local_words(other.entered_at, zone)}). The eligibility checklist "
        "uses the one entered last: correct or remove the wrong one."
        for other in others
    ]


def lung_function_declines(
    *, baseline: LungFunctionTest, follow_up: LungFunctionTest, protocol
) -> list[str]:
    """How far a follow-up's FEV1 and DLCO fell from baseline, where beyond the protocol's limit."""
    declines = []
    fev1_fall_ml = (baseline.fev1_l - follow_up.fev1_l) * 1000
    if fev1_fall_ml > protocol.fev1_decline_alert_ml:
        declines.append(
            f"FEV1 fell by {fev1_fall_ml:.0f} mL from baseline ({baseline.fev1_l} → "
            f"{follow_up.fev1_l} L); the protocol alerts beyond "
            f"{protocol.fev1_decline_alert_ml} mL."
        )
    if baseline.dlco_pct_predicted and follow_up.dlco_pct_predicted:
        fall_pct = (
            (baseline.dlco_pct_predicted - follow_up.dlco_pct_predicted)
            * 100
            / baseline.dlco_pct_predicted
        )
        if fall_pct > protocol.dlco_decline_alert_pct:
            declines.append(
                f"DLCO fell by {fall_pct.quantize(Decimal('0.1'))} % from baseline "
                f"({baseline.dlco_pct_predicted} → {follow_up.dlco_pct_predicted} % predicted); "
                f"the protocol alerts beyond {protocol.dlco_decline_alert_pct} %."
            )
    return declines


def _alert_on_decline(test: LungFunctionTest, visit: Visit) -> None:
    course = visit.course
    baseline = course_baseline_lung_function(course=course)
    if baseline is None:
        return
    declines = lung_function_declines(baseline=baseline, follow_up=test, protocol=course.protocol)
    if declines:
        alert_raise(
            kind=AlertKind.FUNCTION_DECLINE,
            severity=Severity.WARNING,
            course=course,
            visit=visit,
            condition_key=f"function_decline.t{test.pk}",
            message=f"At the {visit}: " + " ".join(declines),
        )


def adverse_event_record(*, event: AdverseEvent, by) -> AdverseEvent:
    """Record an adverse event; one of the protocol's alert grade or worse, or serious, alerts
    the coordinator at once."""
    if event.entered_by_id is None:
        event.entered_by = by
    if event.course_id and not event.patient_id:
        event.patient_id = event.course.patient_id
    event.full_clean()
    event._history_user = by
    with transaction.atomic():
        event.save()
        course = event.course
        if event.serious or event.grade >= course.protocol.adverse_event_alert_grade:
            serious = "serious " if event.serious else ""
            # A reaction at an infusion is heard by whoever the infusion-reaction route names
            # (the clinicians, by default), beside the coordinator.
            at_infusion = event.visit_id and event.visit.kind == VisitKind.INFUSION
            alert_raise(
                kind=AlertKind.INFUSION_REACTION if at_infusion else AlertKind.ADVERSE_EVENT,
                severity=Severity.URGENT,
                course=course,
                visit=event.visit,
                condition_key=f"adverse_event.e{event.pk}",
                message=(
                    f"Grade {event.grade} {serious}adverse event, onset "
                    f"{date_words(event.onset_on)}: "
                    f"{event.description[:300]}"
                ),
            )
    return event
