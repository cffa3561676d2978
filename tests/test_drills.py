"""Fault drills on a Redis and workers of the test's own: each reports its figures."""

import contextlib
import datetime as dt
import os
import time

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

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


# Pool processes per worker in the drills (`celery worker --concurrency`): what a worker that
# dies can have in flight, one message per process (delivery/outbox.py, _claimed_send).
CONCURRENCY = 2


# Emails due in the Redis and RabbitMQ drills: enough for 30 batches of 100 under faults, so
# each fault lands mid-delivery; `DRILL_EMAILS=10000 make test ARGS=tests/test_drills.py` soaks.
DRILL_EMAILS = int(os.environ.get("DRILL_EMAILS", "3000"))


def _share(percent: int) -> int:
    return DRILL_EMAILS * percent // 100


def _duplicated(received) -> int:
    return sum(n - 1 for n in received.values())


def test_a_worker_killed_redis_flushed_then_killed_and_restarted_mid_delivery(booked_harvest):
    """DRILL_EMAILS due emails, 2 workers: one SIGKILLed at 20 % (and restarted, as a supervisor
    would), Redis flushed at 40 %, Redis SIGKILLed and restarted at 60 %. Nothing is lost;
    nothing goes twice but what was in flight when a worker died: at most one message per
    pool process of each worker that died (the kill, and any crash in kombu on the restart)."""
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, DRILL_EMAILS)
    with RedisServer() as redis, SmtpSink() as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=100, NOTIFICATION_CLAIM_TIMEOUT=5)
        workers = [CeleryWorker(f"r{n}", env, concurrency=CONCURRENCY) for n in (1, 2)]
        deaths = 0

        def deliver_until(count: int, *, timeout: float):
            """Beat's ticks, and a supervisor's restarts, until `count` are sent."""
            nonlocal deaths
            deadline = time.monotonic() + timeout
            while sent_count() < count and time.monotonic() < deadline:
                deaths += sum(worker.restart_if_exited() for worker in workers)
                with contextlib.suppress(OSError, KombuError, RedisError):  # Redis coming back
                    tick(redis)
                time.sleep(1)

        started = time.monotonic()
        for worker in workers:
            worker.start()
        try:
            tick(redis)
            wait_until(lambda: sent_count() >= _share(20), timeout=120, what="20 % sent")
            workers[0].kill()
            deaths += 1
            workers[0].start()
            deliver_until(_share(40), timeout=120)
            redis.command("FLUSHALL")
            deliver_until(_share(60), timeout=120)
            redis.kill()
            time.sleep(1)
            redis.start()
            deliver_until(DRILL_EMAILS, timeout=300)
            elapsed = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = _duplicated(received)
    print(
        f"\nRedis drill: {DRILL_EMAILS} due, lost {lost}, duplicated {duplicated} over "
        f"{sum(n > 1 for n in received.values())} Message-IDs, {deaths} worker death(s) "
        f"(1 killed, {deaths - 1} crashed on the restart) x {CONCURRENCY} processes, "
        f"{elapsed:.0f} s"
    )
    assert (sent_count(), lost) == (DRILL_EMAILS, 0)
    assert duplicated <= deaths * CONCURRENCY


def test_rabbitmq_restarted_and_workers_killed_mid_delivery(booked_harvest):
    """RabbitMQ as the broker (a quorum queue, publisher confirms): both workers SIGKILLed and
    the broker stopped and started while DRILL_EMAILS emails are due. Nothing is lost; duplicates
    are counted and bounded by what the killed workers had in hand."""
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, DRILL_EMAILS)
    with RabbitMQ() as rabbit, SmtpSink() as smtp:
        env = worker_env(rabbit, smtp, NOTIFICATION_BATCH_SIZE=100, NOTIFICATION_CLAIM_TIMEOUT=5)
        with (
            CeleryWorker("q1", env, concurrency=CONCURRENCY) as first,
            CeleryWorker("q2", env, concurrency=CONCURRENCY) as second,
        ):
            started = time.monotonic()
            tick(rabbit)
            wait_until(lambda: sent_count() >= _share(20), timeout=120, what="delivery under way")
            first.kill()
            second.kill()
            rabbit.stop()
            time.sleep(1)
            rabbit.start()
            first.start()
            second.start()
            deadline = time.monotonic() + 300
            while sent_count() < DRILL_EMAILS and time.monotonic() < deadline:
                tick(rabbit)
                time.sleep(2)
            elapsed = time.monotonic() - started
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = _duplicated(received)
    print(
        f"\nRabbitMQ drill: {DRILL_EMAILS} due, lost {lost}, duplicated {duplicated}, "
        f"2 workers killed, broker restarted, {elapsed:.0f} s"
    )
    assert (sent_count(), lost) == (DRILL_EMAILS, 0)
    # What was in flight: the message in the hands of each pool process of each worker killed.
    assert duplicated <= 2 * CONCURRENCY


def test_workers_killed_every_few_seconds_lose_nothing(booked_harvest):
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, 3_000)
    kills, in_flight_at_kills = 0, 0
    with RedisServer() as redis, SmtpSink(delay=0.002) as smtp:
        env = worker_env(redis, smtp, NOTIFICATION_BATCH_SIZE=50, NOTIFICATION_CLAIM_TIMEOUT=3)
        deadline = time.monotonic() + 240
        while sent_count() < 3_000 and time.monotonic() < deadline:
            worker = CeleryWorker(f"k{kills}", env, concurrency=CONCURRENCY).start()
            tick(redis)
            time.sleep(3)
            if sent_count() < 3_000:
                worker.kill()
                kills += 1
                in_flight_at_kills += CONCURRENCY  # one message per pool process, at most
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
    # died is sent again: at most one per pool process per kill, what was in flight. Zero would
    # need a relay that drops a repeated Message-ID.
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
