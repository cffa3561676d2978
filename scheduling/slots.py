"""A resource's slots, derived from its weekly sessions less its closures, in its own time
zone: a Tuesday 08:00 session is at 08:00 local time on either side of a clock change."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from common.errors import Refused
from common.zones import local_words
from scheduling.models import SlotHold


@dataclass(frozen=True)
class Slot:
    starts_at: dt.datetime  # aware, UTC
    ends_at: dt.datetime
    capacity: int


def slots_between(
    *, sessions, closures, zone: ZoneInfo, first_day: dt.date, last_day: dt.date
) -> list[Slot]:
    """Every session from `first_day` to `last_day` (in `zone`'s calendar, both included) on
    a day no closure covers, in time order. `sessions` have weekday, starts_at, ends_at and
    capacity; `closures` have first_day and last_day."""
    by_weekday: dict[int, list] = {}
    for session in sessions:
        by_weekday.setdefault(session.weekday, []).append(session)
    closed = [(c.first_day, c.last_day) for c in closures]
    slots = []
    day = first_day
    while day <= last_day:
        if not any(first <= day <= last for first, last in closed):
            for session in sorted(by_weekday.get(day.weekday(), ()), key=lambda s: s.starts_at):
                starts = dt.datetime.combine(day, session.starts_at, tzinfo=zone)
                ends = dt.datetime.combine(day, session.ends_at, tzinfo=zone)
                slots.append(
                    Slot(starts.astimezone(dt.UTC), ends.astimezone(dt.UTC), session.capacity)
                )
        day += dt.timedelta(days=1)
    return slots


def resource_slots(*, resource, first_day: dt.date, last_day: dt.date) -> list[Slot]:
    """A resource's slots over the days given: two queries."""
    return slots_between(
        sessions=list(resource.sessions.all()),
        closures=list(resource.closures.filter(first_day__lte=last_day, last_day__gte=first_day)),
        zone=resource.time_zone,
        first_day=first_day,
        last_day=last_day,
    )


def places_free(*, resource, slots: list[Slot]) -> dict[dt.datetime, int]:
    """How many places are free in each of these slots of a resource: one query."""
    if not slots:
        return {}
    held = dict(
        SlotHold.objects.filter(
            resource=resource,
            starts_at__gte=slots[0].starts_at,
            starts_at__lte=slots[-1].starts_at,
        ).values_list("starts_at", "held")
    )
    return {slot.starts_at: slot.capacity - held.get(slot.starts_at, 0) for slot in slots}


def slots_take(*, resource, slots: list[Slot], what: str) -> None:
    """Take one place in each of these slots, all or none, or raise `Refused` naming `what`
    and the first slot that is full. The database decides: each slot's row is made once (a
    unique constraint), its capacity brought to the session's present one (never below what
    it holds), and the places taken by one UPDATE that counts only rows with a place free; if
    it counts fewer rows than slots, raising rolls the savepoint back and nothing is taken."""
    if not slots:
        return
    starts = [slot.starts_at for slot in slots]
    try:
        with transaction.atomic():
            SlotHold.objects.bulk_create(
                [
                    SlotHold(
                        resource=resource,
                        starts_at=slot.starts_at,
                        ends_at=slot.ends_at,
                        capacity=slot.capacity,
                    )
                    for slot in slots
                ],
                ignore_conflicts=True,
            )
            for capacity in {slot.capacity for slot in slots}:
                SlotHold.objects.filter(
                    resource=resource,
                    starts_at__in=[s.starts_at for s in slots if s.capacity == capacity],
                ).exclude(capacity=capacity).update(capacity=Greatest(F("held"), capacity))
            taken = SlotHold.objects.filter(
                resource=resource, starts_at__in=starts, held__lt=F("capacity")
            ).update(held=F("held") + 1)
            if taken != len(slots):
                raise _Full
    except _Full:  # the savepoint is rolled back: nothing was taken
        full = (
            SlotHold.objects.filter(resource=resource, starts_at__in=starts)
            .filter(held__gte=F("capacity"))
            .order_by("starts_at")
            .values_list("starts_at", flat=True)
            .first()
        )
        when = timezone.localtime(full, resource.time_zone) if full else None
        on = f" ({local_words(when)} is full)" if when else ""
        raise Refused([f"{what} is no longer free: {resource}{on}."]) from None


class _Full(Exception):
    pass


def slot_take(*, resource, slot: Slot) -> None:
    """Take one place in a slot, or raise `Refused` if it is full."""
    slots_take(
        resource=resource,
        slots=[slot],
        what=f"The slot at {local_words(slot.starts_at, resource.time_zone)}",
    )


def slots_release(*, resource, starts: list[dt.datetime]) -> None:
    """Give back one place in each slot starting at these times (bookings moved or
    cancelled)."""
    SlotHold.objects.filter(resource=resource, starts_at__in=starts, held__gt=0).update(
        held=F("held") - 1
    )


def slot_release(*, resource, slot: Slot) -> None:
    """Give back one place in a slot."""
    slots_release(resource=resource, starts=[slot.starts_at])
