"""The archive of settled notifications, who reads it, and beat's hourly run that fills and
purges it."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from patients.role_migrations import grant

ARCHIVE_TASK_NAME = "Archive settled notifications and purge old ones"


def schedule_archive(apps, schema_editor):
    # Whoever reads the outbox reads its archive.
    view = "scheduling.view_notificationarchive"
    grant(apps, {"coordinator": [view], "programme lead": [view], "auditor": [view]})
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.update_or_create(
        name=ARCHIVE_TASK_NAME,
        defaults={
            "task": "scheduling.tasks.archive_notifications",
            "interval": every,
            "enabled": True,
        },
    )


def unschedule_archive(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name=ARCHIVE_TASK_NAME
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0014_questionnaire_history_append_only"),
        ("scheduling", "0029_delivery_attempt_time_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("pathway", "0011_auditor_role"),
    ]

    operations = [
        migrations.CreateModel(
            name="NotificationArchive",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                (
                    "template",
                    models.CharField(
                        choices=[
                            ("visit_reminder", "Appointment reminder"),
                            ("alert", "Coordinator alert"),
                            ("questionnaire", "Questionnaire to answer"),
                            ("weekly_report", "Weekly status report"),
                        ],
                        max_length=30,
                    ),
                ),
                (
                    "channel",
                    models.CharField(choices=[("email", "Email"), ("sms", "SMS")], max_length=10),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("sending", "Sending"),
                            ("sent", "Sent"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        max_length=20,
                    ),
                ),
                ("report_week", models.CharField(blank=True, max_length=8)),
                ("send_after", models.DateTimeField()),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("provider_message_id", models.CharField(blank=True, max_length=100)),
                ("idempotency_key", models.CharField(max_length=200)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                ("failed_at", models.DateTimeField(blank=True, null=True)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                (
                    "settled_at",
                    models.DateTimeField(
                        help_text="When it was settled: sent, failed, or (cancelled) when it would have been sent."
                    ),
                ),
                ("archived_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "purged_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When what it held about the patient was removed.",
                        null=True,
                    ),
                ),
                (
                    "patient",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="archived_notifications",
                        to="patients.patient",
                    ),
                ),
                (
                    "site",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="patients.site",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "visit",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="scheduling.visit",
                    ),
                ),
            ],
            options={
                "verbose_name": "archived notification",
                "ordering": ["-id"],
                "indexes": [
                    models.Index(fields=["sent_at"], name="notification_archive_sent_idx"),
                    models.Index(
                        condition=models.Q(("failed_at__isnull", False)),
                        fields=["failed_at"],
                        name="notification_archive_fail_idx",
                    ),
                    models.Index(
                        condition=models.Q(("purged_at__isnull", True)),
                        fields=["settled_at"],
                        name="notification_archive_purge_idx",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("idempotency_key",), name="notification_archive_key_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(schedule_archive, unschedule_archive),
    ]
