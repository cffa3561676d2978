"""The treatment chain against real calendars: a harvest slot in the site's bronchoscopy
suite, a place in the lab's expansion capacity on every day from the harvest to the last
day the batch may be released, and a transplant slot in the suite inside the release window
(expansion day `min_days` to `max_days`, counted in the site's calendar from the harvest).

A course holds its places as `Reservation` rows; `reservations_rearrange` gives back what it
held and takes what it should hold now, in one transaction, so a step that slips (a harvest
moved, a sample rejected, a course held) never leaves a place held for nothing.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words, local_words
from scheduling.models import (
    Reservation,
    ReservationPurpose,
    Resource,
    ResourceKind,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.rules import booking_notice, booking_notice_refusals
from scheduling.slots import Slot, places_free, resource_slots, slots_release, slots_take

# How far ahead a harvest is looked for: the chain offered is the earliest, and a clinic
# books a bronchoscopy weeks, not months, ahead.
CHAIN_SEARCH_DAYS = 84


@dataclass(frozen=True)
class Chain:
    harvest: Slot
    expansion: tuple[Slot, ...]  # one per day, empty where the lab keeps no calendar here
    transplant: Slot

    @property
    def key(self) -> str:
        """The chain as a form's choice: its harvest and transplant times."""
        return f"{self.harvest.starts_at.isoformat()}|{self.transplant.starts_at.isoformat()}"


@dataclass(frozen=True)
class Place:
    """A place a course should hold: its purpose, where, when, and the visit it is for."""

    purpose: ReservationPurpose
    resource: Resource
    slot: Slot
    visit_id: int | None = None


def course_resource(*, site, kind: ResourceKind) -> Resource | None:
    """The resource of a kind that serves a site: the site's own, else (for the lab's
    capacity) one serving every site."""
    resources = Resource.objects.filter(kind=kind)
    if kind in LAB_KINDS:
        resources = resources.filter(Q(site=site) | Q(site__isnull=True))
    else:
        resources = resources.filter(site=site)
    return resources.order_by(F("site_id").asc(nulls_last=True), "id").first()


LAB_KINDS = (ResourceKind.EXPANSION, ResourceKind.QC)


def _day(at: dt.datetime, zone) -> dt.date:
    return timezone.localdate(at, zone)


def free_slots(*, resource, first_day, last_day, after) -> list[Slot]:
    """A resource's slots starting after `after` with a place free, in time order."""
    slots = [
        slot
        for slot in resource_slots(resource=resource, first_day=first_day, last_day=last_day)
        if slot.starts_at > after
    ]
    free = places_free(resource=resource, slots=slots)
    return [slot for slot in slots if free[slot.starts_at] > 0]


