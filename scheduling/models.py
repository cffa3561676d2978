import datetime as dt

from django.conf import settings
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField

from common.zones import date_words, local_words
from patients.models import Weekday
from patients.sites import local_date_by_site


class VisitKind(models.TextChoices):
    HARVEST = "harvest", "Harvest bronchoscopy"
    TRANSPLANT = "transplant", "Transplant bronchoscopy"
    INFUSION = "infusion", "Infusion"
    FOLLOW_UP = "follow_up", "Follow-up"


# Procedures: booked for one moment, done when the pathway records them.
PROCEDURE_KINDS = (VisitKind.HARVEST, VisitKind.TRANSPLANT, VisitKind.INFUSION)


class VisitStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    BOOKED = "booked", "Booked"
    DONE = "done", "Done"
    MISSED = "missed", "Missed"
    CANCELLED = "cancelled", "Cancelled"


OPEN_VISIT_STATUSES = (VisitStatus.PLANNED, VisitStatus.BOOKED)


class VisitQuerySet(models.QuerySet):
    def open(self):
        """Visits still to take place: planned or booked."""
        return self.filter(status__in=OPEN_VISIT_STATUSES)

    def overdue(self, *, sites, at: dt.datetime):
        """Open visits at `sites` whose window closed before the day of `at` in their site's
        calendar. The one definition of overdue; `Visit.is_overdue` is the same for one visit."""
        return self.open()._window_closed_before(sites=sites, at=at)

    def overdue_as_of(self, *, sites, at: dt.datetime):
        """The visits that were overdue at the past moment `at`: open then (open still, or done
        since), with their window closed before that day. A week's report reads these."""
        # Each branch on an index of its own: (status, window) and done visits' done_at.
        closed = _closed_by_any_sites_day(at)
        open_then = models.Q(status__in=OPEN_VISIT_STATUSES, window_closes_on__lt=closed) | (
            models.Q(status=VisitStatus.DONE, done_at__gte=at, window_closes_on__lt=closed)
        )
        return self.filter(open_then, created_at__lt=at)._window_closed_before(sites=sites, at=at)

    def _window_closed_before(self, *, sites, at: dt.datetime):
        return (
            self.filter(course__site__in=sites, window_closes_on__lt=_closed_by_any_sites_day(at))
            .annotate(site_today=local_date_by_site(sites, at, site_path="course__site_id"))
            .filter(window_closes_on__lt=models.F("site_today"))
        )


def _closed_by_any_sites_day(at: dt.datetime) -> dt.date:
    """A bound no site's day at `at` passes (no zone is more than a day ahead of UTC), so
    the exact per-site test, which no index can serve, reads only windows already closed."""
    return at.astimezone(dt.UTC).date() + dt.timedelta(days=1)


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
    confirmed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the patient confirmed they will come.",
    )
    missed_reason = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    history = HistoricalRecords()

    objects = VisitQuerySet.as_manager()

    class Meta:
        ordering = ["scheduled_at", "id"]  # all of it in one index, for long lists
        indexes = [
            models.Index(fields=["status", "window_closes_on"]),
            models.Index(fields=["scheduled_at", "id"], name="visit_scheduled_idx"),
            # A week's report: the visits done since its end were still open at it.
            models.Index(
                fields=["done_at"], name="visit_done_at_idx", condition=models.Q(status="done")
            ),
        ]

    def __str__(self) -> str:
        day = timezone.localdate(self.scheduled_at, self.course.site.time_zone)
        return f"{self.label} on {date_words(day)}"

    @property
    def label(self) -> str:
        """The follow-up's name in the protocol, or the kind of procedure."""
        return self.protocol_visit.name if self.protocol_visit_id else self.get_kind_display()

    def is_overdue(self, *, today: dt.date) -> bool:
        """Open, and its window closed before `today` (a date in the site's calendar): the
        same rule as `Visit.objects.overdue`."""
        return (
            self.status in OPEN_VISIT_STATUSES
            and self.window_closes_on is not None
            and self.window_closes_on < today
        )


