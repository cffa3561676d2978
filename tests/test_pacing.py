"""The provider's pace: each sending number sends no faster than its provider allows, across
every worker (delivery/pacing.py)."""

import datetime as dt
import itertools
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from delivery.models import SenderPace
from delivery.pacing import sender_slot_reserve
from pathway import services
from pathway.states import CourseState
from scheduling.models import Channel, Notification, NotificationTemplate, Visit
from tests.servers import (
    CeleryWorker,
    RedisServer,
    SmtpSink,
    TwilioStub,
    tick,
    wait_until,
    worker_env,
)


def test_a_senders_slots_are_one_interval_apart(db):
    SenderPace.objects.create(sender="+441234000001", per_second=Decimal(4))
    waits = [sender_slot_reserve(sender="+441234000001") for _ in range(4)]
    # Reserved at once, a quarter of a second apart, the first now.
    assert waits[0] == pytest.approx(0, abs=0.05)
    assert [b - a for a, b in itertools.pairwise(waits)] == pytest.approx([0.25] * 3, abs=0.05)


def test_a_number_first_seen_gets_the_default_pace_and_keeps_its_own(db, settings):
    settings.SMS_SENDER_DEFAULT_PER_SECOND = 1.0  # a long code
    assert sender_slot_reserve(sender="+441234000002") == pytest.approx(0, abs=0.05)
    assert sender_slot_reserve(sender="+441234000002") == pytest.approx(1, abs=0.05)
    assert SenderPace.objects.get(sender="+441234000002").per_second == 1
    # Another number has a bucket of its own.
    assert sender_slot_reserve(sender="+441234000003") == pytest.approx(0, abs=0.05)


def test_a_sender_idle_for_a_while_sends_at_once(db):
    SenderPace.objects.create(
        sender="+441234000004",
        per_second=Decimal("0.5"),
        next_slot_at=timezone.now() - dt.timedelta(minutes=5),
    )
    assert sender_slot_reserve(sender="+441234000004") == pytest.approx(0, abs=0.05)
    assert sender_slot_reserve(sender="+441234000004") == pytest.approx(2, abs=0.05)


def test_the_pace_of_a_number_is_set_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/delivery/senderpace/add/", {"sender": "+441234000005", "per_second": "30"}
    )
    assert response.status_code == 302
    assert SenderPace.objects.get(sender="+441234000005").per_second == 30
    refused = admin_client.post(
        "/admin/delivery/senderpace/add/", {"sender": "+441234000006", "per_second": "0"}
    )
    assert (
        refused.status_code == 200
        and not SenderPace.objects.filter(sender="+441234000006").exists()
    )
    assert admin_client.get("/admin/delivery/senderpace/").status_code == 200


TEXTS, RATE = 24, 8.0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_burst_of_texts_leaves_at_the_providers_pace_and_none_is_refused(course, pathway):
    """Two workers (four pool processes) and a provider that refuses a number's messages
    beyond 8 a second: the texts due at once leave one slot apart, all of them, once."""
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        place="Suite 2",
        scheduled_at=timezone.now() + dt.timedelta(days=10),
    )
    visit = Visit.objects.get(course=course, kind="harvest")
    Notification.objects.all().delete()
    Notification.objects.bulk_create(
        Notification(
            template=NotificationTemplate.VISIT_REMINDER,
            channel=Channel.SMS,
            patient=course.patient,
            visit=visit,
            idempotency_key=f"burst.{i}",
            send_after=timezone.now() - dt.timedelta(minutes=1),
        )
        for i in range(TEXTS)
    )
    with (
        RedisServer() as redis,
        SmtpSink() as smtp,
        TwilioStub(per_second=RATE) as provider,
    ):
        env = worker_env(redis, smtp, provider, NOTIFICATION_BATCH_SIZE=6)
        workers = [CeleryWorker(f"pace{i}", env) for i in range(2)]
        try:
            for worker in workers:
                worker.start(wait=False)
            for worker in workers:
                worker.wait_ready()
            tick(redis)
            wait_until(
                lambda: len(provider.received) + provider.refused_for_pace >= TEXTS,
                timeout=60,
                what="every text sent or refused",
            )
            time.sleep(0.5)  # anything sent twice would arrive by now
        finally:
            for worker in workers:
                worker.stop()
    span = provider.arrivals[-1] - provider.arrivals[0]
    ideal = (TEXTS - 1) / RATE
    print(
        f"\npacing: {TEXTS} texts at {RATE:g}/s from 4 pool processes: {span:.2f} s "
        f"(ideal {ideal:.2f} s), refused by the provider {provider.refused_for_pace}"
    )
    assert provider.refused_for_pace == 0
    assert len(provider.received) == TEXTS  # each once
    assert Notification.objects.filter(status="sent").count() == TEXTS
    assert span >= ideal * 0.9  # paced: without it they all leave within a fraction of this
