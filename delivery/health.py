"""Is the tracker well, and how busy is it: `/healthz` for the load balancer and the on-call
person, `/metrics` for Prometheus. Neither says anything about a patient: ages and counts."""

import datetime as dt
from dataclasses import dataclass

from celery import current_app
from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from prometheus_client.core import GaugeMetricFamily

from common.rate_limits import shared_store_answers
from scheduling.models import Alert, DeliveryAttempt, Notification, NotificationStatus, Severity

# A reminder due longer ago than this, and not sent, means the sending has stopped.
LATE_AFTER = dt.timedelta(minutes=5)
DISPATCH_TASK = "scheduling.tasks.dispatch_due_notifications"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True, "answers")
    except Exception as error:  # any failure is the answer
        return Check("database", False, error.__class__.__name__)


def _broker() -> Check:
    try:
        with current_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        return Check("broker", True, "answers")
    except Exception as error:  # any failure is the answer
        return Check("broker", False, error.__class__.__name__)


def _cache() -> Check:
    """The shared Redis the rate limits count in: without it the pages still answer, each web
    process counting alone (common/rate_limits.py), but a guesser gets more tries."""
    answers = shared_store_answers()
    if answers is None:
        return Check("cache", True, "none configured: each process counts its own")
    if answers:
        return Check("cache", True, "answers")
    return Check("cache", False, "unreachable: rate limits counted in each process alone")


def _beat(now) -> Check:
    last = (
        PeriodicTask.objects.filter(task=DISPATCH_TASK, enabled=True)
        .values_list("last_run_at", flat=True)
        .first()
    )
    if last is None:
        return Check("beat", False, "the dispatcher has never run")
    age = now - last
    return Check("beat", age <= LATE_AFTER, f"last dispatch {age.total_seconds():.0f} s ago")


def oldest_due_age(now) -> dt.timedelta | None:
    """How late the oldest pending notification is; None when nothing is due."""
    oldest = Notification.objects.filter(
        status=NotificationStatus.PENDING, send_after__lte=now
    ).aggregate(oldest=Min("send_after"))["oldest"]
    return now - oldest if oldest else None


def _outbox(now) -> Check:
    age = oldest_due_age(now)
    if age is None:
        return Check("outbox", True, "nothing due")
    return Check("outbox", age <= LATE_AFTER, f"oldest due {age.total_seconds():.0f} s ago")


def health_checks(*, now: dt.datetime | None = None) -> list[Check]:
    now = now or timezone.now()
    database = _database()
    if not database.ok:
        return [database, _broker(), _cache()]
    return [database, _broker(), _cache(), _beat(now), _outbox(now)]


class TrackerCollector:
    """Read at each scrape, from the database's indexes: the outbox's backlog, the last
    hour's deliveries by channel and outcome, open alerts by kind, and the oldest
    unacknowledged urgent alert's age."""

    def collect(self):
        now = timezone.now()
        due = Notification.objects.filter(status=NotificationStatus.PENDING, send_after__lte=now)
        backlog = GaugeMetricFamily(
            "tracker_outbox_due", "Pending notifications whose time has come."
        )
        backlog.add_metric([], due.count())
        yield backlog
        late = GaugeMetricFamily(
            "tracker_outbox_oldest_due_seconds", "How late the oldest due notification is."
        )
        age = oldest_due_age(now)
        late.add_metric([], age.total_seconds() if age else 0)
        yield late
        deliveries = GaugeMetricFamily(
            "tracker_deliveries_last_hour",
            "Delivery attempts in the last hour, by channel and outcome.",
            labels=["channel", "outcome"],
        )
        attempts = (
            DeliveryAttempt.objects.filter(at__gte=now - dt.timedelta(hours=1))
            .values("notification__channel", "succeeded")
            .annotate(n=Count("id"))
        )
        for row in attempts:
            outcome = "delivered" if row["succeeded"] else "failed"
            deliveries.add_metric([row["notification__channel"], outcome], row["n"])
        yield deliveries
        open_alerts = Alert.objects.filter(acknowledged_at__isnull=True)
        by_kind = GaugeMetricFamily(
            "tracker_alerts_open", "Unacknowledged alerts, by kind.", labels=["kind"]
        )
        for row in open_alerts.values("kind").annotate(n=Count("id")):
            by_kind.add_metric([row["kind"]], row["n"])
        yield by_kind
        urgent = open_alerts.filter(severity=Severity.URGENT).aggregate(o=Min("created_at"))["o"]
        oldest = GaugeMetricFamily(
            "tracker_oldest_urgent_alert_seconds",
            "Age of the oldest unacknowledged urgent alert (0: none).",
        )
        oldest.add_metric([], (now - urgent).total_seconds() if urgent else 0)
        yield oldest
