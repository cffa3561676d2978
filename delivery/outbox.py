"""Delivering the outbox: claim due rows, send them, record what happened.

Any number of workers may run these side by side: a claim takes rows with
`SELECT … FOR UPDATE SKIP LOCKED` and stamps them with a claim token, and every outcome is
written only while the row still carries that token. A worker that dies leaves its rows
claimed; after NOTIFICATION_CLAIM_TIMEOUT they are pending again. Delivery is therefore
at least once; the idempotency key travels with each message (as the email's Message-ID) so
the one case that can repeat, a crash between the provider accepting a message and the row
being marked sent, is recognisable. A batch renews its claims, reads consent and issues its
links all at once, and writes each message sent before it sends the next, so that a crash
repeats at most the message in the dying process's hands (`_claimed_send`).
"""

import contextlib
import datetime as dt
import logging
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django import db
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from delivery.channels import DeliveryChannel, DeliveryError
from delivery.channels.email import EmailChannel
from delivery.channels.sms import TWILIO_PERMANENT_ERRORS, sms_backend
from delivery.channels.whatsapp import whatsapp_backend
from delivery.consultation_messages import CONSULTATION_PREFETCH
from delivery.messages import notification_message, reminder_links_issue
from delivery.whatsapp import whatsapp_templates_usable
from enquiries.consultations import (
    consultation_protocol,
    consultation_still_applies,
    enquirer_send_after,
)
from pathway.states import CourseState
from patients.models import Patient
from scheduling.alerts import alert_raise
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    TEXT_CHANNELS,
    AlertKind,
    Channel,
    DeliveryAttempt,
    InvitationStatus,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Severity,
)
from scheduling.places import PLACE_PREFETCH
from scheduling.rules import after_quiet_hours, quiet_hours, retry_delay

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
        claiming = Notification.objects.filter(id__in=ids)
        if connection.vendor != "postgresql":
            # The status condition keeps two claimers apart where the database has no row
            # locks. PostgreSQL's rows are locked pending by the SELECT above, and the same
            # condition there let the planner read the pending index whole (a hundred
            # thousand rows, 3.5 ms) beside the 500 keys it needs.
            claiming = claiming.filter(status=NotificationStatus.PENDING)
        claiming.update(status=NotificationStatus.SENDING, claimed_at=now, claim_token=token)
    # Through the primary key: claim_token has no index, and needs none.
    claimed = Notification.objects.filter(id__in=ids, claim_token=token)
    return list(claimed.values_list("id", flat=True))


@dataclass
class _Outcome:
    """What one claimed row came to, before it is written: the row's new values, and the
    attempt to keep (none for a cancellation, which sent nothing)."""

    notification: Notification
    changes: dict
    at: dt.datetime
    attempted: bool = True
    error: str = ""
    provider_id: str = ""
    permanent: bool = False
    advice: str = ""  # what a coordinator can do about a permanent failure

    @property
    def status(self) -> str:
        return self.changes["status"]


def _outcome(
    notification: Notification,
    *,
    error: str = "",
    provider_id: str = "",
    new_try: bool = True,
    permanent: bool = False,
    advice: str = "",
) -> _Outcome:
    """What a send's result makes of the row: sent; retried later, with backoff and, for a
    text (SMS, WhatsApp), after the patient's quiet hours for its channel; or failed, at once
    if `permanent`, else once its tries run out. `new_try` is False when the result is the
    provider's later report on a send already counted."""
    now = timezone.now()
    attempts = notification.attempts + int(new_try)
    changes = {"attempts": attempts, "last_error": error, "claim_token": None}
    if not error:
        changes |= {
            "status": NotificationStatus.SENT,
            "sent_at": now,
            "provider_message_id": provider_id,
        }
    elif permanent or attempts >= notification.max_attempts:
        changes |= {"status": NotificationStatus.FAILED, "failed_at": now}
    else:
        send_after = now + retry_delay(
            failed_attempts=attempts, base_seconds=settings.NOTIFICATION_RETRY_BASE_SECONDS
        )
        if notification.channel in TEXT_CHANNELS and notification.patient_id:
            send_after = _after_patients_quiet_hours(notification, send_after)
        elif notification.channel in TEXT_CHANNELS and _enquirer_of(notification):
            send_after = _after_enquirers_quiet_hours(notification, send_after)
        changes |= {"status": NotificationStatus.PENDING, "send_after": send_after}
    return _Outcome(
        notification,
        changes,
        at=now,
        error=error,
        provider_id=provider_id,
        permanent=permanent,
        advice=advice,
    )


