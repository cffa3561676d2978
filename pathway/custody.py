"""The chain of custody and the manufacturing batch: append-only events, QC entry."""

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from common.zones import date_words, local_words
from pathway.coi import coi_id_is_valid, coi_ids_match, unit_id_normalise
from pathway.forecast import forecast_interval_words
from pathway.models import (
    Batch,
    BatchStatus,
    CellCount,
    CustodyEvent,
    CustodyKind,
    ProductUnit,
    ProtocolQcTest,
    QcTestKind,
    TreatmentCourse,
    UnitStatus,
)
from pathway.selectors import batch_growth_forecast
from pathway.states import CourseState
from patients.measures import measure, unusual_values, unusual_values_refused
from scheduling.alerts import alert_raise
from scheduling.chains import free_slots
from scheduling.models import (
    AlertKind,
    ReservationPurpose,
    Severity,
    Visit,
    VisitKind,
    VisitStatus,
)

# The events staff record by hand; the others are written by the pathway's own steps.
MANUAL_KINDS = (
    CustodyKind.SHIPPED,
    CustodyKind.SHIPPED_TO_SITE,
    CustodyKind.RECEIVED_AT_SITE,
    CustodyKind.CORRECTION,
)


def custody_append(
    *,
    course: TreatmentCourse,
    kind: CustodyKind,
    by: AbstractBaseUser,
    at: dt.datetime,
    location: str,
    batch: Batch | None = None,
    temperature_c: Decimal | None = None,
    note: str = "",
    corrects: CustodyEvent | None = None,
    unit=None,
) -> CustodyEvent:
    """Add one event to the course's chain of custody (inside the caller's transaction)."""
    return CustodyEvent.objects.create(
        course=course,
        batch=batch,
        unit=unit,
        coi_id=course.coi_id,
        kind=kind,
        at=at,
        by=by,
        location=location,
        temperature_c=temperature_c,
        note=note,
        corrects=corrects,
    )


def custody_event_record(
    *,
    course: TreatmentCourse,
    kind: CustodyKind,
    by: AbstractBaseUser,
    scanned_coi_id: str,
    at: dt.datetime,
    location: str,
    temperature_c: Decimal | None = None,
    note: str = "",
    corrects: CustodyEvent | None = None,
    values_checked: bool = False,
) -> CustodyEvent:
    """Record a shipment, a receipt at the site or a correction, with the id read off the label.
    A temperature outside the expected range needs `values_checked` (typed again)."""
    if not by.has_perm("pathway.add_custodyevent"):
        raise PermissionDenied("You do not have permission to record custody events.")
    errors = custody_event_errors(
        course=course,
        kind=kind,
        scanned_coi_id=scanned_coi_id,
        at=at,
        corrects=corrects,
        temperature_c=temperature_c,
    )
    if errors:
        raise ValidationError(errors)
    refusals = product_custody_refusals(course=course, kind=kind, by=by)
    if refusals:
        raise ValidationError({"kind": refusals})
    unusual = custody_unusual_values(course=course, temperature_c=temperature_c)
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    return custody_append(
        course=course,
        kind=kind,
        by=by,
        at=at,
        location=location,
        temperature_c=temperature_c,
        note=note,
        corrects=corrects,
        batch=course.batches.first(),
    )


# The product travels from its release to the transplant.
PRODUCT_JOURNEY_STATES = (CourseState.RELEASED, CourseState.TRANSPLANT_SCHEDULED)


def may_record_product_step(*, user, kind: str) -> bool:
    """Whose step it is: the lab or the coordinator sends the product; the site's staff (its
    coordinators and clinicians) receive it."""
    if kind == CustodyKind.SHIPPED_TO_SITE:
        return user.has_perm("pathway.change_batch") or user.has_perm("scheduling.change_visit")
    if kind in (CustodyKind.RECEIVED_AT_SITE, CustodyKind.THAWED):
        return user.has_perm("pathway.record_transplant_course") or user.has_perm(
            "scheduling.change_visit"
        )
    return True


