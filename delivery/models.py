"""What delivery keeps of its own: the pace each sending number is allowed, and the
provider's approved WhatsApp templates."""

import re
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from scheduling.models import NotificationTemplate


class SenderPace(models.Model):
    """How many messages a second the provider lets one sending number (an SMS long code, a
    short code, a WhatsApp sender) send, and the next moment it may send one: a token bucket
    every worker shares (delivery/pacing.py). A number's row is made at its first message,
    at SMS_SENDER_DEFAULT_PER_SECOND (a long code's 1 a second); raise it here for a short
    code or a provider that allows more."""

    sender = models.CharField(
        max_length=40, unique=True, help_text="The sending number, as the provider is given it."
    )
    per_second = models.DecimalField(
        "messages per second",
        max_digits=8,
        decimal_places=3,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal("0.001"))],
        help_text="What the provider allows this number: 1 for a long code.",
    )
    next_slot_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the next message may leave."
    )

    class Meta:
        verbose_name = "sender's pace"
        verbose_name_plural = "senders' pace"

    def __str__(self) -> str:
        return f"{self.sender}: {self.per_second.normalize()} a second"


# The words a WhatsApp template may carry, per message: those its SMS carries, and no other
# (a first name, what the visit is in plain words, when, where, the clinic's patient-facing
# name and number, the link): never a diagnosis or a treatment's name.
TEMPLATE_WORDS = {
    "visit_reminder": {
        "first_name": "the patient's first name",
        "what": "what the visit is, in the protocol's plain words",
        "date": "the date, in the patient's zone and language",
        "time": "the time, with the zone named",
        "place_line": "the place and its address, on one line",
        "preparation": "how to prepare (a dash when there is nothing to do)",
        "clinic": "the clinic's patient-facing name",
        "contact": "the clinic's name and number",
        "link": "the link to the visit's page",
    },
    "questionnaire": {
        "first_name": "the patient's first name",
        "clinic": "the clinic's patient-facing name",
        "link": "the link to the questions",
        "until": "until when they are open, in the patient's zone",
    },
    # To someone who is not a patient yet (enquiries/): their first name and the clinic's.
    "enquiry_ack": {
        "first_name": "the person's first name",
        "clinic": "the clinic's patient-facing name",
        "working_days": "within how many working days they are answered",
        "phone": "the clinic's number",
    },
    "enquiry_reply": {
        "first_name": "the person's first name",
        "clinic": "the clinic's patient-facing name",
        "text": "the coordinator's reply, as written",
    },
    "consultation_reminder": {
        "first_name": "the person's first name",
        "clinic": "the clinic's patient-facing name",
        "date": "the date, in the person's zone and language",
        "time": "the time, with the zone named",
        "where": "the video link, or the place and its address on one line",
        "phone": "the clinic's number",
    },
}
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class WhatsAppTemplate(models.Model):
    """One of the provider's approved WhatsApp templates: what a message the clinic starts
    outside the patient's 24-hour window is sent as (delivery/whatsapp.py). Made in the
    provider's console (Twilio's Content Template Builder), approved by WhatsApp, then entered
    here: its ContentSid, and which of the message's words fill each numbered placeholder."""

    name = models.CharField(
        "message",
        max_length=30,
        choices=[(name, NotificationTemplate(name).label) for name in TEMPLATE_WORDS],
    )
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    body = models.TextField(
        help_text="The template's words as submitted for approval, with {{1}}, {{2}}, … where "
        "the message's words go."
    )
    variables = models.JSONField(
        default=dict,
        blank=True,
        help_text='Which word fills each placeholder, e.g. {"1": "first_name", "2": "date"}.',
    )
    content_sid = models.CharField(
        "ContentSid",
        max_length=34,
        blank=True,
        validators=[
            RegexValidator(r"^HX[0-9a-fA-F]{32}$", "A ContentSid is HX and 32 hexadecimal digits.")
        ],
        help_text="The provider's id for the template (HX…), from its console.",
    )
    approved = models.BooleanField(
        default=False, help_text="WhatsApp has approved it: only then is it used."
    )

    class Meta:
        verbose_name = "WhatsApp template"
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "language"],
                name="whatsapp_template_one_per_language",
                violation_error_message="This message has a template in this language already.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_name_display()} ({self.language})"

    @property
    def usable(self) -> bool:
        """Approved and with its ContentSid: the one test of whether it may be sent."""
        return self.approved and bool(self.content_sid)

    def clean(self) -> None:
        errors = {}
        words = TEMPLATE_WORDS.get(self.name, {})
        variables = self.variables if isinstance(self.variables, dict) else None
        if variables is None:
            errors["variables"] = 'Give an object, e.g. {"1": "first_name"}.'
        else:
            unknown = sorted(
                str(v) for v in variables.values() if not isinstance(v, str) or v not in words
            )
            if unknown:
                errors["variables"] = (
                    f"Not a word this message has: {', '.join(unknown)}. It may use "
                    f"{', '.join(words)}."
                )
            placeholders = set(_PLACEHOLDER.findall(self.body or ""))
            if placeholders != set(map(str, variables)):
                errors["body"] = (
                    "The placeholders in the words ("
                    + (", ".join(sorted(placeholders)) or "none")
                    + ") must be those the variables fill ("
                    + (", ".join(sorted(map(str, variables))) or "none")
                    + ")."
                )
        if self.approved and not self.content_sid:
            errors["content_sid"] = "An approved template needs its ContentSid."
        if errors:
            raise ValidationError(errors)
