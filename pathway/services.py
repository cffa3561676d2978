"""One entry point per change of a course's state.

Each `course_<transition>` function checks the user's permission and the pathway's rules,
then fires the transition, saves, writes the log and does the follow-up work in one
transaction. On any failure the course is left, in the database and in memory, as it was.
The admin, management commands and tasks all come through here.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from common.errors import Refused
from common.zones import date_words, local_words
from pathway import conditions
from pathway.chains import course_reservations_reconcile
from pathway.coi import coi_id_format, coi_id_normalise, coi_ids_match
from pathway.custody import custody_append
from pathway.models import (
    TRANSITION_LABELS,
    Batch,
    BatchStatus,
    CustodyEvent,
    CustodyKind,
    Protocol,
    TransitionLog,
    TreatmentCourse,
)
from pathway.selectors import course_dosing_weight, course_evaluation_facts
from pathway.signatures import bedside_confirmers, may_sign_release, password_confirms
from pathway.states import FINAL_STATES
from patients.measures import measure, unusual_values, unusual_values_refused
from patients.models import BodyMeasurement
from scheduling import services as scheduling
from scheduling.alerts import alert_raise
from scheduling.models import AlertKind, DeviationKind, Severity, VisitKind
from scheduling.selectors import course_completion_visit_done


class TransitionRefused(Refused):
    """The pathway's rules do not allow this step now; `reasons` says why, in words."""


def _authorise(course: TreatmentCourse, name: str, by: AbstractBaseUser) -> None:
    """Refuse a step the user may not take, or that the course's state does not allow."""
    method = getattr(course, name)
    label = TRANSITION_LABELS[name].lower()
    meta = method._django_fsm
    transition = meta.get_transition(course.state)
    if transition is None or not can_proceed(method):
        raise TransitionRefused(
            [f"A course that is {course.get_state_display().lower()} cannot {label}."]
        )
    if not transition.has_perm(course, by):
        raise PermissionDenied(f"You do not have permission to {label} a treatment course.")


@contextmanager
def _changing(course: TreatmentCourse) -> Iterator[None]:
    """A transaction that, if anything fails, also puts the in-memory course back."""
    try:
        with transaction.atomic():
            yield
    except BaseException:
        _reload(course)
        raise


def _reload(course: TreatmentCourse) -> None:
    """Put the in-memory course back as the database has it.

    Not `refresh_from_db()`: django-fsm-2's version briefly unprotects the state field for the
    whole class, which races when two threads fail a transition at once.
    """
    fresh = TreatmentCourse.objects.get(pk=course.pk)
    course.__dict__.update(fresh.__dict__)


def _fire(
    course: TreatmentCourse,
    name: str,
    *,
    by: AbstractBaseUser,
    note: str = "",
    data: dict | None = None,
    reconcile: bool = True,
    **transition_kwargs,
) -> TransitionLog:
    """Fire a transition, save the course and log it, and bring the capacity the course
    holds in line with its new state (unless the caller books it exactly, `reconcile=False`).
    Call inside `_changing`."""
    source = course.state
    getattr(course, name)(**transition_kwargs)
    now = timezone.now()
    course.state_changed_at = now
    course._history_user = by  # the audit history names who, outside a request too
    # Raises ConcurrentTransition if another request moved the course since it was read.
    course.save()
    log = TransitionLog.objects.create(
        course=course,
        transition=name,
        source_state=source,
        target_state=course.state,
        by=by,
        at=now,
        note=note,
        data=data or {},
    )
    if reconcile:
        slip = SLIPS.get(name)
        course_reservations_reconcile(
            course=course,
            why=f"{slip}: {note}" if slip and note else slip or TRANSITION_LABELS[name],
            tell_changes=slip is not None,
            alert_key=f"log{log.pk}",
        )
    return log


# Steps after which the capacity a course held changes unplanned: the coordinator is told.
SLIPS = {
    "reject_sample": "The sample was rejected",
    "fail_qc": "The batch failed QC",
    "hold": "The course was put on hold",
    "resume": "The course was resumed",
    "withdraw": "The course was withdrawn",
}


def course_open_refusal(*, patient) -> str:
    """Why a new course may not be opened for this patient; empty if it may."""
    if patient.courses.exclude(state__in=FINAL_STATES).exists():
        return "This patient already has an open treatment course."
    return ""