@dataclass
class _Calendars:
    """The free slots of the suite and the lab's free expansion days over a stretch of days:
    five queries, however many bookings the resources hold."""

    suite: Resource
    lab: Resource | None
    min_days: int
    max_days: int
    transplant_notice: dt.timedelta = dt.timedelta(0)
    suite_free: list[Slot] = field(default_factory=list)
    lab_free_by_day: dict[dt.date, Slot] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        suite,
        lab,
        min_days,
        max_days,
        first_day,
        last_harvest_day,
        after,
        transplant_notice=dt.timedelta(0),
    ):
        calendars = cls(
            suite=suite,
            lab=lab,
            min_days=min_days,
            max_days=max_days,
            transplant_notice=transplant_notice,
        )
        last_day = last_harvest_day + dt.timedelta(days=max_days)
        calendars.suite_free = free_slots(
            resource=suite, first_day=first_day, last_day=last_day, after=after
        )
        if lab is not None:
            for slot in free_slots(
                resource=lab,
                first_day=first_day - dt.timedelta(days=1),
                last_day=last_day + dt.timedelta(days=1),
                after=dt.datetime.min.replace(tzinfo=dt.UTC),
            ):
                calendars.lab_free_by_day.setdefault(_day(slot.starts_at, lab.time_zone), slot)
        return calendars

    def expansion_from(self, harvest: Slot) -> tuple[Slot, ...] | None:
        """A free expansion place on each day from the harvest's to the last release day;
        None if a day has none."""
        if self.lab is None:
            return ()
        first = _day(harvest.starts_at, self.lab.time_zone)
        return self.expansion_days(first, first + dt.timedelta(days=self.max_days))

    def expansion_days(self, first: dt.date, last: dt.date) -> tuple[Slot, ...] | None:
        if self.lab is None:
            return ()
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        if any(day not in self.lab_free_by_day for day in days):
            return None
        return tuple(self.lab_free_by_day[day] for day in days)

    def transplant_slots(self, *, harvested_on: dt.date, after=None) -> list[Slot]:
        """The suite's free slots inside the release window of a harvest on that day, and a
        transplant's notice after the window opens: a product released on its first morning
        can be booked for a slot the patient can keep."""
        first = harvested_on + dt.timedelta(days=self.min_days)
        last = harvested_on + dt.timedelta(days=self.max_days)
        opens = dt.datetime.combine(first, dt.time(0), tzinfo=self.suite.time_zone)
        return [
            slot
            for slot in self.suite_free
            if first <= _day(slot.starts_at, self.suite.time_zone) <= last
            and slot.starts_at >= opens + self.transplant_notice
            and (after is None or slot.starts_at > after)
        ]


def chains_earliest(
    *,
    suite: Resource,
    lab: Resource | None,
    min_days: int,
    max_days: int,
    after: dt.datetime,
    count: int = 3,
    search_days: int = CHAIN_SEARCH_DAYS,
    transplant_notice: dt.timedelta = dt.timedelta(0),
) -> list[Chain]:
    """The earliest `count` chains whose every part is free, each with a different harvest
    slot and the earliest transplant slot its release window allows."""
    first_day = _day(after, suite.time_zone)
    last_harvest_day = first_day + dt.timedelta(days=search_days)
    calendars = _Calendars.load(
        suite=suite,
        lab=lab,
        min_days=min_days,
        max_days=max_days,
        first_day=first_day,
        last_harvest_day=last_harvest_day,
        after=after,
        transplant_notice=transplant_notice,
    )
    chains = []
    for harvest in calendars.suite_free:
        harvested_on = _day(harvest.starts_at, suite.time_zone)
        if harvested_on > last_harvest_day:
            break
        chain = _chain_from(calendars, harvest, harvested_on, transplant_at=None)
        if chain is not None:
            chains.append(chain)
            if len(chains) == count:
                break
    return chains


def _chain_from(calendars, harvest, harvested_on, *, transplant_at) -> Chain | None:
    expansion = calendars.expansion_from(harvest)
    if expansion is None:
        return None
    transplants = calendars.transplant_slots(harvested_on=harvested_on)
    if transplant_at is not None:
        transplants = [slot for slot in transplants if slot.starts_at == transplant_at]
    if not transplants:
        return None
    return Chain(harvest=harvest, expansion=expansion, transplant=transplants[0])


