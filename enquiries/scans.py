"""The periodic scan for enquiries nobody has answered in time: one alert each, to the site's
coordinators (beat's overdue scan runs it with the others)."""

import datetime as dt

from django.conf import settings
from django.utils import timezone

from common.zones import local_words
from enquiries.models import Enquiry, EnquiryStatus
from enquiries.rules import enquiry_answer_due
from scheduling.alerts import alert_raise
from scheduling.models import AlertKind


def alerts_scan_unanswered_enquiries(*, now: dt.datetime | None = None) -> int:
    """Raise one alert for each enquiry still unanswered past its answer time; returns how
    many were new. Running it again raises nothing twice."""
    now = now or timezone.now()
    # N working days are at least N calendar days: only those older are looked at (the
    # triage index: site, status, submitted_at).
    older = now - dt.timedelta(days=settings.ENQUIRY_ANSWER_WORKING_DAYS)
    waiting = (
        Enquiry.objects.filter(status=EnquiryStatus.NEW, submitted_at__lt=older)
        .exclude(alerts__kind=AlertKind.ENQUIRY_UNANSWERED)
        .select_related("site")
    )
    raised = 0
    for enquiry in waiting:
        due = enquiry_answer_due(enquiry)
        if due > now:
            continue
        zone = enquiry.site.time_zone
        raised += alert_raise(
            kind=AlertKind.ENQUIRY_UNANSWERED,
            enquiry=enquiry,
            condition_key=f"enquiry_unanswered.e{enquiry.pk}",
            message=f"{enquiry.get_kind_display()} from {enquiry.first_name} "
            f"{enquiry.last_name}, sent {local_words(enquiry.submitted_at, zone)}, has no "
            f"answer: it was due by {local_words(due, zone)} "
            f"({settings.ENQUIRY_ANSWER_WORKING_DAYS} working days).",
        )[1]
    return raised