def course_create(
    *, patient, by: AbstractBaseUser, protocol: Protocol | None = None, note: str = ""
) -> TreatmentCourse:
    """Refer a patient: a new course at their site, on the default protocol unless given."""
    if not by.has_perm("pathway.add_treatmentcourse"):
        raise PermissionDenied("You do not have permission to refer a patient.")
    refusal = course_open_refusal(patient=patient)
    if refusal:
        raise TransitionRefused([refusal])
    protocol = protocol or Protocol.objects.get(is_default=True)
    return TreatmentCourse.objects.create(
        patient=patient, site=patient.site, protocol=protocol, notes=note, referred_by=by
    )


def course_start_evaluation(
    *, course: TreatmentCourse, by: AbstractBaseUser, note: str = ""
) -> TransitionLog:
    _authorise(course, "start_evaluation", by)
    with _changing(course):
        return _fire(course, "start_evaluation", by=by, note=note, at=timezone.now())


def course_approve(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    note: str = "",
    low_fev1_justification: str = "",
) -> TransitionLog:
    """Approve a course whose evaluation passes every eligibility rule.

    FEV1 below the protocol's range is allowed only with a specialist's justification.
    """
    _authorise(course, "approve", by)
    checklist = conditions.eligibility_checklist(
        facts=course_evaluation_facts(course=course),
        protocol=course.protocol,
        low_fev1_justification=low_fev1_justification,
    )
    failures = [result.reason for result in checklist if result.blocks]
    if failures:
        raise TransitionRefused(failures)
    overridden = [r for r in checklist if r.status == conditions.RuleStatus.OVERRIDDEN]
    data = {
        "checklist": [
            {"rule": r.rule, "status": str(r.status), "reason": r.reason, "values": r.values}
            for r in checklist
        ]
    }
    with _changing(course):
        return _fire(
            course,
            "approve",
            by=by,
            note=note,
            data=data,
            low_fev1_justification=low_fev1_justification.strip() if overridden else "",
        )


def _require_reason(reason: str, what: str) -> str:
    if not reason or not reason.strip():
        raise TransitionRefused([f"Give a reason to {what}."])
    return reason.strip()


def course_decline(*, course: TreatmentCourse, by: AbstractBaseUser, reason: str) -> TransitionLog:
    _authorise(course, "decline", by)
    reason = _require_reason(reason, "decline a course")
    with _changing(course):
        return _fire(course, "decline", by=by, note=reason)


def _require_future(when: dt.datetime, what: str) -> None:
    if when <= timezone.now():
        raise TransitionRefused([f"The {what} must be in the future."])


def _require_past(when: dt.datetime, what: str) -> None:
    if when > timezone.now():
        raise TransitionRefused([f"The {what} cannot be in the future."])


def _schedule_procedure(
    course: TreatmentCourse,
    name: str,
    kind: VisitKind,
    *,
    by: AbstractBaseUser,
    scheduled_at: dt.datetime,
    place: str,
    note: str,
    deviation_reason: str,
    transplant_at: dt.datetime | None = None,
) -> TransitionLog:
    """Book a harvest or a transplant: the booking, the step and the capacity it holds,
    together. Outside the site's clinic hours it needs a reason, logged as a protocol
    deviation. Where the site keeps a calendar for its suite, the time must be a free slot of
    it, and a harvest holds its whole chain (`pathway.chains`) or is refused whole."""
    _authorise(course, name, by)
    _require_future(scheduled_at, kind.value)
    if kind == VisitKind.HARVEST:
        harvest_at = scheduled_at
    else:
        harvest_at, transplant_at = None, scheduled_at
    with _changing(course):
        scheduling.visit_book(
            course=course,
            kind=kind,
            scheduled_at=scheduled_at,
            place=place,
            by=by,
            deviation_reason=deviation_reason,
        )
        log = _fire(
            course,
            name,
            by=by,
            note=note,
            data={"scheduled_at": scheduled_at.isoformat(), "place": place},
            reconcile=False,
        )
        course_reservations_reconcile(
            course=course, strict=True, harvest_at=harvest_at, transplant_at=transplant_at
        )
        return log


