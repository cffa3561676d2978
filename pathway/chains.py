"""What capacity a course holds in each state of the pathway, and keeping it so.

A course whose site keeps a calendar for its bronchoscopy suite holds, in
`harvest_scheduled`, its whole chain: the harvest slot, a place in the lab's expansion
capacity on each day to the last release day, and a provisional transplant slot inside the
release window. As it moves on, the chain follows (`course_reservations_reconcile`, called
by every service that changes the state or a booking): days of expansion after release are
given back, a rejected sample or a failed QC gives back everything still to come, a course on
hold keeps only the lab place of a batch already in culture, and resuming takes back what the
state needs. A site with no suite calendar books by date and time as before.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Q
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words, local_words
from pathway.models import TreatmentCourse
from pathway.states import CourseState, Therapy
from scheduling.alerts import alert_raise
from scheduling.chains import (
    CHAIN_PURPOSES,
    Chain,
    Place,
    Rearrangement,
    chains_earliest,
    course_resource,
    free_slots,
    harvest_chain_places,
    infusion_chain_places,
    infusion_chain_times,
    infusion_doses_left,
    reservations_rearrange,
    slot_at,
)
from scheduling.models import (
    AlertKind,
    Reservation,
    ReservationPurpose,
    ResourceKind,
    Severity,
    SlotHold,
    VisitKind,
    VisitStatus,
)
from scheduling.rules import booking_notice, booking_notice_refusals
from scheduling.services import open_booking
from scheduling.slots import Slot, places_free, resource_slots


def course_suite(course: TreatmentCourse):
    return course_resource(site=course.site, kind=ResourceKind.BRONCHOSCOPY)


def course_lab(course: TreatmentCourse):
    return course_resource(site=course.site, kind=ResourceKind.EXPANSION)


def course_chair(course: TreatmentCourse):
    return course_resource(site=course.site, kind=ResourceKind.INFUSION_CHAIR)


def course_chains(
    course: TreatmentCourse, *, count: int = 3, after: dt.datetime | None = None
) -> list[Chain]:
    """The earliest chains a harvest of this course could be booked as; empty when its site
    keeps no calendar for its suite."""
    suite = course_suite(course)
    if suite is None:
        return []
    protocol = course.protocol
    # Never inside the harvest's notice: a patient told today cannot fast in time for today.
    notice = booking_notice(protocol=protocol, kind=VisitKind.HARVEST)
    chains = chains_earliest(
        suite=suite,
        lab=course_lab(course),
        min_days=protocol.expansion_min_days,
        max_days=protocol.expansion_max_days,
        after=max(after or timezone.now(), timezone.now() + notice),
        count=count,
        transplant_notice=booking_notice(protocol=protocol, kind=VisitKind.TRANSPLANT),
    )
    # And only a harvest the patient can be told of in time (the booking asks the same).
    return [
        chain
        for chain in chains
        if not booking_notice_refusals(
            course=course, kind=VisitKind.HARVEST, scheduled_at=chain.harvest.starts_at
        )
    ]


def chain_words(chain: Chain, *, zone) -> str:
    """ "Harvest Tue 01 Dec 2026 08:00 GMT · lab 36 days · transplant Tue 22 Dec 08:00 GMT" """

    def when(slot: Slot) -> str:
        return f"{local_words(slot.starts_at, zone)}"

    lab = f" · lab {len(chain.expansion)} days" if chain.expansion else ""
    return f"Harvest {when(chain.harvest)}{lab} · provisional transplant {when(chain.transplant)}"


@dataclass
class _Wanted:
    """Builds the places a course should hold now; what it could not place goes in
    `problems` (or raises, when the caller asked for an exact booking)."""

    course: TreatmentCourse
    now: dt.datetime
    strict: bool
    harvest_at: dt.datetime | None = None
    transplant_at: dt.datetime | None = None
    infusion_at: dt.datetime | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.protocol = self.course.protocol
        if self.protocol.therapy == Therapy.MSC:
            self.suite = self.lab = None
            self.chair = course_chair(self.course)
        else:
            self.suite = course_suite(self.course)
            self.lab = course_lab(self.course)
            self.chair = None

    def __call__(self, given_back: list[Reservation]) -> list[Place]:
        self.provisional = next((r.starts_at for r in given_back if r.provisional), None)
        state = self.course.state
        if state == CourseState.ON_HOLD:
            # The patient keeps every booking (the visits stay booked, reminders paused) and
            # the cells their place in the lab; only the guessed transplant slot goes.
            return _places_kept([r for r in given_back if not r.provisional])
        if state == CourseState.HARVEST_SCHEDULED:
            return self._whole_chain()
        if state in (CourseState.HARVESTED, CourseState.EXPANDING):
            return self._expansion() + self._provisional_transplant()
        if state == CourseState.RELEASED:
            return self._provisional_transplant()
        if state == CourseState.TRANSPLANT_SCHEDULED:
            return self._booked_transplant()
        if state == CourseState.INFUSION_SCHEDULED:
            return self._booked_infusions()
        if state == CourseState.INFUSED:
            return self._next_doses(given_back)
        return []

    def _refuse(self, refusal: Refused) -> list[Place]:
        if self.strict:
            raise refusal
        self.problems.extend(refusal.reasons)
        return []

    def _whole_chain(self) -> list[Place]:
        visit = open_booking(course=self.course, kind=VisitKind.HARVEST)
        harvest_at = self.harvest_at or (visit.scheduled_at if visit else None)
        if harvest_at is None:
            return []
        if self.suite is None:  # no suite calendar: the lab's capacity still counts
            return self._expansion(started=harvest_at)
        try:
            return harvest_chain_places(
                course=self.course,
                harvest_at=harvest_at,
                transplant_at=self.transplant_at,
                keep_transplant_at=self.provisional,
                visit_id=visit.pk if visit else None,
                after=self.now,
                suite=self.suite,
                lab=self.lab,
            )
        except Refused as refusal:
            return self._refuse(refusal)

    def _expansion(self, started: dt.datetime | None = None) -> list[Place]:
        """A place in the lab on each day from day 0 (the receipt, or the harvest until the
        lab has the sample) to the last release day, in the lab's calendar; days already
        begun are left as they are."""
        if self.lab is None:
            return []
        started = started or self.course.lab_received_at or self.course.harvested_at
        zone = self.lab.time_zone
        first = timezone.localdate(started, zone)
        last = first + dt.timedelta(days=self.protocol.expansion_max_days)
        slots = resource_slots(resource=self.lab, first_day=first, last_day=last)
        ahead = [slot for slot in slots if slot.starts_at > self.now]
        free = places_free(resource=self.lab, slots=ahead)
        by_day: dict[dt.date, Slot] = {}
        for slot in slots:
            by_day.setdefault(timezone.localdate(slot.starts_at, zone), slot)
        places, missing = [], []
        for n in range((last - first).days + 1):
            day = first + dt.timedelta(days=n)
            slot = by_day.get(day)
            if slot is not None and slot.starts_at <= self.now:
                continue  # begun: held already, or past helping
            if slot is None or free[slot.starts_at] <= 0:
                missing.append(day)
            else:
                places.append(Place(ReservationPurpose.EXPANSION, self.lab, slot))
        if missing:  # strict: refused; otherwise the days free are held and the rest named
            days = ", ".join(f"{day:%d %b}" for day in missing)
            self._refuse(Refused([f"{self.lab} has no free place on {days}."]))
        return places

    def _provisional_transplant(self) -> list[Place]:
        if self.suite is None:
            return []
        zone = self.course.site.time_zone
        day_zero = timezone.localdate(self.course.lab_received_at or self.course.harvested_at, zone)
        first = day_zero + dt.timedelta(days=self.protocol.expansion_min_days)
        last = day_zero + dt.timedelta(days=self.protocol.expansion_max_days)
        # A transplant's notice after the window opens: bookable the morning of release.
        opens = dt.datetime.combine(first, dt.time(0), tzinfo=zone) + booking_notice(
            protocol=self.protocol, kind=VisitKind.TRANSPLANT
        )
        free = free_slots(
            resource=self.suite, first_day=first, last_day=last, after=max(self.now, opens)
        )
        slot = next((s for s in free if s.starts_at == self.provisional), None) or next(
            iter(free), None
        )
        if slot is None:
            self.problems.append(
                f"{self.suite} has no free slot for the transplant between "
                f"{date_words(first)} and {date_words(last)}."
            )
            return []
        return [Place(ReservationPurpose.TRANSPLANT, self.suite, slot)]

    def _booked_transplant(self) -> list[Place]:
        if self.suite is None:
            return []
        visit = open_booking(course=self.course, kind=VisitKind.TRANSPLANT)
        if visit is None or visit.status != VisitStatus.BOOKED:
            return []
        try:
            slot = slot_at(resource=self.suite, at=self.transplant_at or visit.scheduled_at)
        except Refused as refusal:
            return self._refuse(refusal)
        return [Place(ReservationPurpose.TRANSPLANT, self.suite, slot, visit.pk)]

    def _booked_infusions(self) -> list[Place]:
        """The booked dose's chair slot and one for each dose after it, its interval apart."""
        if self.chair is None:
            return []
        visit = open_booking(course=self.course, kind=VisitKind.INFUSION)
        if visit is None or visit.status != VisitStatus.BOOKED:
            return []
        try:
            return infusion_chain_places(
                course=self.course,
                first_at=self.infusion_at or visit.scheduled_at,
                visit_id=visit.pk,
                after=self.now,
                chair=self.chair,
            )
        except Refused as refusal:
            return self._refuse(refusal)

    def _next_doses(self, given_back: list[Reservation]) -> list[Place]:
        """Between doses: the slots held for the doses to come stay held; a course that holds
        none (resumed from a hold) takes them again from the last dose, its interval on."""
        if self.chair is None:
            return []
        held = sorted(
            r.starts_at
            for r in given_back
            if r.purpose == ReservationPurpose.INFUSION and r.provisional
        )
        if held:
            try:
                return [
                    Place(
                        ReservationPurpose.INFUSION, self.chair, slot_at(resource=self.chair, at=at)
                    )
                    for at in held
                    if at > self.now
                ]
            except Refused as refusal:
                return self._refuse(refusal)
        if self.course.last_infused_at is None:
            return []
        [next_at] = infusion_chain_times(
            self.course.last_infused_at,
            zone=self.chair.time_zone,
            interval_days=self.protocol.dose_interval_days,
            count=2,
        )[1:]
        if next_at <= self.now:
            self.problems.append("The next dose's slot has passed: book the next infusion.")
            return []
        try:
            return infusion_chain_places(
                course=self.course,
                first_at=next_at,
                after=self.now,
                chair=self.chair,
                doses=infusion_doses_left(course=self.course),
            )
        except Refused as refusal:
            return self._refuse(refusal)


