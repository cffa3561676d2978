import datetime as dt

from django.utils import timezone

from scheduling.models import Visit, VisitKind, VisitStatus

# The dashboard's and the visit list's "procedures booked in the next 14 days".
UPCOMING_PROCEDURE_DAYS = 14


def course_completion_visit_done(*, course) -> bool:
    """Whether the follow-up that completes the course has been done."""
    return Visit.objects.filter(
        course=course, protocol_visit__completes_course=True, status=VisitStatus.DONE
    ).exists()


def upcoming_procedures(*, sites, now: dt.datetime | None = None):
    """Open harvests and transplants booked in the next 14 days."""
    now = now or timezone.now()
    return Visit.objects.open().filter(
        course__site__in=sites,
        kind__in=[VisitKind.HARVEST, VisitKind.TRANSPLANT],
        scheduled_at__gte=now,
        scheduled_at__lt=now + dt.timedelta(days=UPCOMING_PROCEDURE_DAYS),
    )
