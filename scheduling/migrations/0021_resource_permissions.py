"""Coordinators and the lab keep the resources' calendars; auditors read them."""

from django.db import migrations

from patients.role_migrations import grant

MODELS = ("resource", "resourcesession", "resourceclosure")


def grant_calendars(apps, schema_editor):
    keep = [f"scheduling.{action}_{model}" for model in MODELS for action in ("add", "change", "view")]
    grant(
        apps,
        {
            "coordinator": keep,
            "lab": keep,
            "auditor": [f"scheduling.view_{model}" for model in MODELS],
        },
    )


class Migration(migrations.Migration):
    dependencies = [("scheduling", "0020_resources"), ("pathway", "0011_auditor_role")]

    operations = [migrations.RunPython(grant_calendars, migrations.RunPython.noop)]
