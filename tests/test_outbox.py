import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone
from twilio.request_validator import RequestValidator

from delivery.outbox import (
    notification_batches_due,
    notifications_claim,
    notifications_dispatch_batch,
    notifications_reclaim_stale,
)
from pathway import services
from pathway.states import CourseState
from scheduling.models import (
    Alert,
    AlertKind,
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Visit,
    VisitKind,
)
from tests.servers import SmtpSink, TwilioStub, due_emails

pytestmark = pytest.mark.django_db


@pytest.fixture
def smtp(settings):
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        yield sink


@pytest.fixture
def twilio(settings):
    with TwilioStub() as stub:
        for name, value in stub.settings().items():
            setattr(settings, name, value)
        yield stub


LONDON = ZoneInfo("Europe/London")
# The harvest is booked on 1 June for 11:00 on 11 June; its 7-day reminders fall due at
# 11:00 on 4 June, and at noon that day both are due and nobody is in their quiet hours.
REMINDERS_DUE = dt.datetime(2026, 6, 4, 12, tzinfo=LONDON)


@pytest.fixture
def harvest(course, pathway, coordinator):
    """A harvest with its four reminders in the outbox; the patient's coordinator is set."""
    course.patient.coordinator = coordinator
    course.patient.save()
    with time_machine.travel(dt.datetime(2026, 6, 1, 9, tzinfo=LONDON), tick=False):
        pathway.starting(timezone.now() - dt.timedelta(days=1)).advance(
            course, CourseState.ELIGIBLE
        )
        services.course_schedule_harvest(
            course=course,
            by=pathway.coordinator,
            place="Suite 2",
            scheduled_at=dt.datetime(2026, 6, 11, 11, tzinfo=LONDON),
        )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def at_first_reminder(visit):
    return time_machine.travel(REMINDERS_DUE, tick=False)


def test_due_reminders_reach_the_smtp_server_and_the_sms_provider(harvest, smtp, twilio):
    with at_first_reminder(harvest):
        assert notification_batches_due(batch_size=100) == 1
        result = notifications_dispatch_batch(batch_size=100)
    assert (result.claimed, result.sent) == (2, 2)
    [email] = smtp.messages
    patient = harvest.course.patient
    assert email["To"] == patient.email and email["Subject"].startswith(
        "Reminder: your appointment on"
    )
    assert email.get_body(("plain",)) and email.get_body(("html",))
    [sms] = twilio.received
    assert sms["To"] == str(patient.phone) and sms["Body"].startswith(f"Hi {patient.first_name}")
    sent = Notification.objects.filter(status=NotificationStatus.SENT)
    assert {n.provider_message_id[:2] for n in sent if n.channel == Channel.SMS} == {"SM"}
    assert DeliveryAttempt.objects.filter(succeeded=True).count() == 2


def test_a_provider_that_fails_twice_then_succeeds(harvest, twilio, settings):
    settings.NOTIFICATION_RETRY_BASE_SECONDS = 60
    harvest.course.patient.notifications.filter(channel=Channel.EMAIL).update(
        status=NotificationStatus.CANCELLED
    )
    twilio.fail_next = 2
    sms = (
        Notification.objects.filter(visit=harvest, channel=Channel.SMS)
        .order_by("send_after")
        .first()
    )
    clock = REMINDERS_DUE
    for expected in (
        NotificationStatus.PENDING,
        NotificationStatus.PENDING,
        NotificationStatus.SENT,
    ):
        with time_machine.travel(clock, tick=False):
            notifications_dispatch_batch(batch_size=10)
        sms.refresh_from_db()
        assert sms.status == expected
        clock = max(clock, sms.send_after) + dt.timedelta(seconds=1)
    assert len(twilio.received) == 1
    attempts = list(sms.delivery_attempts.values_list("succeeded", flat=True))
    assert attempts == [False, False, True] and sms.attempts == 3
    assert "500" in sms.delivery_attempts.first().error