def course_schedule_harvest(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    scheduled_at: dt.datetime,
    place: str,
    note: str = "",
    deviation_reason: str = "",
    transplant_at: dt.datetime | None = None,
) -> TransitionLog:
    """Book the harvest; where the site keeps calendars, as one of `course_chains`: the
    harvest slot, the lab's expansion days and the provisional transplant at `transplant_at`
    (the earliest free if not given), reserved together or not at all."""
    return _schedule_procedure(
        course,
        "schedule_harvest",
        VisitKind.HARVEST,
        by=by,
        scheduled_at=scheduled_at,
        place=place,
        note=note,
        deviation_reason=deviation_reason,
        transplant_at=transplant_at,
    )


def course_record_harvest(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    performed_at: dt.datetime,
    operator,
    note: str = "",
) -> TransitionLog:
    """Record the brushing; the course gets its chain-of-identity id if it has none yet."""
    _authorise(course, "record_harvest", by)
    _require_past(performed_at, "harvest time")
    local_year = timezone.localtime(performed_at, course.site.time_zone).year
    coi_id = course.coi_id or coi_id_format(
        site_code=course.site.code, year=local_year, number=course.pk
    )
    with _changing(course):
        scheduling.visit_mark_done(course=course, kind=VisitKind.HARVEST, done_at=performed_at)
        log = _fire(
            course,
            "record_harvest",
            by=by,
            note=note,
            data={
                "performed_at": performed_at.isoformat(),
                "operator": operator.get_username(),
                "coi_id": coi_id,
            },
            performed_at=performed_at,
            operator=operator,
            coi_id=coi_id,
        )
        custody_append(
            course=course,
            kind=CustodyKind.COLLECTED,
            by=by,
            at=performed_at,
            location=course.site.name,
            note=f"Brushing by {operator.get_username()}.",
        )
        return log


def course_receive_at_lab(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    received_at: dt.datetime,
    temperature_c: Decimal,
    transit_hours: Decimal,
    scanned_coi_id: str,
    note: str = "",
    values_checked: bool = False,
) -> TransitionLog:
    """Record the sample's arrival, its label scanned, and start its batch. A broken cold chain
    rejects it at once and alerts the coordinator; the course goes back to eligible for a
    re-harvest. An impossible temperature or transit time is refused; an unusual one needs
    `values_checked` (the form asks it typed again)."""
    _authorise(course, "receive_at_lab", by)
    _require_past(received_at, "receipt time")
    measured = {"temperature_c": temperature_c, "transit_hours": transit_hours}
    impossible = {
        field: [words]
        for field, value in measured.items()
        if (words := measure(field).refusal(value))
    }
    if impossible:
        raise TransitionRefused(by_field=impossible)
    unusual = unusual_values(
        measured,
        keys={field: field for field in measured},
        expected=course.protocol.expected_ranges,
    )
    if unusual and not values_checked:
        raise TransitionRefused(by_field=unusual_values_refused(unusual).message_dict)
    if not course.coi_id or not coi_ids_match(scanned_coi_id, course.coi_id):
        raise TransitionRefused(
            [
                f"The label scanned at the lab ({scanned_coi_id}) is not this course's "
                f"chain-of-identity id ({course.coi_id}): check the sample before receiving it."
            ]
        )
    if course.harvested_at and received_at < course.harvested_at:
        raise TransitionRefused(["The lab cannot receive the sample before it was harvested."])
    breaches = conditions.cold_chain_breaches(
        protocol=course.protocol, temperature_c=temperature_c, transit_hours=transit_hours
    )
    receipt = {
        "received_at": received_at.isoformat(),
        "temperature_c": str(temperature_c),
        "transit_hours": str(transit_hours),
        "cold_chain_broken": bool(breaches),
    }
    lab = settings.MANUFACTURING_FACILITY
    with _changing(course):
        log = _fire(
            course, "receive_at_lab", by=by, note=note, data=receipt, received_at=received_at
        )
        batch = Batch.objects.create(
            course=course,
            coi_id=course.coi_id,
            collected_at=course.harvested_at,
            received_at=received_at,
            temperature_c=temperature_c,
            transit_hours=transit_hours,
        )
        custody_append(
            course=course,
            batch=batch,
            kind=CustodyKind.RECEIVED_AT_LAB,
            by=by,
            at=received_at,
            location=lab,
            temperature_c=temperature_c,
            note=f"{transit_hours} h in transit; label scanned.",
        )
        if not breaches:
            custody_append(
                course=course,
                batch=batch,
                kind=CustodyKind.EXPANSION_STARTED,
                by=by,
                at=received_at,
                location=lab,
            )
            return log
        reason = " ".join(breaches)
        batch.status = BatchStatus.REJECTED
        batch.save(update_fields=["status"])
        custody_append(
            course=course,
            batch=batch,
            kind=CustodyKind.REJECTED,
            by=by,
            at=received_at,
            location=lab,
            note=reason,
        )
        _discard(batch, by=by, reason=reason, at=received_at)
        alert_raise(
            kind=AlertKind.COLD_CHAIN_BROKEN,
            severity=Severity.URGENT,
            course=course,
            condition_key=f"cold_chain_broken.b{batch.pk}",
            message=f"The sample {course.coi_id} was rejected: {reason} A re-harvest is needed.",
        )
        return _fire(course, "reject_sample", by=by, note=reason, data=receipt)


