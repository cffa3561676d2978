"""One entry point per change of a course's state.

Each `course_<transition>` function checks the user's permission and the pathway's rules,
then fires the transition, saves, writes the log and does the follow-up work in one
transaction. On any failure the course is left, in the database and in memory, as it was.
The admin, management commands and tasks all come through here.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterator
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
from pathway.coi import coi_id_format, coi_id_normalise, coi_ids_match, unit_id_normalise
from pathway.custody import custody_append
from pathway.lots import units_allocate, units_give_back
from pathway.models import (
    TRANSITION_LABELS,
    Batch,
    BatchStatus,
    CustodyEvent,
    CustodyKind,
    Infusion,
    LotStatus,
    ProductUnit,
    Protocol,
    ProtocolInstrument,
    TransitionLog,
    TreatmentCourse,
    UnitStatus,
    VitalSigns,
    VitalsTimepoint,
)
from pathway.records import adverse_event_record
from pathway.selectors import course_dosing_weight, course_evaluation_facts
from pathway.signatures import bedside_confirmers, may_sign_release, password_confirms
from pathway.states import FINAL_STATES, CourseState
from pathway.therapies import pathway_of
from patients.measures import measure, unusual_values, unusual_values_refused
from patients.models import AdverseEvent, BodyMeasurement, Relatedness
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
    if transition is None:
        raise TransitionRefused(
            [f"A course that is {course.get_state_display().lower()} cannot {label}."]
        )
    # A step of another therapy: each unmet condition says why, in words.
    unmet = [
        condition.reason(course, TRANSITION_LABELS[name])
        for condition in transition.conditions
        if hasattr(condition, "reason") and not condition(course)
    ]
    if unmet:
        raise TransitionRefused(unmet)
    if not can_proceed(method):
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


def protocol_therapy_defaults(*, therapy: str, given: Collection[str] = ()) -> dict:
    """A new protocol's numbers where its therapy's differ from the model's defaults (SPEC's,
    `TherapyPathway.protocol_defaults`), but for the fields in `given`. Every way a protocol
    is added takes them from here: `protocol_create`, and the admin's add form (its fields
    left as first shown)."""
    return {
        field: value
        for field, value in pathway_of(therapy).protocol_defaults.items()
        if field not in given
    }


def protocol_follow_ups_copy(*, protocol: Protocol) -> None:
    """A new protocol's follow-ups and questionnaires, where it has none of its own: the
    default protocol's, each follow-up in its therapy's words for patients. Every way a
    protocol is added calls it once it is saved."""
    default = Protocol.objects.filter(is_default=True).exclude(pk=protocol.pk).first()
    if default is None:
        return
    if not protocol.visits.exists():
        words = protocol.pathway.follow_up_words
        for visit in default.visits.all():
            visit.pk, visit.protocol = None, protocol
            if not visit.includes_ct:
                visit.patient_description = words
            visit.save()
    if not protocol.instruments.exists():
        ProtocolInstrument.objects.bulk_create(
            ProtocolInstrument(
                protocol=protocol,
                instrument_id=asked.instrument_id,
                every_days=asked.every_days,
                until_weeks=asked.until_weeks,
                open_days=asked.open_days,
                remind_after_days=asked.remind_after_days,
            )
            for asked in default.instruments.all()
        )


def protocol_create(*, name: str, therapy: str, **changes) -> Protocol:
    """A new protocol of `therapy` with SPEC's defaults for it (`protocol_therapy_defaults`,
    then `changes`), and the default protocol's follow-ups and questionnaires
    (`protocol_follow_ups_copy`)."""
    with transaction.atomic():
        protocol = Protocol(
            name=name, therapy=therapy, **protocol_therapy_defaults(therapy=therapy, given=changes)
        )
        for field, value in changes.items():
            setattr(protocol, field, value)
        protocol.full_clean()
        protocol.save()
        protocol_follow_ups_copy(protocol=protocol)
    return protocol


def site_default_protocol(*, site) -> Protocol:
    """The protocol a site's new courses follow unless told otherwise: its own default (a site
    giving only MSC infusions), else the programme's."""
    return Protocol.objects.filter(default_at=site).order_by(
        "name"
    ).first() or Protocol.objects.get(is_default=True)


