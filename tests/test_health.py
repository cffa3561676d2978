"""/healthz and /metrics: how the tracker is, in numbers, with nothing about a patient."""

import datetime as dt

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling.models import Channel, Notification, NotificationTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def beat_ran():
    PeriodicTask.objects.filter(task="scheduling.tasks.dispatch_due_notifications").update(
        last_run_at=timezone.now()
    )


def test_healthy_when_everything_answers_and_nothing_is_late(client, beat_ran):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert set(response.json()["checks"]) == {"database", "broker", "cache", "beat", "outbox"}


def test_failing_when_beat_has_stopped(client):
    PeriodicTask.objects.filter(task="scheduling.tasks.dispatch_due_notifications").update(
        last_run_at=timezone.now() - dt.timedelta(minutes=20)
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"]["ok"] is False


def test_failing_when_a_reminder_is_more_than_five_minutes_late(client, beat_ran, course):
    Notification.objects.create(
        template=NotificationTemplate.VISIT_REMINDER,
        channel=Channel.EMAIL,
        patient=course.patient,
        send_after=timezone.now() - dt.timedelta(minutes=6),
        idempotency_key="late.one",
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["outbox"]["ok"] is False
    assert course.patient.last_name not in response.content.decode()


def test_metrics_for_this_machine_or_a_token(client, settings, course):
    text = client.get("/metrics").content.decode()
    for name in (
        "tracker_outbox_due",
        "tracker_outbox_oldest_due_seconds",
        "tracker_alerts_open",
        "tracker_oldest_urgent_alert_seconds",
    ):
        assert name in text
    assert course.patient.mrn not in text
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 403
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert ok.status_code == 200 and "tracker_outbox_due" in ok.content.decode()
