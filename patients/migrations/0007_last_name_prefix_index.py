"""Prefix search on last names (the admin's `^last_name`) uses an index on PostgreSQL."""

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS patient_last_name_prefix_idx "
            "ON patients_patient (UPPER(last_name::text) varchar_pattern_ops)"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS patient_last_name_prefix_idx")


class Migration(migrations.Migration):
    dependencies = [("patients", "0006_admin_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