def course_create(
    *, patient, by: AbstractBaseUser, protocol: Protocol | None = None, note: str = ""
) -> TreatmentCourse:
    """Refer a patient: a new course at their site, on the site's default protocol unless
    given."""
    if not by.has_perm("pathway.add_treatmentcourse"):
        raise PermissionDenied("You do not have permission to refer a patient.")
    refusal = course_open_refusal(patient=patient)
    if refusal:
        raise TransitionRefused([refusal])
    protocol = protocol or site_default_protocol(site=patient.site)
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


def _confirm_second_person(
    *, course, by, second_person, password: str, request, what: str = "transplant"
) -> list[str]:
    """The bedside check's second person: one of `bedside_confirmers`, with their password
    (checked like a login, so wrong ones lock the account out like failed logins)."""
    if second_person is None:
        return [f"A second person must confirm the {what}."]
    if second_person.pk == by.pk:
        return [f"The second person confirming the {what} must be someone else."]
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
        units_give_back(course=course, by=by, reason=f"course withdrawn: {reason}")
        return _fire(course, "withdraw", by=by, note=reason)


# MSC infusions: units allocated from a released lot, a chain of chair slots, the bedside.


def course_allocate_product(
    *, course: TreatmentCourse, by: AbstractBaseUser, note: str = ""
) -> TransitionLog:
    """Tie the first dose's units to the course (the patient's dosing weight times the
    protocol's target per kg, in units of the lot's cells per unit), from one released lot
    of the site, first to expire first. The course gets its chain-of-identity id, which the
    units' custody carries. Two coordinators allocating the last units at once: one has them,
    the other is told what is free."""
    _authorise(course, "allocate_product", by)
    weight = course_dosing_weight(course=course)
    if weight is None:
        raise TransitionRefused(
            ["No body weight is recorded since the evaluation began: weigh the patient first."]
        )
    now = timezone.now()
    zone = course.site.time_zone
    coi_id = course.coi_id or coi_id_format(
        site_code=course.site.code, year=timezone.localtime(now, zone).year, number=course.pk
    )
    with _changing(course):
        course.coi_id = coi_id  # the units' custody carries it; the transition keeps it
        infusion = Infusion.objects.create(
            course=course, dose_number=course.doses_given + 1, allocated_at=now, allocated_by=by
        )
        try:
            units = units_allocate(
                course=course,
                infusion=infusion,
                weight_kg=weight.weight_kg,
                on=timezone.localdate(now, zone),
                by=by,
            )
        except Refused as refusal:
            raise TransitionRefused(refusal.reasons) from refusal
        return _fire(
            course,
            "allocate_product",
            by=by,
            note=note,
            data=_allocation_data(infusion, units, weight.weight_kg),
            at=now,
            coi_id=coi_id,
        )


def _allocation_data(infusion: Infusion, units: list[ProductUnit], weight_kg) -> dict:
    return {
        "dose": infusion.dose_number,
        "lot": units[0].lot.lot_number,
        "units": [unit.unit_id for unit in units],
        "cells_per_unit": units[0].lot.cells_per_unit,
        "weight_kg": str(weight_kg),
    }


def course_next_infusion(course: TreatmentCourse) -> Infusion | None:
    """The dose the course waits to give: allocated, not given yet."""
    return course.infusions.filter(started_at__isnull=True).order_by("dose_number").first()


def infusion_booking_refusals(
    *, course: TreatmentCourse, scheduled_at: dt.datetime, infusion: Infusion | None
) -> list[str]:
    """Why the dose cannot be booked at `scheduled_at`: its units' lot expires by then."""
    if infusion is None:
        return []
    day = timezone.localdate(scheduled_at, course.site.time_zone)
    expiring = {
        unit.lot for unit in infusion.units.select_related("lot") if unit.lot.expires_on <= day
    }
    return [
        f"Lot {lot.lot_number}, whose units this dose holds, expires on "
        f"{date_words(lot.expires_on)}: book the infusion before then."
        for lot in expiring
    ]