def test_retries_back_off_exponentially(harvest, twilio, settings):
    settings.NOTIFICATION_RETRY_BASE_SECONDS = 60
    twilio.fail_next = 10
    sms = (
        Notification.objects.filter(visit=harvest, channel=Channel.SMS)
        .order_by("send_after")
        .first()
    )
    clock = REMINDERS_DUE
    gaps = []
    for _ in range(3):
        with time_machine.travel(clock, tick=False):
            notifications_dispatch_batch(batch_size=10)
        sms.refresh_from_db()
        gaps.append((sms.send_after - clock).total_seconds())
        clock = sms.send_after
    assert gaps == [60, 120, 240]


def test_a_reminder_that_never_gets_through_alerts_the_coordinator_once(
    harvest, smtp, twilio, coordinator
):
    twilio.fail_next = 100
    sms = (
        Notification.objects.filter(visit=harvest, channel=Channel.SMS)
        .order_by("send_after")
        .first()
    )
    Notification.objects.exclude(pk=sms.pk).update(status=NotificationStatus.CANCELLED)
    clock = REMINDERS_DUE
    for _ in range(sms.max_attempts + 2):
        with time_machine.travel(clock, tick=False):
            notifications_dispatch_batch(batch_size=10)
        sms.refresh_from_db()
        clock = max(clock, sms.send_after) + dt.timedelta(seconds=1)
    assert sms.status == NotificationStatus.FAILED and sms.attempts == 5
    [alert] = Alert.objects.filter(kind=AlertKind.DELIVERY_FAILED)
    assert "could not be delivered after 5 tries" in alert.message
    # The coordinator hears of it by email, through the same outbox.
    with time_machine.travel(clock, tick=False):
        notifications_dispatch_batch(batch_size=10)
    assert [m["To"] for m in smtp.messages] == [coordinator.email]
    assert "Reminder could not be delivered" in smtp.messages[0]["Subject"]


def test_a_claimed_row_is_not_claimed_again_until_its_claim_times_out(harvest, settings):
    settings.NOTIFICATION_CLAIM_TIMEOUT = 300
    with time_machine.travel(REMINDERS_DUE, tick=False) as clock:
        claimed = notifications_claim(batch_size=10)
        assert len(claimed) == 2
        assert notifications_claim(batch_size=10) == []
        clock.shift(dt.timedelta(seconds=299))
        assert notifications_reclaim_stale() == 0
        clock.shift(dt.timedelta(seconds=2))
        assert notifications_reclaim_stale() == 2
        assert sorted(notifications_claim(batch_size=10)) == sorted(claimed)


