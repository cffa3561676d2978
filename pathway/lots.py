"""The cell bank's lots in a site's stock: received with their certificate of analysis, QC'd
against the protocol's release specification, released by a second lab person's signature,
and their units allocated to a course's doses, one dose's units from one lot, first expiring
first out.

Allocation takes the units it needs with `SELECT … FOR UPDATE SKIP LOCKED`: two coordinators
allocating the last units at once cannot both have them, and the one who finds them taken is
told how many are free.
"""

import datetime as dt
import math
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words
from pathway import conditions
from pathway.coi import unit_id_normalise
from pathway.custody import custody_append
from pathway.models import (
    NEGATIVE_MARKERS,
    POSITIVE_MARKERS,
    UNIT_HELD,
    CellBankLot,
    CustodyKind,
    Infusion,
    LotStatus,
    ProductUnit,
    Protocol,
    TreatmentCourse,
    UnitStatus,
)
from pathway.signatures import may_sign_lot_release, password_confirms
from pathway.states import Therapy
from patients.measures import unusual_values_refused

MARKER_FIELDS = tuple(name for name, _ in (*POSITIVE_MARKERS, *NEGATIVE_MARKERS))
LOT_QC_FIELDS = (
    "viability_pct",
    "sterility_negative",
    "mycoplasma_negative",
    "endotoxin_eu_ml",
    *MARKER_FIELDS,
)
LOT_RELEASE_MEANING = (
    "I release this lot for clinical use: its certificate and QC meet the specification."
)


def lot_receive(
    *,
    by: AbstractBaseUser,
    values_checked: bool = False,
    unit_ids: list[str] | None = None,
    **certificate,
) -> CellBankLot:
    """Receive a lot into a site's stock, in quarantine until its release, with one unit per
    id on the labels (numbered `<lot>-001`… when the bank gives none). An impossible value is
    refused beside its field; an unusual one needs `values_checked`."""
    if not by.has_perm("pathway.add_cellbanklot"):
        raise PermissionDenied("You do not have permission to receive cell-bank lots.")
    lot = CellBankLot(received_by=by, status=LotStatus.QUARANTINE, **certificate)
    lot.full_clean()
    errors = lot_receipt_errors(lot=lot, unit_ids=unit_ids)
    if errors:
        raise ValidationError(errors)
    unusual = lot.unusual_values(lot.protocol.expected_ranges)
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    ids = [u.strip().upper() for u in unit_ids] if unit_ids else None
    with transaction.atomic():
        lot.save()
        ProductUnit.objects.bulk_create(
            ProductUnit(lot=lot, unit_id=unit_id)
            for unit_id in ids
            or (f"{lot.lot_number}-{n:03d}" for n in range(1, lot.units_received + 1))
        )
    return lot


def lot_receipt_errors(*, lot: CellBankLot, unit_ids: list[str] | None) -> dict[str, str]:
    """What is wrong with a lot's receipt, by field; empty if nothing."""
    errors = {}
    if lot.protocol_id and lot.protocol.therapy != Therapy.MSC:
        errors["protocol"] = f"{lot.protocol} gives no cell-bank product: choose an MSC protocol."
    if lot.received_at and lot.received_at > timezone.now():
        errors["received_at"] = "The receipt cannot be in the future."
    if lot.expires_on and lot.received_at and lot.expires_on <= lot.received_at.date():
        errors["expires_on"] = "The lot has expired already: it cannot be taken into stock."
    if (
        lot.donor_eligibility_accepted_on
        and lot.received_at
        and lot.donor_eligibility_accepted_on > lot.received_at.date()
    ):
        errors["donor_eligibility_accepted_on"] = (
            "The donor's eligibility must be accepted before the lot is received."
        )
    if unit_ids:
        ids = [unit_id_normalise(u) for u in unit_ids]
        if len(ids) != lot.units_received:
            errors["unit_ids"] = (
                f"{len(ids)} unit ids for {lot.units_received} units: one id per unit."
            )
        elif len(set(ids)) != len(ids):
            errors["unit_ids"] = "A unit id is given twice."
        elif taken := list(
            ProductUnit.objects.filter(
                unit_id__in=[u.strip().upper() for u in unit_ids]
            ).values_list("unit_id", flat=True)[:3]
        ):
            errors["unit_ids"] = f"These units are in stock already: {', '.join(taken)}."
    return errors


def lot_record_qc(
    *, lot: CellBankLot, by: AbstractBaseUser, values_checked: bool = False, **results
) -> CellBankLot:
    """Enter (or correct, before release) the lot's QC: viability after thaw, sterility,
    mycoplasma, endotoxin and the ISCT markers."""
    if not by.has_perm("pathway.change_cellbanklot"):
        raise PermissionDenied("You do not have permission to record a lot's QC.")
    if lot.status != LotStatus.QUARANTINE:
        raise ValidationError(
            f"QC is recorded while a lot is in quarantine, not {lot.get_status_display().lower()}."
        )
    unknown = set(results) - set(LOT_QC_FIELDS)
    if unknown:
        raise ValidationError(f"A lot records no {', '.join(sorted(unknown))}.")
    for name, value in results.items():
        setattr(lot, name, value)
    lot.qc_recorded_by, lot.qc_recorded_at = by, timezone.now()
    lot.full_clean()
    unusual = lot.unusual_values(lot.protocol.expected_ranges)
    if unusual and not values_checked:
        raise unusual_values_refused(unusual)
    lot._history_user = by
    lot.save()
    return lot


