"""Delivering the outbox: claim due rows, send them, record what happened.

Any number of workers may run these side by side: a claim takes rows with
`SELECT … FOR UPDATE SKIP LOCKED` and stamps them with a claim token, and every outcome is
written only while the row still carries that token. A worker that dies leaves its rows
claimed; after NOTIFICATION_CLAIM_TIMEOUT they are pending again. Delivery is therefore
at least once; the idempotency key travels with each message (as the email's Message-ID) so
the one case that can repeat, a crash between the provider accepting a message and the row
being marked sent, is recognisable.
"""

import datetime as dt
import logging
import math
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from delivery.channels import DeliveryChannel, DeliveryError
from delivery.channels.email import EmailChannel
from delivery.channels.sms import TWILIO_PERMANENT_ERRORS, sms_backend
from delivery.messages import notification_message
from pathway.states import CourseState
from patients.models import Patient
from scheduling.alerts import alert_raise
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    AlertKind,
    Channel,
    DeliveryAttempt,
    InvitationStatus,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Severity,
)
from scheduling.rules import after_quiet_hours, retry_delay

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def notifications_reclaim_stale(*, now: dt.datetime | None = None) -> int:
    """Put rows back whose worker has not reported within the claim timeout."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT)
    return Notification.objects.filter(
        status=NotificationStatus.SENDING, claimed_at__lt=cutoff
    ).update(status=NotificationStatus.PENDING, claim_token=None)


def notifications_due(*, now: dt.datetime | None = None):
    return Notification.objects.filter(
        status=NotificationStatus.PENDING, send_after__lte=now or timezone.now()
    )


def notification_batches_due(*, batch_size: int, now: dt.datetime | None = None) -> int:
    """How many batches the due rows fill: the number of batch tasks a tick enqueues."""
    return math.ceil(notifications_due(now=now).count() / batch_size)


def notifications_claim(*, batch_size: int, now: dt.datetime | None = None) -> list[int]:
    """Claim up to `batch_size` due rows for this caller alone; returns their ids."""
    now = now or timezone.now()
    token = uuid.uuid4()
    with transaction.atomic():
        ids = list(
            notifications_due(now=now)
            .select_for_update(skip_locked=True)
            .order_by("send_after")
            .values_list("id", flat=True)[:batch_size]
        )
        # The status condition keeps two claimers apart where the database has no row locks.
        Notification.objects.filter(id__in=ids, status=NotificationStatus.PENDING).update(
            status=NotificationStatus.SENDING, claimed_at=now, claim_token=token
        )
    # Through the primary key: claim_token has no index, and needs none.
    claimed = Notification.objects.filter(id__in=ids, claim_token=token)
    return list(claimed.values_list("id", flat=True))


# The common case in one round trip on PostgreSQL: mark the row sent (if this run still holds
# it) and write its attempt, together.
_SUCCESS_SQL = """
WITH sent AS (
    UPDATE scheduling_notification
    SET status = 'sent', sent_at = %(now)s, provider_message_id = %(provider_id)s,
        attempts = attempts + 1, last_error = '', claim_token = NULL
    WHERE id = %(id)s AND status = 'sending' AND claim_token = %(token)s
    RETURNING id
)
INSERT INTO scheduling_deliveryattempt (notification_id, at, succeeded, error, provider_message_id)
SELECT id, %(now)s, true, '', %(provider_id)s FROM sent
"""


def _record_success(notification: Notification, *, provider_id: str) -> str:
    if connection.vendor != "postgresql":
        return _record_outcome(notification, provider_id=provider_id)
    with connection.cursor() as cursor:
        cursor.execute(
            _SUCCESS_SQL,
            {
                "now": timezone.now(),
                "provider_id": provider_id,
                "id": notification.pk,
                "token": notification.claim_token,
            },
        )
        if cursor.rowcount:
            return NotificationStatus.SENT
    logger.warning("Notification %s was reclaimed before its outcome was recorded", notification.pk)
    return NotificationStatus.SENDING


def _record_outcome(
    notification: Notification,
    *,
    error: str = "",
    provider_id: str = "",
    new_try: bool = True,
    permanent: bool = False,
) -> str:
    """Write one attempt's outcome, if this run still holds the row. Returns the new status.

    `new_try` is False when the outcome is the provider's later report on a send already
    counted. A `permanent` failure is not retried: the row fails, and is alerted, at once.
    """
    now = timezone.now()
    attempts = notification.attempts + int(new_try)
    if not error:
        changes = {
            "status": NotificationStatus.SENT,
            "sent_at": now,
            "provider_message_id": provider_id,
        }
    elif permanent or attempts >= notification.max_attempts:
        changes = {"status": NotificationStatus.FAILED, "failed_at": now}
    else:
        send_after = now + retry_delay(
            failed_attempts=attempts, base_seconds=settings.NOTIFICATION_RETRY_BASE_SECONDS
        )
        if notification.channel == Channel.SMS and notification.patient_id:
            send_after = _after_patients_quiet_hours(notification, send_after)
        changes = {"status": NotificationStatus.PENDING, "send_after": send_after}
    with transaction.atomic():
        held = Notification.objects.filter(
            pk=notification.pk,
            status=NotificationStatus.SENDING,
            claim_token=notification.claim_token,
        ).update(attempts=attempts, last_error=error, claim_token=None, **changes)
        if not held:
            logger.warning(
                "Notification %s was reclaimed before its outcome was recorded", notification.pk
            )
            return NotificationStatus.SENDING
        DeliveryAttempt.objects.create(
            notification=notification,
            at=now,
            succeeded=not error,
            error=error,
            provider_message_id=provider_id,
        )
        if changes["status"] == NotificationStatus.FAILED:
            _alert_undeliverable(notification, error, attempts=attempts, permanent=permanent)
    return changes["status"]


def _course(notification: Notification):
    """The course a patient's message is about: its visit's, or its check-in's."""
    return (notification.visit or notification.invitation).course


