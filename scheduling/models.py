from django.db import models
from django.utils import timezone


class VisitKind(models.TextChoices):
    HARVEST = "harvest", "Harvest bronchoscopy"
    TRANSPLANT = "transplant", "Transplant bronchoscopy"
    FOLLOW_UP = "follow_up", "Follow-up"


class VisitStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    BOOKED = "booked", "Booked"
    DONE = "done", "Done"
    MISSED = "missed", "Missed"
    CANCELLED = "cancelled", "Cancelled"


OPEN_VISIT_STATUSES = (VisitStatus.PLANNED, VisitStatus.BOOKED)


class Visit(models.Model):
    """A procedure or follow-up appointment of a course.

    Times are stored in UTC; the window is a pair of dates in the site's calendar.
    """

    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.CASCADE, related_name="visits"
    )
    kind = models.CharField(max_length=20, choices=VisitKind.choices)
    protocol_visit = models.ForeignKey(
        "pathway.ProtocolVisit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The follow-up of the protocol this visit stands for.",
    )
    scheduled_at = models.DateTimeField()
    place = models.CharField(max_length=200, blank=True)
    window_opens_on = models.DateField(null=True, blank=True)
    window_closes_on = models.DateField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=VisitStatus.choices, default=VisitStatus.PLANNED, db_index=True
    )
    done_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["scheduled_at"]
        indexes = [models.Index(fields=["status", "window_closes_on"])]

    def __str__(self) -> str:
        label = self.protocol_visit.name if self.protocol_visit_id else self.get_kind_display()
        return f"{label} on {timezone.localdate(self.scheduled_at, self.course.site.time_zone)}"
