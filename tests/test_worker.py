"""The outbox delivered by real Celery workers through a real Redis, to local stand-ins for
the SMTP relay and the SMS provider. Each test runs its own redis-server on a spare port, so
flushing, killing and restarting it disturbs nobody else."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from pathway import services
from pathway.states import CourseState
from scheduling.models import (
    Notification,
    NotificationStatus,
    Visit,
    VisitKind,
)
from tests.servers import (
    CeleryWorker,
    RedisServer,
    SmtpSink,
    TwilioStub,
    due_emails,
    sent_count,
    tick,
    wait_until,
    worker_env,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def booked_harvest(course, pathway):
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        place="Suite 2",
        scheduled_at=timezone.now() + dt.timedelta(days=10),
    )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def test_a_due_reminder_reaches_the_smtp_relay_and_the_sms_provider(booked_harvest):
    Notification.objects.update(send_after=timezone.now() - dt.timedelta(minutes=1))
    patient = booked_harvest.course.patient
    with RedisServer() as redis, SmtpSink() as smtp, TwilioStub() as twilio:  # noqa: SIM117
        with CeleryWorker("one", worker_env(redis, smtp, twilio)):
            tick(redis)
            wait_until(lambda: sent_count() == 4, timeout=60, what="4 reminders sent")
    assert [m["To"] for m in smtp.messages] == [patient.email] * 2
    assert [m["To"] for m in twilio.received] == [str(patient.phone)] * 2
    assert all(patient.first_name in m["Body"] for m in twilio.received)


def test_two_workers_deliver_each_of_1000_rows_exactly_once(booked_harvest):
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 1000)
    with RedisServer() as redis, SmtpSink() as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=50)
        with CeleryWorker("a", env), CeleryWorker("b", env) as second:
            started = time.monotonic()
            tick(redis)
            wait_until(lambda: sent_count() == 1000, timeout=180, what="1000 sent")
            elapsed = time.monotonic() - started
            both_worked = "dispatch_notification_batch" in second.output()
    received = smtp.message_ids()
    print(f"\ntwo workers: 1000 emails in {elapsed:.1f} s ({1000 / elapsed:.0f}/s)")
    assert set(received) == set(expected)
    assert max(received.values()) == 1, "a message was delivered twice"
    assert both_worked


def test_a_killed_worker_and_a_lost_redis_lose_nothing(booked_harvest):
    """Kill a worker mid-batch (SIGKILL), flush Redis, kill and restart it, start a new worker."""
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 600)
    with RedisServer() as redis, SmtpSink(delay=0.005) as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=50, NOTIFICATION_CLAIM_TIMEOUT=3)
        first = CeleryWorker("doomed", env).start()
        tick(redis)
        wait_until(lambda: sent_count() >= 150, timeout=60, what="delivery under way")
        first.kill()
        first.stop()
        in_flight = Notification.objects.filter(status=NotificationStatus.SENDING).count()
        assert sent_count() < 600, "the worker finished before it could be killed"
        redis.command("FLUSHALL")
        redis.stop()
        redis.start()  # empty: it keeps nothing on disk
        with CeleryWorker("survivor", env):
            deadline = time.monotonic() + 120
            while sent_count() < 600 and time.monotonic() < deadline:
                tick(redis)  # beat would, every minute
                time.sleep(1)
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(count - 1 for count in received.values())
    print(
        f"\nkill drill: 600 due, {in_flight} claimed at the kill, "
        f"lost {lost}, duplicated {duplicated}"
    )
    assert sent_count() == 600
    assert lost == 0
    # Only a message the relay had accepted and whose outcome was not yet written when its
    # worker process died can go twice: what was in flight, one per pool process (2).
    assert duplicated <= 2
