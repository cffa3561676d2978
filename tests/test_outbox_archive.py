"""The outbox's archive: settled notifications move out after the retention, a key archived is
never written or sent again, the purge keeps counts and forgets the patient."""

import datetime as dt
import io
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from delivery.outbox import notifications_dispatch_batch
from pathway import services
from pathway.states import CourseState
from reporting.weekly_report import weekly_report, weekly_reports_queue
from scheduling.alerts import alert_raise
from scheduling.models import (
    AlertKind,
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationArchive,
    NotificationStatus,
    NotificationTemplate,
    Visit,
    VisitKind,
)
from scheduling.outbox import notifications_write, purged_key
from scheduling.outbox_archive import (
    archive_run,
    notifications_archive,
    notifications_archive_purge,
    reminder_counts,
)
from scheduling.services import visit_reschedule
from tests.factories import PatientFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)


def outbox_row(key, status, *, send_after, patient=None, **fields):
    return Notification.objects.create(
        template=NotificationTemplate.VISIT_REMINDER,
        channel=Channel.EMAIL,
        patient=patient or PatientFactory(),
        send_after=send_after,
        status=status,
        idempotency_key=key,
        **fields,
    )


def hot_keys():
    return set(Notification.objects.values_list("idempotency_key", flat=True))


def archived():
    return set(NotificationArchive.objects.values_list("idempotency_key", flat=True))


def test_what_has_settled_past_the_retention_moves_and_nothing_else(settings):
    settings.NOTIFICATION_ARCHIVE_AFTER_DAYS = 90
    now = timezone.now()
    old, recent, ahead = now - 100 * DAY, now - 10 * DAY, now + 5 * DAY
    patient = PatientFactory()
    sent = outbox_row(
        "sent-old",
        NotificationStatus.SENT,
        send_after=old,
        sent_at=old,
        patient=patient,
        attempts=2,
        last_error="",
        provider_message_id="SM1",
    )
    DeliveryAttempt.objects.create(notification=sent, at=old, succeeded=False, error="busy")
    DeliveryAttempt.objects.create(notification=sent, at=old, succeeded=True)
    outbox_row("failed-old", NotificationStatus.FAILED, send_after=old, failed_at=old)
    outbox_row("cancelled-old", NotificationStatus.CANCELLED, send_after=old)
    outbox_row("sent-recent", NotificationStatus.SENT, send_after=recent, sent_at=recent)
    outbox_row("failed-recent", NotificationStatus.FAILED, send_after=recent, failed_at=recent)
    # Cancelled long ago, but its time is ahead: a visit moved back would revive it.
    outbox_row("cancelled-ahead", NotificationStatus.CANCELLED, send_after=ahead)
    outbox_row("pending-overdue", NotificationStatus.PENDING, send_after=old)
    outbox_row("sending", NotificationStatus.SENDING, send_after=old, claimed_at=old)

    assert notifications_archive(batch_size=2) == 3

    assert archived() == {"sent-old", "failed-old", "cancelled-old"}
    assert hot_keys() == {
        "sent-recent",
        "failed-recent",
        "cancelled-ahead",
        "pending-overdue",
        "sending",
    }
    row = NotificationArchive.objects.get(idempotency_key="sent-old")
    assert (row.id, row.patient, row.site_id) == (sent.id, patient, patient.site_id)
    assert (row.attempts, row.provider_message_id, row.settled_at) == (2, "SM1", old)
    assert not DeliveryAttempt.objects.exists()  # the row keeps their count
    assert NotificationArchive.objects.get(idempotency_key="cancelled-old").settled_at == old
    assert notifications_archive() == 0  # nothing twice


def test_batches_and_a_limit(settings):
    old = timezone.now() - 100 * DAY
    for i in range(5):
        outbox_row(f"k{i}", NotificationStatus.SENT, send_after=old, sent_at=old)
    assert notifications_archive(batch_size=2, limit=3) == 3
    assert notifications_archive(batch_size=2) == 2
    assert Notification.objects.count() == 0


def test_staff_mail_counts_towards_the_reports_or_the_alerts_site(course, coordinator):
    course.patient.coordinator = coordinator
    course.patient.save()
    old = timezone.now() - 100 * DAY
    site = SiteFactory(code="RPT")
    Notification.objects.create(
        template=NotificationTemplate.WEEKLY_REPORT,
        channel=Channel.EMAIL,
        user=coordinator,
        report_site=site,
        report_week="2026-W01",
        send_after=old,
        status=NotificationStatus.SENT,
        sent_at=old,
        idempotency_key="weekly.2026-W01.RPT",
    )
    alert, _ = alert_raise(
        kind=AlertKind.VISIT_OVERDUE, course=course, condition_key="c", message="Late."
    )
    alert.notifications.update(status=NotificationStatus.SENT, sent_at=old)
    assert notifications_archive() == 2
    sites = dict(NotificationArchive.objects.values_list("template", "site_id"))
    assert sites == {"weekly_report": site.pk, "alert": course.site_id}