@pytest.mark.postgres
def test_the_claim_updates_its_rows_through_their_keys_alone(harvest):
    """The claim's SELECT has locked its rows while they are pending. A status condition on
    its UPDATE as well let the planner read the pending index whole beside the keys: 3.5 ms
    of a 10 ms claim with 100,000 reminders pending, and more as the programme grows."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with (
        time_machine.travel(REMINDERS_DUE, tick=False),
        CaptureQueriesContext(connection) as captured,
    ):
        claimed = notifications_claim(batch_size=10)
    [update] = [q["sql"] for q in captured if q["sql"].startswith("UPDATE")]
    assert len(claimed) == 2
    assert '"status"' not in update.split(" WHERE ", 1)[1]
    assert set(Notification.objects.filter(pk__in=claimed).values_list("status", flat=True)) == {
        NotificationStatus.SENDING
    }


def test_a_batch_slower_than_its_claim_sends_nothing_another_worker_took(harvest, twilio, settings):
    """Worker A claims, stalls past the claim timeout; B reclaims and sends. A must not send."""
    from delivery.outbox import notification_send_claimed

    settings.NOTIFICATION_CLAIM_TIMEOUT = 300
    first = (
        Notification.objects.filter(visit=harvest, channel=Channel.SMS)
        .order_by("send_after")
        .first()
    )
    Notification.objects.exclude(pk=first.pk).update(status=NotificationStatus.CANCELLED)
    with time_machine.travel(REMINDERS_DUE, tick=False) as clock:
        [claimed_id] = notifications_claim(batch_size=10)
        stalled = Notification.objects.get(pk=claimed_id)  # worker A's copy, token and all
        clock.shift(dt.timedelta(seconds=301))
        assert notifications_reclaim_stale() == 1
        assert notifications_dispatch_batch(batch_size=10).sent == 1  # worker B
        assert notification_send_claimed(stalled) == NotificationStatus.SENDING  # A wakes up
    assert len(twilio.received) == 1
    fresh = Notification.objects.get(pk=claimed_id)
    assert fresh.status == NotificationStatus.SENT and fresh.delivery_attempts.count() == 1


def test_a_reminder_is_not_sent_once_consent_is_withdrawn(harvest, twilio, smtp):
    patient = harvest.course.patient
    patient.consent_sms = False
    patient.save()
    with at_first_reminder(harvest):
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 1 and not twilio.received and len(smtp.messages) == 1
    assert (
        Notification.objects.get(
            visit=harvest, channel=Channel.SMS, send_after__lte=REMINDERS_DUE
        ).status
        == NotificationStatus.CANCELLED
    )


def test_a_reminder_for_a_visit_that_happened_is_not_sent(harvest, pathway, twilio, smtp):
    services.course_withdraw(course=harvest.course, by=pathway.coordinator, reason="Declined")
    Notification.objects.filter(visit=harvest).update(status=NotificationStatus.PENDING)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 0 and not twilio.received and not smtp.messages
    assert set(Notification.objects.filter(visit=harvest).values_list("status", flat=True)) >= {
        NotificationStatus.CANCELLED
    }


def test_a_retried_sms_waits_out_the_quiet_hours(harvest, twilio, settings):
    settings.NOTIFICATION_RETRY_BASE_SECONDS = 3600
    twilio.fail_next = 1
    sms = (
        Notification.objects.filter(visit=harvest, channel=Channel.SMS)
        .order_by("send_after")
        .first()
    )
    zone = harvest.course.patient.zone
    evening = dt.datetime.combine(
        timezone.localtime(sms.send_after, zone).date(), dt.time(20, 30), tzinfo=zone
    )
    Notification.objects.filter(pk=sms.pk).update(send_after=evening)
    with time_machine.travel(evening, tick=False):
        notifications_dispatch_batch(batch_size=10)
    sms.refresh_from_db()
    assert timezone.localtime(sms.send_after, zone).time() == dt.time(8)


def test_an_alert_reaches_the_coordinator_by_email(harvest, smtp, coordinator):
    from scheduling.alerts import alert_raise

    alert, created = alert_raise(
        kind=AlertKind.VISIT_OVERDUE,
        course=harvest.course,
        visit=harvest,
        condition_key="test.overdue",
        message="The harvest is overdue.",
    )
    assert (
        created
        and not alert_raise(
            kind=AlertKind.VISIT_OVERDUE,
            course=harvest.course,
            condition_key="test.overdue",
            message="again",
        )[1]
    )
    [email] = Notification.objects.filter(alert=alert)
    assert (email.template, email.channel, email.user) == (
        NotificationTemplate.ALERT,
        Channel.EMAIL,
        coordinator,
    )
    notifications_dispatch_batch(batch_size=10)
    [message] = smtp.messages
    assert (
        message["To"] == coordinator.email
        and "The harvest is overdue." in message.get_body(("plain",)).get_content()
    )


def signed_status(client, settings, **params):
    url = "/sms/status/"
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(
        settings.SITE_URL.rstrip("/") + url, params
    )
    return client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)


def sent_sms(harvest, twilio):
    Notification.objects.filter(visit=harvest, channel=Channel.EMAIL).update(
        status=NotificationStatus.CANCELLED
    )
    with at_first_reminder(harvest):
        notifications_dispatch_batch(batch_size=10)
    return Notification.objects.get(visit=harvest, status=NotificationStatus.SENT)


def test_the_status_callback_asks_twilio_to_report_back(harvest, twilio, settings):
    settings.TWILIO_STATUS_CALLBACK = True
    sent_sms(harvest, twilio)
    assert twilio.received[0]["StatusCallback"] == "http://localhost:8000/sms/status/"


def test_a_delivery_report_confirms_delivery(client, harvest, twilio, settings):
    sms = sent_sms(harvest, twilio)
    response = signed_status(
        client, settings, MessageSid=sms.provider_message_id, MessageStatus="delivered"
    )
    assert response.status_code == 204
    sms.refresh_from_db()
    assert sms.status == NotificationStatus.SENT and sms.delivered_at


def test_an_undelivered_report_puts_the_sms_back_for_a_retry(client, harvest, twilio, settings):
    sms = sent_sms(harvest, twilio)
    with at_first_reminder(harvest):
        signed_status(
            client,
            settings,
            MessageSid=sms.provider_message_id,
            MessageStatus="undelivered",
            ErrorCode="30003",
        )
    sms.refresh_from_db()
    # The provider's report is about the try already counted: no extra try is used up.
    assert sms.status == NotificationStatus.PENDING and sms.attempts == 1
    assert list(sms.delivery_attempts.values_list("succeeded", flat=True)) == [True, False]
    assert sms.send_after > REMINDERS_DUE
    assert "undelivered: 30003" in sms.last_error


def test_a_report_with_a_bad_signature_is_refused(client, harvest, twilio, settings):
    sms = sent_sms(harvest, twilio)
    response = client.post(
        "/sms/status/",
        {"MessageSid": sms.provider_message_id, "MessageStatus": "failed"},
        HTTP_X_TWILIO_SIGNATURE="forged",
    )
    assert response.status_code == 403
    sms.refresh_from_db()
    assert sms.status == NotificationStatus.SENT


def _only(harvest, channel):
    """The harvest's first reminder on `channel`; every other reminder is cancelled."""
    first = (
        Notification.objects.filter(visit=harvest, channel=channel).order_by("send_after").first()
    )
    Notification.objects.exclude(pk=first.pk).update(status=NotificationStatus.CANCELLED)
    return first


