"""The peers' task (bench/peers.py): one reminder, sent the way a task queue would send it,
one task per reminder: read its row, render it, send it on an SMTP connection of its own,
mark it sent. The same words and the same SMTP sink as the outbox; none of the outbox's
batching (one claim, one SMTP session and one outcome statement for many)."""

from django.utils import timezone

from delivery.channels.email import EmailChannel
from delivery.messages import notification_message
from scheduling.models import Notification, NotificationStatus


def reminder_send_one(notification_id: int) -> None:
    notification = Notification.objects.select_related(
        "patient__site", "visit__course__site", "visit__course__protocol", "visit__protocol_visit"
    ).get(pk=notification_id)
    if notification.status != NotificationStatus.PENDING:
        return  # sent already (a redelivered task)
    EmailChannel().send(notification_message(notification))
    Notification.objects.filter(pk=notification_id).update(
        status=NotificationStatus.SENT, sent_at=timezone.now(), attempts=1
    )