def course_schedule_infusion(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    scheduled_at: dt.datetime,
    place: str,
    note: str = "",
    deviation_reason: str = "",
) -> TransitionLog:
    """Book the next dose in the infusion chair. The first booking holds the whole chain
    where the site keeps a calendar for its chairs: a slot for each dose, the protocol's
    interval apart, or nothing. A later dose is booked the same way, its units allocated
    as it is (from a lot still in date that day); a time other than the slot held for it
    moves the doses after it too."""
    _authorise(course, "schedule_infusion", by)
    _require_future(scheduled_at, "infusion")
    between_doses = course.state == CourseState.INFUSED
    infusion = None if between_doses else course_next_infusion(course)
    refusals = infusion_booking_refusals(
        course=course, scheduled_at=scheduled_at, infusion=infusion
    )
    if refusals:
        raise TransitionRefused(refusals)
    with _changing(course):
        if between_doses:
            weight = course_dosing_weight(course=course)
            if weight is None:
                raise TransitionRefused(["No body weight is recorded since the evaluation began."])
            infusion = Infusion.objects.create(
                course=course,
                dose_number=course.doses_given + 1,
                allocated_at=timezone.now(),
                allocated_by=by,
            )
            try:
                units_allocate(
                    course=course,
                    infusion=infusion,
                    weight_kg=weight.weight_kg,
                    on=timezone.localdate(scheduled_at, course.site.time_zone),
                    by=by,
                )
            except Refused as refusal:
                raise TransitionRefused(refusal.reasons) from refusal
        scheduling.visit_book(
            course=course,
            kind=VisitKind.INFUSION,
            scheduled_at=scheduled_at,
            place=place,
            by=by,
            deviation_reason=deviation_reason,
        )
        log = _fire(
            course,
            "schedule_infusion",
            by=by,
            note=note,
            data={
                "scheduled_at": scheduled_at.isoformat(),
                "place": place,
                "dose": infusion.dose_number,
            },
            reconcile=False,
        )
        try:
            course_reservations_reconcile(course=course, strict=True, infusion_at=scheduled_at)
        except Refused as refusal:
            raise TransitionRefused(refusal.reasons) from refusal
        return log


VITALS_FIELDS = tuple(VitalSigns.measured_fields)


def _vitals_refusals(vital_signs: dict) -> dict[str, list[str]]:
    """Every vital sign at every timepoint recorded and possible, by the form's field name
    (`before_heart_rate_bpm`)."""
    by_field = defaultdict(list)
    for timepoint in VitalsTimepoint:
        values = vital_signs.get(timepoint) or {}
        for name in VITALS_FIELDS:
            field = f"{timepoint}_{name}"
            value = values.get(name)
            if value is None:
                by_field[field].append(
                    f"Record the {VitalSigns._meta.get_field(name).verbose_name} "
                    f"{VitalsTimepoint(timepoint).label.lower()}."
                )
                continue
            words = measure(VitalSigns.measured_fields[name]).refusal(value)
            if words:
                by_field[field].append(words)
    return by_field


def _vitals_unusual(vital_signs: dict, expected: dict) -> dict[str, str]:
    found = {}
    for timepoint in VitalsTimepoint:
        values = vital_signs.get(timepoint) or {}
        for name, words in unusual_values(
            values, keys=VitalSigns.measured_fields, expected=expected
        ).items():
            found[f"{timepoint}_{name}"] = words
    return found


def units_thaw_recorded(*, units) -> dt.datetime | None:
    """When the first of `units` already thawed (the thaw step, ahead of the bedside) was
    thawed; None if none was."""
    thawed = [unit for unit in units if unit.status == UnitStatus.THAWED]
    if not thawed:
        return None
    return (
        CustodyEvent.objects.filter(unit__in=thawed, kind=CustodyKind.THAWED)
        .order_by("at")
        .values_list("at", flat=True)
        .first()
    )


