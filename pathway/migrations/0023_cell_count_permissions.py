"""The lab records cell counts; everyone who follows a batch may read them."""

from django.db import migrations

from patients.role_migrations import grant


def grant_counts(apps, schema_editor):
    view = "pathway.view_cellcount"
    grant(
        apps,
        {
            "lab": ["pathway.add_cellcount", view],
            "coordinator": [view],
            "clinician": [view],
            "auditor": [view],
        },
    )


class Migration(migrations.Migration):
    dependencies = [("pathway", "0022_growth_counts"), ("pathway", "0011_auditor_role")]

    operations = [migrations.RunPython(grant_counts, migrations.RunPython.noop)]
