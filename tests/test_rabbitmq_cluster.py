"""RabbitMQ as a cluster: three nodes of the test's own (own node names, ports, data and a
shared Erlang cookie; tests/clusters.py), the task queue a quorum queue with a member on each.
The workers are given every node's URL and are never told of a failure: they find a live node
by themselves."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from pathway import services
from pathway.states import CourseState
from scheduling.models import Notification, Visit
from tests.clusters import RabbitCluster
from tests.servers import (
    CeleryWorker,
    SmtpSink,
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

DUE = 600


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


def _deliver_for(rabbit, seconds: float) -> None:
    """What beat does meanwhile: a tick every second."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sent_count() < DUE:
        tick(rabbit)
        time.sleep(1)


def test_a_node_killed_then_the_workers_own_node_killed_loses_nothing(booked_harvest):
    Notification.objects.all().delete()
    expected = due_emails(booked_harvest, DUE)
    # A slow relay (0.1 s a message, 40 a second across 4 pool processes): delivery lasts
    # through both kills.
    with RabbitCluster() as rabbit, SmtpSink(delay=0.1) as smtp:
        env = worker_env(rabbit, smtp, NOTIFICATION_BATCH_SIZE=25, NOTIFICATION_CLAIM_TIMEOUT=5)
        workers = [CeleryWorker(f"rc{i}", env) for i in range(2)]
        try:
            for worker in workers:
                worker.start(wait=False)
            for worker in workers:
                worker.wait_ready()
            started = time.monotonic()
            tick(rabbit)
            wait_until(lambda: sent_count() >= DUE // 6, timeout=60, what="delivery under way")
            members = rabbit.queue_members()
            first_connected = rabbit.connected_nodes()
            # A node the workers are not on.
            spare = next(n for n in rabbit.nodes if n not in first_connected)
            spare.kill()
            _deliver_for(rabbit, 2)
            sent_with_a_node_down = sent_count()
            spare.start().wait_booted()
            # Then the node the workers are on.
            [theirs] = rabbit.connected_nodes() or first_connected
            at_second_kill = sent_count()
            theirs.kill()
            _deliver_for(rabbit, 2)
            theirs.start().wait_booted()
            _deliver_for(rabbit, 180)
            elapsed = time.monotonic() - started
            now_connected = rabbit.connected_nodes()
            alive = all(w.process.poll() is None for w in workers)
        finally:
            for worker in workers:
                worker.stop()
    received = smtp.message_ids()
    lost = len(set(expected) - set(received))
    duplicated = sum(n - 1 for n in received.values())
    print(
        f"\nRabbitMQ cluster drill: {DUE} due, quorum queue on {members} nodes; "
        f"{spare.name} killed, then {theirs.name} (the workers'), each restarted; "
        f"lost {lost}, duplicated {duplicated}, {elapsed:.0f} s; workers now on "
        f"{sorted(n.name for n in now_connected)}"
    )
    assert members == 3
    assert theirs is not spare
    assert sent_with_a_node_down > DUE // 6  # delivery went on with a node down
    assert at_second_kill < DUE  # the workers' node went while there was work
    assert alive  # nobody restarted the workers: they moved to a live node themselves
    assert (sent_count(), lost) == (DUE, 0)
    # A message whose outcome was not yet written when its worker lost the broker may go
    # again: at most the one in flight per pool process (each written before the next send).
    assert duplicated <= 2 * 2