def chain_from_harvest(
    *,
    suite: Resource,
    lab: Resource | None,
    min_days: int,
    max_days: int,
    harvest_at: dt.datetime,
    transplant_at: dt.datetime | None = None,
    after: dt.datetime | None = None,
    transplant_notice: dt.timedelta = dt.timedelta(0),
) -> Chain:
    """The chain starting with the harvest slot at `harvest_at` (and the transplant slot at
    `transplant_at` if given, else the earliest free one), or `Refused` saying which part is
    not free."""
    after = after or timezone.now()
    harvested_on = _day(harvest_at, suite.time_zone)
    calendars = _Calendars.load(
        suite=suite,
        lab=lab,
        min_days=min_days,
        max_days=max_days,
        first_day=harvested_on,
        last_harvest_day=harvested_on,
        after=after,
        transplant_notice=transplant_notice,
    )
    harvest = next((s for s in calendars.suite_free if s.starts_at == harvest_at), None)
    when = timezone.localtime(harvest_at, suite.time_zone)
    if harvest is None:
        raise Refused(
            [
                f"{local_words(when)} is not a free slot of {suite}: choose one of "
                "the chains offered."
            ]
        )
    if calendars.expansion_from(harvest) is None:
        raise Refused(
            [
                f"{lab} has no free expansion place on every day from "
                f"{date_words(harvested_on)} to the last release day (day {max_days})."
            ]
        )
    chain = _chain_from(calendars, harvest, harvested_on, transplant_at=transplant_at)
    if chain is None:
        raise Refused(
            [
                f"{suite} has no free transplant slot between day {min_days} and day "
                f"{max_days} after a harvest on {date_words(harvested_on)}"
                + (" at the time chosen." if transplant_at else ".")
            ]
        )
    return chain


def chain_places(chain: Chain, *, suite, lab, harvest_visit_id=None) -> list[Place]:
    return [
        Place(ReservationPurpose.HARVEST, suite, chain.harvest, harvest_visit_id),
        *(Place(ReservationPurpose.EXPANSION, lab, day) for day in chain.expansion),
        Place(ReservationPurpose.TRANSPLANT, suite, chain.transplant),
    ]


def slot_at(*, resource: Resource, at: dt.datetime, after: dt.datetime | None = None) -> Slot:
    """The free slot of `resource` starting at `at`, or `Refused`."""
    day = _day(at, resource.time_zone)
    free = free_slots(resource=resource, first_day=day, last_day=day, after=after or timezone.now())
    slot = next((s for s in free if s.starts_at == at), None)
    if slot is None:
        when = timezone.localtime(at, resource.time_zone)
        raise Refused([f"{local_words(when)} is not a free slot of {resource}."])
    return slot


@dataclass(frozen=True)
class Rearrangement:
    released: list[Reservation]
    taken: list[Reservation]

    @property
    def changed(self) -> bool:
        return bool(self.released or self.taken)


def reservations_rearrange(
    *,
    course,
    scope: Q,
    wanted: Callable[[list[Reservation]], list[Place]],
    now: dt.datetime | None = None,
) -> Rearrangement:
    """Give back the places the course holds in `scope` that have not begun, then take the
    places `wanted(given_back)` returns, in one transaction: a place both given back and
    wanted is simply kept, and one already begun (the day's expansion place, a harvest
    under way) stays held. Raises `Refused` (and changes nothing) if a wanted place is full."""
    now = now or timezone.now()
    with transaction.atomic():
        _one_rearrangement_at_a_time()
        active = list(
            course.reservations.filter(scope, released_at__isnull=True)
            .select_related("resource", "visit__protocol_visit")
            .select_for_update(of=("self",))
        )
        held = [row for row in active if row.starts_at > now]
        begun = {(r.resource_id, r.starts_at, r.purpose) for r in active if r.starts_at <= now}
        _give_back(held)
        places = [
            place
            for place in wanted(held)
            if (place.resource.pk, place.slot.starts_at, place.purpose) not in begun
        ]
        groups: dict[tuple, list[Place]] = {}
        for place in places:
            groups.setdefault((place.resource.pk, place.purpose), []).append(place)
        for group in groups.values():
            slots_take(
                resource=group[0].resource,
                slots=[place.slot for place in group],
                what=_what(group[0]),
            )
        previous = {(r.resource_id, r.starts_at, r.purpose): r for r in held}
        relinked, taken = [], []
        for place in places:
            row = previous.pop((place.resource.pk, place.slot.starts_at, place.purpose), None)
            if row is None:
                taken.append(
                    Reservation(
                        course=course,
                        resource=place.resource,
                        purpose=place.purpose,
                        starts_at=place.slot.starts_at,
                        ends_at=place.slot.ends_at,
                        visit_id=place.visit_id,
                        created_at=now,
                    )
                )
            elif row.visit_id != place.visit_id:
                row.visit_id = place.visit_id
                relinked.append(row)
        Reservation.objects.bulk_create(taken)
        released = list(previous.values())
        Reservation.objects.filter(pk__in=[r.pk for r in released]).update(released_at=now)
        Reservation.objects.bulk_update(relinked, ["visit"])
        return Rearrangement(released=released, taken=taken)