def test_a_number_the_provider_refuses_for_good_fails_at_once_and_alerts(
    harvest, smtp, twilio, coordinator
):
    sms = _only(harvest, Channel.SMS)
    twilio.refuse[str(harvest.course.patient.phone)] = 21211  # not a valid phone number
    with time_machine.travel(REMINDERS_DUE, tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    sms.refresh_from_db()
    assert (result.failed, sms.status, sms.attempts) == (1, NotificationStatus.FAILED, 1)
    assert "21211" in sms.last_error
    [alert] = Alert.objects.filter(kind=AlertKind.DELIVERY_FAILED)
    assert "will not be retried" in alert.message
    with time_machine.travel(REMINDERS_DUE + dt.timedelta(minutes=1), tick=False):
        notifications_dispatch_batch(batch_size=10)
    assert [m["To"] for m in smtp.messages] == [coordinator.email]
    assert twilio.received == []


def test_a_provider_error_that_may_pass_is_retried(harvest, twilio):
    sms = _only(harvest, Channel.SMS)
    twilio.refuse[str(harvest.course.patient.phone)] = 20429  # too many requests
    with time_machine.travel(REMINDERS_DUE, tick=False):
        notifications_dispatch_batch(batch_size=10)
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == (NotificationStatus.PENDING, 1)
    assert not Alert.objects.filter(kind=AlertKind.DELIVERY_FAILED).exists()


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("550 5.1.1 No such mailbox", NotificationStatus.FAILED),
        ("450 4.2.1 Mailbox busy, try later", NotificationStatus.PENDING),
    ],
)
def test_a_mailbox_refused_for_good_fails_at_once_and_one_refused_for_now_is_retried(
    harvest, smtp, reply, status
):
    email = _only(harvest, Channel.EMAIL)
    smtp.refuse[harvest.course.patient.email] = reply
    with time_machine.travel(REMINDERS_DUE, tick=False):
        notifications_dispatch_batch(batch_size=10)
    email.refresh_from_db()
    assert (email.status, email.attempts) == (status, 1)
    assert reply[:3] in email.last_error


def test_an_undelivered_report_for_a_number_that_stopped_fails_at_once(
    client, harvest, twilio, settings
):
    sms = sent_sms(harvest, twilio)
    with at_first_reminder(harvest):
        signed_status(
            client,
            settings,
            MessageSid=sms.provider_message_id,
            MessageStatus="undelivered",
            ErrorCode="21610",  # the patient replied STOP to this sender
        )
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == (NotificationStatus.FAILED, 1)
    assert Alert.objects.filter(kind=AlertKind.DELIVERY_FAILED).count() == 1


