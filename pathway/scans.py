"""The periodic scan for what is late: overdue visits, expansions past their last day of
release, released products with no transplant booked in time; and in the cell bank's stock,
lots that will expire before the units allocated from them are given, and free units too few
for the doses held in the chairs ahead."""

import datetime as dt

from django.utils import timezone

from common.zones import date_words, local_words
from pathway.lots import dose_units_needed, stock_by_lot
from pathway.models import (
    UNIT_HELD,
    CellBankLot,
    LotStatus,
    ProductUnit,
    Protocol,
    TreatmentCourse,
    expansion_day,
    expansion_day_cutoff,
)
from pathway.selectors import course_dosing_weight
from pathway.states import HOLDABLE_STATES, CourseState, Therapy
from patients.models import Site
from scheduling.alerts import (
    alert_raise,
    alerts_scan_follow_ups_to_book,
    alerts_scan_overdue_visits,
)
from scheduling.models import (
    AlertKind,
    Reservation,
    ReservationPurpose,
    Severity,
    VisitKind,
)
from scheduling.services import open_booking


def alerts_scan_overdue(*, now: dt.datetime | None = None) -> int:
    """Raise an alert for each overdue visit, follow-up to book, expansion and unbooked
    transplant; returns how many were new. Running it again raises nothing twice."""
    now = now or timezone.now()
    raised = alerts_scan_overdue_visits(now=now) + alerts_scan_follow_ups_to_book(
        now=now, course_states=HOLDABLE_STATES
    )
    for site in Site.objects.all():
        for protocol in Protocol.objects.all():
            raised += _scan_expansions(site, protocol, now)
        raised += stock_scan(site=site, now=now)
    return raised


def stock_scan(*, site: Site, now: dt.datetime) -> int:
    """Raise, once each, an alert for every course holding units of a lot that expires before
    they are given, and for every dose held in the chairs within the protocol's look-ahead
    that the site's free units, first to expire first, cannot cover. Returns how many were
    new."""
    today = timezone.localdate(now, site.time_zone)
    return _expiring_allocations(site, today) + _doses_uncovered(site, today)


def _expiring_allocations(site: Site, today: dt.date) -> int:
    raised = 0
    held = (
        ProductUnit.objects.filter(lot__site=site, status__in=UNIT_HELD, course__isnull=False)
        .select_related("lot__protocol", "course__patient", "course__site", "course__protocol")
        .order_by("lot__expires_on", "course_id")
    )
    by_course_lot: dict[tuple, list[ProductUnit]] = {}
    for unit in held:
        lot = unit.lot
        if lot.expires_on > today + dt.timedelta(days=lot.protocol.lot_expiry_warning_days):
            continue
        by_course_lot.setdefault((unit.course_id, lot.pk), []).append(unit)
    for units in by_course_lot.values():
        course, lot = units[0].course, units[0].lot
        booking = open_booking(course=course, kind=VisitKind.INFUSION)
        if booking and timezone.localdate(booking.scheduled_at, site.time_zone) < lot.expires_on:
            continue  # given before it expires
        when = (
            f"its infusion is booked for {local_words(booking.scheduled_at, site.time_zone)}"
            if booking
            else "no infusion is booked for them"
        )
        raised += alert_raise(
            kind=AlertKind.LOT_EXPIRES_ALLOCATED,
            severity=Severity.URGENT if lot.expires_on <= today else Severity.WARNING,
            course=course,
            condition_key=f"lot_expires_allocated.l{lot.pk}.c{course.pk}",
            message=f"Lot {lot.lot_number} expires on {date_words(lot.expires_on)} with "
            f"{len(units)} unit(s) allocated to {course.patient.mrn} "
            f"({', '.join(u.unit_id for u in units)}); {when}. Book the infusion before it "
            "expires, or withdraw the units and allocate others.",
        )[1]
    return raised