def _one_rearrangement_at_a_time() -> None:
    """Courses give back and take places in the same slots in different orders (one the
    suite, then the lab; another the lab's days, then the suite), which could deadlock two
    transactions. Bookings are a few a day: one at a time, until commit, costs nothing."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('tracker.capacity'))")


def _give_back(held: list[Reservation]) -> None:
    by_resource: dict[int, list[Reservation]] = {}
    for row in held:
        by_resource.setdefault(row.resource_id, []).append(row)
    for rows in by_resource.values():
        slots_release(resource=rows[0].resource, starts=[row.starts_at for row in rows])


def _what(place: Place) -> str:
    when = timezone.localtime(place.slot.starts_at, place.resource.time_zone)
    if place.purpose == ReservationPurpose.EXPANSION:
        return f"An expansion place on {date_words(when)}"
    return f"The {place.purpose.label.lower()} slot at {local_words(when)}"


CHAIN_PURPOSES = (
    ReservationPurpose.HARVEST,
    ReservationPurpose.EXPANSION,
    ReservationPurpose.TRANSPLANT,
    ReservationPurpose.INFUSION,
)


def chain_release(*, course, now: dt.datetime | None = None) -> Rearrangement:
    """Give back every place of the course's chain not yet begun."""
    return reservations_rearrange(
        course=course, scope=Q(purpose__in=CHAIN_PURPOSES), wanted=lambda _: [], now=now
    )


def visit_places_release(*, visit, now: dt.datetime | None = None) -> Rearrangement:
    """Give back the places a visit holds that have not begun (it was done early, missed or
    cancelled)."""
    return reservations_rearrange(
        course=visit.course, scope=Q(visit=visit), wanted=lambda _: [], now=now
    )


def harvest_chain_places(
    *,
    course,
    harvest_at: dt.datetime,
    transplant_at: dt.datetime | None = None,
    keep_transplant_at: dt.datetime | None = None,
    visit_id: int | None = None,
    after: dt.datetime | None = None,
    suite: Resource | None = None,
    lab: Resource | None = None,
) -> list[Place]:
    """The places of the chain beginning with a harvest of `course` at `harvest_at`: its
    transplant at `transplant_at` if given, else the one at `keep_transplant_at` (held until
    now) while still in the release window, else the earliest free. `Refused` if a part is
    not free; empty if the site keeps no calendar for its suite. `suite` and `lab`, when the
    caller has read them already, save reading them again."""
    suite = suite or course_resource(site=course.site, kind=ResourceKind.BRONCHOSCOPY)
    if suite is None:
        return []
    lab = lab or course_resource(site=course.site, kind=ResourceKind.EXPANSION)
    protocol = course.protocol
    kwargs = {
        "suite": suite,
        "lab": lab,
        "min_days": protocol.expansion_min_days,
        "max_days": protocol.expansion_max_days,
        "harvest_at": harvest_at,
        "after": after,
        "transplant_notice": booking_notice(protocol=protocol, kind=VisitKind.TRANSPLANT),
    }
    chain = None
    if transplant_at is None and keep_transplant_at is not None:
        try:
            chain = chain_from_harvest(**kwargs, transplant_at=keep_transplant_at)
        except Refused:
            chain = None
    chain = chain or chain_from_harvest(**kwargs, transplant_at=transplant_at)
    return chain_places(chain, suite=suite, lab=lab, harvest_visit_id=visit_id)