def course_record_infusion(
    *,
    course: TreatmentCourse,
    by: AbstractBaseUser,
    thawed_at: dt.datetime,
    started_at: dt.datetime,
    scanned_unit_ids: list[str],
    scanned_coi_id: str,
    cells_given: int,
    weight_kg: Decimal,
    weighed_on: dt.date,
    second_person,
    second_person_password: str,
    vital_signs: dict,
    thaw_delay_reason: str = "",
    reaction_grade: int | None = None,
    reaction_serious: bool = False,
    reaction_description: str = "",
    early_reason: str = "",
    note: str = "",
    request=None,
    values_checked: bool = False,
) -> TransitionLog:
    """Record a dose given, after the bedside checks: every unit's label and the patient's
    chain-of-identity id scanned and matching the allocation (a mismatch blocks and alerts),
    the units received at the site (or thawed there, at the time given) and their lot
    released and in date, infused within the protocol's minutes of thaw (or a reason, a
    deviation), a dose per kg in range and never more cells than the units held, vital signs
    before, during and an hour after (recorded no sooner than that), and a second person.
    An infusion reaction is recorded as an adverse event (grade 3 or worse, or serious,
    alerts at once). With doses left the course waits for the next booking; the
    last opens the follow-up. Every refusal is given at once, by its field."""
    _authorise(course, "record_infusion", by)
    zone, protocol = course.site.time_zone, course.protocol
    infusion = course_next_infusion(course)
    if infusion is None:
        raise TransitionRefused(["No dose is allocated to this course."])
    units = list(infusion.units.select_related("lot").order_by("unit_id"))
    by_field: dict[str, list[str]] = defaultdict(list)
    for field, value in (("cells_given", cells_given), ("weight_kg", weight_kg)):
        impossible = measure(Infusion.measured_fields[field]).refusal(value)
        if impossible:
            by_field[field].append(impossible)
    for field, found in _vitals_refusals(vital_signs).items():
        by_field[field] += found
    if started_at > timezone.now():
        by_field["started_at"].append("The infusion's start cannot be in the future.")
    else:
        by_field["started_at"] += conditions.vitals_after_refusals(
            protocol=protocol, started_at=started_at, now=timezone.now(), zone=zone
        )
    thawed_before = [unit for unit in units if unit.status == UnitStatus.THAWED]
    recorded_thaw = units_thaw_recorded(units=thawed_before)
    if recorded_thaw and abs(thawed_at - recorded_thaw) >= dt.timedelta(minutes=1):
        by_field["thawed_at"].append(
            f"The units' thaw is recorded at {local_words(recorded_thaw, zone)}: give that time."
        )
    infused_on = timezone.localdate(started_at, zone)
    by_field["weighed_on"] += conditions.dosing_weight_refusals(
        protocol=protocol,
        weighed_on=weighed_on,
        transplant_on=infused_on,
        evaluation_started_on=timezone.localdate(course.evaluation_started_at, zone)
        if course.evaluation_started_at
        else None,
    )
    scanned = {unit_id_normalise(u) for u in scanned_unit_ids}
    allocated = {unit_id_normalise(unit.unit_id) for unit in units}
    units_mismatch = scanned != allocated
    if units_mismatch:
        strangers = sorted(scanned - allocated)
        by_field["scanned_unit_ids"].append(
            "The unit labels scanned do not match the units allocated to this dose ("
            + ", ".join(unit.unit_id for unit in units)
            + ")"
            + (f": {', '.join(strangers)} is not this patient's" if strangers else "")
            + ". Do not infuse; check the labels."
        )
    coi_mismatch = not course.coi_id or not coi_ids_match(scanned_coi_id, course.coi_id)
    if coi_mismatch:
        by_field["scanned_coi_id"].append(
            f"The patient's chain-of-identity id scanned ({scanned_coi_id}) is not the one the "
            "units were allocated to. Do not infuse; check the patient's wristband."
        )
    if units_mismatch or coi_mismatch:
        _alert_unit_mismatch(
            course=course,
            scanned_unit_ids=[u.strip() for u in scanned_unit_ids],
            scanned_coi_id=scanned_coi_id,
            by=by,
        )
    general = []
    for lot in {unit.lot for unit in units}:
        if lot.status != LotStatus.RELEASED:
            general.append(
                f"Lot {lot.lot_number} is {lot.get_status_display().lower()}: its units may "
                "not be given."
            )
        if lot.expires_on < infused_on:
            general.append(
                f"Lot {lot.lot_number} expired on {date_words(lot.expires_on)}: its units "
                "may not be given."
            )
    at_site = (UnitStatus.RECEIVED, UnitStatus.THAWED)
    not_here = [unit.unit_id for unit in units if unit.status not in at_site]
    if not_here:
        general.append(
            f"The chain of custody does not show {', '.join(not_here)} received at "
            f"{course.site.name}: record the units' shipment and receipt, their labels "
            "scanned, before the infusion."
        )
    if not by_field["cells_given"] and not by_field["weight_kg"] and units:
        found = conditions.infusion_refusals(
            protocol=protocol,
            thawed_at=thawed_at,
            started_at=started_at,
            thaw_delay_reason=thaw_delay_reason,
            cells_given=cells_given,
            weight_kg=weight_kg,
            units_cells=sum(unit.lot.cells_per_unit for unit in units),
        )
        for field, reasons in found.items():
            by_field[field] += reasons
        unusual = unusual_values(
            {"cells_given": cells_given, "weight_kg": weight_kg},
            keys=Infusion.measured_fields,
            expected=protocol.expected_ranges,
        ) | _vitals_unusual(vital_signs, protocol.expected_ranges)
        if unusual and not values_checked:
            for field, words in unusual_values_refused(unusual).message_dict.items():
                by_field[field] += words
    booking = scheduling.open_booking(course=course, kind=VisitKind.INFUSION)
    early = booking is not None and infused_on < timezone.localdate(booking.scheduled_at, zone)
    if early and not early_reason.strip():
        booked_on = timezone.localdate(booking.scheduled_at, zone)
        by_field["early_reason"].append(
            f"The infusion is booked for {date_words(booked_on)}: move the booking first, or "
            "give the reason it was given earlier."
        )
    if reaction_grade and not reaction_description.strip():
        by_field["reaction_description"].append("Describe the reaction.")
    for reason in _confirm_second_person(
        course=course,
        by=by,
        second_person=second_person,
        password=second_person_password,
        request=request,
        what="infusion",
    ):
        field = "second_person_password" if reason == SIGNATURE_NOT_ACCEPTED else "second_person"
        by_field[field].append(reason)
    if general or any(by_field.values()):
        raise TransitionRefused(general, by_field=by_field)
    last_dose = infusion.dose_number >= protocol.dose_count
    dose = conditions.dose_million_per_kg(cells=cells_given, weight_kg=weight_kg)
    thaw_minutes = round((started_at - thawed_at).total_seconds() / 60)
    data = {
        "dose": infusion.dose_number,
        "thawed_at": thawed_at.isoformat(),
        "started_at": started_at.isoformat(),
        "units": [unit.unit_id for unit in units],
        "scanned_coi_id": scanned_coi_id,
        "cells_given": cells_given,
        "weight_kg": str(weight_kg),
        "weighed_on": str(weighed_on),
        "dose_million_per_kg": f"{dose:.3f}",
        "thaw_to_infusion_minutes": thaw_minutes,
        "confirmed_by": second_person.get_username(),
    }
    with _changing(course):
        if not BodyMeasurement.objects.filter(
            patient=course.patient, taken_on=weighed_on, weight_kg=weight_kg
        ).exists():
            BodyMeasurement.objects.create(
                patient=course.patient, taken_on=weighed_on, weight_kg=weight_kg, entered_by=by
            )
        infusion.thawed_at, infusion.started_at = thawed_at, started_at
        infusion.cells_given, infusion.weight_kg, infusion.weighed_on = (
            cells_given,
            weight_kg,
            weighed_on,
        )
        infusion.recorded_by, infusion.second_person, infusion.visit = by, second_person, booking
        infusion.save()
        VitalSigns.objects.bulk_create(
            VitalSigns(infusion=infusion, timepoint=timepoint, **vital_signs[timepoint])
            for timepoint in VitalsTimepoint
        )
        ProductUnit.objects.filter(pk__in=[unit.pk for unit in units]).update(
            status=UnitStatus.INFUSED
        )
        for unit in units:
            thaw = () if unit in thawed_before else ((CustodyKind.THAWED, thawed_at, "thawed"),)
            for kind, at, words in (
                *thaw,
                (
                    CustodyKind.ADMINISTERED,
                    started_at,
                    f"infused, dose {infusion.dose_number} ({dose:.2f} × 10⁶/kg at "
                    f"{weight_kg} kg); confirmed by {second_person.get_username()}",
                ),
            ):
                custody_append(
                    course=course,
                    unit=unit,
                    kind=kind,
                    by=by,
                    at=at,
                    location=course.site.name,
                    note=f"Unit {unit.unit_id} {words}.",
                )
        if thaw_minutes > protocol.thaw_to_infusion_max_minutes:
            scheduling.deviation_record(
                course=course,
                visit=booking,
                by=by,
                reason=thaw_delay_reason.strip(),
                deviations=[
                    (
                        DeviationKind.THAW_TO_INFUSION,
                        f"Infused {thaw_minutes} minutes after thaw; the protocol allows "
                        f"{protocol.thaw_to_infusion_max_minutes}.",
                    )
                ],
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
        scheduling.visit_mark_done(course=course, kind=VisitKind.INFUSION, done_at=started_at)
        log = _fire(
            course,
            "record_infusion",
            by=by,
            note=note,
            data=data,
            infused_at=started_at,
            infused_on=infused_on,
            last_dose=last_dose,
            anchor=protocol.follow_up_anchor,
        )
        if reaction_grade:
            adverse_event_record(
                event=AdverseEvent(
                    patient=course.patient,
                    course=course,
                    visit=booking,
                    onset_on=infused_on,
                    grade=reaction_grade,
                    serious=reaction_serious,
                    related_to_procedure=Relatedness.UNKNOWN,
                    related_to_product=Relatedness.UNKNOWN,
                    description=f"Infusion reaction, dose {infusion.dose_number}: "
                    f"{reaction_description.strip()}",
                ),
                by=by,
            )
        if last_dose:
            scheduling.visits_schedule_follow_ups(course=course)
        return log


def _alert_unit_mismatch(*, course, scanned_unit_ids, scanned_coi_id: str, by) -> None:
    """Units that are not the patient's, or a patient who is not the units', reached the
    bedside: recorded and alerted at once, outside the refused step so that the record stays."""
    entered = ".".join(
        [coi_id_normalise(scanned_coi_id), *map(unit_id_normalise, scanned_unit_ids)]
    )[:120]
    alert_raise(
        kind=AlertKind.COI_MISMATCH,
        severity=Severity.URGENT,
        course=course,
        condition_key=f"coi_mismatch.c{course.pk}.{entered}",
        message=(
            f"{by.get_username()} scanned units {', '.join(scanned_unit_ids) or 'none'} and "
            f"chain-of-identity id {scanned_coi_id} at the bedside for a course whose id is "
            f"{course.coi_id or 'not issued'}. The infusion was blocked."
        ),
    )


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
    "allocate_product": course_allocate_product,
    "schedule_infusion": course_schedule_infusion,
    "record_infusion": course_record_infusion,
    "complete": course_complete,
    "hold": course_hold,
    "resume": course_resume,
    "withdraw": course_withdraw,
}
