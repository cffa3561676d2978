"""Let the roles that work with visits issue, see and revoke their own calendar links.

Deleting is not granted: a revoked link stays on record with who revoked it and when.
"""

from django.db import migrations

from patients import role_migrations

ROLE_PERMISSIONS = {
    "coordinator": ["add_calendarfeedtoken", "view_calendarfeedtoken", "change_calendarfeedtoken"],
    "clinician": ["add_calendarfeedtoken", "view_calendarfeedtoken", "change_calendarfeedtoken"],
}


def grant(apps, schema_editor):
    role_migrations.grant(
        apps, {role: [f"scheduling.{c}" for c in codenames] for role, codenames in ROLE_PERMISSIONS.items()}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0014_calendarfeedtoken"),
        ("pathway", "0003_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