def _current_batch(course: TreatmentCourse) -> Batch | None:
    return course.batches.filter(status=BatchStatus.EXPANDING).first()


def _end_batch(course: TreatmentCourse, status: BatchStatus, by, reason: str) -> None:
    batch = _current_batch(course)
    if batch is None:
        return
    batch.status = status
    batch.save(update_fields=["status"])
    kind = CustodyKind.REJECTED if status == BatchStatus.REJECTED else CustodyKind.CORRECTION
    custody_append(
        course=course,
        batch=batch,
        kind=kind,
        by=by,
        at=timezone.now(),
        location=settings.MANUFACTURING_FACILITY,
        note=f"{BatchStatus(status).label}: {reason}",
    )
    _discard(batch, by=by, reason=reason)


def _discard(batch: Batch, *, by, reason: str, at: dt.datetime | None = None) -> None:
    """The product's disposition: discarded, by whom and why, in the chain of custody."""
    custody_append(
        course=batch.course,
        batch=batch,
        kind=CustodyKind.DISCARDED,
        by=by,
        at=at or timezone.now(),
        location=settings.MANUFACTURING_FACILITY,
        note=f"Discarded: {reason}",
    )


def _discard_unused_product(course: TreatmentCourse, *, by, reason: str) -> None:
    """A withdrawn course's batch still expanding, or released and not given, is discarded."""
    for batch in course.batches.filter(status__in=[BatchStatus.EXPANDING, BatchStatus.RELEASED]):
        if batch.status == BatchStatus.RELEASED and course.transplanted_at:
            continue  # given to the patient: nothing left to discard
        batch.status = BatchStatus.DISCARDED
        batch.save(update_fields=["status"])
        _discard(batch, by=by, reason=reason)


def course_reject_sample(
    *, course: TreatmentCourse, by: AbstractBaseUser, reason: str
) -> TransitionLog:
    _authorise(course, "reject_sample", by)
    reason = _require_reason(reason, "reject a sample")
    with _changing(course):
        _end_batch(course, BatchStatus.REJECTED, by, reason)
        return _fire(course, "reject_sample", by=by, note=reason)


def course_fail_qc(*, course: TreatmentCourse, by: AbstractBaseUser, reason: str) -> TransitionLog:
    _authorise(course, "fail_qc", by)
    reason = _require_reason(reason, "fail QC")
    with _changing(course):
        _end_batch(course, BatchStatus.FAILED_QC, by, reason)
        return _fire(course, "fail_qc", by=by, note=reason)


def batch_release_refusals(*, batch: Batch, course: TreatmentCourse) -> list[str]:
    """Why the batch's results do not allow its release now; empty if they do. The release
    form shows these before anyone signs; `course_release` refuses with them."""
    qc = conditions.QCResults(
        identity_p63_pct=batch.identity_p63_pct,
        purity_pct=batch.purity_pct,
        sterility_negative=bool(batch.sterility_negative),
        viability_pct=batch.viability_pct,
        viable_cells=batch.viable_cells,
        extra=batch.extra_qc_results,
    )
    return conditions.release_refusals(
        protocol=course.protocol,
        expansion_day=batch.expansion_day,
        qc=qc,
        weight=course_dosing_weight(course=course),
        qc_tests=list(course.protocol.qc_tests.all()),
    )


RELEASE_MEANING = "I release this product for clinical use: its QC results meet the specification."