def _cancellation(notification: Notification) -> _Outcome:
    """What it is about no longer stands: the row is cancelled, and nothing was tried."""
    changes = {"status": NotificationStatus.CANCELLED, "claim_token": None}
    return _Outcome(notification, changes, at=timezone.now(), attempted=False)


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
    outcome = _outcome(
        notification, error=error, provider_id=provider_id, new_try=new_try, permanent=permanent
    )
    return _outcome_write(outcome)


def _outcome_write(outcome: _Outcome) -> str:
    """One row's outcome through the ORM, if this run still holds the row: the per-row path
    (SQLite, the provider's later reports). Returns the row's status."""
    notification = outcome.notification
    with transaction.atomic():
        held = Notification.objects.filter(
            pk=notification.pk,
            status=NotificationStatus.SENDING,
            claim_token=notification.claim_token,
        ).update(**outcome.changes)
        if not held:
            logger.warning(
                "Notification %s was reclaimed before its outcome was recorded", notification.pk
            )
            return NotificationStatus.SENDING
        if outcome.attempted:
            DeliveryAttempt.objects.create(
                notification=notification,
                at=outcome.at,
                succeeded=outcome.status == NotificationStatus.SENT,
                error=outcome.error,
                provider_message_id=outcome.provider_id,
            )
        if outcome.status == NotificationStatus.FAILED:
            _alert_failed(outcome)
    return outcome.status


def _alert_failed(outcome: _Outcome) -> None:
    _alert_undeliverable(
        outcome.notification,
        outcome.error,
        attempts=outcome.changes["attempts"],
        permanent=outcome.permanent,
        advice=outcome.advice,
    )


# A batch's outcomes in one statement on PostgreSQL: each row is updated only while it still
# carries the claim token this run stamped and is still sending (a late run writes nothing),
# and the attempts of the rows updated are inserted by the same statement. A NULL leaves a
# column as it is. Its result is the ids written.
_OUTCOMES_SQL = """
WITH outcome (id, claim_token, status, attempts, last_error, provider_message_id, send_after,
        sent_at, failed_at, at, attempted, error, provider_id) AS (
    VALUES {values}
), recorded AS (
    UPDATE scheduling_notification AS notification
    SET status = outcome.status,
        attempts = COALESCE(outcome.attempts, notification.attempts),
        last_error = COALESCE(outcome.last_error, notification.last_error),
        provider_message_id = COALESCE(
            outcome.provider_message_id, notification.provider_message_id
        ),
        send_after = COALESCE(outcome.send_after, notification.send_after),
        sent_at = COALESCE(outcome.sent_at, notification.sent_at),
        failed_at = COALESCE(outcome.failed_at, notification.failed_at),
        claim_token = NULL
    FROM outcome
    WHERE notification.id = outcome.id
        AND notification.claim_token = outcome.claim_token
        AND notification.status = 'sending'
    RETURNING notification.id
), attempt AS (
    INSERT INTO scheduling_deliveryattempt (
        notification_id, at, succeeded, error, provider_message_id
    )
    SELECT outcome.id, outcome.at, outcome.status = 'sent', outcome.error, outcome.provider_id
    FROM outcome JOIN recorded USING (id)
    WHERE outcome.attempted
)
SELECT id FROM recorded
"""
# Each message sent is written on its own before the next goes (see `_claimed_send`): the
# write commits without waiting for the disk's flush, the largest part of its cost. A worker's
# death loses nothing by it (the server has the commit); a crash of PostgreSQL itself may lose
# the last few writes (at most 3 x wal_writer_delay, 0.6 s by default), whose messages are then
# sent again: at least once, as ever. In the statement itself, so that it is one round trip
# and holds for its own transaction only (a multi-statement query is one transaction).
_NOT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit TO off;\n"
# The common write, in a statement that costs less to plan than the general one (0.38 ms
# against 0.56 ms on the bench's machine): one message sent, all of one claim, and the
# cancellations waiting beside it, if any, in a part of its own (0.09 ms more). Its result is
# the ids written, as the general one's.
_SENT_SQL = """
WITH {cancelled}recorded AS (
    UPDATE scheduling_notification
    SET status = 'sent', attempts = %(attempts)s, last_error = '',
        provider_message_id = %(provider_id)s, sent_at = %(at)s, claim_token = NULL
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'sending'
    RETURNING id
), attempt AS (
    INSERT INTO scheduling_deliveryattempt (
        notification_id, at, succeeded, error, provider_message_id
    )
    SELECT id, %(at)s, true, '', %(provider_id)s FROM recorded
)
SELECT id FROM recorded{and_cancelled}
"""
_CANCELLED_PART = """cancelled AS (
    UPDATE scheduling_notification SET status = 'cancelled', claim_token = NULL
    WHERE id = ANY(%(cancelled)s) AND claim_token = %(token)s AND status = 'sending'
    RETURNING id
), """
# Typed, so that a column that is NULL in every row still has the type of its column.
_OUTCOME_ROW = (
    "(%s::bigint, %s::uuid, %s, %s::integer, %s, %s, %s::timestamptz, %s::timestamptz,"
    " %s::timestamptz, %s::timestamptz, %s::boolean, %s, %s)"
)


