"""Answers that need a clinician reach the clinicians; check-ins are opened, reminded and
closed by beat every 15 minutes."""

from django.db import migrations


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    AlertRoute = apps.get_model("scheduling", "AlertRoute")
    clinician, _ = Group.objects.get_or_create(name="clinician")
    AlertRoute.objects.get_or_create(kind="symptoms", group=clinician, site=None)
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=15, period="minutes")
    PeriodicTask.objects.update_or_create(
        name="Open, remind and close check-ins",
        defaults={"task": "scheduling.tasks.checkins_tick", "interval": every, "enabled": True},
    )


def backwards(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name="Open, remind and close check-ins"
    ).delete()
    apps.get_model("scheduling", "AlertRoute").objects.filter(kind="symptoms").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0027_questionnaires"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
