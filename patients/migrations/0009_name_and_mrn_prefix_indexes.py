"""Prefix search on first names and MRNs (patients/search.py) uses indexes on PostgreSQL,
like the last name's (0007)."""

from django.db import migrations

INDEXES = {
    "patient_first_name_prefix_idx": "first_name",
    "patient_mrn_prefix_idx": "mrn",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in INDEXES.items():
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} "
                f"ON patients_patient (UPPER({column}::text) varchar_pattern_ops)"
            )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("patients", "0008_clinic_hours_and_patient_facing_name")]

    operations = [migrations.RunPython(forwards, backwards)]
