"""Who may work a closed week's kept figures out again: the coordinators of a site and the
programme leads, who receive the reports. Auditors read them as they were."""

from django.db import migrations

from patients.role_migrations import grant


def grant_recompute(apps, schema_editor):
    recompute = "reporting.change_weeklyfigures"
    grant(apps, {"coordinator": [recompute], "programme lead": [recompute]})


class Migration(migrations.Migration):
    dependencies = [("reporting", "0002_weekly_figures")]

    operations = [migrations.RunPython(grant_recompute, migrations.RunPython.noop)]