def lot_release_refusals(*, lot: CellBankLot, today: dt.date | None = None) -> list[str]:
    """Why the lot's certificate and QC do not allow its release; the release page shows
    these before anyone signs, and `lot_release` refuses with them."""
    qc = conditions.LotQC(
        viability_pct=lot.viability_pct,
        sterility_negative=lot.sterility_negative,
        mycoplasma_negative=lot.mycoplasma_negative,
        endotoxin_eu_ml=lot.endotoxin_eu_ml,
        markers={name: getattr(lot, name) for name in MARKER_FIELDS},
        storage_temperature_c=lot.storage_temperature_c,
        expires_on=lot.expires_on,
    )
    today = today or timezone.localdate(timezone=lot.site.time_zone)
    return conditions.lot_release_refusals(protocol=lot.protocol, qc=qc, today=today)


def lot_release(
    *,
    lot: CellBankLot,
    by: AbstractBaseUser,
    password: str,
    meaning: str = LOT_RELEASE_MEANING,
    request=None,
) -> CellBankLot:
    """Release the lot for use, signed: a second lab user, not the one who entered its QC,
    re-enters their password. Refused with each reason otherwise."""
    if lot.status != LotStatus.QUARANTINE:
        raise Refused([f"The lot is {lot.get_status_display().lower()}: it cannot be released."])
    if not lot.qc_recorded:
        raise Refused(["The lot's QC is not recorded yet."])
    if lot.qc_recorded_by_id == by.pk:
        raise Refused(["You entered this lot's QC: a second lab user must sign its release."])
    if not may_sign_lot_release(by):
        raise Refused(["Only a lab user allowed to release lots signs a lot's release."])
    if not password_confirms(user=by, password=password, request=request):
        raise Refused(["The password was not accepted; the release was not signed."])
    refusals = lot_release_refusals(lot=lot)
    if refusals:
        raise Refused(refusals)
    released = CellBankLot.objects.filter(pk=lot.pk, status=LotStatus.QUARANTINE).update(
        status=LotStatus.RELEASED,
        released_by=by,
        released_at=timezone.now(),
        release_meaning=meaning,
    )
    if not released:
        raise Refused(["Someone else released or rejected the lot meanwhile."])
    lot.refresh_from_db()
    return lot


def lot_reject(*, lot: CellBankLot, by: AbstractBaseUser, reason: str) -> CellBankLot:
    """A lot that fails its QC or its certificate leaves the stock: its units are discarded."""
    if not by.has_perm("pathway.change_cellbanklot"):
        raise PermissionDenied("You do not have permission to reject a lot.")
    if not reason.strip():
        raise Refused(["Give the reason the lot is rejected."])
    if lot.status != LotStatus.QUARANTINE:
        raise Refused([f"The lot is {lot.get_status_display().lower()}: it cannot be rejected."])
    with transaction.atomic():
        lot.status = LotStatus.REJECTED
        lot.release_meaning = f"Rejected: {reason.strip()}"[:200]
        lot._history_user = by
        lot.save(update_fields=["status", "release_meaning"])
        lot.units.filter(status=UnitStatus.FREE).update(status=UnitStatus.DISCARDED)
    return lot


def dose_cells(*, protocol: Protocol, weight_kg: Decimal) -> int:
    """The cells a dose aims at: the protocol's target per kg times the dosing weight."""
    return int(protocol.dose_target_million_per_kg * Decimal(weight_kg) * 1_000_000)


def dose_units_needed(*, protocol: Protocol, weight_kg: Decimal, cells_per_unit: int) -> int:
    """Units of `cells_per_unit` that make the target dose: enough, and never fewer than the
    lowest dose needs."""
    return max(math.ceil(dose_cells(protocol=protocol, weight_kg=weight_kg) / cells_per_unit), 1)


def _allocatable_lots(*, course: TreatmentCourse, on: dt.date):
    return CellBankLot.objects.filter(
        site=course.site_id,
        protocol=course.protocol_id,
        status=LotStatus.RELEASED,
        expires_on__gt=on,
    ).order_by("expires_on", "pk")


