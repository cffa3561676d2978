import datetime as dt

from django.db import transaction

from pathway.models import TreatmentCourse
from scheduling.models import OPEN_VISIT_STATUSES, Visit, VisitKind, VisitStatus
from scheduling.windows import follow_up_slot


def visit_book(
    *, course: TreatmentCourse, kind: VisitKind, scheduled_at: dt.datetime, place: str
) -> Visit:
    """Book a procedure, replacing any open booking of the same kind."""
    with transaction.atomic():
        Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES).update(
            status=VisitStatus.CANCELLED
        )
        return Visit.objects.create(
            course=course,
            kind=kind,
            scheduled_at=scheduled_at,
            place=place,
            status=VisitStatus.BOOKED,
        )


def visit_mark_done(*, course: TreatmentCourse, kind: VisitKind, done_at: dt.datetime) -> int:
    """Mark the open booking of a procedure done; returns how many were."""
    return Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES).update(
        status=VisitStatus.DONE, done_at=done_at
    )


def visits_schedule_follow_ups(*, course: TreatmentCourse) -> list[Visit]:
    """Create the protocol's follow-up visits, anchored to the actual transplant."""
    zone = course.site.time_zone
    visits = []
    for protocol_visit in course.protocol.visits.all():
        slot = follow_up_slot(
            transplanted_at=course.transplanted_at,
            zone=zone,
            weeks_after=protocol_visit.weeks_after_transplant,
            window_days=protocol_visit.window_days,
        )
        visits.append(
            Visit(
                course=course,
                kind=VisitKind.FOLLOW_UP,
                protocol_visit=protocol_visit,
                scheduled_at=slot.scheduled_at,
                window_opens_on=slot.window_opens_on,
                window_closes_on=slot.window_closes_on,
                status=VisitStatus.PLANNED,
            )
        )
    return Visit.objects.bulk_create(visits)


def visits_cancel_open(*, course: TreatmentCourse) -> int:
    return Visit.objects.filter(course=course, status__in=OPEN_VISIT_STATUSES).update(
        status=VisitStatus.CANCELLED
    )
