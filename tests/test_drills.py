"""Fault drills on a Redis and workers of the test's own: each reports its figures."""

import datetime as dt
import time

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from delivery.outbox import (
    notification_batches_due,
    notifications_dispatch_batch,
    notifications_reclaim_stale,
)
from pathway import services
from pathway.models import TransitionLog
from pathway.scans import alerts_scan_overdue
from pathway.states import CourseState
from reporting.weekly_report import weekly_reports_queue
from scheduling.models import Alert, Notification, NotificationStatus, Visit
from tests.servers import (
    CeleryWorker,
    RabbitMQ,
    RedisServer,
    SmtpSink,
    due_emails,
    sent_count,
    tick,
    wait_until,
    worker_env,
)
from tests.support import run_together

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
    return Visit.objects.get(course=course, kind="harvest")


def test_50_concurrent_attempts_at_one_transition(course, pathway):
    pathway.advance(course, CourseState.ELIGIBLE)
    at = timezone.now() + dt.timedelta(days=10)

    def schedule(c):
        services.course_schedule_harvest(
            course=c, by=pathway.coordinator, scheduled_at=at, place="Suite 2"
        )

    outcomes = run_together([(course.pk, schedule)] * 50)
    print(
        f"\n50 concurrent attempts: {outcomes.count('won')} won, {outcomes.count('lost')} lost, "
        f"{len(outcomes) - outcomes.count('won') - outcomes.count('lost')} other"
    )
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 49
    assert TransitionLog.objects.filter(course=course, transition="schedule_harvest").count() == 1
    visits = Visit.objects.filter(course=course, kind="harvest")
    assert visits.count() == 1
    assert Notification.objects.filter(visit=visits.get()).count() == 4  # one set of reminders


def test_redis_flushed_then_killed_and_restarted_mid_delivery_of_10000(booked_harvest):
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 10_000)
    with RedisServer() as redis, SmtpSink() as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=100, NOTIFICATION_CLAIM_TIMEOUT=5)
        restarts = 0
        with CeleryWorker("r1", env) as first, CeleryWorker("r2", env) as second:
            started = time.monotonic()
            tick(redis)
            wait_until(lambda: sent_count() >= 2_000, timeout=120, what="delivery under way")
            redis.command("FLUSHALL")
            redis.stop()
            time.sleep(1)
            redis.start()
            deadline = time.monotonic() + 300
            while sent_count() < 10_000 and time.monotonic() < deadline:
                restarts += first.restart_if_exited() + second.restart_if_exited()
                tick(redis)
                time.sleep(2)
            elapsed = time.monotonic() - started
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(n - 1 for n in received.values())
    print(
        f"\nRedis drill: 10000 due, lost {lost}, duplicated {duplicated}, "
        f"{restarts} worker restart(s), {elapsed:.0f} s"
    )
    assert (sent_count(), lost) == (10_000, 0)
    # A worker that crashed sends again what each of its pool processes had sent and not yet
    # written: at most NOTIFICATION_OUTCOME_WRITE_EVERY messages each (outcomes_write_due).
    assert duplicated <= restarts * 2 * settings.NOTIFICATION_OUTCOME_WRITE_EVERY


def test_rabbitmq_restarted_and_workers_killed_mid_delivery_of_10000(booked_harvest):
    """RabbitMQ as the broker (a quorum queue, publisher confirms): both workers SIGKILLed and
    the broker stopped and started while 10,000 emails are due. Nothing is lost; duplicates
    are counted and bounded by what the killed workers had in hand."""
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 10_000)
    with RabbitMQ() as rabbit, SmtpSink() as smtp:
        env = worker_env(rabbit, smtp, NOTIFICATION_BATCH_SIZE=100, NOTIFICATION_CLAIM_TIMEOUT=5)
        with CeleryWorker("q1", env) as first, CeleryWorker("q2", env) as second:
            started = time.monotonic()
            tick(rabbit)
            wait_until(lambda: sent_count() >= 2_000, timeout=120, what="delivery under way")
            first.kill()
            second.kill()
            rabbit.stop()
            time.sleep(1)
            rabbit.start()
            first.start()
            second.start()
            deadline = time.monotonic() + 300
            while sent_count() < 10_000 and time.monotonic() < deadline:
                tick(rabbit)
                time.sleep(2)
            elapsed = time.monotonic() - started
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(n - 1 for n in received.values())
    print(
        f"\nRabbitMQ drill: 10000 due, lost {lost}, duplicated {duplicated}, "
        f"2 workers killed, broker restarted, {elapsed:.0f} s"
    )
    assert (sent_count(), lost) == (10_000, 0)
    # Each killed worker sends again what each of its pool processes had sent and not yet
    # written: at most NOTIFICATION_OUTCOME_WRITE_EVERY messages each (outcomes_write_due).
    assert duplicated <= 2 * 2 * settings.NOTIFICATION_OUTCOME_WRITE_EVERY


