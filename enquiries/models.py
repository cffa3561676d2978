"""The front door: people who are not yet patients ask a question or apply, are answered, seen
in a consultation and, if it fits, become a patient with a course in evaluation.

An enquiry holds health data from someone who is not a patient: it is site-scoped like a
patient, audited, and purged after its retention unless converted (counts are kept)."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from phonenumber_field.modelfields import PhoneNumberField
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField


class EnquiryKind(models.TextChoices):
    QUESTION = "question", "A question"
    APPLICATION = "application", "An application"


class EnquiryStatus(models.TextChoices):
    NEW = "new", "New: to answer"
    ANSWERED = "answered", "Answered"
    CONSULTATION = "consultation", "Consultation booked"
    CONVERTED = "converted", "Now a patient"
    CLOSED = "closed", "Closed"


# The channels an enquirer may give and consent to, in the order a message tries them.
ENQUIRER_CHANNELS = ("email", "sms", "whatsapp")

# Still to be dealt with: neither converted into a patient nor closed.
OPEN_ENQUIRY_STATUSES = (EnquiryStatus.NEW, EnquiryStatus.ANSWERED, EnquiryStatus.CONSULTATION)


class YesNoUnsure(models.TextChoices):
    YES = "yes", "Yes"
    NO = "no", "No"
    UNSURE = "unsure", "Not sure"


class SmokingAnswer(models.TextChoices):
    NEVER = "never", "Never smoked"
    FORMER = "former", "Stopped smoking"
    CURRENT = "current", "Smoke now"


class CloseReason(models.TextChoices):
    NOT_ELIGIBLE = "not_eligible", "Does not fit the treatment"
    NO_REPLY = "no_reply", "No reply"
    DECLINED = "declined", "Decided not to go on"
    ANSWERED_ONLY = "answered_only", "A question, answered"
    DUPLICATE = "duplicate", "A duplicate"
    SPAM = "spam", "Spam or abuse"


class Enquiry(models.Model):
    """A question or an application from the public enquiry page, with the person's own
    answers to the pre-screening questions (self-reported: never a decision)."""

    site = models.ForeignKey("patients.Site", on_delete=models.PROTECT, related_name="enquiries")
    kind = models.CharField(max_length=20, choices=EnquiryKind.choices)
    language = models.CharField(max_length=10, choices=settings.LANGUAGES, default="en")
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True, help_text="E.164, e.g. +447911123456.")
    whatsapp = PhoneNumberField("WhatsApp number", blank=True)
    consent_email = models.BooleanField("may be contacted by email", default=False)
    consent_sms = models.BooleanField("may be contacted by SMS", default=False)
    consent_whatsapp = models.BooleanField("may be contacted on WhatsApp", default=False)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 code, as given.")
    time_zone = TimeZoneField(blank=True, null=True)
    message = models.TextField("question or message", max_length=2000, blank=True)
    # The pre-screening questions (SPEC, "The front door"), as the person answered them.
    copd_diagnosed = models.CharField(max_length=10, choices=YesNoUnsure.choices, blank=True)
    emphysema_on_ct = models.CharField(max_length=10, choices=YesNoUnsure.choices, blank=True)
    smoking = models.CharField(max_length=10, choices=SmokingAnswer.choices, blank=True)
    smoking_quit_on = models.DateField(null=True, blank=True)
    fev1_pct_predicted = models.DecimalField(
        "last FEV1 (% predicted)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    home_oxygen = models.CharField(max_length=10, choices=YesNoUnsure.choices, blank=True)
    bronchoscopy_ok = models.CharField(
        "able to have a bronchoscopy", max_length=10, choices=YesNoUnsure.choices, blank=True
    )
    chest_infection_now = models.CharField(
        "a chest infection now", max_length=10, choices=YesNoUnsure.choices, blank=True
    )
    # A retried post carries the same key: one enquiry, however many times it arrives.
    submission_key = models.CharField(max_length=64, unique=True, editable=False)
    submitted_at = models.DateTimeField(default=timezone.now, editable=False)
    status = models.CharField(
        max_length=20, choices=EnquiryStatus.choices, default=EnquiryStatus.NEW
    )
    first_answered_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True)
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="enquiries",
        editable=False,
    )
    course = models.ForeignKey(
        "pathway.TreatmentCourse",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="enquiries",
        editable=False,
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name_plural = "enquiries"
        ordering = ["-submitted_at", "-id"]
        indexes = [
            models.Index(fields=["site", "status", "submitted_at"], name="enquiry_triage_idx"),
            models.Index(fields=["closed_at"], name="enquiry_closed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip() + f" ({self.get_kind_display()})"

    @property
    def is_open(self) -> bool:
        """Still to be dealt with: neither converted into a patient nor closed."""
        return self.status in OPEN_ENQUIRY_STATUSES

    def consents_to(self, channel: str) -> bool:
        """Gave an address for this channel ("email", "sms", "whatsapp") and ticked that it may
        be used: the one rule every message to an enquirer passes, when written and when sent."""
        if channel == "email":
            return self.consent_email and bool(self.email)
        if channel == "sms":
            return self.consent_sms and bool(self.phone)
        return channel == "whatsapp" and self.consent_whatsapp and bool(self.whatsapp)

    def channels(self) -> list[str]:
        """The channels this person may be written to now, in the order they are tried."""
        return [channel for channel in ENQUIRER_CHANNELS if self.consents_to(channel)]


class ConsultationMode(models.TextChoices):
    IN_PERSON = "in_person", "In person"
    VIDEO = "video", "By video"


class ConsultationStatus(models.TextChoices):
    BOOKED = "booked", "Booked"
    DONE = "done", "Done"
    MISSED = "missed", "Missed"
    CANCELLED = "cancelled", "Cancelled"


class Consultation(models.Model):
    """The first meeting with the clinic: a visit of its own kind, for someone who is not a
    patient yet, in person or by video, in the site's clinic hours, with reminders."""

    enquiry = models.ForeignKey(Enquiry, on_delete=models.CASCADE, related_name="consultations")
    scheduled_at = models.DateTimeField()
    mode = models.CharField(max_length=20, choices=ConsultationMode.choices)
    place = models.CharField(max_length=200, blank=True)
    video_link = models.URLField(max_length=500, blank=True)
    status = models.CharField(
        max_length=20, choices=ConsultationStatus.choices, default=ConsultationStatus.BOOKED
    )
    booked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", editable=False
    )
    booked_at = models.DateTimeField(default=timezone.now, editable=False)
    # Outside the site's clinic hours only with a reason, kept here (and in the history).
    outside_hours_reason = models.TextField(
        "reason to book outside the clinic's hours", max_length=1000, blank=True
    )
    status_reason = models.TextField(
        "why it was cancelled or missed", max_length=1000, blank=True, editable=False
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["scheduled_at", "id"]
        indexes = [models.Index(fields=["scheduled_at"], name="consultation_at_idx")]

    def __str__(self) -> str:
        return f"Consultation, {self.get_mode_display().lower()}"


class ReplyKind(models.TextChoices):
    REPLY = "reply", "Reply"
    CLOSING = "closing", "Closing reply"


class EnquiryReply(models.Model):
    """What a coordinator wrote to an enquirer, on one channel: the text their message
    carries (`scheduling.Notification` is its delivery, found by its idempotency key)."""

    enquiry = models.ForeignKey(Enquiry, on_delete=models.CASCADE, related_name="replies")
    kind = models.CharField(max_length=10, choices=ReplyKind.choices, default=ReplyKind.REPLY)
    channel = models.CharField(max_length=10)
    text = models.TextField(max_length=2000)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["enquiry", "at", "id"]
        verbose_name_plural = "enquiry replies"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.channel}"

    @property
    def idempotency_key(self) -> str:
        return f"enquiry_reply.r{self.pk}.{self.channel}"


class EnquiryStep(models.TextChoices):
    """How far an enquiry went, for the counts the purge keeps."""

    ENQUIRED = "enquired", "Enquired"
    ANSWERED = "answered", "Answered"
    CONSULTATION = "consultation", "Consultation booked"


class EnquiryCount(models.Model):
    """What the purge keeps of the enquiries it deletes: how many, per site, ISO week of
    sending, kind and the furthest step reached, so that the weekly report's funnel stays
    right after the people are forgotten."""

    site = models.ForeignKey("patients.Site", on_delete=models.PROTECT, related_name="+")
    week = models.CharField(max_length=8, help_text="The ISO week it was sent in, e.g. 2026-W49.")
    kind = models.CharField(max_length=20, choices=EnquiryKind.choices)
    step = models.CharField(max_length=20, choices=EnquiryStep.choices)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["week", "site", "kind", "step"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "week", "kind", "step"], name="enquiry_count_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.week} {self.site_id} {self.kind} {self.step}: {self.count}"
