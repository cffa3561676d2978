import datetime as dt

from django.utils import timezone

from scheduling.models import PROCEDURE_KINDS, Channel, InboundMessage, Visit, VisitStatus

# The dashboard's and the visit list's "procedures booked in the next 14 days".
UPCOMING_PROCEDURE_DAYS = 14


def course_completion_visit_done(*, course) -> bool:
    """Whether the follow-up that completes the course has been done."""
    return Visit.objects.filter(
        course=course, protocol_visit__completes_course=True, status=VisitStatus.DONE
    ).exists()


def upcoming_procedures(*, sites, now: dt.datetime | None = None):
    """Open procedures (harvests, transplants, infusions) booked in the next 14 days."""
    now = now or timezone.now()
    return Visit.objects.open().filter(
        course__site__in=sites,
        kind__in=PROCEDURE_KINDS,
        scheduled_at__gte=now,
        scheduled_at__lt=now + dt.timedelta(days=UPCOMING_PROCEDURE_DAYS),
    )


def whatsapp_last_inbound_at(number) -> dt.datetime | None:
    """When this WhatsApp number last wrote to the clinic (None: never): for someone who is
    not a patient yet, whose 24-hour window is read from the messages themselves."""
    number = str(number or "").strip()
    if not number:
        return None
    return (
        InboundMessage.objects.filter(channel=Channel.WHATSAPP, from_number=f"whatsapp:{number}")
        .order_by("-received_at")
        .values_list("received_at", flat=True)
        .first()
    )