def product_custody_refusals(*, course, kind: str, by) -> list[str]:
    """Why `by` may not record the product leaving the lab for the site, or arriving there,
    now; empty if they may. Every entry point asks it: the worklist's step, the custody form,
    the service."""
    if kind not in (CustodyKind.SHIPPED_TO_SITE, CustodyKind.RECEIVED_AT_SITE):
        return []
    label = CustodyKind(kind).label.lower()
    if not may_record_product_step(user=by, kind=kind):
        who = "the lab or a coordinator" if kind == CustodyKind.SHIPPED_TO_SITE else "the site"
        return [f"“{CustodyKind(kind).label}” is recorded by {who}, not by your role."]
    if course.state not in PRODUCT_JOURNEY_STATES or not course.released_at:
        return [
            f"The product is {label} only between its release and the transplant; this course "
            f"is {course.get_state_display().lower()}."
        ]
    voided = CustodyEvent.objects.filter(course=course, corrects__isnull=False).values(
        "corrects_id"
    )
    since_release = (
        course.custody_events.filter(at__gte=course.released_at)
        .exclude(pk__in=voided)
        .values_list("kind", flat=True)
    )
    done = set(since_release)
    if kind in done:
        return [f"The product is recorded as {label} already: correct that event if it is wrong."]
    if kind == CustodyKind.RECEIVED_AT_SITE and CustodyKind.SHIPPED_TO_SITE not in done:
        return ["The product is not recorded leaving the lab: record its shipment first."]
    return []


# A unit's journey to the bedside: each step takes the units of a dose from one status to
# the next, their labels scanned. The thaw is recorded here when it comes before the
# bedside record (else with the infusion): a unit thawed is never back in stock.
UNIT_STEPS = {
    CustodyKind.SHIPPED_TO_SITE: (UnitStatus.ALLOCATED, UnitStatus.SHIPPED),
    CustodyKind.RECEIVED_AT_SITE: (UnitStatus.SHIPPED, UnitStatus.RECEIVED),
    CustodyKind.THAWED: (UnitStatus.RECEIVED, UnitStatus.THAWED),
}


def units_on_their_way(*, course: TreatmentCourse, kind: CustodyKind) -> list[ProductUnit]:
    """The course's units this step moves on: those allocated (to ship), shipped (to
    receive) or received (to thaw), of its next dose."""
    before, _after = UNIT_STEPS[kind]
    units = list(
        course.units.filter(status=before).select_related("lot", "infusion").order_by("unit_id")
    )
    doses = sorted({unit.infusion.dose_number for unit in units if unit.infusion_id})
    return [u for u in units if not doses or u.infusion.dose_number == doses[0]]


def units_thaw_refusals(*, course, at: dt.datetime | None = None) -> dict[str, str]:
    """Why the course's units may not be thawed at `at` (now if None), by field; empty if
    they may. A thawed unit never goes back into stock, so units are thawed only for the
    infusion booked for them, on its day in the site's zone."""
    if course.state != CourseState.INFUSION_SCHEDULED:
        return {
            "kind": "Units are thawed only for an infusion booked for them; this course is "
            f"{course.get_state_display().lower()}."
        }
    zone = course.site.time_zone
    infusion = (
        Visit.objects.filter(course=course, kind=VisitKind.INFUSION, status=VisitStatus.BOOKED)
        .order_by("scheduled_at")
        .first()
    )
    day = timezone.localdate(at or timezone.now(), zone)
    if infusion is None or timezone.localdate(infusion.scheduled_at, zone) != day:
        when = local_words(infusion.scheduled_at, zone) if infusion else "none is booked"
        return {
            "at": f"Units are thawed on the day of their infusion ({when}), not before: a "
            "thawed unit never goes back into stock."
        }
    return {}


