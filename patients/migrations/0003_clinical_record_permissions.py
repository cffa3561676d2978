"""Clinicians record the new clinical records; coordinators read them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

MODELS = ("sixminutewalktest", "symptomscore", "medication", "adverseevent")
ROLE_PERMISSIONS = {
    "clinician": [f"{action}_{model}" for model in MODELS for action in ("add", "change", "view")],
    "coordinator": [f"view_{model}" for model in MODELS] + ["add_medication", "change_medication"],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("patients")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="patients", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [("patients", "0002_clinical_records"), ("pathway", "0003_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
