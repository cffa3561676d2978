"""Close matches for a search that finds no one (patients/search.py: `patients_close_to`):
pg_trgm's similarity on first names, last names and MRNs, answered from GIN trigram indexes
on PostgreSQL. pg_trgm is a trusted extension (PostgreSQL 13 and later): the database's
owner, who runs the migrations, may create it without being a superuser."""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

INDEXES = {
    "patient_first_name_trgm_idx": "first_name",
    "patient_last_name_trgm_idx": "last_name",
    "patient_mrn_trgm_idx": "mrn",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in INDEXES.items():
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} "
                f"ON patients_patient USING gin ({column} gin_trgm_ops)"
            )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("patients", "0015_measures")]

    # On other databases TrigramExtension does nothing.
    operations = [TrigramExtension(), migrations.RunPython(forwards, backwards)]