def units_custody_errors(
    *, course, kind, scanned_unit_ids: list[str], at: dt.datetime | None, temperature_c=None
) -> dict[str, str]:
    """What is wrong with a step of the units' journey, by field; empty if nothing: every
    unit of the dose scanned, and none that is not. A frozen unit travels in a dry shipper:
    its temperature is a storage temperature."""
    errors = {}
    impossible = measure("storage_temperature_c").refusal(temperature_c)
    if impossible:
        errors["temperature_c"] = impossible
    if kind not in UNIT_STEPS:
        errors["kind"] = "Units are shipped to the site, received and thawed there by hand."
        return errors
    if kind == CustodyKind.THAWED:
        errors.update(units_thaw_refusals(course=course, at=at))
    expected = {
        unit_id_normalise(unit.unit_id) for unit in units_on_their_way(course=course, kind=kind)
    }
    scanned = {unit_id_normalise(u) for u in scanned_unit_ids}
    if not expected:
        errors["scanned_unit_ids"] = (
            "No unit of this course is waiting for this step: see its chain of custody."
        )
    elif scanned != expected:
        strangers = sorted(scanned - expected)
        missing = sorted(expected - scanned)
        words = []
        if strangers:
            words.append(f"{', '.join(strangers)} not allocated to this dose of this patient")
        if missing:
            words.append(f"{', '.join(missing)} not scanned")
        errors["scanned_unit_ids"] = (
            "The labels scanned are not this dose's units: " + "; ".join(words) + "."
        )
    if at and at > timezone.now():
        errors["at"] = "The time of the event cannot be in the future."
    return errors


def units_custody_record(
    *,
    course: TreatmentCourse,
    kind: CustodyKind,
    by: AbstractBaseUser,
    scanned_unit_ids: list[str],
    at: dt.datetime,
    location: str,
    temperature_c: Decimal | None = None,
    note: str = "",
    values_checked: bool = False,
) -> list[CustodyEvent]:
    """A dose's units leave the stock for the site, arrive there, or are thawed there: every
    label scanned, one event per unit in the course's chain of custody."""
    if not by.has_perm("pathway.add_custodyevent"):
        raise PermissionDenied("You do not have permission to record custody events.")
    errors = units_custody_errors(
        course=course,
        kind=kind,
        scanned_unit_ids=scanned_unit_ids,
        at=at,
        temperature_c=temperature_c,
    )
    if errors:
        raise ValidationError(errors)
    unusual = unusual_values(
        {"temperature_c": temperature_c},
        keys={"temperature_c": "storage_temperature_c"},
        expected=course.protocol.expected_ranges,
    )
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    units = units_on_their_way(course=course, kind=kind)
    before, after = UNIT_STEPS[kind]
    with transaction.atomic():
        # Only from the status read: a unit moved on meanwhile (given at the bedside while
        # its thaw was being recorded) is not moved back.
        moved = ProductUnit.objects.filter(pk__in=[u.pk for u in units], status=before).update(
            status=after
        )
        if moved != len(units):
            raise ValidationError(
                {
                    "scanned_unit_ids": "A unit of this dose was recorded elsewhere meanwhile: "
                    "open its chain of custody and try again."
                }
            )
        return [
            custody_append(
                course=course,
                unit=unit,
                kind=kind,
                by=by,
                at=at,
                location=location,
                temperature_c=temperature_c,
                note=note or f"Unit {unit.unit_id}: label scanned.",
            )
            for unit in units
        ]


def custody_unusual_values(*, course, temperature_c) -> dict[str, str]:
    """A custody event's values that need a second look, by field."""
    return unusual_values(
        {"temperature_c": temperature_c},
        keys={"temperature_c": "temperature_c"},
        expected=course.protocol.expected_ranges,
    )


def custody_event_errors(
    *,
    course,
    kind,
    scanned_coi_id: str,
    at: dt.datetime | None,
    corrects,
    temperature_c: Decimal | None = None,
) -> dict[str, str]:
    """What is wrong with a hand-recorded custody event, by field; empty if nothing."""
    errors = {}
    impossible = measure("temperature_c").refusal(temperature_c)
    if impossible:
        errors["temperature_c"] = impossible
    if kind not in MANUAL_KINDS:
        errors["kind"] = "This step is recorded by the pathway itself, not by hand."
    if not coi_id_is_valid(scanned_coi_id):
        errors["scanned_coi_id"] = (
            "Not a valid chain-of-identity id: check for a mistyped character."
        )
    elif not course.coi_id or not coi_ids_match(scanned_coi_id, course.coi_id):
        errors["scanned_coi_id"] = (
            f"{scanned_coi_id} is not this course's chain-of-identity id ({course.coi_id})."
        )
    if at and at > timezone.now():
        errors["at"] = "The time of the event cannot be in the future."
    if kind == CustodyKind.CORRECTION and corrects is None:
        errors["corrects"] = "Say which event this corrects."
    if corrects is not None and corrects.course_id != course.pk:
        errors["corrects"] = "The corrected event belongs to another course."
    return errors