def units_allocate(
    *,
    course: TreatmentCourse,
    infusion: Infusion,
    weight_kg: Decimal,
    on: dt.date,
    by: AbstractBaseUser,
) -> list[ProductUnit]:
    """Tie the units a dose needs to it, all from one released lot of the course's site and
    protocol that expires after `on`, the first to expire first; each recorded in the chain
    of custody. `Refused`, saying what is free, when no lot has enough free units: units
    another allocation holds at this moment count as taken. Inside the caller's transaction."""
    now = timezone.now()
    lots = list(_allocatable_lots(course=course, on=on))
    for lot in lots:
        needed = dose_units_needed(
            protocol=course.protocol, weight_kg=weight_kg, cells_per_unit=lot.cells_per_unit
        )
        units = list(
            ProductUnit.objects.filter(lot=lot, status=UnitStatus.FREE)
            .select_for_update(skip_locked=True)
            .order_by("unit_id")[:needed]
        )
        if len(units) < needed:
            continue
        for unit in units:
            unit.status, unit.course, unit.infusion, unit.allocated_at = (
                UnitStatus.ALLOCATED,
                course,
                infusion,
                now,
            )
        ProductUnit.objects.bulk_update(units, ["status", "course", "infusion", "allocated_at"])
        for unit in units:
            custody_append(
                course=course,
                unit=unit,
                kind=CustodyKind.ALLOCATED,
                by=by,
                at=now,
                location=course.site.name,
                note=f"Dose {infusion.dose_number}: unit {unit.unit_id} of lot {lot.lot_number} "
                f"({lot.cells_per_unit / 1e6:.0f} × 10⁶ cells), expires "
                f"{date_words(lot.expires_on)}.",
            )
        return units
    raise Refused([_no_lot_words(course=course, lots=lots, weight_kg=weight_kg, on=on)])


def _no_lot_words(*, course, lots, weight_kg, on) -> str:
    if not lots:
        return (
            f"No released lot of {course.protocol} at {course.site} expires after "
            f"{date_words(on)}: receive and release one, or choose a later day."
        )
    free = dict(
        ProductUnit.objects.filter(lot__in=lots, status=UnitStatus.FREE)
        .values_list("lot__lot_number")
        .annotate(n=Count("pk"))
    )
    needs = []
    for lot in lots:
        needed = dose_units_needed(
            protocol=course.protocol, weight_kg=weight_kg, cells_per_unit=lot.cells_per_unit
        )
        needs.append(
            f"lot {lot.lot_number} has {free.get(lot.lot_number, 0)} free of the {needed} a "
            "dose needs"
        )
    return f"No lot has the free units a dose at {weight_kg} kg needs: {', '.join(needs)}."


def units_of_dose(infusion: Infusion) -> list[ProductUnit]:
    return list(infusion.units.select_related("lot").order_by("unit_id"))


def units_give_back(*, course: TreatmentCourse, by: AbstractBaseUser, reason: str) -> int:
    """A withdrawn course's units not given: back to stock where never thawed and still in
    date (and their lot released), else discarded; each in the chain of custody. Returns how
    many."""
    now = timezone.now()
    today = timezone.localdate(now, course.site.time_zone)
    units = list(
        ProductUnit.objects.filter(course=course, status__in=UNIT_HELD).select_related("lot")
    )
    for unit in units:
        back = (
            unit.status != UnitStatus.THAWED
            and unit.lot.expires_on > today
            and unit.lot.status == LotStatus.RELEASED
        )
        custody_append(
            course=course,
            unit=unit,
            kind=CustodyKind.RETURNED_TO_STOCK if back else CustodyKind.DISCARDED,
            by=by,
            at=now,
            location=course.site.name,
            note=f"Unit {unit.unit_id}: {'back to stock' if back else 'discarded'}"
            + (" (thawed, not given)" if unit.status == UnitStatus.THAWED else "")
            + f", {reason}",
        )
        if back:
            unit.status, unit.course, unit.infusion, unit.allocated_at = (
                UnitStatus.FREE,
                None,
                None,
                None,
            )
        else:
            unit.status = UnitStatus.DISCARDED
    ProductUnit.objects.bulk_update(units, ["status", "course", "infusion", "allocated_at"])
    return len(units)


def stock_by_lot(*, lots, today: dt.date):
    """Each lot with its units counted: free, allocated (tied to a patient, not yet given),
    used and discarded, and `expiring`, its free units when it expires within its protocol's
    warning days (30 by default). Two queries, however many lots."""
    expiring_soon = Q(pk__in=[])
    for protocol_id, days in Protocol.objects.filter(therapy=Therapy.MSC).values_list(
        "pk", "lot_expiry_warning_days"
    ):
        expiring_soon |= Q(protocol_id=protocol_id, expires_on__lte=today + dt.timedelta(days))
    free = Q(units__status=UnitStatus.FREE)
    return lots.select_related("site", "protocol").annotate(
        free=Count("units", filter=free),
        allocated=Count("units", filter=Q(units__status__in=UNIT_HELD)),
        used=Count("units", filter=Q(units__status=UnitStatus.INFUSED)),
        discarded=Count("units", filter=Q(units__status=UnitStatus.DISCARDED)),
        expiring=Count("units", filter=free & expiring_soon),
    )


def lot_expiring(lot: CellBankLot, *, today: dt.date) -> bool:
    return lot.expires_on <= today + dt.timedelta(days=lot.protocol.lot_expiry_warning_days)