def course_release(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    password: str,
    meaning: str = RELEASE_MEANING,
    note: str = "",
    request=None,
) -> TransitionLog:
    """Release the batch, signed: a second lab user, not the one who entered the QC results,
    re-enters their password. Refused with reasons when any result is out of specification,
    the expansion is outside its days, or the cells cannot make the minimum dose."""
    _authorise(course, "release", by)
    batch = _current_batch(course)
    if batch is None or not batch.qc_recorded:
        raise TransitionRefused(["The batch's QC results are not recorded yet."])
    if batch.qc_recorded_by_id == by.pk:
        raise TransitionRefused(
            ["You entered this batch's QC results: a second lab user must sign the release."]
        )
    if not may_sign_release(by):
        raise TransitionRefused(["Only a lab user allowed to release products signs a release."])
    if not password_confirms(user=by, password=password, request=request):
        raise TransitionRefused(["The password was not accepted; the release was not signed."])
    refusals = batch_release_refusals(batch=batch, course=course)
    if refusals:
        raise TransitionRefused(refusals)
    now = timezone.now()
    data = {
        "batch": batch.pk,
        "expansion_day": batch.expansion_day,
        "qc_recorded_by": batch.qc_recorded_by.get_username(),
        "signed_by": by.get_username(),
        "signed_at": now.isoformat(),
        "meaning": meaning,
        "viable_cells": batch.viable_cells,
    }
    with _changing(course):
        batch.status, batch.released_by = BatchStatus.RELEASED, by
        batch.released_at, batch.release_meaning = now, meaning
        batch.save(update_fields=["status", "released_by", "released_at", "release_meaning"])
        custody_append(
            course=course,
            batch=batch,
            kind=CustodyKind.RELEASED,
            by=by,
            at=now,
            location=settings.MANUFACTURING_FACILITY,
            note=f"Signed: {meaning}",
        )
        return _fire(
            course,
            "release",
            by=by,
            note=note,
            data=data,
            released_at=now,
            viable_cells=batch.viable_cells,
        )


def course_schedule_transplant(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    scheduled_at: dt.datetime,
    place: str,
    note: str = "",
    deviation_reason: str = "",
) -> TransitionLog:
    return _schedule_procedure(
        course,
        "schedule_transplant",
        VisitKind.TRANSPLANT,
        by=by,
        scheduled_at=scheduled_at,
        place=place,
        note=note,
        deviation_reason=deviation_reason,
    )


SIGNATURE_NOT_ACCEPTED = (
    "The second person's confirmation was not accepted: check who is chosen and that they "
    "typed their own password."
)


def _confirm_second_person(*, course, by, second_person, password: str, request) -> list[str]:
    """The bedside check's second person: one of `bedside_confirmers`, with their password
    (checked like a login, so wrong ones lock the account out like failed logins)."""
    if second_person is None:
        return ["A second person must confirm the transplant."]
    if second_person.pk == by.pk:
        return ["The second person confirming the transplant must be someone else."]
    if not bedside_confirmers(course=course, recorder=by).filter(pk=second_person.pk).exists():
        return [
            f"{second_person.get_full_name() or second_person.get_username()} may not confirm "
            f"an administration: the second person must be an active clinician of "
            f"{course.site} allowed to confirm administrations."
        ]
    if not password_confirms(user=second_person, password=password, request=request):
        return [SIGNATURE_NOT_ACCEPTED]
    return []