_QC_WORDS = {True: "passed", False: "failed"}


def _qc_result_is_well_formed(test: ProtocolQcTest, result) -> bool:
    """True or False for a pass/fail test; a finite number, as text, for a numeric one (and
    a possible share, 0–100, for one measured in %)."""
    if test.kind == QcTestKind.PASS_FAIL:
        return isinstance(result, bool)
    try:
        number = Decimal(result) if isinstance(result, str) else None
    except ArithmeticError:
        return False
    if number is None or not number.is_finite():
        return False
    return test.unit.strip() != "%" or not measure("percent").refusal(number)


def batch_record_qc(
    *,
    batch: Batch,
    by: AbstractBaseUser,
    identity_p63_pct: Decimal,
    purity_pct: Decimal,
    sterility_negative: bool,
    viability_pct: Decimal,
    viable_cells: int,
    extra_qc_results: dict | None = None,
    values_checked: bool = False,
) -> Batch:
    """Enter (or correct, before release) a batch's QC results; logged in the chain of custody.
    An impossible result is refused beside its field; one outside the protocol's expected
    range only once `values_checked` (the form asks it typed again)."""
    if not by.has_perm("pathway.change_batch"):
        raise PermissionDenied("You do not have permission to record QC results.")
    if batch.status != BatchStatus.EXPANDING:
        raise ValidationError(
            "QC can only be recorded while the batch is expanding, not "
            f"{batch.get_status_display().lower()}."
        )
    tests = {test.name: test for test in batch.course.protocol.qc_tests.all()}
    extra_qc_results = extra_qc_results or {}
    unknown = set(extra_qc_results) - set(tests)
    if unknown:
        raise ValidationError(f"The protocol has no test named {', '.join(sorted(unknown))}.")
    for name, result in extra_qc_results.items():
        if not _qc_result_is_well_formed(tests[name], result):
            raise ValidationError(f"{name}: {result!r} is not a result this test can have.")
    now = timezone.now()
    batch.identity_p63_pct, batch.purity_pct = identity_p63_pct, purity_pct
    batch.sterility_negative, batch.viability_pct = sterility_negative, viability_pct
    batch.viable_cells, batch.extra_qc_results = viable_cells, extra_qc_results or {}
    batch.qc_recorded_by, batch.qc_recorded_at = by, now
    batch.full_clean()
    unusual = batch.unusual_values(batch.course.protocol.expected_ranges)
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    with transaction.atomic():
        batch.save()
        custody_append(
            course=batch.course,
            batch=batch,
            kind=CustodyKind.QC_RECORDED,
            by=by,
            at=now,
            location=settings.MANUFACTURING_FACILITY,
            note=(
                f"P63+ {identity_p63_pct} %, purity {purity_pct} %, sterility "
                f"{'negative' if sterility_negative else 'NOT negative'}, viability "
                f"{viability_pct} %, {viable_cells / 1e6:.1f} × 10⁶ viable cells"
                + "".join(
                    f", {name} {_QC_WORDS.get(result, result)}"
                    for name, result in extra_qc_results.items()
                )
            ),
        )
    return batch


def batch_record_cell_count(
    *,
    batch: Batch,
    by: AbstractBaseUser,
    counted_at: dt.datetime,
    total_cells: int,
    viability_pct: Decimal,
    values_checked: bool = False,
) -> CellCount:
    """Record an in-process count of a batch in culture. If the growth forecast then says the
    minimum dose may not be reached by the last day of release, the coordinator hears of it
    once, with the forecast."""
    if not by.has_perm("pathway.change_batch"):
        raise PermissionDenied("You do not have permission to record cell counts.")
    errors = cell_count_errors(batch=batch, counted_at=counted_at)
    if errors:
        raise ValidationError(errors)
    count = CellCount(
        batch=batch,
        by=by,
        counted_at=counted_at,
        total_cells=total_cells,
        viability_pct=viability_pct,
    )
    count.full_clean()
    unusual = count.unusual_values(batch.course.protocol.expected_ranges)
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    with transaction.atomic():
        count.save()
        _alert_on_slow_growth(batch)
        _alert_on_forecast_past_transplant(batch)
    return count