def visit_places_follow(*, visit, after: dt.datetime | None = None) -> Rearrangement | None:
    """A booked visit moved: what it holds moves with it. A harvest takes its whole chain
    anew (keeping the transplant slot if it still fits); a transplant or a follow-up takes the
    slot at its new time. `Refused` when the new time is not a free slot of the resource;
    nothing happens at a site with no calendar for it."""
    course = visit.course
    kind = {
        VisitKind.HARVEST: ResourceKind.BRONCHOSCOPY,
        VisitKind.TRANSPLANT: ResourceKind.BRONCHOSCOPY,
        VisitKind.INFUSION: ResourceKind.INFUSION_CHAIR,
        VisitKind.FOLLOW_UP: ResourceKind.LUNG_FUNCTION,
    }[visit.kind]
    resource = course_resource(site=course.site, kind=kind)
    if resource is None:
        return None
    if visit.kind == VisitKind.INFUSION:
        # The doses still to come move with it, keeping their spacing: one chain.
        def wanted(given_back):
            return infusion_chain_places(
                course=course,
                first_at=visit.scheduled_at,
                visit_id=visit.pk,
                after=after,
                chair=resource,
            )

        return reservations_rearrange(
            course=course, scope=Q(purpose=ReservationPurpose.INFUSION), wanted=wanted, now=after
        )
    if visit.kind == VisitKind.HARVEST:
        scope = Q(purpose__in=CHAIN_PURPOSES)

        def wanted(given_back):
            provisional = next(
                (r.starts_at for r in given_back if r.purpose == ReservationPurpose.TRANSPLANT),
                None,
            )
            return harvest_chain_places(
                course=course,
                harvest_at=visit.scheduled_at,
                keep_transplant_at=provisional,
                visit_id=visit.pk,
                after=after,
            )

    else:
        purpose = (
            ReservationPurpose.TRANSPLANT
            if visit.kind == VisitKind.TRANSPLANT
            else ReservationPurpose.FOLLOW_UP
        )
        scope = Q(purpose=purpose) if purpose == ReservationPurpose.TRANSPLANT else Q(visit=visit)

        def wanted(given_back):
            slot = slot_at(resource=resource, at=visit.scheduled_at, after=after)
            return [Place(purpose, resource, slot, visit.pk)]

    return reservations_rearrange(course=course, scope=scope, wanted=wanted, now=after)


def follow_ups_proposal(*, course, after: dt.datetime | None = None) -> list[tuple]:
    """For each follow-up of the course still only due, the earliest free slot of the site's
    lung-function clinic inside its window (or None): a set for the coordinator to confirm.
    Empty when the site keeps no calendar for the clinic."""
    clinic = course_resource(site=course.site, kind=ResourceKind.LUNG_FUNCTION)
    if clinic is None:
        return []
    after = after or timezone.now()
    due = list(
        Visit.objects.filter(
            course=course, kind=VisitKind.FOLLOW_UP, status=VisitStatus.PLANNED
        ).select_related("protocol_visit")
    )
    if not due:
        return []
    free = free_slots(
        resource=clinic,
        first_day=min(v.window_opens_on for v in due),
        last_day=max(v.window_closes_on for v in due),
        after=after,
    )
    proposal, proposed = [], set()
    for visit in due:
        # Only a slot the patient can keep: the visit's notice, and told of it in time.
        slot = next(
            (
                s
                for s in free
                if not booking_notice_refusals(
                    course=course,
                    kind=visit.kind,
                    scheduled_at=s.starts_at,
                    protocol_visit=visit.protocol_visit,
                    now=after,
                )
                and s.starts_at not in proposed  # overlapping windows: one slot each
                and visit.window_opens_on
                <= _day(s.starts_at, clinic.time_zone)
                <= visit.window_closes_on
            ),
            None,
        )
        if slot:
            proposed.add(slot.starts_at)
        proposal.append((visit, slot))
    return proposal