class DeviationKind(models.TextChoices):
    OUTSIDE_WINDOW = "outside_window", "Booked outside the visit's window"
    OUTSIDE_CLINIC_HOURS = "outside_clinic_hours", "Booked outside the site's clinic hours"
    BEFORE_WINDOW = "before_window", "Done before the visit's window opened"
    BEFORE_BOOKING = "before_booking", "Procedure done before its booked date"
    THAW_TO_INFUSION = "thaw_to_infusion", "Infused later after thaw than the protocol allows"


class ProtocolDeviation(models.Model):
    """A step taken outside the protocol's plan, with the reason someone gave for it.

    Written by the service that allowed the step, in its transaction; never changed."""

    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.PROTECT, related_name="deviations"
    )
    visit = models.ForeignKey(
        "Visit", on_delete=models.PROTECT, null=True, blank=True, related_name="deviations"
    )
    kind = models.CharField(max_length=30, choices=DeviationKind.choices)
    reason = models.TextField()
    detail = models.CharField(max_length=300, blank=True, help_text="What the plan was.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({local_words(self.at, self.course.site.time_zone)})"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"


# The channels that reach a patient's phone as a text: quiet hours apply to them.
TEXT_CHANNELS = (Channel.SMS, Channel.WHATSAPP)


class NotificationTemplate(models.TextChoices):
    VISIT_REMINDER = "visit_reminder", "Appointment reminder"
    ALERT = "alert", "Coordinator alert"
    QUESTIONNAIRE = "questionnaire", "Questionnaire to answer"
    WEEKLY_REPORT = "weekly_report", "Weekly status report"
    CONSULTATION_REMINDER = "consultation_reminder", "Consultation reminder"
    # To someone who is not a patient yet, about their enquiry (enquiries/).
    ENQUIRY_ACKNOWLEDGEMENT = "enquiry_ack", "Enquiry acknowledgement"
    ENQUIRY_REPLY = "enquiry_reply", "Reply to an enquiry"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Notification(models.Model):
    """The outbox: a message to a patient or a staff member, written before it is sent.

    The row is the schedule (`send_after`) and the record of delivery. Celery only carries
    the work of sending it; losing a Celery message loses no notification.
    """

    template = models.CharField(max_length=30, choices=NotificationTemplate.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    # The outbox is the biggest table and every index costs each send: only those that pay.
    # Staff, alert and report links are rare: partial indexes below cover them.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,
    )
    visit = models.ForeignKey(
        Visit,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,  # (visit, status) below serves it
    )
    alert = models.ForeignKey(
        "scheduling.Alert",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,
    )
    invitation = models.ForeignKey(
        "scheduling.QuestionnaireInvitation",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,
    )
    # Someone who enquired and is not a patient yet: their consultation's reminders. Named by
    # string: this floor imports nothing from the enquiries floor above it.
    consultation = models.ForeignKey(
        "enquiries.Consultation",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,  # the partial index below serves it
    )
    # Someone who is not a patient: an enquirer (declared by name: enquiries is a floor above;
    # the enquiry's purge deletes its messages with it).
    enquiry = models.ForeignKey(
        "enquiries.Enquiry",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
        db_index=False,
    )
    report_week = models.CharField(
        max_length=8, blank=True, help_text="The ISO week of a weekly report, e.g. 2026-W48."
    )
    report_site = models.ForeignKey(
        "patients.Site",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="The site of a weekly report; empty for the report across sites.",
        db_index=False,
    )
    send_after = models.DateTimeField()
    status = models.CharField(
        max_length=20, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=5)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=100, blank=True)
    # Unique through the constraint below: `unique=True` would add a second, LIKE-ready index.
    idempotency_key = models.CharField(max_length=200)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(
        null=True,
        blank=True,
        editable=False,
        help_text="Which dispatch run holds the row; a late run cannot overwrite a newer one.",
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the provider confirmed delivery, where it reports it.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-send_after"]
        indexes = [
            # The dispatcher's claim reads only due, pending rows, however many are stored.
            models.Index(
                fields=["send_after"],
                name="notification_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(
                fields=["claimed_at"],
                name="notification_claimed_idx",
                condition=models.Q(status="sending"),
            ),
            models.Index(fields=["visit", "status"]),
            models.Index(
                fields=["user"],
                name="notification_user_idx",
                condition=models.Q(user__isnull=False),
            ),
            models.Index(
                fields=["alert"],
                name="notification_alert_idx",
                condition=models.Q(alert__isnull=False),
            ),
            models.Index(
                fields=["invitation"],
                name="notification_invitation_idx",
                condition=models.Q(invitation__isnull=False),
            ),
            models.Index(
                fields=["consultation", "status"],
                name="notification_consultation_idx",
                condition=models.Q(consultation__isnull=False),
            ),
            models.Index(
                fields=["report_site"],
                name="notification_report_site_idx",
                condition=models.Q(report_site__isnull=False),
            ),
            models.Index(
                fields=["enquiry"],
                name="notification_enquiry_idx",
                condition=models.Q(enquiry__isnull=False),
            ),
            models.Index(
                fields=["provider_message_id"],
                name="notification_provider_id_idx",
                condition=models.Q(status="sent"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(patient__isnull=False)
                | models.Q(user__isnull=False)
                | models.Q(consultation__isnull=False)
                | models.Q(enquiry__isnull=False),
                name="notification_has_recipient",
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"], name="notification_idempotency_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_template_display()} by {self.channel} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at sending a notification, kept so failures can be read back."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    at = models.DateTimeField(default=timezone.now)
    succeeded = models.BooleanField()
    error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["notification", "at"]
        # /metrics counts the last hour's attempts: a range on this, not a scan.
        indexes = [models.Index(fields=["at"], name="delivery_attempt_at_idx")]

    def __str__(self) -> str:
        return f"{'Delivered' if self.succeeded else 'Failed'} at {local_words(self.at, dt.UTC)}"


class NotificationArchive(models.Model):
    """A notification settled (sent, failed or cancelled) longer ago than the retention period,
    moved out of the outbox so that the outbox stays the size of what is pending.

    Written only by `scheduling.outbox_archive.notifications_archive`, with the outbox row's own
    id. Its idempotency key stays unique here, so a message archived is never written (or sent)
    again (`scheduling.outbox.notifications_write`). The delivery attempts are not kept: the
    row keeps their count, the last error and the provider's id. After the purge period the
    row keeps only what reports count (`notifications_archive_purge`).
    """

    id = models.BigIntegerField(primary_key=True)  # the outbox row's id, kept as it was
    template = models.CharField(max_length=30, choices=NotificationTemplate.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    status = models.CharField(max_length=20, choices=NotificationStatus.choices)
    # The site it counts towards: the patient's, or a weekly report's; none for staff mail
    # about no site. Kept through the purge, which forgets the patient.
    site = models.ForeignKey(
        "patients.Site",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # the counting index below leads with the time
    )
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="archived_notifications",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # staff are deactivated, not deleted
    )
    visit = models.ForeignKey(
        Visit,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # visits are cancelled or missed, not deleted
    )
    # An enquirer's message goes with their enquiry when it is purged (enquiries/).
    enquiry = models.ForeignKey(
        "enquiries.Enquiry",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="archived_notifications",
    )
    report_week = models.CharField(max_length=8, blank=True)
    send_after = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=100, blank=True)
    idempotency_key = models.CharField(max_length=200)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(
        help_text="When it was settled: sent, failed, or (cancelled) when it would have been sent."
    )
    archived_at = models.DateTimeField(default=timezone.now)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When what it held about the patient was removed."
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "archived notification"
        indexes = [
            # The weekly report's counts: reminders sent, failed, in a week.
            models.Index(fields=["sent_at"], name="notification_archive_sent_idx"),
            # … and one site's: a range of its own rows, not the week's across every site.
            models.Index(fields=["site", "sent_at"], name="notification_archive_site_idx"),
            models.Index(
                fields=["failed_at"],
                name="notification_archive_fail_idx",
                condition=models.Q(failed_at__isnull=False),
            ),
            # The purge reads only rows not yet purged, oldest first.
            models.Index(
                fields=["settled_at"],
                name="notification_archive_purge_idx",
                condition=models.Q(purged_at__isnull=True),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="notification_archive_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_template_display()} by {self.channel} ({self.status}, archived)"


class AlertKind(models.TextChoices):
    VISIT_OVERDUE = "visit_overdue", "Visit overdue"
    EXPANSION_OVERDUE = "expansion_overdue", "Expansion past its last day"
    TRANSPLANT_NOT_BOOKED = "transplant_not_booked", "Released product with no transplant booked"
    DELIVERY_FAILED = "delivery_failed", "Reminder could not be delivered"
    ADVERSE_EVENT = "adverse_event", "Serious adverse event"
    FUNCTION_DECLINE = "function_decline", "Lung function fell from baseline"
    COI_MISMATCH = "coi_mismatch", "Chain-of-identity mismatch"
    COLD_CHAIN_BROKEN = "cold_chain_broken", "Cold chain broken: sample rejected"
    FOLLOW_UP_TO_BOOK = "follow_up_to_book", "Follow-up window open, not booked"
    GROWTH_SHORTFALL = "growth_shortfall", "Cells may not reach the minimum dose in time"
    CHAIN_CHANGED = "chain_changed", "Booked capacity released or moved"
    SYMPTOMS = "symptoms", "A patient's answers need a clinician"
    FORECAST_PAST_TRANSPLANT = (
        "forecast_past_transplant",
        "Cells forecast ready after the provisional transplant",
    )
    LOT_EXPIRES_ALLOCATED = "lot_expires_allocated", "A lot expires with units allocated"
    STOCK_SHORT = "stock_short", "Free units short for the doses booked ahead"
    INFUSION_REACTION = "infusion_reaction", "Infusion reaction"
    ENQUIRY_UNANSWERED = "enquiry_unanswered", "An enquiry not answered in time"


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    URGENT = "urgent", "Urgent"


class AlertRoute(models.Model):
    """Who hears of an alert of one kind besides the patient's coordinator: the staff of one
    role (a group) who work at the course's site. A route with no site is the default for
    every site that has no route of its own for that kind."""

    kind = models.CharField(max_length=30, choices=AlertKind.choices)
    group = models.ForeignKey(
        "auth.Group", on_delete=models.CASCADE, related_name="+", verbose_name="role"
    )
    site = models.ForeignKey(
        "patients.Site",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_routes",
        help_text="Leave empty for the default of every site.",
    )

    class Meta:
        ordering = ["kind", "site", "group"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "group", "site"],
                name="alert_route_unique_per_site",
                violation_error_message="This role already hears of this kind at this site.",
            ),
            models.UniqueConstraint(
                fields=["kind", "group"],
                condition=models.Q(site__isnull=True),
                name="alert_route_unique_default",
                violation_error_message="This role already hears of this kind by default.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.group} ({self.site or 'every site'})"


class Alert(models.Model):
    """Something a coordinator must act on. One row per condition, however often it is seen.

    About a course, or about an enquiry (someone who is not a patient yet)."""

    kind = models.CharField(max_length=30, choices=AlertKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    course = models.ForeignKey(
        "pathway.TreatmentCourse",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    enquiry = models.ForeignKey(
        "enquiries.Enquiry",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    site = models.ForeignKey("patients.Site", on_delete=models.PROTECT, related_name="alerts")
    visit = models.ForeignKey(
        Visit, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    message = models.TextField()
    condition_key = models.CharField(
        max_length=200, unique=True, help_text="Identifies the condition, so it alerts once."
    )
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_note = models.TextField(
        "note", blank=True, help_text="What was done about it, for whoever reads it next."
    )
    snoozed_until = models.DateTimeField(
        null=True, blank=True, help_text="Off the worklist until then; it stays open."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["site", "-created_at"],
                name="alert_open_idx",
                condition=models.Q(acknowledged_at__isnull=True),
            ),
            models.Index(fields=["-created_at", "-id"], name="alert_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(course__isnull=False) | models.Q(enquiry__isnull=False),
                name="alert_about_course_or_enquiry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:60]}"


class WorkAssignment(models.Model):
    """A row of the worklist given to one coordinator. The row itself is never stored: it
    is what the state of a course says is to do; `key` names it (e.g. "harvest.c12")."""

    key = models.CharField(max_length=60, unique=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="work_assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    assigned_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key} → {self.assigned_to}"


class CalendarFeedToken(models.Model):
    """A secret link to one site's calendar of visits, for one user's calendar application.

    Calendar applications cannot sign in, so the link is the credential. Only its SHA-256 is
    stored: a copy of the database does not give anyone a working link. A link stops working
    when it is revoked, when its user is deactivated and when they leave the site.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_feed_tokens"
    )
    site = models.ForeignKey("patients.Site", on_delete=models.CASCADE, related_name="+")
    # Unique through the constraint below: `unique=True` would add a second, LIKE-ready index.
    token_hash = models.CharField(
        max_length=64, editable=False, help_text="SHA-256 of the secret, in hex."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    last_used_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When a calendar application last read the feed, to the minute.",
    )

    class Meta:
        verbose_name = "calendar link"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["token_hash"], name="calendar_feed_token_hash_unique"),
            # Issuing a new link revokes the old one; this catches two issued at once.
            models.UniqueConstraint(
                fields=["user", "site"],
                name="calendar_feed_one_active_per_user_site",
                condition=models.Q(revoked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site} calendar of {self.user}"


class ResourceKind(models.TextChoices):
    BRONCHOSCOPY = "bronchoscopy", "Bronchoscopy suite"
    LUNG_FUNCTION = "lung_function", "Lung-function clinic"
    EXPANSION = "expansion", "Lab expansion capacity"
    QC = "qc", "Lab QC capacity"
    INFUSION_CHAIR = "infusion_chair", "Infusion chairs"


class Resource(models.Model):
    """Something bookings need room in: a suite's procedure sessions, a clinic's slots, the
    lab's capacity to expand batches or run QC. Its calendar is weekly sessions less closures,
    in its own time zone."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    site = models.ForeignKey(
        "patients.Site",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="resources",
        help_text="Empty for the lab's resources, which serve every site.",
    )
    time_zone = TimeZoneField(default="Europe/London")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ResourceWording(models.Model):
    """How patients are told where a resource is, in one of their languages: a name that
    says where and never what is done there ("Harbour Clinic, day unit", not "Bronchoscopy
    suite"), and its address. The pages behind patients' links and every reminder use it in
    place of the resource's own name, which is for staff (`scheduling/places.py`)."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="wordings")
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    name = models.CharField(
        "name for patients",
        max_length=200,
        help_text="Where to go, in this language; no treatment, procedure or diagnosis.",
    )
    address = models.TextField(
        blank=True, help_text="Building, floor, street and town, one per line, as patients read it."
    )

    class Meta:
        verbose_name = "name and address for patients"
        verbose_name_plural = "names and addresses for patients"
        ordering = ["resource", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "language"],
                name="resource_wording_one_per_language",
                violation_error_message="This resource has words in this language already.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"


class ResourceSession(models.Model):
    """A weekly session of a resource: e.g. Tuesday 08:00–13:00, two procedures."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="sessions")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    starts_at = models.TimeField()
    ends_at = models.TimeField()
    capacity = models.PositiveSmallIntegerField(
        default=1, help_text="How many bookings the session takes."
    )

    class Meta:
        ordering = ["resource", "weekday", "starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(starts_at__lt=models.F("ends_at")),
                name="resource_session_starts_before_it_ends",
                violation_error_message="A session must start before it ends.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.starts_at:%H:%M}–{self.ends_at:%H:%M}"


class ResourceClosure(models.Model):
    """Days a resource is closed (a holiday, a suite out of service), both days included."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="closures")
    first_day = models.DateField()
    last_day = models.DateField()
    reason = models.CharField(max_length=200)

    class Meta:
        ordering = ["resource", "first_day"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(first_day__lte=models.F("last_day")),
                name="resource_closure_in_order",
                violation_error_message="A closure's first day must not be after its last.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reason}: {date_words(self.first_day)} – {date_words(self.last_day)}"


class SlotHold(models.Model):
    """How much of one slot of a resource is taken. The database keeps `held` within the
    slot's capacity (a check constraint), and a hold is taken by one conditional UPDATE, so
    two coordinators taking the last place at once cannot both have it."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="holds")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    capacity = models.PositiveSmallIntegerField()
    held = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["resource", "starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["resource", "starts_at"], name="slot_hold_unique"),
            models.CheckConstraint(
                condition=models.Q(held__lte=models.F("capacity")),
                name="slot_hold_within_capacity",
                violation_error_message="The slot is full.",
            ),
        ]

    def __str__(self) -> str:
        when = local_words(self.starts_at, self.resource.time_zone)
        return f"{self.resource} {when}: {self.held} of {self.capacity}"


class ReservationPurpose(models.TextChoices):
    HARVEST = "harvest", "Harvest"
    EXPANSION = "expansion", "Expansion day"
    TRANSPLANT = "transplant", "Transplant"
    INFUSION = "infusion", "Infusion"
    FOLLOW_UP = "follow_up", "Follow-up"


class Reservation(models.Model):
    """One place in one slot of a resource, held for a course: its harvest, a day of its
    expansion, its transplant (provisional until the transplant is booked), a follow-up.
    Each active row stands for one place counted in the slot's `SlotHold`; a released one
    gave its place back and stays as history."""

    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.CASCADE, related_name="reservations"
    )
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="reservations")
    purpose = models.CharField(max_length=20, choices=ReservationPurpose.choices)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    visit = models.ForeignKey(
        Visit, on_delete=models.SET_NULL, null=True, blank=True, related_name="reservations"
    )
    created_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["starts_at", "id"]
        indexes = [models.Index(fields=["course", "released_at"], name="reservation_course_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["course", "resource", "starts_at"],
                condition=models.Q(released_at__isnull=True),
                name="reservation_one_place_per_slot",
            ),
        ]

    def __str__(self) -> str:
        when = local_words(self.starts_at, self.resource.time_zone)
        return f"{self.get_purpose_display()}: {self.resource} {when}"

    @property
    def provisional(self) -> bool:
        """A transplant's place, or a later dose's, held before it is booked."""
        return (
            self.purpose in (ReservationPurpose.TRANSPLANT, ReservationPurpose.INFUSION)
            and self.visit_id is None
        )


class ReplyIntent(models.TextChoices):
    CONFIRM = "confirm", "Confirm"
    CHANGE = "change", "Asks for another time"
    STOP = "stop", "Stop texts"
    HELP = "help", "Help"
    OTHER = "other", "Other message"


class InboundMessage(models.Model):
    """A text a patient sent us by SMS or WhatsApp, as the provider delivered it: stored once
    per provider message id, so a webhook delivered twice acts once."""

    provider_message_id = models.CharField(max_length=64, unique=True)
    channel = models.CharField(
        max_length=10,
        choices=[(Channel.SMS.value, Channel.SMS.label), (Channel.WHATSAPP.value, "WhatsApp")],
        default=Channel.SMS,
        help_text="SMS, or WhatsApp: the provider's `whatsapp:` address it came from.",
    )
    from_number = models.CharField(max_length=32)
    body = models.TextField()  # whole, however long
    # NUL characters taken out of what arrived (PostgreSQL cannot store them): the coordinator
    # reading it is told.
    characters_removed = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now)
    intent = models.CharField(max_length=10, choices=ReplyIntent.choices)
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="inbound_messages",
    )
    visit = models.ForeignKey(
        Visit, on_delete=models.SET_NULL, null=True, blank=True, related_name="inbound_messages"
    )
    # From someone not yet a patient, about their enquiry: purged with it (enquiries/purge.py).
    enquiry = models.ForeignKey(
        "enquiries.Enquiry",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="inbound_messages",
    )

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            # A WhatsApp number's last message: its 24-hour window (selectors.py).
            models.Index(fields=["from_number", "-received_at"], name="inbound_from_latest_idx")
        ]

    def __str__(self) -> str:
        return f"{self.get_intent_display()} from {self.from_number}"

    @property
    def removed_on_arrival(self) -> str:
        """What the coordinator reading the text is told was taken out of it, or nothing."""
        if not self.characters_removed:
            return ""
        characters = "character was" if self.characters_removed == 1 else "characters were"
        return f"{self.characters_removed} NUL {characters} removed from this text as it arrived."


class PatientRequestKind(models.TextChoices):
    CHANGE = "change", "Another time, please"
    MESSAGE = "message", "A message"


class PatientRequest(models.Model):
    """Something a patient asked for that a coordinator must do: it is on the worklist until
    someone marks it done."""

    kind = models.CharField(max_length=10, choices=PatientRequestKind.choices)
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="requests"
    )
    visit = models.ForeignKey(
        Visit, on_delete=models.SET_NULL, null=True, blank=True, related_name="requests"
    )
    text = models.TextField(blank=True)
    wanted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The free slot the patient picked on their visit's page, if they picked one.",
    )
    source = models.CharField(max_length=20)  # "sms", "whatsapp" or "link"
    # The text it came from (none for a page's link): what was removed from it, if anything.
    inbound = models.ForeignKey(
        InboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="patient_request_open_idx",
                condition=models.Q(done_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.patient}"


class VisitLink(models.Model):
    """A link in a reminder to a small page about one visit, with no login. Only the token's
    SHA-256 is stored, so a copy of the database opens no page; it stops working after the
    visit, and once the patient has answered (confirmed, or asked for another time)."""

    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="links")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Link to {self.visit}"


class InvitationStatus(models.TextChoices):
    OPEN = "open", "Open"
    ANSWERED = "answered", "Answered"
    MISSED = "missed", "Missed (closed unanswered)"


class QuestionnaireInvitation(models.Model):
    """A questionnaire a patient is asked to answer between visits: open from `opens_at` to
    `closes_at`, sent by their consented channel as a link, reminded once, answered once."""

    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.CASCADE, related_name="invitations"
    )
    instrument = models.ForeignKey(
        "patients.Instrument", on_delete=models.PROTECT, related_name="invitations"
    )
    opens_at = models.DateTimeField()
    closes_at = models.DateTimeField()
    status = models.CharField(
        max_length=10, choices=InvitationStatus.choices, default=InvitationStatus.OPEN
    )
    reminded_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    response = models.OneToOneField(
        "patients.QuestionnaireResponse",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="invitation",
    )

    class Meta:
        ordering = ["opens_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["course", "instrument", "opens_at"], name="invitation_once_per_opening"
            )
        ]
        indexes = [
            models.Index(
                fields=["closes_at"],
                name="invitation_open_idx",
                condition=models.Q(status="open"),
            )
        ]

    def __str__(self) -> str:
        opens = local_words(self.opens_at, self.course.site.time_zone)
        return f"{self.instrument} for {self.course} from {opens}"


class InvitationLink(models.Model):
    """A link in a questionnaire message; only the token's SHA-256 is kept."""

    invitation = models.ForeignKey(
        QuestionnaireInvitation, on_delete=models.CASCADE, related_name="links"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Link to {self.invitation}"