def _outcomes_statement(cursor, outcomes: list[_Outcome]) -> str:
    """The statement that writes `outcomes`: the lean one for a message sent and the
    cancellations beside it, the general one otherwise."""
    sent = [o for o in outcomes if o.status == NotificationStatus.SENT]
    cancelled = [o for o in outcomes if o.status == NotificationStatus.CANCELLED]
    if (
        len(sent) == 1
        and len(sent) + len(cancelled) == len(outcomes)
        and len({o.notification.claim_token for o in outcomes}) == 1
    ):
        [message] = sent
        statement = _SENT_SQL.format(
            cancelled=_CANCELLED_PART if cancelled else "",
            and_cancelled=" UNION ALL SELECT id FROM cancelled" if cancelled else "",
        )
        return cursor.mogrify(
            statement,
            {
                "cancelled": [o.notification.pk for o in cancelled],
                "token": message.notification.claim_token,
                "id": message.notification.pk,
                "attempts": message.changes["attempts"],
                "provider_id": message.provider_id,
                "at": message.changes["sent_at"],
            },
        ).decode()
    values = b",".join(
        cursor.mogrify(
            _OUTCOME_ROW,
            [
                outcome.notification.pk,
                outcome.notification.claim_token,
                outcome.status,
                outcome.changes.get("attempts"),
                outcome.changes.get("last_error"),
                outcome.changes.get("provider_message_id"),
                outcome.changes.get("send_after"),
                outcome.changes.get("sent_at"),
                outcome.changes.get("failed_at"),
                outcome.at,
                outcome.attempted,
                outcome.error,
                outcome.provider_id,
            ],
        )
        for outcome in outcomes
    ).decode()
    return _OUTCOMES_SQL.format(values=values)


def _outcomes_record(outcomes: list[_Outcome]) -> dict[int, str]:
    """Write outcomes, each only if this run still holds its row; returns each row's status
    (SENDING for a row another run has taken since).

    On PostgreSQL one statement writes them all, and their attempts: one round trip, or a
    transaction with the alerts when a row failed for good. Elsewhere, row by row.
    """
    if not outcomes:
        return {}
    if connection.vendor != "postgresql":
        return {outcome.notification.pk: _outcome_write(outcome) for outcome in outcomes}
    failed = [o for o in outcomes if o.status == NotificationStatus.FAILED]
    # The alert of a row that failed is written with its outcome, or not at all.
    together = transaction.atomic() if failed else contextlib.nullcontext()
    with together, connection.cursor() as cursor:
        commit = "" if settings.NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT else _NOT_WAITING_FOR_DISK
        cursor.execute(commit + _outcomes_statement(cursor, outcomes))
        recorded = {row[0] for row in cursor.fetchall()}
        for outcome in failed:
            if outcome.notification.pk in recorded:
                _alert_failed(outcome)
    statuses = {}
    for outcome in outcomes:
        pk = outcome.notification.pk
        if pk in recorded:
            statuses[pk] = outcome.status
        else:
            logger.warning("Notification %s was reclaimed before its outcome was recorded", pk)
            statuses[pk] = NotificationStatus.SENDING
    return statuses