# A batch: one SMTP session, its claims renewed and its outcomes written per batch.


def _only_emails(harvest, count):
    """`count` due email reminders for the harvest, and nothing else due."""
    Notification.objects.update(status=NotificationStatus.CANCELLED)
    return due_emails(harvest, count)


def test_a_batch_of_emails_goes_through_one_smtp_session(harvest, smtp):
    with time_machine.travel(REMINDERS_DUE, tick=False):
        expected = _only_emails(harvest, 5)
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 5
    assert sorted(smtp.message_ids()) == sorted(expected)
    assert len(set(smtp.sessions)) == 1


def test_a_connection_broken_mid_batch_fails_only_the_message_it_was_carrying(harvest, smtp):
    with time_machine.travel(REMINDERS_DUE, tick=False):
        first, broken, last = _only_emails(harvest, 3)
        smtp.hang_up.add(broken)
        result = notifications_dispatch_batch(batch_size=10)
    assert (result.sent, result.retrying) == (2, 1)
    assert sorted(smtp.message_ids()) == sorted([first, last])
    assert len(set(smtp.sessions)) == 2  # the message after the break opened a new session
    retried = Notification.objects.get(status=NotificationStatus.PENDING)
    assert f"<{retried.idempotency_key}@pathway-tracker>" == broken
    assert retried.attempts == 1 and retried.send_after > REMINDERS_DUE


def test_a_fault_mid_batch_still_writes_what_was_sent(harvest, smtp, monkeypatch):
    """A fault that stops the batch leaves what was sent written: the two sent are not sent
    again."""
    from delivery import outbox

    send, calls = outbox._send, []

    def failing_on_the_third(notification, *args, **kwargs):
        calls.append(notification.pk)
        if len(calls) == 3:
            raise RuntimeError("a fault in the message's words")
        return send(notification, *args, **kwargs)

    monkeypatch.setattr(outbox, "_send", failing_on_the_third)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        _only_emails(harvest, 4)
        with pytest.raises(RuntimeError):
            notifications_dispatch_batch(batch_size=10)
    assert len(smtp.message_ids()) == 2
    assert Notification.objects.filter(status=NotificationStatus.SENT).count() == 2
    assert Notification.objects.filter(status=NotificationStatus.SENDING).count() == 2


def test_each_message_sent_is_written_before_the_next_send_begins(harvest, smtp, monkeypatch):
    """What a worker killed may send again is what was in flight: the one message in the hands
    of each of its processes. Every send starts with every message before it written, a
    failure between them included."""
    from delivery import outbox

    send, seen, sent_in_turn = outbox._send, [], []

    def noting_what_is_written(notification, *args, **kwargs):
        sent_in_turn.append(notification.pk)
        seen.append(
            set(
                Notification.objects.filter(idempotency_key__startswith="drill.")
                .exclude(status=NotificationStatus.SENDING)
                .values_list("pk", flat=True)
            )
        )
        if len(seen) == 2:  # the second fails; the rest go
            smtp.hang_up.add(f"<{notification.idempotency_key}@pathway-tracker>")
        return send(notification, *args, **kwargs)

    monkeypatch.setattr(outbox, "_send", noting_what_is_written)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        _only_emails(harvest, 5)
        result = notifications_dispatch_batch(batch_size=10)
    assert (result.sent, result.retrying) == (4, 1)
    assert [len(written) for written in seen] == [0, 1, 1, 3, 4]
    # Before each send, exactly the messages sent before it (in the batch's own order).
    assert all(written == set(sent_in_turn[: len(written)]) for written in seen if written)


