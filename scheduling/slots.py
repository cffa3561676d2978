"""A resource's slots, derived from its weekly sessions less its closures, in its own time
zone: a Tuesday 08:00 session is at 08:00 local time on either side of a clock change."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db.models import F

from common.errors import Refused
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


def slot_take(*, resource, slot: Slot) -> None:
    """Take one place in a slot, or raise `Refused` if it is full. The database decides: the
    slot's row is made once (a unique constraint), and a place is taken by one UPDATE that
    counts only while a place is free."""
    # get_or_create itself reads the row again when a concurrent create wins the unique key.
    SlotHold.objects.get_or_create(
        resource=resource,
        starts_at=slot.starts_at,
        defaults={"ends_at": slot.ends_at, "capacity": slot.capacity},
    )
    taken = SlotHold.objects.filter(
        resource=resource, starts_at=slot.starts_at, held__lt=F("capacity")
    ).update(held=F("held") + 1)
    if not taken:
        raise Refused([f"The slot at {slot.starts_at:%Y-%m-%d %H:%M} UTC is full."])


def slot_release(*, resource, slot: Slot) -> None:
    """Give back one place in a slot (a booking moved or cancelled)."""
    SlotHold.objects.filter(resource=resource, starts_at=slot.starts_at, held__gt=0).update(
        held=F("held") - 1
    )
