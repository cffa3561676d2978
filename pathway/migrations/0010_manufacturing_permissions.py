"""Who records QC, who sees batches, who records custody events."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "lab": ["view_batch", "change_batch", "view_custodyevent", "add_custodyevent"],
    "coordinator": ["view_batch", "view_custodyevent", "add_custodyevent"],
    "clinician": ["view_batch", "view_custodyevent", "add_custodyevent"],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("pathway")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="pathway", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [("pathway", "0009_custody_append_only_trigger")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