@pytest.mark.postgres
def test_the_outcome_write_commits_without_waiting_for_the_disk_unless_asked(settings):
    """One commit per message sent: the flush is most of its cost, and a worker's death loses
    nothing by skipping it; NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT turns the wait back on."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from delivery.outbox import _cancellation, _outcomes_record

    notification = Notification(pk=0, claim_token=None)
    for synchronous, expected in ((False, True), (True, False)):
        settings.NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT = synchronous
        with CaptureQueriesContext(connection) as captured:
            _outcomes_record([_cancellation(notification)])
        [write] = captured
        assert write["sql"].startswith("SET LOCAL synchronous_commit TO off;") is expected


def test_a_batch_costs_one_write_per_message_sent_and_a_fixed_number_of_queries_else(
    harvest, twilio, smtp
):
    """Claims, consent and links for the batch at once; each message sent is written before
    the next is sent, cancellations and failures with them: 3 rows or 30 cost the same but
    for that."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    patient = harvest.course.patient
    twilio.refuse[str(patient.phone)] = 21211  # every text fails for good, and alerts
    queries = []
    for count in (3, 30):
        with time_machine.travel(REMINDERS_DUE, tick=False):
            Notification.objects.filter(idempotency_key__startswith="drill.").delete()
            keys = _only_emails(harvest, count)
            # A third of the emails are for a visit that has since been done: cancelled.
            Notification.objects.filter(idempotency_key__in=[k[1:-17] for k in keys[::3]]).update(
                visit=Visit.objects.create(
                    course=harvest.course,
                    kind=VisitKind.HARVEST,
                    scheduled_at=REMINDERS_DUE - dt.timedelta(days=1),
                    status="done",
                )
            )
            Notification.objects.create(
                template=NotificationTemplate.VISIT_REMINDER,
                channel=Channel.SMS,
                patient=patient,
                visit=harvest,
                idempotency_key=f"failing.{count}",
                send_after=REMINDERS_DUE,
            )
            with CaptureQueriesContext(connection) as captured:
                result = notifications_dispatch_batch(batch_size=100)
        assert (result.claimed, result.failed) == (count + 1, 1)
        assert result.sent == count - len(keys[::3])
        writes = [q for q in captured if "INSERT INTO scheduling_deliveryattempt" in q["sql"]]
        # One per message sent, each with the cancellations and the failure before it, and
        # one for those after the last, if any.
        assert result.sent <= len(writes) <= result.sent + 1
        queries.append(len(captured) - len(writes))
    assert queries[0] == queries[1]
    assert DeliveryAttempt.objects.filter(succeeded=True).count() == 20


class SlowChannel:
    """Each send takes `seconds` of the moved clock; `meanwhile` runs after each (another
    worker's beat, say)."""

    def __init__(self, clock, seconds, meanwhile=lambda: None):
        self.clock, self.seconds, self.meanwhile, self.sent = clock, seconds, meanwhile, []

    def send(self, message):
        self.clock.shift(dt.timedelta(seconds=self.seconds))
        self.sent.append(message.idempotency_key)
        self.meanwhile()
        return f"slow-{len(self.sent)}"


def _slow_batch(clock, channel, settings):
    from delivery import outbox

    settings.NOTIFICATION_CLAIM_TIMEOUT = 300
    ids = notifications_claim(batch_size=10)
    batch = list(
        Notification.objects.filter(id__in=ids)
        .select_related("patient__site", "visit__course__site", "visit__course__protocol")
        .order_by("id")
    )
    return outbox._claimed_send(batch, channels={Channel.EMAIL: channel})


def test_a_slow_batch_renews_its_claims_and_keeps_its_rows(harvest, settings):
    """Each send takes 2 minutes of a 5-minute claim: the batch renews it as it goes, so a
    beat reclaiming stale rows meanwhile takes none of them."""
    with time_machine.travel(REMINDERS_DUE, tick=False) as clock:
        _only_emails(harvest, 4)
        channel = SlowChannel(clock, 120, meanwhile=notifications_reclaim_stale)
        statuses = _slow_batch(clock, channel, settings)
    assert list(statuses.values()) == [NotificationStatus.SENT] * 4
    assert len(channel.sent) == 4
    assert Notification.objects.filter(status=NotificationStatus.SENT).count() == 4


