"""What delivery keeps of its own: the pace each sending number is allowed."""

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models


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