# A key archived is never written again. The clock stays before the reminders' times, so that
# only the key, not the time having passed, can stop a second one; the archive is run with a
# `now` far enough ahead for the rows to have settled past a retention of 0 days.


@pytest.fixture
def harvest(course, pathway):
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now().replace(microsecond=0) + 10 * DAY,
        place="Suite 2",
    )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def archive_everything_settled(later=DAY):
    return notifications_archive(now=timezone.now() + later, after_days=0)


def test_a_reminder_sent_and_archived_is_not_written_again_when_the_visit_moves_back(harvest):
    original = harvest.scheduled_at
    reminders = Notification.objects.filter(visit=harvest)
    first = set(reminders.values_list("idempotency_key", flat=True))
    assert len(first) == 4
    reminders.update(status=NotificationStatus.SENT, sent_at=timezone.now())
    assert archive_everything_settled() == 4

    visit_reschedule(visit=harvest, scheduled_at=original + DAY)
    visit_reschedule(visit=harvest, scheduled_at=original)

    assert not first & hot_keys()
    assert not reminders.filter(status=NotificationStatus.PENDING).exists()
    assert notifications_dispatch_batch(batch_size=100).claimed == 0


def test_a_cancelled_reminder_archived_is_not_revived(harvest):
    original = harvest.scheduled_at
    first = set(
        Notification.objects.filter(visit=harvest).values_list("idempotency_key", flat=True)
    )
    visit_reschedule(visit=harvest, scheduled_at=original + DAY)  # the first four cancelled
    # Archived once their time has passed (as the archiver would see them then).
    assert archive_everything_settled(later=20 * DAY) == 4
    assert archived() == first

    visit_reschedule(visit=harvest, scheduled_at=original)

    assert not first & hot_keys()
    assert not Notification.objects.filter(status=NotificationStatus.PENDING).exists()


def test_a_weekly_report_sent_and_archived_is_not_queued_again(coordinator):
    SiteFactory(code="LDN").coordinators.add(coordinator)
    monday = dt.datetime(2026, 3, 30, 7, 30, tzinfo=dt.UTC)
    weekly_reports_queue(now=monday)
    queued = hot_keys()
    assert len(queued) == 1
    Notification.objects.update(status=NotificationStatus.SENT, sent_at=monday)
    assert notifications_archive(now=monday + DAY, after_days=0) == 1

    weekly_reports_queue(now=monday + dt.timedelta(hours=1))

    assert hot_keys() == set() and archived() == queued


def test_an_alerts_email_sent_and_archived_is_not_written_again(course, coordinator):
    course.patient.coordinator = coordinator
    course.patient.save()
    alert, _ = alert_raise(
        kind=AlertKind.VISIT_OVERDUE, course=course, condition_key="c", message="Late."
    )
    [email] = alert.notifications.all()
    alert.notifications.update(status=NotificationStatus.SENT, sent_at=timezone.now())
    assert archive_everything_settled() == 1
    again = Notification(
        template=email.template,
        channel=email.channel,
        user=email.user,
        alert=alert,
        send_after=timezone.now(),
        idempotency_key=email.idempotency_key,
    )

    assert notifications_write([again]) == []
    assert alert_raise(
        kind=AlertKind.VISIT_OVERDUE, course=course, condition_key="c", message="Late."
    ) == (alert, False)
    assert hot_keys() == set()


def test_a_key_stays_used_after_the_purge(settings):
    old = timezone.now() - 800 * DAY
    outbox_row("reminder.v1.7d.sms.1", NotificationStatus.SENT, send_after=old, sent_at=old)
    notifications_archive()
    assert notifications_archive_purge() == 1
    assert archived() == {purged_key("reminder.v1.7d.sms.1")}
    fresh = Notification(
        template=NotificationTemplate.VISIT_REMINDER,
        channel=Channel.SMS,
        patient=PatientFactory(),
        send_after=timezone.now() + DAY,
        idempotency_key="reminder.v1.7d.sms.1",
    )
    assert notifications_write([fresh], revive_cancelled=True) == []
    assert hot_keys() == set()


def test_the_purge_forgets_the_patient_and_keeps_what_reports_count(settings):
    settings.NOTIFICATION_ARCHIVE_AFTER_DAYS, settings.NOTIFICATION_PURGE_AFTER_DAYS = 90, 730
    now = timezone.now()
    patient = PatientFactory()
    for key, days in (("two-years", 800), ("one-year", 400)):
        at = now - days * DAY
        outbox_row(
            key,
            NotificationStatus.FAILED,
            send_after=at,
            failed_at=at,
            patient=patient,
            attempts=5,
            last_error="550 mailbox jane.doe@example.com unknown",
            provider_message_id="SM42",
        )
    start, end = now - 801 * DAY, now
    before = reminder_counts(sites=[patient.site], start=start, end=end)
    assert archive_run().archived == 2 and before == {"sent": 0, "failed": 2, "pending": 0}

    purged = NotificationArchive.objects.get(idempotency_key=purged_key("two-years"))
    assert (purged.patient, purged.visit, purged.last_error, purged.provider_message_id) == (
        None,
        None,
        "",
        "",
    )
    assert purged.purged_at is not None
    assert (purged.site_id, purged.status, purged.attempts) == (patient.site_id, "failed", 5)
    kept = NotificationArchive.objects.get(idempotency_key="one-year")
    assert kept.patient == patient and kept.purged_at is None
    assert reminder_counts(sites=[patient.site], start=start, end=end) == before


