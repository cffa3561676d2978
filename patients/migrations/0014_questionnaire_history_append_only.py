"""The audit history of questionnaire answers gets the guard every history table has
(pathway 0020): no UPDATE, DELETE or TRUNCATE, even by the owner."""

from django.db import migrations

TABLE = "patients_historicalquestionnaireresponse"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()"
    )
    schema_editor.execute(
        f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0013_patient_languages"),
        ("pathway", "0020_append_only_guards"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
