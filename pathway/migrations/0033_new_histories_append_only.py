"""The audit histories of cell-bank lots and CRP results get the guard every history table has
(pathway 0020): no UPDATE, DELETE or TRUNCATE, even by the owner."""

from django.db import migrations

TABLES = ("pathway_historicalcellbanklot", "patients_historicalcreactiveprotein")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0032_therapies_as_data"),
        ("patients", "0017_crp_and_fitness_for_infusion"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