def test_the_weekly_reports_counts_include_the_archive(course):
    site = course.site
    week, monday = "2026-W10", dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    patient = course.patient
    for i in range(3):
        outbox_row(
            f"s{i}", NotificationStatus.SENT, send_after=monday, sent_at=monday, patient=patient
        )
    outbox_row("f", NotificationStatus.FAILED, send_after=monday, failed_at=monday, patient=patient)
    outbox_row(
        "p",
        NotificationStatus.PENDING,
        send_after=timezone.now() + DAY,
        created_at=monday,
        patient=patient,
    )
    # Pending at the week's end, sent the week after: pending in this week's report.
    outbox_row(
        "late",
        NotificationStatus.SENT,
        send_after=monday,
        sent_at=monday + 8 * DAY,
        created_at=monday,
        patient=patient,
    )
    before = weekly_report(week=week, site=site).reminders
    assert before == {"sent": 3, "failed": 1, "pending": 2}
    assert notifications_archive(after_days=0) == 5
    assert weekly_report(week=week, site=site).reminders == before
    assert weekly_report(week=week, site=SiteFactory(code="OTH")).reminders == {
        "sent": 0,
        "failed": 0,
        "pending": 0,
    }


def test_the_command_says_what_it_moved_and_purged(settings):
    old = timezone.now() - 100 * DAY
    for i in range(3):
        outbox_row(f"k{i}", NotificationStatus.SENT, send_after=old, sent_at=old)
    out = io.StringIO()
    call_command("notifications_archive", "--batch-size", "2", "--limit", "2", stdout=out)
    assert out.getvalue().startswith("Archived 2 notification(s) settled more than 90 days ago;")
    call_command("notifications_archive", stdout=out)
    assert "Archived 1 notification(s)" in out.getvalue()


def test_beat_archives_every_hour():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="scheduling.tasks.archive_notifications")
    assert (task.enabled, task.interval.every, task.interval.period) == (True, 1, "hours")


def test_the_archive_is_read_only_in_the_admin_and_scoped_to_the_users_sites(client, admin_user):
    old = timezone.now() - 100 * DAY
    own, other = PatientFactory(), PatientFactory()
    for patient in (own, other):
        outbox_row(
            f"k{patient.pk}", NotificationStatus.SENT, send_after=old, sent_at=old, patient=patient
        )
    notifications_archive()
    row = NotificationArchive.objects.get(patient=own)
    client.force_login(admin_user)
    assert client.get(reverse("admin:scheduling_notificationarchive_changelist")).status_code == 200
    assert (
        client.get(
            reverse("admin:scheduling_notificationarchive_change", args=[row.pk])
        ).status_code
        == 200
    )
    assert client.get(reverse("admin:scheduling_notificationarchive_add")).status_code == 403
    assert (
        client.get(
            reverse("admin:scheduling_notificationarchive_delete", args=[row.pk])
        ).status_code
        == 403
    )

    coordinator = UserFactory(username="own-site", role="coordinator", sites=[own.site])
    client.force_login(coordinator)
    listed = client.get(reverse("admin:scheduling_notificationarchive_changelist"))
    assert [r.pk for r in listed.context["cl"].result_list] == [row.pk]
    other_row = NotificationArchive.objects.get(patient=other)
    change = reverse("admin:scheduling_notificationarchive_change", args=[other_row.pk])
    assert client.get(change).status_code == 404


# The race: a writer offers a key while an archive batch is moving it.


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_writer_racing_the_archiver_writes_nothing_once_the_key_is_archived():
    coordinator = UserFactory(username="racer", email="racer@clinic.test")
    SiteFactory(code="LDN", staff=[]).coordinators.add(coordinator)
    monday = dt.datetime(2026, 3, 30, 7, 30, tzinfo=dt.UTC)
    weekly_reports_queue(now=monday)
    Notification.objects.update(status=NotificationStatus.SENT, sent_at=monday)
    [key] = hot_keys()

    moved, go_on = threading.Event(), threading.Event()

    def archiver():
        try:
            with transaction.atomic():
                notifications_archive(now=monday + DAY, after_days=0)
                moved.set()
                go_on.wait(timeout=10)  # the batch holds its rows, uncommitted
        finally:
            connection.close()

    def writer():
        try:
            weekly_reports_queue(now=monday + dt.timedelta(hours=1))
        finally:
            connection.close()

    archiving = threading.Thread(target=archiver)
    archiving.start()
    assert moved.wait(timeout=10)
    writing = threading.Thread(target=writer)
    writing.start()
    time.sleep(0.5)
    assert writing.is_alive()  # waiting on the outbox's unique index for the batch
    go_on.set()
    archiving.join(timeout=10)
    writing.join(timeout=10)

    assert hot_keys() == set() and archived() == {key}
