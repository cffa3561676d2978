"""Clinicians record the new clinical records; coordinators read them."""

from django.db import migrations

from patients import role_migrations

MODELS = ("sixminutewalktest", "symptomscore", "medication", "adverseevent")
ROLE_PERMISSIONS = {
    "clinician": [f"{action}_{model}" for model in MODELS for action in ("add", "change", "view")],
    "coordinator": [f"view_{model}" for model in MODELS] + ["add_medication", "change_medication"],
}


def grant(apps, schema_editor):
    role_migrations.grant(
        apps, {role: [f"patients.{c}" for c in codenames] for role, codenames in ROLE_PERMISSIONS.items()}
    )


class Migration(migrations.Migration):
    dependencies = [("patients", "0002_clinical_records"), ("pathway", "0003_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
