"""How full each resource is, day by day: the capacity view's numbers."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Prefetch

from common.replica import replica_reads
from scheduling.models import ResourceClosure, SlotHold
from scheduling.slots import slots_between


@dataclass(frozen=True)
class DayUse:
    day: dt.date
    held: int
    capacity: int  # 0: no session that day, or closed
    closed: bool

    @property
    def share(self) -> float | None:
        return self.held / self.capacity if self.capacity else None

    @property
    def band(self) -> str:
        """For colour: closed, none (no session), free, busy (half or more), full (85 %+)."""
        if self.closed:
            return "closed"
        if self.share is None:
            return "none"
        return "full" if self.share >= 0.85 else "busy" if self.share >= 0.5 else "free"


@dataclass(frozen=True)
class ResourceUse:
    resource: object
    weeks: list[list[DayUse]]  # Monday to Sunday rows

    @property
    def held(self) -> int:
        return sum(day.held for week in self.weeks for day in week)

    @property
    def capacity(self) -> int:
        return sum(day.capacity for week in self.weeks for day in week)


@replica_reads(purpose="the capacity heat map")
def capacity_by_day(*, resources, first_day: dt.date, weeks: int = 8) -> list[ResourceUse]:
    """Places held and places offered per day, for each resource, from the Monday of
    `first_day`'s week for `weeks` weeks, in the resource's own calendar: three queries
    whatever the number of resources and bookings, on the replica when it is fit to read."""
    monday = first_day - dt.timedelta(days=first_day.weekday())
    last_day = monday + dt.timedelta(days=7 * weeks - 1)
    resources = list(
        resources.prefetch_related(
            "sessions",
            Prefetch(
                "closures",
                queryset=ResourceClosure.objects.filter(
                    first_day__lte=last_day, last_day__gte=monday
                ),
            ),
        )
    )
    # A day's slots start within a day either side of it in UTC, whatever the zone.
    holds = SlotHold.objects.filter(
        resource__in=resources,
        starts_at__gte=dt.datetime.combine(monday, dt.time(), dt.UTC) - dt.timedelta(days=1),
        starts_at__lt=dt.datetime.combine(last_day, dt.time(), dt.UTC) + dt.timedelta(days=2),
    ).values_list("resource_id", "starts_at", "held")
    held_at = {(resource_id, starts_at): held for resource_id, starts_at, held in holds}
    uses = []
    for resource in resources:
        zone = resource.time_zone
        closures = list(resource.closures.all())
        slots = slots_between(
            sessions=resource.sessions.all(),
            closures=closures,
            zone=zone,
            first_day=monday,
            last_day=last_day,
        )
        per_day: dict[dt.date, list[int]] = {}
        for slot in slots:
            day = slot.starts_at.astimezone(zone).date()
            totals = per_day.setdefault(day, [0, 0])
            totals[0] += held_at.get((resource.pk, slot.starts_at), 0)
            totals[1] += slot.capacity
        days = [
            DayUse(
                day=day,
                held=per_day.get(day, [0, 0])[0],
                capacity=per_day.get(day, [0, 0])[1],
                closed=any(c.first_day <= day <= c.last_day for c in closures),
            )
            for day in (monday + dt.timedelta(days=n) for n in range(7 * weeks))
        ]
        uses.append(ResourceUse(resource, [days[i : i + 7] for i in range(0, len(days), 7)]))
    return uses