def infusion_doses_left(*, course) -> int:
    """The doses of the course not given yet, the next one included."""
    given = Visit.objects.filter(
        course=course, kind=VisitKind.INFUSION, status=VisitStatus.DONE
    ).count()
    return max(course.protocol.dose_count - given, 0)


def infusion_chain_times(
    first_at: dt.datetime, *, zone, interval_days: int, count: int
) -> list[dt.datetime]:
    """`count` infusions from `first_at`, `interval_days` apart at the same local clock time
    (a 09:00 chair keeps 09:00 across a change of the clocks)."""
    local = first_at.astimezone(zone)
    return [
        dt.datetime.combine(
            local.date() + dt.timedelta(days=n * interval_days),
            local.time().replace(tzinfo=None),
            tzinfo=zone,
        ).astimezone(dt.UTC)
        for n in range(count)
    ]


@dataclass(frozen=True)
class InfusionChain:
    """A chair slot for each dose still to come, the protocol's interval apart."""

    slots: tuple[Slot, ...]

    @property
    def key(self) -> str:
        return self.slots[0].starts_at.isoformat()


def infusion_chain_places(
    *,
    course,
    first_at: dt.datetime,
    visit_id: int | None = None,
    after: dt.datetime | None = None,
    chair: Resource | None = None,
    doses: int | None = None,
) -> list[Place]:
    """The places of the course's chain of infusions from a dose at `first_at` (booked as
    `visit_id`): that chair slot and one for each later dose, the protocol's interval apart.
    `Refused`, naming the dose, if a part is not free; empty where the site keeps no calendar
    for its chairs."""
    chair = chair or course_resource(site=course.site, kind=ResourceKind.INFUSION_CHAIR)
    if chair is None:
        return []
    doses = infusion_doses_left(course=course) if doses is None else doses
    times = infusion_chain_times(
        first_at,
        zone=chair.time_zone,
        interval_days=course.protocol.dose_interval_days,
        count=max(doses, 1),
    )
    given = course.protocol.dose_count - max(doses, 1)
    places = []
    for n, at in enumerate(times):
        try:
            slot = slot_at(resource=chair, at=at, after=after)
        except Refused as refusal:
            if n == 0:
                raise
            raise Refused(
                [
                    f"Dose {given + n + 1}, {local_words(at, chair.time_zone)}: not a free "
                    f"slot of {chair}; the doses keep {course.protocol.dose_interval_days} "
                    "days apart."
                ]
            ) from refusal
        places.append(Place(ReservationPurpose.INFUSION, chair, slot, visit_id if n == 0 else None))
    return places


def infusion_chains_earliest(
    *, course, after: dt.datetime, count: int = 3, search_days: int = CHAIN_SEARCH_DAYS
) -> list[InfusionChain]:
    """The earliest `count` chains of the course's doses still to come whose every chair slot
    is free, each starting at a different slot. Two queries, however many doses."""
    chair = course_resource(site=course.site, kind=ResourceKind.INFUSION_CHAIR)
    if chair is None:
        return []
    doses = max(infusion_doses_left(course=course), 1)
    interval = course.protocol.dose_interval_days
    first_day = _day(after, chair.time_zone)
    last_first_day = first_day + dt.timedelta(days=search_days)
    free = free_slots(
        resource=chair,
        first_day=first_day,
        last_day=last_first_day + dt.timedelta(days=interval * (doses - 1)),
        after=after,
    )
    by_start = {slot.starts_at: slot for slot in free}
    chains = []
    for slot in free:
        if _day(slot.starts_at, chair.time_zone) > last_first_day:
            break
        times = infusion_chain_times(
            slot.starts_at, zone=chair.time_zone, interval_days=interval, count=doses
        )
        if all(at in by_start for at in times):
            chains.append(InfusionChain(tuple(by_start[at] for at in times)))
            if len(chains) == count:
                break
    return chains