def course_record_transplant(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    performed_at: dt.datetime,
    bedside_coi_id: str,
    cells_administered: int,
    weight_kg: Decimal,
    weighed_on: dt.date,
    second_person,
    second_person_password: str,
    discharged_at: dt.datetime | None = None,
    early_reason: str = "",
    note: str = "",
    request=None,
    values_checked: bool = False,
) -> TransitionLog:
    """Record the transplant after the bedside checks: the product arrived at the site through
    the chain of custody, its chain-of-identity id matches the patient's, no more cells are
    given than were released, the dose per kg of a recent weight is in range, and a second
    person confirms. A mismatched id also raises an urgent alert. A transplant before its
    booked day needs a reason (a protocol deviation). Every refusal is given at once, by the
    field it is about. Creates the follow-ups, due within their windows until booked."""
    _authorise(course, "record_transplant", by)
    zone = course.site.time_zone
    by_field: dict[str, list[str]] = defaultdict(list)
    for field, value in (("cells_administered", cells_administered), ("weight_kg", weight_kg)):
        impossible = measure(field).refusal(value)
        if impossible:
            by_field[field].append(impossible)
    if performed_at > timezone.now():
        by_field["performed_at"].append("The transplant time cannot be in the future.")
    elif course.released_at and performed_at < course.released_at:
        by_field["performed_at"].append("The transplant cannot come before the product's release.")
    if discharged_at is not None and discharged_at < performed_at:
        by_field["discharged_at"].append("Discharge cannot come before the transplant.")
    by_field["weighed_on"] += conditions.dosing_weight_refusals(
        protocol=course.protocol,
        weighed_on=weighed_on,
        transplant_on=timezone.localdate(performed_at, zone),
        evaluation_started_on=timezone.localdate(course.evaluation_started_at, zone)
        if course.evaluation_started_at
        else None,
    )
    weight = BodyMeasurement(patient=course.patient, taken_on=weighed_on, weight_kg=weight_kg)
    if not by_field["cells_administered"] and not by_field["weight_kg"]:
        for field, found in conditions.transplant_refusals(
            protocol=course.protocol,
            course_coi_id=course.coi_id,
            bedside_coi_id=bedside_coi_id,
            cells_administered=cells_administered,
            weight=weight,
            released_cells=course.viable_cells_released,
        ).items():
            by_field[field] += found
        unusual = unusual_values(
            {"cells_administered": cells_administered, "weight_kg": weight_kg},
            keys={"cells_administered": "cells_administered", "weight_kg": "weight_kg"},
            expected=course.protocol.expected_ranges,
        )
        if unusual and not values_checked:
            for field, words in unusual_values_refused(unusual).message_dict.items():
                by_field[field] += words
    refusals = conditions.product_arrival_refusals(
        custody_events=_custody_since_release(course, until=performed_at), site=course.site.name
    )
    booking = scheduling.open_booking(course=course, kind=VisitKind.TRANSPLANT)
    early = booking is not None and timezone.localdate(performed_at, zone) < timezone.localdate(
        booking.scheduled_at, zone
    )
    if early and not early_reason.strip():
        booked_on = timezone.localdate(booking.scheduled_at, zone)
        by_field["early_reason"].append(
            f"The transplant is booked for {date_words(booked_on)}: move the booking first, or "
            "give the reason it was done earlier."
        )
    coi_mismatch = not course.coi_id or not coi_ids_match(bedside_coi_id, course.coi_id)
    if coi_mismatch:
        _alert_coi_mismatch(course=course, bedside_coi_id=bedside_coi_id, by=by)
    for reason in _confirm_second_person(
        course=course,
        by=by,
        second_person=second_person,
        password=second_person_password,
        request=request,
    ):
        field = "second_person_password" if reason == SIGNATURE_NOT_ACCEPTED else "second_person"
        by_field[field].append(reason)
    if refusals or any(by_field.values()):
        raise TransitionRefused(refusals, by_field=by_field)
    dose = conditions.dose_million_per_kg(cells=cells_administered, weight_kg=weight_kg)
    data = {
        "performed_at": performed_at.isoformat(),
        "bedside_coi_id": bedside_coi_id,
        "cells_administered": cells_administered,
        "weight_kg": str(weight_kg),
        "weighed_on": str(weighed_on),
        "dose_million_per_kg": f"{dose:.3f}",
        "confirmed_by": second_person.get_username(),
    }
    with _changing(course):
        if not BodyMeasurement.objects.filter(
            patient=course.patient, taken_on=weighed_on, weight_kg=weight_kg
        ).exists():
            weight.entered_by = by
            weight.save()
        log = _fire(
            course,
            "record_transplant",
            by=by,
            note=note,
            data=data,
            performed_at=performed_at,
            performed_on=timezone.localdate(performed_at, course.site.time_zone),
            cells_administered=cells_administered,
            discharged_at=discharged_at,
        )
        custody_append(
            course=course,
            batch=course.batches.filter(status=BatchStatus.RELEASED).first(),
            kind=CustodyKind.ADMINISTERED,
            by=by,
            at=performed_at,
            location=course.site.name,
            note=f"{cells_administered / 1e6:.1f} × 10⁶ cells ({dose:.2f} × 10⁶/kg at "
            f"{weight_kg} kg); confirmed by {second_person.get_username()}.",
        )
        if early:
            scheduling.deviation_record(
                course=course,
                visit=booking,
                by=by,
                reason=early_reason.strip(),
                deviations=[
                    (
                        DeviationKind.BEFORE_BOOKING,
                        f"Booked for {local_words(booking.scheduled_at, zone)}.",
                    )
                ],
            )
        scheduling.visit_mark_done(course=course, kind=VisitKind.TRANSPLANT, done_at=performed_at)
        scheduling.visits_schedule_follow_ups(course=course)
        return log


