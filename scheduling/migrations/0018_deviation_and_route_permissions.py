"""Who reads protocol deviations and alert routes: the staff who work the pathway, and the
auditor, who reads everything."""

from django.db import migrations

from patients.role_migrations import grant


def grant_views(apps, schema_editor):
    deviations = "scheduling.view_protocoldeviation"
    routes = "scheduling.view_alertroute"
    grant(
        apps,
        {
            "clinician": [deviations],
            "lab": [deviations],
            "auditor": [deviations, routes],
            "coordinator": [deviations],
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0017_alert_routes"),
        ("pathway", "0011_auditor_role"),
    ]

    operations = [migrations.RunPython(grant_views, migrations.RunPython.noop)]
