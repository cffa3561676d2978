"""Let each role see the alerts and deliveries its work needs."""

from django.db import migrations

from patients import role_migrations

ROLE_PERMISSIONS = {
    "coordinator": [
        "view_alert", "change_alert", "view_notification", "view_deliveryattempt",
    ],
    "clinician": ["view_alert"],
    "lab": ["view_alert", "change_alert"],
}


def grant(apps, schema_editor):
    role_migrations.grant(
        apps, {role: [f"scheduling.{c}" for c in codenames] for role, codenames in ROLE_PERMISSIONS.items()}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0003_beat_schedule"),
        ("pathway", "0003_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