def _custody_since_release(course: TreatmentCourse, *, until: dt.datetime) -> list:
    """(kind, when) of the course's custody events from its release to `until`, less those a
    correction has voided."""
    if not course.released_at:
        return []
    voided = CustodyEvent.objects.filter(course=course, corrects__isnull=False).values(
        "corrects_id"
    )
    return list(
        course.custody_events.filter(at__gte=course.released_at, at__lte=until)
        .exclude(pk__in=voided)
        .values_list("kind", "at")
    )


def _alert_coi_mismatch(*, course: TreatmentCourse, bedside_coi_id: str, by) -> None:
    """A product that does not match its patient reached the bedside: recorded and alerted at
    once, outside the refused transition so that the record stays."""
    entered = coi_id_normalise(bedside_coi_id)
    alert_raise(
        kind=AlertKind.COI_MISMATCH,
        severity=Severity.URGENT,
        course=course,
        condition_key=f"coi_mismatch.c{course.pk}.{entered}",
        message=(
            f"{by.get_username()} read chain-of-identity id {bedside_coi_id} at the bedside for "
            f"a course whose id is {course.coi_id or 'not issued'}. The transplant was blocked."
        ),
    )


def course_complete(
    *, course: TreatmentCourse, by: AbstractBaseUser, note: str = ""
) -> TransitionLog:
    _authorise(course, "complete", by)
    if not course_completion_visit_done(course=course):
        final = course.protocol.visits.filter(completes_course=True).first()
        name = final.name if final else "final follow-up"
        raise TransitionRefused([f"The {name} visit is not done yet."])
    with _changing(course):
        return _fire(course, "complete", by=by, note=note)


def course_hold(*, course: TreatmentCourse, by: AbstractBaseUser, reason: str) -> TransitionLog:
    _authorise(course, "hold", by)
    reason = _require_reason(reason, "put a course on hold")
    with _changing(course):
        scheduling.reminders_suspend(course=course)
        return _fire(course, "hold", by=by, note=reason)


def course_resume(
    *, course: TreatmentCourse, by: AbstractBaseUser, note: str = ""
) -> TransitionLog:
    """Resume a course on hold in the state it left."""
    _authorise(course, "resume", by)
    with _changing(course):
        log = _fire(course, "resume", by=by, note=note)
        scheduling.reminders_resume(course=course)
        return log


def course_withdraw(*, course: TreatmentCourse, by: AbstractBaseUser, reason: str) -> TransitionLog:
    """Withdraw a course for good; its open appointments are cancelled and a product not
    given (expanding, or released) is discarded, recorded in the chain of custody."""
    _authorise(course, "withdraw", by)
    reason = _require_reason(reason, "withdraw a course")
    with _changing(course):
        scheduling.visits_cancel_open(course=course)
        _discard_unused_product(course, by=by, reason=f"course withdrawn: {reason}")
        return _fire(course, "withdraw", by=by, note=reason)


# What the admin calls, by transition name, with the transition form's cleaned data.
COURSE_TRANSITION_SERVICES = {
    "start_evaluation": course_start_evaluation,
    "approve": course_approve,
    "decline": course_decline,
    "schedule_harvest": course_schedule_harvest,
    "record_harvest": course_record_harvest,
    "receive_at_lab": course_receive_at_lab,
    "reject_sample": course_reject_sample,
    "fail_qc": course_fail_qc,
    "release": course_release,
    "schedule_transplant": course_schedule_transplant,
    "record_transplant": course_record_transplant,
    "complete": course_complete,
    "hold": course_hold,
    "resume": course_resume,
    "withdraw": course_withdraw,
}