def test_workers_killed_every_few_seconds_lose_nothing(booked_harvest):
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 3_000)
    kills, in_flight_at_kills = 0, 0
    with RedisServer() as redis, SmtpSink(delay=0.002) as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=50, NOTIFICATION_CLAIM_TIMEOUT=3)
        deadline = time.monotonic() + 240
        while sent_count() < 3_000 and time.monotonic() < deadline:
            worker = CeleryWorker(f"k{kills}", env).start()
            tick(redis)
            time.sleep(3)
            if sent_count() < 3_000:
                worker.kill()
                kills += 1
                # Per pool process, the messages sent and not yet written (outcomes_write_due).
                in_flight_at_kills += 2 * settings.NOTIFICATION_OUTCOME_WRITE_EVERY
            worker.stop()
        survivor = CeleryWorker("last", env).start()
        while sent_count() < 3_000 and time.monotonic() < deadline + 60:
            tick(redis)
            time.sleep(2)
        survivor.stop()
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(n - 1 for n in received.values())
    print(f"\nSIGKILL drill: 3000 due, {kills} kills, lost {lost}, duplicated {duplicated}")
    assert kills >= 2
    assert lost == 0 and sent_count() == 3_000
    # A message the relay had accepted and whose outcome was not yet written when its process
    # died is sent again: at most NOTIFICATION_OUTCOME_WRITE_EVERY per pool process per kill
    # (written in groups, not one by one: see outcomes_write_due). Zero would need a provider
    # that deduplicates on our key.
    assert duplicated <= in_flight_at_kills


def test_the_database_connection_dropped_under_a_worker(booked_harvest):
    """Celery closes the database connection around each task, so the drill drops it in the
    middle of one: that batch fails, and the same worker goes on with the next."""
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 60)
    with RedisServer() as redis, SmtpSink(delay=0.05) as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=20, NOTIFICATION_CLAIM_TIMEOUT=3)
        with CeleryWorker("db", env, concurrency=1) as worker:
            tick(redis)
            wait_until(lambda: sent_count() >= 5, timeout=60, what="a batch under way")
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()) AS dropped"
                )
                dropped = cursor.fetchone()[0]
            deadline = time.monotonic() + 90
            while sent_count() < 60 and time.monotonic() < deadline:
                tick(redis)
                time.sleep(1)
            still_running = worker.process.poll() is None
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(n - 1 for n in received.values())
    print(
        f"\ndatabase drill: {dropped} connection(s) dropped mid-batch, lost {lost}, "
        f"duplicated {duplicated}, worker restarted: {not still_running}"
    )
    assert dropped >= 1 and still_running
    assert lost == 0 and sent_count() == 60
    assert duplicated <= 1  # the message in the relay's hands when the connection went


def test_two_beats_for_ten_minutes_do_each_slot_once(course, pathway, coordinator, booked_harvest):
    """Two beat processes fire every job twice per slot; the work is still done once."""
    Notification.objects.filter(visit=booked_harvest).update(send_after=timezone.now())
    booked_harvest.course.site.coordinators.add(coordinator)
    sends = []

    def dispatch_like_a_beat():
        notifications_reclaim_stale()
        for _ in range(notification_batches_due(batch_size=100)):
            sends.append(notifications_dispatch_batch(batch_size=100).sent)

    start = timezone.now()
    for minute in range(10):
        with time_machine.travel(start + dt.timedelta(minutes=minute), tick=False):
            for _beat in range(2):
                dispatch_like_a_beat()
                alerts_scan_overdue()
                weekly_reports_queue()
    delivered = Notification.objects.filter(status=NotificationStatus.SENT).count()
    print(f"\ntwo beats, 10 slots: {sum(sends)} sends for {delivered} notifications")
    assert sum(sends) == delivered
    assert Notification.objects.filter(template="weekly_report").count() == (
        Notification.objects.filter(template="weekly_report")
        .values("idempotency_key")
        .distinct()
        .count()
    )
    assert Alert.objects.count() == Alert.objects.values("condition_key").distinct().count()