def test_a_batch_stalled_past_its_claim_sends_no_row_another_worker_took(harvest, settings):
    """The first send stalls for longer than the claim timeout and a beat reclaims the batch
    meanwhile: the rest of the batch is not sent, and the stalled row's outcome is not written
    over the row another worker now holds."""
    with time_machine.travel(REMINDERS_DUE, tick=False) as clock:
        _only_emails(harvest, 3)
        channel = SlowChannel(clock, 301, meanwhile=notifications_reclaim_stale)
        statuses = _slow_batch(clock, channel, settings)
    assert list(statuses.values()) == [NotificationStatus.SENDING] * 3
    assert len(channel.sent) == 1
    rows = Notification.objects.filter(idempotency_key__startswith="drill.")
    assert set(rows.values_list("status", "claim_token", "attempts")) == {
        (NotificationStatus.PENDING, None, 0)
    }
    assert not DeliveryAttempt.objects.exists()


def test_a_stop_read_at_a_renewal_stops_the_rest_of_a_slow_batchs_texts(harvest, settings):
    from scheduling.replies import sms_consent_withdraw

    patient = harvest.course.patient
    Notification.objects.update(status=NotificationStatus.CANCELLED)
    with time_machine.travel(REMINDERS_DUE, tick=False) as clock:
        for i in range(3):
            Notification.objects.create(
                template=NotificationTemplate.VISIT_REMINDER,
                channel=Channel.SMS,
                patient=patient,
                visit=harvest,
                idempotency_key=f"text.{i}",
                send_after=REMINDERS_DUE,
            )

        def stop_after_the_first():
            sms_consent_withdraw(patient=patient, at=timezone.now(), source="test")

        channel = SlowChannel(clock, 120, meanwhile=stop_after_the_first)
        from delivery import outbox

        settings.NOTIFICATION_CLAIM_TIMEOUT = 300
        ids = notifications_claim(batch_size=10)
        batch = list(
            Notification.objects.filter(id__in=ids)
            .select_related("patient__site", "visit__course__site", "visit__course__protocol")
            .order_by("id")
        )
        statuses = outbox._claimed_send(batch, channels={Channel.SMS: channel})
    assert list(statuses.values()) == [NotificationStatus.SENT] + [NotificationStatus.CANCELLED] * 2
    assert channel.sent == ["text.0"]


@pytest.mark.parametrize("dies_after", [Channel.SMS, Channel.EMAIL])
def test_a_message_sent_again_after_a_crash_carries_the_same_key(
    harvest, smtp, twilio, settings, monkeypatch, dies_after
):
    """A process that dies after the provider took a message, before its outcome is written,
    leaves the row claimed: it goes again once the claim times out, and it alone (what was
    sent before it was written). The email goes again with the same Message-ID; the text with
    the same Idempotency-Key, which a provider that honours it (as the stand-in does) drops,
    answering with the first one's id."""
    from delivery import outbox

    record = outbox._outcomes_record

    def dying_before_the_write(outcomes):
        if any(outcome.notification.channel == dies_after for outcome in outcomes):
            raise RuntimeError("the process dies here")
        return record(outcomes)

    with at_first_reminder(harvest):
        monkeypatch.setattr(outbox, "_outcomes_record", dying_before_the_write)
        with pytest.raises(RuntimeError):
            notifications_dispatch_batch(batch_size=100)
        monkeypatch.setattr(outbox, "_outcomes_record", record)
    later = REMINDERS_DUE + dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT + 1)
    with time_machine.travel(later, tick=False):
        notifications_reclaim_stale()
        notifications_dispatch_batch(batch_size=100)
    sms = Notification.objects.get(visit=harvest, channel=Channel.SMS, status="sent")
    email = Notification.objects.get(visit=harvest, channel=Channel.EMAIL, status="sent")
    [text] = twilio.received  # a repeat is dropped
    assert text["Idempotency-Key"] == sms.idempotency_key
    assert sms.provider_message_id == twilio.sids_by_key[sms.idempotency_key]
    repeated_texts = {sms.idempotency_key: 1} if dies_after == Channel.SMS else {}
    assert twilio.repeats == repeated_texts
    emails = 2 if dies_after == Channel.EMAIL else 1
    assert smtp.message_ids() == {f"<{email.idempotency_key}@pathway-tracker>": emails}
