"""Who records QC, who sees batches, who records custody events."""

from django.db import migrations

from patients import role_migrations

ROLE_PERMISSIONS = {
    "lab": ["view_batch", "change_batch", "view_custodyevent", "add_custodyevent"],
    "coordinator": ["view_batch", "view_custodyevent", "add_custodyevent"],
    "clinician": ["view_batch", "view_custodyevent", "add_custodyevent"],
}


def grant(apps, schema_editor):
    role_migrations.grant(
        apps, {role: [f"pathway.{c}" for c in codenames] for role, codenames in ROLE_PERMISSIONS.items()}
    )


class Migration(migrations.Migration):
    dependencies = [("pathway", "0009_custody_append_only_trigger")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