def _after_patients_quiet_hours(notification: Notification, at: dt.datetime) -> dt.datetime:
    protocol = _course(notification).protocol
    return after_quiet_hours(
        at,
        zone=notification.patient.zone,
        start=protocol.quiet_hours_start,
        end=protocol.quiet_hours_end,
    )


def _alert_undeliverable(
    notification: Notification, error: str, *, attempts: int, permanent: bool
) -> None:
    if notification.template != NotificationTemplate.VISIT_REMINDER:
        return  # an alert that cannot be emailed stays visible in the admin instead
    visit = notification.visit
    alert_raise(
        kind=AlertKind.DELIVERY_FAILED,
        severity=Severity.WARNING,
        course=visit.course,
        visit=visit,
        condition_key=f"delivery_failed.n{notification.pk}",
        message=(
            f"A {notification.get_channel_display()} reminder to {notification.patient.first_name} "
            f"{notification.patient.last_name} for the {visit} could not be delivered "
            + (
                "and will not be retried: the provider refused the address. Check it with the "
                "patient."
                if permanent
                else f"after {attempts} tries."
            )
            + f" Last error: {error}"
        ),
    )


def _reminder_still_applies(notification: Notification) -> bool:
    """The visit is still ahead and the patient still consents to this channel."""
    visit, patient = notification.visit, notification.patient
    if visit.status not in OPEN_VISIT_STATUSES or visit.scheduled_at <= timezone.now():
        return False
    return patient.consents_to(notification.channel)


def _still_applies(notification: Notification) -> bool:
    """A patient's message is sent only while what it is about still stands."""
    if notification.template == NotificationTemplate.VISIT_REMINDER:
        applies = _reminder_still_applies(notification)
    elif notification.template == NotificationTemplate.QUESTIONNAIRE:
        applies = _questionnaire_still_applies(notification)
    else:
        return True
    if applies and notification.channel == Channel.SMS:
        # Read again, not from the batch's copy: a STOP that arrived since it was claimed
        # stops this text too.
        applies = Patient.objects.filter(pk=notification.patient_id, consent_sms=True).exists()
    return applies


def _questionnaire_still_applies(notification: Notification) -> bool:
    """Still open to answer, and the patient still consents to this channel."""
    invitation, patient = notification.invitation, notification.patient
    if invitation.status != InvitationStatus.OPEN or invitation.closes_at <= timezone.now():
        return False
    if invitation.course.state != CourseState.FOLLOW_UP:  # held or withdrawn since
        return False
    return patient.consents_to(notification.channel)