def _doses_uncovered(site: Site, today: dt.date) -> int:
    """The doses held in the chairs ahead, earliest first, each given units from the free
    stock as allocation would give them (one lot in date, first to expire first): those left
    without are alerted."""
    protocols = list(Protocol.objects.filter(therapy=Therapy.MSC))
    if not protocols:
        return 0
    horizon = max(p.stock_lookahead_days for p in protocols)
    ahead = (
        Reservation.objects.filter(
            course__site=site,
            course__protocol__in=protocols,
            purpose=ReservationPurpose.INFUSION,
            visit__isnull=True,
            released_at__isnull=True,
            starts_at__gt=timezone.now(),
            starts_at__lt=timezone.now() + dt.timedelta(days=horizon),
        )
        .select_related("course__patient", "course__site", "course__protocol")
        .order_by("starts_at")
    )
    lots = list(
        stock_by_lot(
            lots=CellBankLot.objects.filter(
                site=site, status=LotStatus.RELEASED, expires_on__gt=today
            ),
            today=today,
        ).order_by("expires_on", "pk")
    )
    free = {lot.pk: lot.free for lot in lots}
    weights = {}
    raised = 0
    for place in ahead:
        course = place.course
        protocol = course.protocol
        if place.starts_at >= timezone.now() + dt.timedelta(days=protocol.stock_lookahead_days):
            continue
        day = timezone.localdate(place.starts_at, site.time_zone)
        if course.pk not in weights:
            weight = course_dosing_weight(course=course)
            weights[course.pk] = weight.weight_kg if weight else None
        weight_kg = weights[course.pk]
        if weight_kg is None:
            continue
        covered = False
        for lot in lots:
            if lot.protocol_id != protocol.pk or lot.expires_on <= day:
                continue
            needed = dose_units_needed(
                protocol=protocol, weight_kg=weight_kg, cells_per_unit=lot.cells_per_unit
            )
            if free[lot.pk] >= needed:
                free[lot.pk] -= needed
                covered = True
                break
        if covered:
            continue
        in_date = sum(free[lot.pk] for lot in lots if lot.expires_on > day)
        raised += alert_raise(
            kind=AlertKind.STOCK_SHORT,
            course=course,
            condition_key=f"stock_short.r{place.pk}",
            message=f"The dose of {course.patient.mrn} held for "
            f"{local_words(place.starts_at, site.time_zone)} has no lot to take its units "
            f"from: {in_date} free unit(s) at {site.code} in date that day, after the doses "
            "before it. Receive and release a lot, or move the dose.",
        )[1]
    return raised


def _scan_expansions(site: Site, protocol: Protocol, now: dt.datetime) -> int:
    raised = 0
    zone = site.time_zone
    last_day = protocol.expansion_max_days
    received_before = expansion_day_cutoff(last_day + 1, now=now, zone=zone)  # past the last
    overdue = TreatmentCourse.objects.filter(
        site=site,
        protocol=protocol,
        state=CourseState.EXPANDING,
        lab_received_at__lt=received_before,
    ).select_related("patient", "site", "protocol")
    for course in overdue:
        day = expansion_day(received_at=course.lab_received_at, at=now, zone=zone)
        raised += alert_raise(
            kind=AlertKind.EXPANSION_OVERDUE,
            severity=Severity.URGENT,
            course=course,
            condition_key=f"expansion_overdue.c{course.pk}.{course.lab_received_at:%Y%m%d}",
            message=f"The expansion of {course.coi_id} is on day {day} and not "
            f"released; release was due by day {last_day}.",
        )[1]
    booking_days = protocol.transplant_booking_max_days
    unbooked = TreatmentCourse.objects.filter(
        site=site,
        protocol=protocol,
        state=CourseState.RELEASED,
        released_at__lt=now - dt.timedelta(days=booking_days),
    ).select_related("patient", "site", "protocol")
    for course in unbooked:
        released_on = timezone.localdate(course.released_at, zone)
        raised += alert_raise(
            kind=AlertKind.TRANSPLANT_NOT_BOOKED,
            course=course,
            condition_key=f"transplant_not_booked.c{course.pk}.{course.released_at:%Y%m%d}",
            message=f"The product {course.coi_id} was released on {date_words(released_on)} and no "
            f"transplant is booked after {booking_days} days.",
        )[1]
    return raised