def cell_count_errors(*, batch: Batch, counted_at: dt.datetime | None) -> list[str]:
    """What is wrong with a count of this batch at `counted_at`; empty if nothing."""
    if batch.status != BatchStatus.EXPANDING:
        return ["Cells are counted only while the batch is expanding."]
    if counted_at is not None and not batch.received_at <= counted_at <= timezone.now():
        return ["A count is made between the sample's receipt and now."]
    return []


def _alert_on_slow_growth(batch: Batch) -> None:
    forecast = batch_growth_forecast(batch=batch, dose="minimum")
    last_day = batch.course.protocol.expansion_max_days
    if forecast is None or (forecast.latest is not None and forecast.latest <= last_day):
        return
    alert_raise(
        kind=AlertKind.GROWTH_SHORTFALL,
        severity=Severity.WARNING,
        course=batch.course,
        condition_key=f"growth_shortfall.b{batch.pk}",
        message=(
            f"At its present growth (doubling every {forecast.doubling_days:.1f} days) the batch "
            f"{batch.coi_id} may not hold the minimum dose "
            f"({forecast.target_cells / 1e6:.0f} × 10⁶ viable cells) by day {last_day}: "
            f"forecast day {forecast.day:.0f}, 90 % interval {forecast_interval_words(forecast)}. "
            "Plan the transplant date, or a re-harvest, with the lab."
        ),
    )


def _days_since_receipt(batch: Batch, at: dt.datetime) -> float:
    return (at - batch.received_at).total_seconds() / 86400


def _alert_on_forecast_past_transplant(batch: Batch) -> None:
    """The cells are forecast to reach the target dose after the transplant slot held for
    them: the coordinator hears of it once per slot, with the earliest free slot after the
    forecast day inside the release window."""
    course = batch.course
    held = (
        course.reservations.filter(
            purpose=ReservationPurpose.TRANSPLANT, released_at__isnull=True, visit=None
        )
        .select_related("resource")
        .first()
    )
    if held is None:
        return
    forecast = batch_growth_forecast(batch=batch, dose="target")
    slot_day = _days_since_receipt(batch, held.starts_at)
    last_release_day = course.protocol.expansion_max_days
    if forecast is None or forecast.day <= slot_day or forecast.day > last_release_day:
        return  # in time; or not before the last day, which the slow-growth alert tells
    zone = course.site.time_zone
    received_on = timezone.localdate(batch.received_at, zone)
    last_day = received_on + dt.timedelta(days=course.protocol.expansion_max_days)
    ready = batch.received_at + dt.timedelta(days=forecast.day)
    proposed = next(
        iter(
            free_slots(
                resource=held.resource,
                first_day=timezone.localdate(ready, zone),
                last_day=last_day,
                after=max(ready, timezone.now()),
            )
        ),
        None,
    )
    held_when = timezone.localtime(held.starts_at, zone)
    proposal = (
        "Proposed new slot: "
        f"{local_words(proposed.starts_at, zone)} "
        f"(day {_days_since_receipt(batch, proposed.starts_at):.0f}); book it from the "
        "course's transplant step once the batch is released."
        if proposed
        else f"{held.resource} has no free slot before the last release day "
        f"({date_words(last_day)})."
    )
    alert_raise(
        kind=AlertKind.FORECAST_PAST_TRANSPLANT,
        severity=Severity.WARNING,
        course=course,
        condition_key=f"forecast_past_transplant.b{batch.pk}.r{held.pk}",
        message=(
            f"The batch {batch.coi_id} is forecast to reach the target dose "
            f"({forecast.target_cells / 1e6:.0f} × 10⁶ viable cells) on day {forecast.day:.0f} "
            f"(90 % interval {forecast_interval_words(forecast)}), after the provisional "
            f"transplant slot {local_words(held_when)} (day {slot_day:.0f}). {proposal}"
        ),
    )