def _places_kept(rows: list[Reservation]) -> list[Place]:
    """The places these reservations hold, to be taken again as they are: each slot with the
    capacity its row in the database has."""
    capacity = {
        (hold.resource_id, hold.starts_at): hold.capacity
        for hold in SlotHold.objects.filter(
            resource_id__in={r.resource_id for r in rows},
            starts_at__in={r.starts_at for r in rows},
        )
    }
    return [
        Place(
            ReservationPurpose(r.purpose),
            r.resource,
            Slot(r.starts_at, r.ends_at, capacity[(r.resource_id, r.starts_at)]),
            r.visit_id,
        )
        for r in rows
    ]


def course_reservations_reconcile(
    *,
    course: TreatmentCourse,
    why: str = "",
    tell_changes: bool = False,
    alert_key: str = "",
    strict: bool = False,
    harvest_at: dt.datetime | None = None,
    transplant_at: dt.datetime | None = None,
    infusion_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Rearrangement:
    """Make the course's chain what its state needs now. `strict` (a coordinator booking a
    chain) refuses when a part is not free; otherwise what cannot be held is reported: the
    coordinator is told once, in one alert headed `why`, of what could not be held, and (with
    `tell_changes`, a step that slipped) of what was given back and what is held now;
    `alert_key` names the step, so the alert is raised once for it."""
    wanted = _Wanted(
        course=course,
        now=now or timezone.now(),
        strict=strict,
        harvest_at=harvest_at,
        transplant_at=transplant_at,
        infusion_at=infusion_at,
    )
    if (
        wanted.suite is None
        and wanted.lab is None
        and wanted.chair is None
        and not course.reservations.filter(released_at__isnull=True).exists()
    ):
        return Rearrangement(released=[], taken=[])
    try:
        chain = reservations_rearrange(
            course=course,
            scope=Q(purpose__in=CHAIN_PURPOSES),
            wanted=wanted,
            now=wanted.now,
        )
    except Refused as refusal:  # a place taken by someone else this very moment
        if strict:
            raise
        wanted.problems.extend(refusal.reasons)
        chain = Rearrangement(released=[], taken=[])
    # A follow-up's place goes with its booking: cancelled (a withdrawal), it is given back.
    follow_ups = reservations_rearrange(
        course=course,
        scope=Q(purpose=ReservationPurpose.FOLLOW_UP) & ~Q(visit__status=VisitStatus.BOOKED),
        wanted=lambda _: [],
        now=wanted.now,
    )
    rearrangement = Rearrangement(released=chain.released + follow_ups.released, taken=chain.taken)
    if wanted.problems or (tell_changes and rearrangement.changed):
        _tell_coordinator(course, why, rearrangement, wanted.problems, alert_key)
    return rearrangement


def reservations_words(rows: list[Reservation]) -> str:
    """ "harvest Tue 03 Dec 2026 09:00 GMT, 36 expansion days (3 Dec – 7 Jan), ..." """
    parts = []
    days = [r for r in rows if r.purpose == ReservationPurpose.EXPANSION]
    for row in rows:
        if row.purpose == ReservationPurpose.EXPANSION:
            continue
        when = timezone.localtime(row.starts_at, row.resource.time_zone)
        if row.purpose == ReservationPurpose.FOLLOW_UP and row.visit_id:
            label = row.visit.label
        elif row.provisional and row.purpose == ReservationPurpose.INFUSION:
            label = "a later dose"
        elif row.provisional:
            label = "provisional transplant"
        else:
            label = row.get_purpose_display().lower()
        parts.append(f"{label} {local_words(when)}")
    if days:
        zone = days[0].resource.time_zone
        first = min(timezone.localdate(r.starts_at, zone) for r in days)
        last = max(timezone.localdate(r.starts_at, zone) for r in days)
        parts.append(f"{len(days)} expansion days ({date_words(first)} – {date_words(last)})")
    return ", ".join(parts)


def _tell_coordinator(
    course, why: str, rearrangement: Rearrangement, problems: list[str], alert_key: str
):
    lines = [f"{why.rstrip('.')}."]
    if rearrangement.released:
        lines.append(f"Given back: {reservations_words(rearrangement.released)}.")
    if rearrangement.taken:
        lines.append(f"Now held: {reservations_words(rearrangement.taken)}.")
    lines.extend(f"Not held: {problem}" for problem in problems)
    if course.state == CourseState.ELIGIBLE:
        chains = course_chains(course, count=1)
        if chains:
            when = timezone.localtime(chains[0].harvest.starts_at, course.site.time_zone)
            lines.append(f"Earliest new chain: harvest {local_words(when)}.")
    alert_raise(
        kind=AlertKind.CHAIN_CHANGED,
        severity=Severity.INFO if not problems else Severity.WARNING,
        course=course,
        condition_key=f"chain_changed.c{course.pk}.{alert_key}",
        message=" ".join(lines),
    )