def _still_held(notification: Notification) -> bool:
    """Renew this run's claim just before sending; False if the row was reclaimed meanwhile.

    A batch slower than the claim timeout loses its unsent rows to another worker, which
    then sends them; this run must not send them too.
    """
    return bool(
        Notification.objects.filter(
            pk=notification.pk,
            status=NotificationStatus.SENDING,
            claim_token=notification.claim_token,
        ).update(claimed_at=timezone.now())
    )


def _channels() -> dict[str, DeliveryChannel]:
    return {Channel.EMAIL: EmailChannel(), Channel.SMS: sms_backend()}


def notification_send_claimed(
    notification: Notification, *, channels: dict[str, DeliveryChannel] | None = None
) -> str:
    """Send one claimed notification and record the outcome. Returns its new status."""
    if not _still_held(notification):
        logger.warning("Notification %s was reclaimed before it was sent", notification.pk)
        return NotificationStatus.SENDING
    if not _still_applies(notification):
        Notification.objects.filter(
            pk=notification.pk, claim_token=notification.claim_token
        ).update(status=NotificationStatus.CANCELLED, claim_token=None)
        return NotificationStatus.CANCELLED
    try:
        message = notification_message(notification)
        provider_id = (channels or _channels())[notification.channel].send(message)
    except DeliveryError as error:
        return _record_outcome(
            notification,
            error=str(error) or error.__class__.__name__,
            permanent=error.permanent,
        )
    except Exception as error:
        # A bug or bad data must not wedge the row: it is retried, then alerted like a failure.
        logger.exception("Could not send notification %s", notification.pk)
        return _record_outcome(notification, error=f"{error.__class__.__name__}: {error}")
    return _record_success(notification, provider_id=provider_id)


# Twilio's final statuses for a message it accepted, and whether it reached the phone.
PROVIDER_FINAL_STATUSES = {"delivered": True, "failed": False, "undelivered": False}


def notification_record_provider_status(
    *, provider_message_id: str, status: str, error: str = ""
) -> bool:
    """Apply the provider's later word on a message it accepted.

    A message that never reached the phone is retried like any failed send (and alerted
    once the tries run out), unless the provider's error says the number will never work.
    Returns whether a sent notification was found to update.
    """
    if status not in PROVIDER_FINAL_STATUSES:
        return False  # queued, sending, sent: nothing final yet
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(of=("self",))
            .filter(provider_message_id=provider_message_id, status=NotificationStatus.SENT)
            .select_related(
                "patient__site", "visit__course__protocol", "invitation__course__protocol"
            )
            .first()
        )
        if notification is None:
            return False
        if PROVIDER_FINAL_STATUSES[status]:
            Notification.objects.filter(pk=notification.pk).update(delivered_at=timezone.now())
            return True
        # Hand the row back to the ordinary failure path, as if this run had just sent it.
        token = uuid.uuid4()
        Notification.objects.filter(pk=notification.pk).update(
            status=NotificationStatus.SENDING, claim_token=token
        )
        notification.status, notification.claim_token = NotificationStatus.SENDING, token
        _record_outcome(
            notification,
            error=f"provider reported {status}: {error}".strip(": "),
            new_try=False,
            permanent=error.isdigit() and int(error) in TWILIO_PERMANENT_ERRORS,
        )
    return True


def notifications_dispatch_batch(*, batch_size: int | None = None) -> BatchResult:
    """Claim one batch of due notifications and deliver it."""
    ids = notifications_claim(batch_size=batch_size or settings.NOTIFICATION_BATCH_SIZE)
    result = BatchResult(claimed=len(ids))
    if not ids:
        return result
    channels = _channels()
    claimed = Notification.objects.filter(id__in=ids).select_related(
        "report_site",
        "patient__site",
        "user",
        "visit__course__site",
        "visit__course__protocol",
        "visit__protocol_visit",
        "alert__site",
        "invitation__instrument",
        "invitation__course__protocol",
    )
    for notification in claimed:
        status = notification_send_claimed(notification, channels=channels)
        if status == NotificationStatus.SENT:
            result.sent += 1
        elif status == NotificationStatus.PENDING:
            result.retrying += 1
        elif status == NotificationStatus.FAILED:
            result.failed += 1
    return result
