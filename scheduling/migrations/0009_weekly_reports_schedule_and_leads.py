"""The weekly-report job, and the programme lead role that receives the report across sites."""

from django.db import migrations

from patients.role_migrations import grant

LEAD_PERMISSIONS = [
    ("patients", "view_site"), ("patients", "view_patient"),
    ("pathway", "view_treatmentcourse"), ("pathway", "view_transitionlog"),
    ("pathway", "view_batch"), ("pathway", "view_protocol"),
    ("scheduling", "view_visit"), ("scheduling", "view_alert"), ("scheduling", "view_notification"),
]


def create(apps, schema_editor):
    grant(apps, {"programme lead": [f"{app}.{codename}" for app, codename in LEAD_PERMISSIONS]})
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.update_or_create(
        name="Queue weekly reports (Monday 07:00 site time)",
        defaults={"task": "scheduling.tasks.queue_weekly_reports", "interval": every, "enabled": True},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0008_weekly_reports"),
        ("pathway", "0010_manufacturing_permissions"),
        ("patients", "0003_clinical_record_permissions"),
    ]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