def _course(notification: Notification):
    """The course a patient's message is about: its visit's, or its check-in's."""
    return (notification.visit or notification.invitation).course


def _after_patients_quiet_hours(notification: Notification, at: dt.datetime) -> dt.datetime:
    start, end = quiet_hours(channel=notification.channel, protocol=_course(notification).protocol)
    return after_quiet_hours(at, zone=notification.patient.zone, start=start, end=end)


def _enquirer_of(notification: Notification):
    """The enquiry a message to someone not yet a patient is about: its own (an
    acknowledgement, a reply) or its consultation's; None for anyone else's message."""
    if notification.enquiry_id:
        return notification.enquiry
    if notification.consultation_id:
        return notification.consultation.enquiry
    return None


def _after_enquirers_quiet_hours(notification: Notification, at: dt.datetime) -> dt.datetime:
    """An enquirer's text retried: after the channel's quiet hours in the person's own zone."""
    enquiry = _enquirer_of(notification)
    return enquirer_send_after(
        at,
        channel=notification.channel,
        enquiry=enquiry,
        protocol=consultation_protocol(site=enquiry.site),
    )


def _alert_undeliverable(
    notification: Notification, error: str, *, attempts: int, permanent: bool, advice: str = ""
) -> None:
    enquiry = _enquirer_of(notification)
    if enquiry is not None:
        _alert_enquirer_undeliverable(
            notification, enquiry, error, attempts=attempts, permanent=permanent, advice=advice
        )
        return
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
                "and will not be retried: "
                + (advice or "the provider refused the address. Check it with the patient.")
                if permanent
                else f"after {attempts} tries."
            )
            + f" Last error: {error}"
        ),
    )


