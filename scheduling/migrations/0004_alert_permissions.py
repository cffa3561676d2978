"""Let each role see the alerts and deliveries its work needs."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "coordinator": [
        "view_alert", "change_alert", "view_notification", "view_deliveryattempt",
    ],
    "clinician": ["view_alert"],
    "lab": ["view_alert", "change_alert"],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("scheduling")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="scheduling", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0003_beat_schedule"),
        ("pathway", "0003_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