def _alert_enquirer_undeliverable(
    notification: Notification, enquiry, error: str, *, attempts: int, permanent: bool, advice: str
) -> None:
    """A message to someone not yet a patient (the acknowledgement, a reply, a consultation's
    reminder) that cannot be delivered: the site's coordinators are told, on the enquiry, so
    that they reach the person another way before the consultation is missed."""
    what = notification.get_template_display().lower()
    alert_raise(
        kind=AlertKind.DELIVERY_FAILED,
        severity=Severity.WARNING,
        enquiry=enquiry,
        condition_key=f"delivery_failed.n{notification.pk}",
        message=(
            f"The {what} by {notification.get_channel_display()} to {enquiry.first_name} "
            f"{enquiry.last_name} (enquiry #{enquiry.pk}) could not be delivered "
            + (
                "and will not be retried: "
                + (advice or "the provider refused the address. Reach them another way.")
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


def _still_applies(notification: Notification, *, consenting: set[tuple[int, str]]) -> bool:
    """A patient's message is sent only while what it is about still stands.

    `consenting` holds (patient, channel) for the text channels the patients consented to
    when last read (see `_patients_consenting_to_texts`).
    """
    if notification.template == NotificationTemplate.VISIT_REMINDER:
        applies = _reminder_still_applies(notification)
    elif notification.template == NotificationTemplate.QUESTIONNAIRE:
        applies = _questionnaire_still_applies(notification)
    elif notification.template == NotificationTemplate.CONSULTATION_REMINDER:
        return consultation_still_applies(notification, now=timezone.now())
    elif notification.enquiry_id:
        # An enquirer who has withdrawn consent since (or an address taken out) is not written
        # to; a reply still goes to a closed enquiry (the closing reply is one).
        return notification.enquiry.consents_to(notification.channel)
    else:
        return True
    if applies and notification.channel in TEXT_CHANNELS:
        applies = (notification.patient_id, notification.channel) in consenting
    return applies


def _questionnaire_still_applies(notification: Notification) -> bool:
    """Still open to answer, and the patient still consents to this channel."""
    invitation, patient = notification.invitation, notification.patient
    if invitation.status != InvitationStatus.OPEN or invitation.closes_at <= timezone.now():
        return False
    if invitation.course.state != CourseState.FOLLOW_UP:  # held or withdrawn since
        return False
    return patient.consents_to(notification.channel)


def _patients_consenting_to_texts(notifications: list[Notification]) -> set[tuple[int, str]]:
    """Which of these texts' patients consent to their text channels (SMS, WhatsApp), as
    (patient, channel), in one query; and when each last wrote on WhatsApp, set on the rows.

    Read again, not from the batch's copy: a STOP that arrived since the rows were claimed
    stops their messages on that channel too, and a message the patient sent since opens their
    WhatsApp window. It is read before the first send and again at each renewal.
    """
    texts = [n for n in notifications if n.channel in TEXT_CHANNELS and n.patient_id]
    if not texts:
        return set()
    rows = Patient.objects.filter(
        Q(consent_sms=True) | Q(consent_whatsapp=True), pk__in={n.patient_id for n in texts}
    ).values_list("pk", "consent_sms", "consent_whatsapp", "whatsapp_last_inbound_at")
    consenting, last_inbound = set(), {}
    for pk, sms, whatsapp, wrote_at in rows:
        consenting |= {(pk, Channel.SMS)} if sms else set()
        consenting |= {(pk, Channel.WHATSAPP)} if whatsapp else set()
        last_inbound[pk] = wrote_at
    for notification in texts:
        if notification.channel == Channel.WHATSAPP and notification.patient_id in last_inbound:
            notification.patient.whatsapp_last_inbound_at = last_inbound[notification.patient_id]
    return consenting


# Renewing the claims of a batch in one statement on PostgreSQL; its result is the ids this
# run still holds.
_RENEW_SQL = """
UPDATE scheduling_notification SET claimed_at = %s
WHERE id = ANY(%s) AND status = 'sending' AND claim_token = %s
RETURNING id
"""


def _claims_renew(notifications: list[Notification], *, now: dt.datetime) -> set[int]:
    """Renew this run's claim on the rows, stamping `now`; returns the ids still held.

    A row another worker reclaimed after the claim timeout is no longer held: this run must
    not send it, because the other one will.
    """
    held = set()
    by_token = defaultdict(list)
    for notification in notifications:
        by_token[notification.claim_token].append(notification.pk)
    for token, ids in by_token.items():  # one token per batch
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(_RENEW_SQL, [now, ids, token])
                held |= {row[0] for row in cursor.fetchall()}
        else:
            ours = Notification.objects.filter(
                id__in=ids, status=NotificationStatus.SENDING, claim_token=token
            )
            ours.update(claimed_at=now)
            held |= set(ours.values_list("id", flat=True))
    return held


# A batch renews its claim before its first send, and again before any send that would start
# more than this share of NOTIFICATION_CLAIM_TIMEOUT after the last renewal: every send then
# starts with at least two thirds of the timeout left before another worker may reclaim its
# row, room enough for the send's own timeouts (EMAIL_TIMEOUT, SMS_TIMEOUT).
CLAIM_RENEWAL_SHARE = 1 / 3


@contextlib.contextmanager
def _channels_for_batch():
    """The channels, with one SMTP connection for the whole batch, closed after it."""
    with EmailChannel() as email:
        yield {
            Channel.EMAIL: email,
            Channel.SMS: sms_backend(),
            Channel.WHATSAPP: whatsapp_backend(),
        }


def _send(
    notification: Notification,
    channels: dict[str, DeliveryChannel],
    *,
    link_token: str | None = None,
    whatsapp_templates=None,
) -> _Outcome:
    """Render and send one row; what came of it, not yet written."""
    try:
        message = notification_message(
            notification, link_token=link_token, whatsapp_templates=whatsapp_templates
        )
        provider_id = channels[notification.channel].send(message)
    except DeliveryError as error:
        return _outcome(
            notification,
            error=str(error) or error.__class__.__name__,
            permanent=error.permanent,
            advice=error.advice,
        )
    except Exception as error:
        if isinstance(error, db.Error) and not connection.is_usable():
            raise  # the database went away: the batch stops (see _claimed_send)
        # A bug or bad data must not wedge the row: it is retried, then alerted like a failure.
        logger.exception("Could not send notification %s", notification.pk)
        return _outcome(notification, error=f"{error.__class__.__name__}: {error}")
    return _outcome(notification, provider_id=provider_id)


def _outcomes_record_reconnecting(outcomes: list[_Outcome]) -> dict[int, str]:
    """`_outcomes_record`, on a new database connection if the one in hand broke: what was
    sent must be written, or it is sent again once its claim times out."""
    try:
        return _outcomes_record(outcomes)
    except db.Error:
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()  # the next query opens a new one
        return _outcomes_record(outcomes)


def _claimed_send(
    notifications: list[Notification],
    *,
    channels: dict[str, DeliveryChannel],
    claimed_at: dt.datetime | None = None,
) -> dict[int, str]:
    """Send claimed rows and record what became of each; returns each row's new status.

    Round trips for the rows together: one renewing their claims and returning the ids still
    held (none for rows this run claimed at `claimed_at`, the claim being as good as a
    renewal), one reading the patients' consent to texts, three issuing the reminders' links;
    a batch slower than a third of the claim timeout renews, reads and issues again at each
    third. A row no longer held is not sent; one whose visit, check-in or consent no longer
    stands is cancelled.

    A message sent is written before the next send begins (one statement, with the
    cancellations and failures waiting beside it), at the end, and before any error that
    stops the batch goes on. A process that dies has at most the one message in its hands
    sent and not written, which is sent again once its claim times out: a worker killed
    repeats at most as many messages as it has pool processes (`--concurrency`), what was in
    flight.
    """
    renew_every = dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT * CLAIM_RENEWAL_SHARE)
    statuses: dict[int, str] = {}
    outcomes: list[_Outcome] = []
    held = {n.pk for n in notifications} if claimed_at else set()
    consenting: set[tuple[int, str]] = set()
    link_tokens: dict[int, str] = {}
    whatsapp_templates = None
    renewed_at = claimed_at
    try:
        for index, notification in enumerate(notifications):
            now = timezone.now()
            renew = renewed_at is None or now - renewed_at >= renew_every
            if renew or index == 0:
                # Written first, so that a row cancelled or failed meanwhile is not renewed.
                statuses |= _outcomes_record(outcomes)
                outcomes = []
                rest = notifications[index:]
                if renew:
                    held, renewed_at = _claims_renew(rest, now=now), now
                consenting = _patients_consenting_to_texts([n for n in rest if n.pk in held])
                # Issued for the rows about to be sent, in one go.
                link_tokens = reminder_links_issue(
                    [n for n in rest if n.pk in held and _still_applies(n, consenting=consenting)]
                )
                if any(n.channel == Channel.WHATSAPP for n in rest):  # one query, if any
                    whatsapp_templates = whatsapp_templates_usable()
            if notification.pk not in held:
                logger.warning("Notification %s was reclaimed before it was sent", notification.pk)
                statuses[notification.pk] = NotificationStatus.SENDING
            elif not _still_applies(notification, consenting=consenting):
                outcomes.append(_cancellation(notification))
            else:
                outcome = _send(
                    notification,
                    channels,
                    link_token=link_tokens.get(notification.pk),
                    whatsapp_templates=whatsapp_templates,
                )
                outcomes.append(outcome)
                if outcome.status == NotificationStatus.SENT:
                    # Before the next send begins: from here a death repeats none of these.
                    statuses |= _outcomes_record(outcomes)
                    outcomes = []
    except BaseException:
        # Whatever stops the batch (the database gone away under it, a failover, a fault in a
        # message's words, the worker's time limit or shutdown): what was sent is written, on a
        # new connection if need be, before the error goes on, so that it is not sent twice;
        # the rest stays claimed, and is sent once its claim times out.
        try:
            _outcomes_record_reconnecting(outcomes)
        except Exception:
            # Not in place of the error that stopped the batch: that one goes on.
            logger.exception(
                "The outcomes of %d messages could not be written; those sent may be sent again",
                len(outcomes),
            )
        raise
    return statuses | _outcomes_record_reconnecting(outcomes)


def notification_send_claimed(
    notification: Notification, *, channels: dict[str, DeliveryChannel] | None = None
) -> str:
    """Send one claimed notification and record the outcome. Returns its new status."""
    if channels:
        return _claimed_send([notification], channels=channels)[notification.pk]
    with _channels_for_batch() as default_channels:
        return _claimed_send([notification], channels=default_channels)[notification.pk]


# Twilio's final statuses for a message it accepted, and whether it reached the phone.
PROVIDER_FINAL_STATUSES = {"delivered": True, "failed": False, "undelivered": False}


# WhatsApp's refusal of a free-form message outside the patient's 24-hour window.
WINDOW_CLOSED_ERROR = "63016"


def _whatsapp_window_closed(notification: Notification) -> None:
    """The provider says the patient's window was closed when this message was sent: the
    message they sent before it no longer opens one, so the retry goes as the template (the
    provider knows the window; we only heard of it)."""
    Patient.objects.filter(
        pk=notification.patient_id, whatsapp_last_inbound_at__lte=notification.sent_at
    ).update(whatsapp_last_inbound_at=None)


def notification_record_provider_status(
    *, provider_message_id: str, status: str, error: str = ""
) -> bool:
    """Apply the provider's later word on a message it accepted.

    A message that never reached the phone is retried like any failed send (and alerted
    once the tries run out), unless the provider's error says the number will never work. A
    WhatsApp body refused outside the patient's window (63016) closes the window we believed
    open, so that its retry goes as the approved template.
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
        if notification.channel == Channel.WHATSAPP and error == WINDOW_CLOSED_ERROR:
            _whatsapp_window_closed(notification)
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
    """Claim one batch of due notifications and deliver it (see `_claimed_send`)."""
    claimed_at = timezone.now()
    ids = notifications_claim(
        batch_size=batch_size or settings.NOTIFICATION_BATCH_SIZE, now=claimed_at
    )
    result = BatchResult(claimed=len(ids))
    if not ids:
        return result
    # The reminders' own relations joined; what a batch's rows share (their sites and the
    # protocol) fetched apart, once each, rather than built again for every row; the rarer
    # rows' (staff alerts, reports, check-ins) too, a query each only where the batch holds
    # one: a join of all sixteen tables cost more to plan (about 7 ms) than to run.
    claimed = (
        Notification.objects.filter(id__in=ids)
        .select_related("patient", "visit__course", "visit__protocol_visit")
        .prefetch_related(
            "patient__site",
            "visit__course__site",
            "visit__course__protocol",
            "report_site",
            "user",
            "enquiry__site",
            "alert__site",
            "invitation__instrument",
            "invitation__course__protocol",
            *CONSULTATION_PREFETCH,
            # The reminders' places, named for patients: two queries for the batch.
            *(f"visit__{path}" for path in PLACE_PREFETCH),
        )
    )
    notifications = list(claimed)
    for notification in notifications:
        if (
            notification.visit_id
            and notification.visit.course.patient_id == notification.patient_id
        ):
            # The reminder's words read the course's patient: the one already loaded, rather
            # than two queries per message for it and its site.
            notification.visit.course.patient = notification.patient
    with _channels_for_batch() as channels:
        statuses = _claimed_send(notifications, channels=channels, claimed_at=claimed_at)
    for status in statuses.values():
        if status == NotificationStatus.SENT:
            result.sent += 1
        elif status == NotificationStatus.PENDING:
            result.retrying += 1
        elif status == NotificationStatus.FAILED:
            result.failed += 1
    return result
